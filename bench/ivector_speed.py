"""Time per hour of audio of the i-vector pipeline: UBM E-step, T-matrix EM and extraction.

Usage: PYTHONPATH=$PWD python bench/ivector_speed.py [--components 256] [--rank 100] [--batch 16]
       [--seconds 4] [--repeats 5]

Each stage is one jitted function of a batch of ``--batch`` utterances of ``--seconds`` of
16 kHz audio (amplitude-modulated noise: the cost does not depend on the content), front end
included: MFCC + Δ + ΔΔ, sliding CMN, VAD. Prints the median wall time per batch over
``--repeats`` runs after one warm-up, and the same scaled to one hour of audio:

* UBM E-step: ``gmm_statistics`` of the voiced frames (one EM iteration's accumulation);
* T-matrix EM: Baum-Welch statistics and ``tv_statistics`` (the E-step), plus the M-step
  (``tv_update``, once per iteration whatever the amount of audio) timed on its own;
* extraction: whitened, length-normalised i-vectors (``Task.embed``'s computation).
"""

import argparse
import types

import jax
import jax.numpy as jnp
import numpy as np

from bench.tasnet_speed import interleaved_medians
from jaxspeech.models import ivector

RATE = 16000


def audio(batch: int, seconds: float) -> jax.Array:
    rng = np.random.default_rng(0)
    n = round(seconds * RATE)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(n) / RATE)
    return jnp.asarray(0.1 * envelope * rng.standard_normal((batch, n)), jnp.float32)


def measure(components: int, rank: int, batch: int, seconds: float, repeats_for):
    """Median seconds per batch of each stage (the M-step: per EM iteration) over the timed
    calls after one warm-up (compile) call each, and their number,
    ``repeats_for(seconds of the warm-up round)``."""
    cfg = ivector.FrontEndConfig()
    dim, key = cfg.feature_dim, jax.random.PRNGKey(0)
    ubm = {
        "weights": jnp.full(components, 1.0 / components),
        "means": jax.random.normal(key, (components, dim)),
        "variances": jnp.ones((components, dim)),
    }
    tv = ivector.init_total_variability(key, ubm, rank)
    backend = {"mean": jnp.zeros(rank), "whitening": jnp.eye(rank)}
    wav = audio(batch, seconds)
    lengths = jnp.full(batch, wav.shape[1], jnp.int32)

    def bw(ubm, wav):
        features, voiced = ivector.frontend(cfg, wav, lengths, RATE)
        return ivector.baum_welch(ubm, features, voiced)

    @jax.jit
    def ubm_e_step(ubm, wav):
        features, voiced = ivector.frontend(cfg, wav, lengths, RATE)
        return ivector.gmm_statistics(ubm, features, voiced)

    @jax.jit
    def tv_e_step(ubm, tv, wav):
        return ivector.tv_statistics(tv, ubm["variances"], bw(ubm, wav))

    @jax.jit
    def extraction(ubm, tv, backend, wav):
        raw = ivector.extract(tv, ubm["variances"], bw(ubm, wav))
        return ivector.normalised_ivectors(backend, raw)

    sums = tv_e_step(ubm, tv, wav)
    m_step = jax.jit(ivector.tv_update)
    calls = {
        "UBM E-step": lambda _: jax.block_until_ready(ubm_e_step(ubm, wav)),
        "T-matrix E-step": lambda _: jax.block_until_ready(tv_e_step(ubm, tv, wav)),
        "extraction": lambda _: jax.block_until_ready(extraction(ubm, tv, backend, wav)),
        "T-matrix M-step": lambda _: jax.block_until_ready(m_step(tv, sums)),
    }
    ours = types.SimpleNamespace(name="jaxspeech")
    timings, repeats = interleaved_medians([ours], calls, 1, repeats_for)
    return {stage: by["jaxspeech"][0] for stage, by in timings.items()}, repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--rank", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hours = args.batch * args.seconds / 3600
    print(
        f"{jax.devices()[0].platform}: C={args.components}, D="
        f"{ivector.FrontEndConfig().feature_dim}, R={args.rank}, batch {args.batch} x "
        f"{args.seconds:g} s ({hours * 3600:.0f} s of audio), median of {args.repeats}"
    )
    seconds, _ = measure(
        args.components, args.rank, args.batch, args.seconds, lambda _: args.repeats
    )
    m_step = seconds.pop("T-matrix M-step")
    for name, value in seconds.items():
        print(f"{name}: {value:.3f} s per batch, {value / hours:.1f} s per hour of audio")
    print(f"T-matrix M-step: {m_step:.3f} s per EM iteration")


if __name__ == "__main__":
    main()

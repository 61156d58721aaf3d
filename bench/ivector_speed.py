"""Time per hour of audio of the i-vector pipeline: UBM E-step, T-matrix EM and extraction.

Usage: python bench/ivector_speed.py [--components 256] [--rank 100] [--batch 16]
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
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.models import ivector

RATE = 16000


def audio(batch: int, seconds: float) -> jax.Array:
    rng = np.random.default_rng(0)
    n = round(seconds * RATE)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(n) / RATE)
    return jnp.asarray(0.1 * envelope * rng.standard_normal((batch, n)), jnp.float32)


def median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--rank", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = ivector.FrontEndConfig()
    dim, key = cfg.feature_dim, jax.random.PRNGKey(0)
    ubm = {
        "weights": jnp.full(args.components, 1.0 / args.components),
        "means": jax.random.normal(key, (args.components, dim)),
        "variances": jnp.ones((args.components, dim)),
    }
    tv = ivector.init_total_variability(key, ubm, args.rank)
    backend = {"mean": jnp.zeros(args.rank), "whitening": jnp.eye(args.rank)}
    wav = audio(args.batch, args.seconds)
    lengths = jnp.full(args.batch, wav.shape[1], jnp.int32)

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
    hours = args.batch * args.seconds / 3600
    print(
        f"{jax.devices()[0].platform}: C={args.components}, D={dim}, R={args.rank}, batch "
        f"{args.batch} x {args.seconds:g} s ({hours * 3600:.0f} s of audio), median of "
        f"{args.repeats}"
    )
    for name, fn in (
        ("UBM E-step", lambda: ubm_e_step(ubm, wav)),
        ("T-matrix E-step", lambda: tv_e_step(ubm, tv, wav)),
        ("extraction", lambda: extraction(ubm, tv, backend, wav)),
    ):
        seconds = median_time(fn, args.repeats)
        print(f"{name}: {seconds:.3f} s per batch, {seconds / hours:.1f} s per hour of audio")
    seconds = median_time(lambda: m_step(tv, sums), args.repeats)
    print(f"T-matrix M-step: {seconds:.3f} s per EM iteration")


if __name__ == "__main__":
    main()

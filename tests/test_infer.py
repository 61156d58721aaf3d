"""Long-file chunked separation (jaxspeech.infer)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech import infer
from jaxspeech.errors import (
    ChannelError,
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
    ShapeError,
)
from jaxspeech.losses import si_snr
from jaxspeech.models.tasnet import ConvTasNet, ConvTasNetConfig
from jaxspeech.models.tcn import TCNConfig

CHUNK, OVERLAP = 64, 16
TINY_TCN = TCNConfig(
    bottleneck_channels=8, hidden_channels=16, skip_channels=8, blocks=3, repeats=1
)


def split_signs(variables, chunks):
    """A fake 2-source model, `[B, C] -> [B, 2, C]`: the positive and negative parts of each
    chunk (they sum to it), in an order that flips with the chunk's content."""
    del variables
    positive = jnp.maximum(chunks, 0.0)
    negative = chunks - positive
    swap = swapped(chunks)[:, None]
    return jnp.stack(
        [jnp.where(swap, negative, positive), jnp.where(swap, positive, negative)], axis=1
    )


def swapped(chunks):
    """Whether `split_signs` swaps its outputs for each of `chunks[B, C]`."""
    return jnp.floor(jnp.sum(jnp.abs(chunks), axis=-1) * 3.0) % 2 == 1


def sign_parts(x):
    return np.stack([np.maximum(x, 0.0), np.minimum(x, 0.0)])


def assert_consistent_sign_split(out, x):
    """`out` is the positive/negative split of `x`, in one order for the whole signal."""
    expected = sign_parts(x)
    if not np.allclose(out[0], expected[0], atol=1e-6):
        expected = expected[::-1]
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(
    "length, chunks_per_block",
    [(1, 3), (63, 3), (CHUNK, 3), (CHUNK + 1, 3), (97, 3), (1001, 3), (1001, 1), (1234, 5)],
)
def test_any_length_is_kept_and_sources_stay_aligned(length, chunks_per_block, rng):
    x = rng.standard_normal(length).astype(np.float32)
    out = infer.separate_long(
        split_signs, {}, x, chunk=CHUNK, overlap=OVERLAP, chunks_per_block=chunks_per_block
    )
    assert out.shape == (2, length) and out.dtype == np.float32
    assert_consistent_sign_split(out, x)


def test_fake_model_really_swaps_between_chunks(rng):
    """The alignment test above is meaningful: the fake model flips order from chunk to chunk."""
    x = rng.standard_normal(1001).astype(np.float32)
    hop = CHUNK - OVERLAP
    padded = np.pad(x, (0, CHUNK))
    chunks = np.stack([padded[i : i + CHUNK] for i in range(0, x.size - OVERLAP, hop)])
    flags = np.asarray(swapped(jnp.asarray(chunks)))
    assert flags.any() and not flags.all()


def test_bfloat16_mixture_is_computed_in_float32(rng):
    x = jnp.asarray(rng.standard_normal(300), jnp.bfloat16)
    out = infer.separate_long(split_signs, {}, x, chunk=CHUNK, overlap=OVERLAP)
    assert out.dtype == np.float32
    assert_consistent_sign_split(out, np.asarray(x, np.float32))


@pytest.fixture(scope="module")
def tasnets():
    """Tiny Conv-TasNets: gLN (global statistics) and chanLN (receptive field ±80 samples)."""
    models = {
        norm: ConvTasNet(ConvTasNetConfig(n_filters=16, tcn=replace(TINY_TCN, norm=norm)))
        for norm in ("gLN", "chanLN")
    }
    return {
        norm: (model, model.init(jax.random.key(1), jnp.zeros((1, 64))))
        for norm, model in models.items()
    }


def test_signal_within_one_chunk_equals_the_model(tasnets, rng):
    model, variables = tasnets["gLN"]
    x = rng.standard_normal(300).astype(np.float32)
    out = infer.separate_long(model.apply, variables, x, chunk=512, overlap=128)
    np.testing.assert_allclose(out, model.apply(variables, x[None])[0], atol=1e-6)


def test_long_signal_matches_the_whole_file_model(tasnets, rng):
    """With the receptive field inside the overlap, the samples each chunk owns alone are
    exactly the whole-file output, and the cross-faded ones are close to it."""
    model, variables = tasnets["chanLN"]
    chunk, overlap, length = 512, 128, 5003
    hop = chunk - overlap
    x = rng.standard_normal(length).astype(np.float32)
    out = infer.separate_long(model.apply, variables, x, chunk=chunk, overlap=overlap)
    ref = np.asarray(model.apply(variables, x[None])[0])
    n_chunks = -(-(length - overlap) // hop)
    for index in range(n_chunks - 1):  # the last chunk sees zero padding past the end
        owned = slice(index * hop + overlap, (index + 1) * hop)
        np.testing.assert_allclose(out[:, owned], ref[:, owned], atol=1e-5)
    away_from_end = slice(0, (n_chunks - 1) * hop)
    assert np.all(np.asarray(si_snr(out[:, away_from_end], ref[:, away_from_end])) > 30.0)
    assert np.all(np.asarray(si_snr(out, ref)) > 20.0)


def test_crossfade_ramp_against_numpy():
    n = np.arange(10)
    ramp = np.asarray(infer.crossfade_ramp(10))
    np.testing.assert_allclose(ramp, 0.5 - 0.5 * np.cos(np.pi * (n + 0.5) / 10), atol=1e-6)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-6)  # fade-out = reversed fade-in
    assert np.all(np.diff(ramp) > 0)


def test_align_sources_against_brute_force(rng):
    tail = rng.standard_normal((3, 40)).astype(np.float32) * np.float32([[3.0], [1.0], [0.1]])
    for permutation in itertools.permutations(range(3)):
        noisy = tail[list(permutation)] + 0.3 * rng.standard_normal((3, 40)).astype(np.float32)
        sources = np.concatenate([noisy, rng.standard_normal((3, 60)).astype(np.float32)], -1)
        best = min(
            itertools.permutations(range(3)),
            key=lambda p: sum(np.sum((sources[p[j], :40] - tail[j]) ** 2) for j in range(3)),
        )
        np.testing.assert_array_equal(infer.align_sources(sources, tail), sources[list(best)])
        np.testing.assert_array_equal(best, np.argsort(permutation))


def _rescale_np(sources, mixture, peak=0.99):
    """Least-squares gains of all sources together (a 1e-4 ridge), by numpy's lstsq."""
    sources, mixture = sources.astype(np.float64), mixture.astype(np.float64)
    damping = np.sqrt(1e-4 * np.sum(sources**2, axis=-1))
    design = np.concatenate([sources.T, np.diag(damping)])
    target = np.concatenate([mixture, np.zeros(len(sources))])
    gain = np.linalg.lstsq(design, target, rcond=None)[0]
    scaled = gain[:, None] * sources
    return scaled * min(1.0, peak / np.abs(scaled).max())


def test_rescale_against_numpy_with_jit_and_vmap(rng):
    clean = rng.standard_normal((4, 2, 200)).astype(np.float32)
    sources = clean * np.float32([[0.1], [30.0]])  # arbitrary model output scales
    mixture = 3.0 * clean.sum(1) + rng.standard_normal((4, 200)).astype(np.float32)
    expected = np.stack([_rescale_np(s, m) for s, m in zip(sources, mixture, strict=True)])
    for fn in (infer.rescale_to_mixture, jax.jit(infer.rescale_to_mixture)):
        np.testing.assert_allclose(fn(sources, mixture), expected, rtol=1e-5, atol=1e-6)
    vmapped = jax.vmap(infer.rescale_to_mixture)(sources, mixture)
    np.testing.assert_allclose(vmapped, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() == pytest.approx(0.99, rel=1e-5)  # the peak limit was hit


def test_rescale_restores_the_level_of_uncorrelated_sources(rng):
    first = np.zeros(400, np.float32)
    second = np.zeros(400, np.float32)
    first[:200] = 0.3 * rng.standard_normal(200)
    second[200:] = 0.2 * rng.standard_normal(200)
    estimates = np.stack([25.0 * first, -0.01 * second])
    out = infer.rescale_to_mixture(jnp.asarray(estimates, jnp.bfloat16), first + second)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np.stack([first, second]), atol=0.02)


def test_rescale_keeps_silence_silent_and_loud_mixtures_below_peak(rng):
    sources = np.stack([rng.standard_normal(100), np.zeros(100)]).astype(np.float32)
    loud = infer.rescale_to_mixture(sources, 50.0 * sources[0])
    assert np.all(np.isfinite(loud)) and np.abs(loud).max() <= 0.99 + 1e-6
    np.testing.assert_array_equal(loud[1], 0.0)
    np.testing.assert_array_equal(infer.rescale_to_mixture(sources, np.zeros(100)), 0.0)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(chunk=CHUNK, overlap=0), ConfigError),
        (dict(chunk=CHUNK, overlap=CHUNK // 2 + 1), ConfigError),
        (dict(chunk=1, overlap=1), ConfigError),
        (dict(chunk=CHUNK, overlap=OVERLAP, chunks_per_block=0), ConfigError),
    ],
)
def test_bad_chunking_is_refused(kwargs, error):
    with pytest.raises(error, match="chunk"):
        infer.separate_long(split_signs, {}, np.ones(100, np.float32), **kwargs)


@pytest.mark.parametrize(
    "mixture, error",
    [
        (np.ones((2, 100), np.float32), ChannelError),
        (np.array([0.1, np.nan, 0.2], np.float32), NonFiniteAudioError),
        (np.zeros(0, np.float32), EmptyAudioError),
    ],
)
def test_bad_mixtures_are_refused(mixture, error):
    with pytest.raises(error, match="mixture"):
        infer.separate_long(split_signs, {}, mixture, chunk=CHUNK, overlap=OVERLAP)


def test_model_with_wrong_output_shape_is_refused():
    with pytest.raises(ShapeError, match=r"\[B, S, C\]"):
        infer.separate_long(
            lambda variables, chunks: chunks, {}, np.ones(100), chunk=CHUNK, overlap=OVERLAP
        )


#: Peak memory of one process separating `seconds` of noise with a Conv-TasNet built from
#: the JSON config (`ConvTasNetConfig` fields, `tcn` a dict of `TCNConfig` fields; random
#: params) in 4 s chunks with 1 s overlap at 8 kHz, rescaled.
#: `python -c MEMORY_PROBE '{}' 600` measures the paper model on a 10-minute recording.
MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np
    from jaxspeech import infer
    from jaxspeech.models.tasnet import ConvTasNet, ConvTasNetConfig
    from jaxspeech.models.tcn import TCNConfig
    fields = json.loads(sys.argv[1])
    tcn = TCNConfig(**fields.pop("tcn", {}))
    model = ConvTasNet(ConvTasNetConfig(**fields, tcn=tcn))
    rate, seconds = 8000, float(sys.argv[2])
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64)))
    mixture = np.random.default_rng(0).standard_normal(round(seconds * rate), np.float32)
    sources = infer.separate_long(model.apply, variables, 0.1 * mixture, chunk=4 * rate,
                                  overlap=rate)
    sources = np.asarray(jax.jit(infer.rescale_to_mixture)(sources, 0.1 * mixture))
    assert sources.shape == (model.config.n_src, mixture.size) and np.isfinite(sources).all()
    print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    """
)


def _peak_rss_mb(config: dict, seconds: float) -> float:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(config), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(result.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_length():
    """120 s needs little more than 20 s: only the O(T) host arrays (mixture, sources: about
    4·(1 + 2·S) bytes per sample, 19 MB here) grow; processing the whole file at once with
    this model grows by about 250 MB."""
    config = dict(
        n_filters=64,
        tcn=dict(bottleneck_channels=32, hidden_channels=64, skip_channels=32, blocks=4),
    )
    short, long = _peak_rss_mb(config, 20.0), _peak_rss_mb(config, 120.0)
    assert long - short < 60.0, (short, long)

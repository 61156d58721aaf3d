"""jaxspeech.masks against element-by-element numpy loops written from the definitions."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax import numpy as jnp

from jaxspeech import masks
from jaxspeech.errors import ConfigError, ShapeError


def _spectrogram(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.rayleigh(size=shape).astype(np.float32)


def _loop_irm(clean: np.ndarray, noise: np.ndarray, beta: float) -> np.ndarray:
    out = np.zeros(clean.shape)
    for index in np.ndindex(clean.shape):
        speech, total = clean[index] ** 2, clean[index] ** 2 + noise[index] ** 2
        out[index] = (speech / total) ** beta if total > 0 else 0.0
    return out


def _loop_ibm(clean: np.ndarray, noise: np.ndarray, lc_db: float) -> np.ndarray:
    out = np.zeros(clean.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for index in np.ndindex(clean.shape):
            local_snr = 20 * np.log10(np.float64(clean[index]) / np.float64(noise[index]))
            out[index] = 1.0 if local_snr > lc_db else 0.0  # NaN (0/0) compares False
    return out


def _loop_band_activity(clean: np.ndarray, n_bands: int, range_db: float) -> np.ndarray:
    """Per clip (all but the last two axes), in float64 loops: each band's energy in dB
    relative to the clip's loudest frame, mapped from −range_db…0 onto 0…1."""
    out = np.zeros((*clean.shape[:-1], n_bands))
    for clip in np.ndindex(clean.shape[:-2]):
        power = clean[clip].astype(np.float64) ** 2
        loudest = power.sum(-1).max()
        for frame in range(power.shape[0]):
            for band, bins in enumerate(np.array_split(np.arange(power.shape[1]), n_bands)):
                energy = power[frame, bins].sum()
                if energy > 0 and loudest > 0:
                    level = 10 * np.log10(energy / loudest)
                    out[(*clip, frame, band)] = min(max(1 + level / range_db, 0.0), 1.0)
    return out


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_irm_matches_loop(rng, beta):
    clean, noise = _spectrogram(rng, (2, 5, 7)), _spectrogram(rng, (2, 5, 7))
    got = masks.irm(clean, noise, beta=beta)
    assert got.dtype == jnp.float32 and got.shape == clean.shape
    np.testing.assert_allclose(got, _loop_irm(clean, noise, beta), rtol=1e-5, atol=1e-7)


def test_irm_edge_cases():
    clean = np.array([[1.0, 0.0, 0.0, 3.0]], np.float32)
    noise = np.array([[0.0, 2.0, 0.0, 4.0]], np.float32)
    # zero noise → 1, zero speech → 0, silence (0/0) → 0, 3-4-5 triangle → 3/5.
    np.testing.assert_allclose(masks.irm(clean, noise), [[1.0, 0.0, 0.0, 0.6]], rtol=1e-6)
    assert np.all(np.isfinite(masks.irm(clean, noise)))


def test_irm_accepts_complex_and_bfloat16(rng):
    clean, noise = _spectrogram(rng, (4, 6)), _spectrogram(rng, (4, 6))
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, clean.shape)).astype(np.complex64)
    np.testing.assert_allclose(
        masks.irm(clean * phase, noise * phase), masks.irm(clean, noise), rtol=1e-5
    )
    clean_bf16, noise_bf16 = jnp.asarray(clean, jnp.bfloat16), jnp.asarray(noise, jnp.bfloat16)
    got = masks.irm(clean_bf16, noise_bf16)
    assert got.dtype == jnp.float32
    expected = _loop_irm(
        np.asarray(clean_bf16, np.float32), np.asarray(noise_bf16, np.float32), 0.5
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("lc_db", [0.0, -6.0, 3.0])
def test_ibm_matches_loop(rng, lc_db):
    clean, noise = _spectrogram(rng, (3, 4, 9)), _spectrogram(rng, (3, 4, 9))
    got = masks.ibm(clean, noise, lc_db=lc_db)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, _loop_ibm(clean, noise, lc_db))
    assert 0 < float(got.mean()) < 1  # both classes present, so the test is not trivial


def test_ibm_edge_cases():
    clean = np.array([1.0, 0.0, 0.0, 1.0, 1.0], np.float32)
    noise = np.array([0.0, 1.0, 0.0, 1.0, 0.5], np.float32)
    expected = [1.0, 0.0, 0.0, 0.0, 1.0]  # +inf dB, −inf dB, undefined, exactly 0 dB, +6 dB
    np.testing.assert_array_equal(masks.ibm(clean, noise), expected)
    np.testing.assert_array_equal(masks.ibm(clean, noise), _loop_ibm(clean, noise, 0.0))


@pytest.mark.parametrize("mask_fn", [masks.irm, masks.ibm])
def test_ratio_and_binary_masks_reject_shape_mismatch(mask_fn):
    with pytest.raises(ShapeError, match="noise_mag"):
        mask_fn(np.ones((3, 4)), np.ones((3, 5)))


@pytest.mark.parametrize(("n_freqs", "n_bands"), [(9, 4), (8, 8), (10, 3), (7, 1)])
def test_band_of_bin_is_array_split(n_freqs, n_bands):
    expected = np.concatenate(
        [
            np.full(len(part), band)
            for band, part in enumerate(np.array_split(np.arange(n_freqs), n_bands))
        ]
    )
    np.testing.assert_array_equal(masks.band_of_bin(n_freqs, n_bands), expected)


def test_band_activity_matches_loop(rng):
    n_freqs, n_bands, range_db = 11, 4, 30.0
    clean = _spectrogram(rng, (2, 6, n_freqs))
    bands = np.array_split(np.arange(n_freqs), n_bands)
    clean[0, 1, bands[2]] *= 1e-2  # 40 dB down: below the range → 0
    clean[0, 2, bands[1]] *= 1e-1  # 20 dB down: inside the range
    clean[1, 3, bands[0]] = 0.0  # silent band → 0
    clean[1, 4] = 0.0  # silent frame → all 0
    got = masks.band_activity(clean, n_bands, range_db=range_db)
    expected = _loop_band_activity(clean, n_bands, range_db)
    assert got.shape == (2, 6, n_bands) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert expected[0, 1, 2] == 0 and expected[1, 3, 0] == 0 and not expected[1, 4].any()
    assert 0 < expected[0, 2, 1] < expected[0, 3, 1] < 1


def test_band_activity_is_relative_to_the_clip_not_the_frame(rng):
    """A quiet frame (a pause, 50 dB down) is inactive, though its bands hold the same
    share of its own energy as in the loud frames; scaling the clip changes nothing."""
    clean = _spectrogram(rng, (4, 16))
    clean[2] *= 10 ** (-50 / 20)
    activity = jax.jit(masks.band_activity, static_argnums=1)(clean, 4)
    activity = np.asarray(activity)
    assert np.all(activity[2] == 0) and activity[[0, 1, 3]].min() > 0.5
    np.testing.assert_allclose(masks.band_activity(clean * 1e-3, 4), activity, atol=1e-5)
    np.testing.assert_array_equal(masks.band_activity(np.zeros((3, 16)), 4), 0.0)


@pytest.mark.parametrize("n_bands", [0, 17])
def test_band_activity_rejects_bad_band_count(n_bands):
    with pytest.raises(ShapeError, match="n_bands"):
        masks.band_activity(np.ones((3, 16)), n_bands)


def test_band_activity_rejects_bad_input():
    with pytest.raises(ShapeError, match="frames, freqs"):
        masks.band_activity(np.ones(16), 4)
    with pytest.raises(ConfigError, match="range_db"):
        masks.band_activity(np.ones((3, 16)), 4, range_db=0.0)


def test_expand_bands_repeats_each_band_over_its_bins(rng):
    band_mask = rng.uniform(size=(2, 3, 4)).astype(np.float32)
    sizes = [len(part) for part in np.array_split(np.arange(10), 4)]
    expected = np.repeat(band_mask, sizes, axis=-1)
    got = masks.expand_bands(band_mask, 10)
    assert got.shape == (2, 3, 10)
    np.testing.assert_array_equal(got, expected)


def test_expand_bands_inverts_band_activity_layout(rng):
    clean = _spectrogram(rng, (6, 10))
    clean[2] = 0.0
    band_mask = masks.band_activity(clean, 3)
    per_bin = masks.expand_bands(band_mask, 10)
    for band, bins in enumerate(np.array_split(np.arange(10), 3)):
        for column in bins:
            np.testing.assert_array_equal(per_bin[:, column], band_mask[:, band])
    # A band mask times a per-bin mask, as the audio-visual gate uses it.
    product = per_bin * masks.irm(clean, _spectrogram(rng, (6, 10)))
    assert product.shape == (6, 10) and not np.asarray(product[2]).any()


def test_expand_bands_rejects_more_bands_than_bins():
    with pytest.raises(ShapeError, match="n_bands"):
        masks.expand_bands(np.ones((3, 8)), 5)


def test_apply_mask_keeps_noisy_phase(rng):
    mix = (rng.normal(size=(2, 5, 6)) + 1j * rng.normal(size=(2, 5, 6))).astype(np.complex64)
    mask = rng.uniform(0.1, 1.0, size=(2, 5, 6)).astype(np.float32)
    got = masks.apply_mask(mix, mask)
    assert got.dtype == jnp.complex64
    np.testing.assert_allclose(got, mask * mix, rtol=1e-6)
    np.testing.assert_allclose(np.angle(got), np.angle(mix), atol=1e-5)
    np.testing.assert_allclose(np.abs(got), mask * np.abs(mix), rtol=1e-5)


@pytest.mark.parametrize("source_axis", [1, -3])
def test_apply_mask_per_source(rng, source_axis):
    mix = (rng.normal(size=(2, 5, 6)) + 1j * rng.normal(size=(2, 5, 6))).astype(np.complex64)
    mask = jnp.asarray(rng.uniform(size=(2, 3, 5, 6)), jnp.bfloat16)
    got = masks.apply_mask(mix, mask, source_axis=source_axis)
    assert got.shape == (2, 3, 5, 6) and got.dtype == jnp.complex64
    mask32 = np.asarray(mask, np.float32)
    for batch in range(2):
        for source in range(3):
            np.testing.assert_allclose(
                got[batch, source], mask32[batch, source] * mix[batch], rtol=1e-6
            )


def test_apply_mask_rejects_bad_shapes():
    with pytest.raises(ShapeError, match="does not broadcast"):
        masks.apply_mask(np.ones((2, 5, 6), np.complex64), np.ones((2, 5, 7)))
    with pytest.raises(ShapeError, match="one axis more"):
        masks.apply_mask(np.ones((2, 5, 6), np.complex64), np.ones((2, 5, 6)), source_axis=1)


def test_masks_vmap_matches_batched_call(rng):
    clean, noise = _spectrogram(rng, (3, 4, 8)), _spectrogram(rng, (3, 4, 8))
    np.testing.assert_allclose(jax.vmap(masks.irm)(clean, noise), masks.irm(clean, noise))
    np.testing.assert_array_equal(
        jax.vmap(lambda c: masks.band_activity(c, 3))(clean), masks.band_activity(clean, 3)
    )

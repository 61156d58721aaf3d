"""Time-frequency masks: ideal ratio/binary masks, band speech activity, applying masks.

Every function is a pure ``jnp`` function batched over leading axes; spectrogram inputs are
``[..., frames, freqs]`` magnitudes (a complex STFT is accepted too: its modulus is used).
Real inputs of any float dtype (bfloat16 included) are computed in float32, and masks come
back as float32.
"""

from __future__ import annotations

import numpy as np
from jax import lax
from jax import numpy as jnp

from jaxspeech.errors import ConfigError, ShapeError


def _power(spectrum: jnp.ndarray) -> jnp.ndarray:
    """|X|² in float32, for magnitudes or complex STFT values."""
    return jnp.square(jnp.abs(spectrum).astype(jnp.float32))


def _require_same_shape(clean_mag: jnp.ndarray, noise_mag: jnp.ndarray) -> None:
    if jnp.shape(clean_mag) != jnp.shape(noise_mag):
        raise ShapeError(
            f"clean_mag has shape {jnp.shape(clean_mag)} but noise_mag has shape "
            f"{jnp.shape(noise_mag)}; compute both spectrograms with the same STFT settings "
            "from signals of the same length"
        )


def irm(
    clean_mag: jnp.ndarray, noise_mag: jnp.ndarray, beta: float = 0.5, eps: float = 1e-8
) -> jnp.ndarray:
    """Ideal ratio mask ``(S² / (S² + N²))^β``.

    Args:
      clean_mag: ``[..., frames, freqs]`` clean-speech magnitudes |S| (or complex STFT).
      noise_mag: same shape, noise magnitudes |N|.
      beta: exponent (0.5 gives the usual square-root Wiener-like mask, 1 the Wiener gain).
      eps: floor on the bin energy ``S² + N²`` in the denominator: bins with energy above it
        get the exact ratio; a silent bin (0/0) gets 0.

    Returns:
      ``[..., frames, freqs]`` float32 mask in [0, 1].
    """
    _require_same_shape(clean_mag, noise_mag)
    speech_power = _power(clean_mag)
    total_power = speech_power + _power(noise_mag)
    return jnp.power(speech_power / jnp.maximum(total_power, eps), beta)


def ibm(clean_mag: jnp.ndarray, noise_mag: jnp.ndarray, lc_db: float = 0.0) -> jnp.ndarray:
    """Ideal binary mask: 1 where the local SNR ``20·log10(|S|/|N|)`` exceeds ``lc_db``.

    Compared in the power domain (``S² > N²·10^(lc_db/10)``), so zero noise with non-zero
    speech gives 1 and a bin without speech gives 0, with no division or log of zero.

    Args:
      clean_mag: ``[..., frames, freqs]`` clean-speech magnitudes (or complex STFT).
      noise_mag: same shape, noise magnitudes.
      lc_db: local criterion in dB.

    Returns:
      ``[..., frames, freqs]`` float32 mask of 0s and 1s.
    """
    _require_same_shape(clean_mag, noise_mag)
    threshold = _power(noise_mag) * jnp.power(10.0, jnp.asarray(lc_db, jnp.float32) / 10.0)
    return (_power(clean_mag) > threshold).astype(jnp.float32)


def band_of_bin(n_freqs: int, n_bands: int) -> np.ndarray:
    """Static ``[n_freqs]`` int array: the band each frequency bin belongs to.

    Bands are contiguous and split the bins as evenly as possible, like ``np.array_split``:
    the first ``n_freqs % n_bands`` bands have one bin more than the others.
    """
    if not 1 <= n_bands <= n_freqs:
        raise ShapeError(
            f"n_bands={n_bands} must be between 1 and the number of frequency bins "
            f"({n_freqs}); choose fewer bands or a longer FFT"
        )
    base, extra = divmod(n_freqs, n_bands)
    sizes = np.full(n_bands, base) + (np.arange(n_bands) < extra)
    return np.repeat(np.arange(n_bands), sizes)


def band_activity(clean_mag: jnp.ndarray, n_bands: int, range_db: float = 40.0) -> jnp.ndarray:
    """How much speech each band carries in each frame (the lip network's target), in [0, 1].

    ``activity[..., j, k] = clip(1 + L[j, k] / range_db, 0, 1)`` where ``L[j, k]`` is the
    clean-speech energy of band ``k`` in frame ``j`` in dB relative to the energy of the
    loudest frame of the clip (``max_j Σ|S[j]|²``, over the ``frames`` axis): 1 for a band as
    loud as the loudest frame, 0 for bands ``range_db`` or more below it, for silence and for
    an all-silent clip. Relative to the clip, not to each frame, so that the pauses of a
    clip are silent (a frame-relative share makes every band of a pause "active"). Bands
    as in :func:`band_of_bin`.

    Args:
      clean_mag: ``[..., frames, freqs]`` clean-speech magnitudes (or complex STFT).
      n_bands: number of contiguous frequency bands (static, ``1 ≤ n_bands ≤ freqs``).
      range_db: the level range mapped to (0, 1], > 0.

    Returns:
      ``[..., frames, n_bands]`` float32 in [0, 1].
    """
    if jnp.ndim(clean_mag) < 2:
        raise ShapeError(
            f"clean_mag has shape {jnp.shape(clean_mag)}; band_activity needs [..., frames, freqs]"
        )
    if not range_db > 0:
        raise ConfigError(f"range_db={range_db}; the level range must be positive")
    power = _power(clean_mag)
    bands = band_of_bin(power.shape[-1], n_bands)
    membership = jnp.asarray(bands[:, None] == np.arange(n_bands), jnp.float32)
    band_energy = jnp.matmul(power, membership, precision=lax.Precision.HIGHEST)
    loudest = jnp.max(jnp.sum(power, axis=-1), axis=-1)[..., None, None]
    tiny = jnp.finfo(jnp.float32).tiny
    level_db = 10.0 * jnp.log10(jnp.maximum(band_energy, tiny) / jnp.maximum(loudest, tiny))
    activity = jnp.clip(1.0 + level_db / range_db, 0.0, 1.0)
    return jnp.where((band_energy > 0) & (loudest > 0), activity, 0.0)


def expand_bands(band_mask: jnp.ndarray, n_freqs: int) -> jnp.ndarray:
    """Repeat each band's value over its frequency bins (the inverse layout of band_activity).

    Args:
      band_mask: ``[..., frames, n_bands]``.
      n_freqs: number of frequency bins of the target layout (static).

    Returns:
      ``[..., frames, n_freqs]``, same dtype as ``band_mask``.
    """
    if jnp.ndim(band_mask) < 1:
        raise ShapeError("band_mask is a scalar; expand_bands needs [..., frames, n_bands]")
    return jnp.take(band_mask, band_of_bin(n_freqs, jnp.shape(band_mask)[-1]), axis=-1)


def band_average(values: jnp.ndarray, n_bands: int) -> jnp.ndarray:
    """Mean of ``values [..., frames, freqs]`` over each band's bins (bands of
    :func:`band_of_bin`): ``[..., frames, n_bands]`` float32, the pooling counterpart of
    :func:`expand_bands`."""
    if jnp.ndim(values) < 2:
        raise ShapeError(f"values have shape {jnp.shape(values)}; need [..., frames, freqs]")
    bands = band_of_bin(jnp.shape(values)[-1], n_bands)
    membership = (bands[:, None] == np.arange(n_bands)) / np.bincount(bands, minlength=n_bands)
    weights = jnp.asarray(membership, jnp.float32)
    return jnp.matmul(
        jnp.asarray(values).astype(jnp.float32), weights, precision=lax.Precision.HIGHEST
    )


def apply_mask(
    mix_stft: jnp.ndarray, mask: jnp.ndarray, source_axis: int | None = None
) -> jnp.ndarray:
    """Multiply a (real) mask with the mixture STFT, keeping the noisy phase.

    Args:
      mix_stft: ``[..., frames, freqs]`` complex mixture STFT (a magnitude works too).
      mask: broadcastable to ``mix_stft``; or, with ``source_axis``, a mask with one extra
        source axis, e.g. ``[B, S, frames, freqs]`` for ``mix_stft`` ``[B, frames, freqs]``.
      source_axis: position of the source axis in ``mask`` (e.g. 1 or -3 above); the mixture
        is expanded there so every source's mask applies to the same mixture.

    Returns:
      The masked STFT, shape of the broadcast (``mask``'s shape with ``source_axis``), complex64
      for a complex64 mixture.
    """
    if source_axis is not None:
        if jnp.ndim(mask) != jnp.ndim(mix_stft) + 1:
            raise ShapeError(
                f"with source_axis, mask needs one axis more than mix_stft; got mask "
                f"{jnp.shape(mask)} and mix_stft {jnp.shape(mix_stft)}"
            )
        mix_stft = jnp.expand_dims(mix_stft, source_axis % jnp.ndim(mask))
    try:
        np.broadcast_shapes(jnp.shape(mask), jnp.shape(mix_stft))
    except ValueError as error:
        raise ShapeError(
            f"mask {jnp.shape(mask)} does not broadcast with mix_stft {jnp.shape(mix_stft)}; "
            "give a mask per time-frequency bin, and source_axis for per-source masks"
        ) from error
    return jnp.asarray(mask).astype(jnp.float32) * mix_stft

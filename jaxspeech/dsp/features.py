"""Spectral features (log-mel filterbank, MFCC, log-magnitude, frame energy), deltas,
feature normalisation (per utterance, sliding window, dataset statistics) and energy-based
voice activity detection.

Feature arrays are ``[..., frames, features]``. Filterbank and MFCC frames are STFT frames with
``center=True``: frame ``t`` is centred on sample ``t * hop``, and a signal of ``n`` samples has
``1 + n // hop`` frames (100 frames per second at the default 10 ms shift), aligned with the
frames of ``jaxspeech.dsp.stft`` used by the mask and separation models.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.dsp.stft import as_real_signal, frame, stft
from jaxspeech.errors import ConfigError, NonFiniteAudioError, SampleRateError


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + hz / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of ``hz_to_mel``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> jax.Array:
    """Triangular mel filters ``[n_freqs, n_mels]`` (float32) for a one-sided spectrum.

    Bin ``k`` of ``n_freqs`` lies at ``k * sample_rate / (2 * (n_freqs - 1))`` Hz (even n_fft).
    Filter edges are ``n_mels + 2`` points equally spaced on the HTK mel scale from ``f_min`` to
    ``f_max`` (default Nyquist); each triangle rises and falls linearly in Hz with peak 1 and no
    area normalisation (librosa ``htk=True, norm=None``, torchaudio ``melscale_fbanks``).
    Warns when a filter covers no bin (too many mels for the FFT size).
    """
    _check_sample_rate(sample_rate)
    if n_freqs < 2 or n_mels < 1:
        raise ConfigError(f"n_freqs={n_freqs} must be >= 2 and n_mels={n_mels} >= 1")
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got "
            f"f_min={f_min}, f_max={f_max}; lower f_max or raise the sample rate"
        )
    bin_hz = np.linspace(0.0, sample_rate / 2, n_freqs)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    empty = np.flatnonzero(filters.max(axis=0) == 0.0)
    if empty.size:
        warnings.warn(
            f"mel_filterbank: {empty.size} of {n_mels} mel filters cover no FFT bin "
            f"(first at {centre[empty[0]]:.1f} Hz); use fewer mels, a larger n_fft or higher f_min",
            stacklevel=2,
        )
    return jnp.asarray(filters, dtype=jnp.float32)


def dct(x: jax.Array, n_out: int | None = None) -> jax.Array:
    """Orthonormal DCT-II along the last axis, first ``n_out`` coefficients:
    ``[..., n] -> [..., n_out]`` (``scipy.fft.dct(x, norm="ortho")[..., :n_out]``)."""
    n_in = x.shape[-1]
    n_out = n_in if n_out is None else n_out
    if not 1 <= n_out <= n_in:
        raise ConfigError(f"n_out={n_out} must be in [1, {n_in}] (the input size)")
    k = np.arange(n_out)[:, None]
    basis = np.cos(np.pi * k * (2 * np.arange(n_in) + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    return jnp.asarray(x, jnp.float32) @ jnp.asarray(basis.T, jnp.float32)


def fbank(
    wav: jax.Array,
    sample_rate: int,
    n_mels: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    n_fft: int | None = None,
    f_min: float = 20.0,
    f_max: float | None = None,
    preemphasis: float = 0.97,
    log_floor: float = 1e-6,
    center: bool = True,
) -> jax.Array:
    """Log-mel filterbank energies ``[..., frames, n_mels]`` of ``wav`` ``[..., samples]``.

    Steps: pre-emphasis over the whole signal, ``y[n] = x[n] - preemphasis * x[n - 1]`` with
    ``x[-1] = x[0]`` (0 disables); STFT with a periodic Hann window of ``frame_length_ms``
    centred in ``n_fft`` (default: next power of two) samples, hop ``frame_shift_ms``,
    ``center=True``; power spectrum ``|X|^2``; HTK mel filters (``mel_filterbank``);
    ``log(max(energy, log_floor))``. Unlike Kaldi there is no per-frame DC removal, no dither
    and no povey window; frames are centred (``1 + samples // hop``) rather than snipped.
    ``center=False`` takes frames of ``n_fft`` samples from the signal as given (for signals
    already padded, e.g. by ``reflect_pad_lengths``): ``1 + (samples - n_fft) // hop`` frames.
    """
    _check_sample_rate(sample_rate)
    win_length = round(sample_rate * frame_length_ms / 1000)
    hop_length = round(sample_rate * frame_shift_ms / 1000)
    if win_length < 1 or hop_length < 1:
        raise ConfigError(
            f"frame_length_ms={frame_length_ms} / frame_shift_ms={frame_shift_ms} give fewer "
            f"than one sample at {sample_rate} Hz; use longer frames"
        )
    if not 0.0 <= preemphasis < 1.0:
        raise ConfigError(f"preemphasis={preemphasis} must be in [0, 1); 0 disables it")
    if log_floor <= 0.0:
        raise ConfigError(f"log_floor={log_floor} must be positive")
    n_fft = 1 << (win_length - 1).bit_length() if n_fft is None else n_fft
    wav = as_real_signal(wav, "fbank input wav")
    if preemphasis:
        previous = jnp.concatenate([wav[..., :1], wav[..., :-1]], axis=-1)
        wav = wav - preemphasis * previous
    spectrum = stft(wav, n_fft, hop_length, win_length, window="hann", center=center)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    filters = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
    return jnp.log(jnp.maximum(power @ filters, log_floor))


def mfcc(
    wav: jax.Array, sample_rate: int, n_mfcc: int = 13, n_mels: int = 40, **fbank_options
) -> jax.Array:
    """MFCCs ``[..., frames, n_mfcc]``: orthonormal DCT-II of ``fbank(wav, sample_rate, n_mels,
    **fbank_options)``, first ``n_mfcc`` coefficients (c0 included, no liftering)."""
    if n_mfcc > n_mels:
        raise ConfigError(f"n_mfcc={n_mfcc} exceeds n_mels={n_mels}; raise n_mels")
    return dct(fbank(wav, sample_rate, n_mels, **fbank_options), n_mfcc)


def magnitude(spectrum: jax.Array) -> jax.Array:
    """``|X|`` of a complex array, with gradient 0 (not NaN) where ``X == 0``."""
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    nonzero = power > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, power, 1.0)), 0.0)


def log_magnitude(spectrum: jax.Array, floor: float = 1e-8) -> jax.Array:
    """Natural-log magnitude ``log(|X| + floor)`` of a complex STFT ``[..., frames, freqs]``
    (log power is twice this, up to the floor)."""
    if floor <= 0.0:
        raise ConfigError(f"floor={floor} must be positive so that log(|X| + floor) is finite")
    return jnp.log(magnitude(spectrum) + floor)


def mean_var_stats(features: jax.Array, axis: int | tuple[int, ...] | None = None):
    """Mean and (population) standard deviation of ``features`` ``[..., features]`` over
    ``axis`` (default: every axis but the last), in float32, two-pass for stability."""
    features = jnp.asarray(features, jnp.float32)
    axis = tuple(range(features.ndim - 1)) if axis is None else axis
    mean = jnp.mean(features, axis=axis, keepdims=True)
    variance = jnp.mean(jnp.square(features - mean), axis=axis)
    return jnp.squeeze(mean, axis), jnp.sqrt(variance)


def normalize(features: jax.Array, mean: jax.Array, std: jax.Array, eps: float = 1e-5):
    """``(features - mean) / max(std, eps)``, broadcasting ``mean``/``std`` ``[features]``."""
    return (jnp.asarray(features, jnp.float32) - mean) / jnp.maximum(std, eps)


def cmvn(features: jax.Array, axis: int = -2, variance: bool = True, eps: float = 1e-5):
    """Per-utterance mean (and, if ``variance``, variance) normalisation over ``axis`` (time in
    ``[..., frames, features]``); divides by ``max(std, eps)`` with a finite gradient."""
    features = jnp.asarray(features, jnp.float32)
    centred = features - jnp.mean(features, axis=axis, keepdims=True)
    if not variance:
        return centred
    mean_square = jnp.mean(jnp.square(centred), axis=axis, keepdims=True)
    return centred * jax.lax.rsqrt(jnp.maximum(mean_square, eps**2))


class RunningStats(NamedTuple):
    """Dataset feature statistics in float64: vectors count, mean and summed squared deviations
    (``m2``), merged batch by batch with Chan et al.'s parallel update (stable, exact)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray


def running_stats_init(n_features: int) -> RunningStats:
    """Empty statistics for ``n_features``-dimensional feature vectors."""
    zeros = np.zeros(n_features, np.float64)
    return RunningStats(np.zeros((), np.float64), zeros, zeros.copy())


def running_stats_update(
    stats: RunningStats, features: np.ndarray, mask: np.ndarray | None = None
) -> RunningStats:
    """``stats`` plus every vector of ``features`` ``[..., n_features]`` (host-side numpy);
    ``mask`` ``[...]`` (bool, e.g. the valid frames of a padded batch) selects vectors."""
    features = np.asarray(features, np.float64)
    if features.ndim == 0 or features.shape[-1] != stats.mean.shape[0]:
        raise ConfigError(
            f"features have shape {features.shape}; expected [..., {stats.mean.shape[0]}] "
            "as in running_stats_init"
        )
    vectors = features.reshape(-1, features.shape[-1])
    if mask is not None:
        vectors = vectors[np.broadcast_to(mask, features.shape[:-1]).reshape(-1).astype(bool)]
    if not np.all(np.isfinite(vectors)):
        raise NonFiniteAudioError("features contain NaN/Inf; check the audio and the log floor")
    batch_count = vectors.shape[0]
    if batch_count == 0:
        return stats
    batch_mean = vectors.mean(axis=0)
    batch_m2 = np.square(vectors - batch_mean).sum(axis=0)
    count = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * (batch_count / count)
    m2 = stats.m2 + batch_m2 + np.square(delta) * (stats.count * batch_count / count)
    return RunningStats(count, mean, m2)


def running_stats_finalize(stats: RunningStats) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 ``[n_features]`` (population std) of the accumulated vectors."""
    if stats.count == 0:
        raise ConfigError("running stats are empty; call running_stats_update with data first")
    std = np.sqrt(stats.m2 / stats.count)
    return stats.mean.astype(np.float32), std.astype(np.float32)


def reflect_pad_lengths(wav: jax.Array, lengths: jax.Array, pad: int) -> jax.Array:
    """Each row of a padded batch reflect-padded by ``pad`` samples at its own ends:
    ``wav`` ``[B, S]``, ``lengths`` ``[B]`` (samples, each above ``pad``) -> ``[B, S + 2 pad]``.

    Row ``b`` becomes ``x[pad], …, x[1], x[0], …, x[n-1], x[n-2], …, x[n-1-pad]`` (``n =
    lengths[b]``, numpy's ``mode="reflect"``) followed by copies of its edge samples, so that
    ``fbank(..., center=False)`` of the result gives each utterance's first ``1 + n // hop``
    frames exactly as ``center=True`` gives them for the utterance alone.
    """
    wav = as_real_signal(wav, "reflect_pad_lengths input wav")
    lengths = jnp.asarray(lengths, jnp.int32)[:, None]
    source = jnp.arange(wav.shape[-1] + 2 * pad)[None, :] - pad
    source = jnp.abs(source)
    source = jnp.where(source >= lengths, 2 * (lengths - 1) - source, source)
    return jnp.take_along_axis(wav, jnp.clip(source, 0, lengths - 1), axis=-1)


def frame_log_energy(
    wav: jax.Array,
    sample_rate: int,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    n_fft: int | None = None,
    floor: float = 1e-10,
    center: bool = True,
) -> jax.Array:
    """Log energy ``log(max(sum x[n]^2, floor))`` of the raw (unwindowed, not pre-emphasised)
    samples of each frame: ``[..., samples] -> [..., frames]``, the frames of ``fbank`` with the
    same arguments (``frame_length_ms`` samples centred in each ``n_fft`` frame), Kaldi's
    ``raw_energy``."""
    _check_sample_rate(sample_rate)
    win_length = round(sample_rate * frame_length_ms / 1000)
    hop_length = round(sample_rate * frame_shift_ms / 1000)
    n_fft = 1 << (win_length - 1).bit_length() if n_fft is None else n_fft
    wav = as_real_signal(wav, "frame_log_energy input wav")
    if center:
        wav = jnp.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    left = (n_fft - win_length) // 2
    frames = frame(wav, n_fft, hop_length)[..., left : left + win_length]
    return jnp.log(jnp.maximum(jnp.sum(jnp.square(frames), axis=-1), floor))


def _frame_counts(batch_shape: tuple[int, ...], frames: int, lengths) -> jax.Array:
    """Valid frames per utterance, int32 ``batch_shape`` (all ``frames`` when ``lengths`` is
    None)."""
    if lengths is None:
        return jnp.full(batch_shape, frames, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if lengths.shape != batch_shape:
        raise ConfigError(
            f"lengths has shape {lengths.shape}; expected the leading shape {batch_shape} of "
            "the features (one frame count per utterance)"
        )
    return lengths


def _valid_mask(counts: jax.Array, frames: int) -> jax.Array:
    """``[..., frames]`` True where the frame index is below the utterance's count."""
    return jnp.arange(frames) < counts[..., None]


def deltas(features: jax.Array, lengths: jax.Array | None = None, window: int = 2) -> jax.Array:
    """Regression deltas over time (HTK, Kaldi ``add-deltas``, ``librosa.feature.delta`` with
    ``width = 2 window + 1, mode="nearest"``) of ``features`` ``[..., T, D]``:
    ``d[t] = sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2)``, ``n = 1..window``, indices clamped
    to each utterance's frames ``0 .. lengths - 1`` (``lengths`` ``[...]`` frames, default all);
    frames past ``lengths`` are zero."""
    if window < 1:
        raise ConfigError(f"deltas: window={window} must be >= 1")
    features = jnp.asarray(features, jnp.float32)
    frames = features.shape[-2]
    counts = _frame_counts(features.shape[:-2], frames, lengths)[..., None]
    time = jnp.arange(frames)
    total = jnp.zeros_like(features)
    for n in range(1, window + 1):
        ahead = jnp.clip(time + n, 0, counts - 1)[..., None]
        behind = jnp.clip(time - n, 0, counts - 1)[..., None]
        diff = jnp.take_along_axis(features, ahead, -2) - jnp.take_along_axis(features, behind, -2)
        total = total + n * diff
    scale = 2 * sum(n * n for n in range(1, window + 1))
    return jnp.where((time < counts)[..., None], total / scale, 0.0)


def sliding_cmn(
    features: jax.Array, lengths: jax.Array | None = None, window: int = 300
) -> jax.Array:
    """Sliding-window mean normalisation, Kaldi's ``apply-cmvn-sliding --center=true
    --norm-vars=false --cmn-window=window``: frame ``t`` of ``features`` ``[..., T, D]`` minus
    the mean of the ``min(window, n)`` frames ``[s, s + w)``, ``s = clip(t - window // 2, 0,
    n - w)``, of its utterance of ``n = lengths`` frames (``[...]``, default all); frames past
    ``n`` are zero."""
    if window < 1:
        raise ConfigError(f"sliding_cmn: window={window} must be >= 1")
    features = jnp.asarray(features, jnp.float32)
    frames = features.shape[-2]
    counts = _frame_counts(features.shape[:-2], frames, lengths)
    valid = _valid_mask(counts, frames)[..., None]
    # cumulative sums of the features about their utterance mean stay small, hence exact
    total = jnp.sum(jnp.where(valid, features, 0.0), axis=-2, keepdims=True)
    utterance_mean = total / jnp.maximum(counts, 1)[..., None, None]
    centred = jnp.where(valid, features - utterance_mean, 0.0)
    zeros = jnp.zeros_like(centred[..., :1, :])
    cumulative = jnp.concatenate([zeros, jnp.cumsum(centred, axis=-2)], axis=-2)
    width = jnp.minimum(window, counts)[..., None]
    start = jnp.clip(jnp.arange(frames) - window // 2, 0, counts[..., None] - width)
    window_sum = jnp.take_along_axis(cumulative, (start + width)[..., None], -2)
    window_sum = window_sum - jnp.take_along_axis(cumulative, start[..., None], -2)
    mean = window_sum / jnp.maximum(width, 1)[..., None]
    return jnp.where(valid, centred - mean, 0.0)


def energy_vad(
    log_energy: jax.Array,
    lengths: jax.Array | None = None,
    threshold: float = 5.5,
    mean_scale: float = 0.5,
    context: int = 0,
    proportion: float = 0.6,
) -> jax.Array:
    """Energy-based voice activity, Kaldi's ``compute-vad``: bool ``[..., T]`` of
    ``log_energy`` ``[..., T]`` (Kaldi's units: log energy of int16-scale samples).

    A frame is above threshold when its log energy exceeds ``threshold + mean_scale ·
    (mean log energy of the utterance)``; it is voiced when at least ``proportion`` of the
    frames within ``context`` of it (clamped to the utterance) are above threshold. Frames
    past ``lengths`` (``[...]`` frames, default all) are not voiced.
    """
    if context < 0:
        raise ConfigError(f"energy_vad: context={context} must be >= 0")
    log_energy = jnp.asarray(log_energy, jnp.float32)
    frames = log_energy.shape[-1]
    counts = _frame_counts(log_energy.shape[:-1], frames, lengths)
    valid = _valid_mask(counts, frames)
    mean = jnp.sum(jnp.where(valid, log_energy, 0.0), -1) / jnp.maximum(counts, 1)
    above = valid & (log_energy > (threshold + mean_scale * mean)[..., None])
    zeros = jnp.zeros((*above.shape[:-1], 1), jnp.int32)
    cumulative = jnp.concatenate([zeros, jnp.cumsum(above.astype(jnp.int32), axis=-1)], -1)
    time = jnp.arange(frames)
    high = jnp.minimum(time + context, counts[..., None] - 1)
    low = jnp.broadcast_to(jnp.maximum(time - context, 0), high.shape)
    voiced_count = jnp.take_along_axis(cumulative, high + 1, -1)
    voiced_count = voiced_count - jnp.take_along_axis(cumulative, low, -1)
    window = (high - low + 1).astype(jnp.float32)
    return valid & (voiced_count >= window * proportion)


def _check_sample_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise SampleRateError(f"sample_rate={sample_rate!r} must be a positive int (Hz)")

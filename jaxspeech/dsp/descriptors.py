"""Fused per-segment audio descriptors for speech <-> music matching, in JAX.

One power spectrum (``dsp.stft``, periodic Hann, ``center=True``: frame ``t`` is centred on
sample ``t * hop``) feeds every family; a clip of ``n`` samples has ``1 + n // hop`` frames,
cut into segments of ``segment_seconds`` every ``segment_hop_seconds``. Each family gives
per-segment values, concatenated in the order of ``DescriptorConfig.families``:

``logmel``   mean and std over the segment of the HTK mel power in dB (``n_mels`` each).
``mfcc``     mean and std of the orthonormal DCT-II of that dB mel power (``n_mfcc`` each).
``chroma``   mean and std of the 12 pitch classes (librosa's chroma filters, tuning 0, C
             first), each frame divided by its largest class.
``spectral`` mean and std of centroid, bandwidth (p = 2), roll-off (``rolloff`` share of the
             magnitude), flatness (of the power, floor 1e-10) and contrast (6 octave bands
             from 200 Hz plus the rest, peak/valley ``contrast_quantile`` means, in dB) of
             the magnitude spectrum (Hz for the first three).
``onset``    mean and std of the onset strength (mean over mel bands of the positive
             frame-to-frame rise of the dB mel power; 0 at the first frame), the tempo (BPM:
             the lag maximising the segment's onset autocorrelation, summed over the lag and its two
             neighbours, times a log-normal prior around ``tempo_prior_bpm``, one octave
             wide, over 30-300 BPM) and the pulse clarity (that sum at the chosen lag over
             the sum at lag 0).
``rms``      loudness dynamics of the frame RMS in dB (frames of ``n_fft`` samples of the
             zero-padded signal): mean, std, range (max - min) and mean absolute change.

The dB values are ``10 log10(max(x, 1e-10))`` with no top-dB clamp (librosa clamps
``power_to_db`` 80 dB below the array's maximum; on real audio that rarely bites).
``feature_names(cfg)`` names every column; a trained model records them (see
``jaxspeech.models.bgm``) and refuses descriptors of another layout.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.dsp.features import _check_sample_rate, dct, mel_filterbank
from jaxspeech.dsp.stft import as_real_signal, frame, stft
from jaxspeech.errors import ConfigError, TooShortError

FAMILIES = ("logmel", "mfcc", "chroma", "spectral", "onset", "rms")
SPECTRAL_SHAPE = ("centroid", "bandwidth", "rolloff", "flatness")
CONTRAST_BANDS = 6
CONTRAST_FMIN = 200.0
TEMPO_RANGE_BPM = (30.0, 300.0)
_AMIN = 1e-10
_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclasses.dataclass(frozen=True)
class DescriptorConfig:
    """Descriptor settings; the families and their order fix the columns.

    Attributes:
      families: names from ``FAMILIES``, each once, in column order.
      sample_rate: rate of the audio (Hz).
      n_fft, hop_length: STFT size and hop (samples; periodic Hann window of ``n_fft``).
      n_mels, n_mfcc: mel bands (HTK scale, 0 Hz to Nyquist, no area normalisation), MFCCs.
      segment_seconds, segment_hop_seconds: segment length and hop.
      rolloff: the share of the magnitude below the roll-off frequency.
      contrast_quantile: share of a band's bins averaged for its peak and its valley.
      tempo_prior_bpm: centre of the tempo prior.
    """

    families: tuple[str, ...] = FAMILIES
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 40
    n_mfcc: int = 20
    segment_seconds: float = 3.0
    segment_hop_seconds: float = 1.5
    rolloff: float = 0.85
    contrast_quantile: float = 0.02
    tempo_prior_bpm: float = 120.0

    def __post_init__(self):
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families or len(set(self.families)) != len(self.families):
            raise ConfigError(
                f"model.features.families={self.families}: give each of {FAMILIES} at most "
                "once, at least one"
            )
        if self.n_mfcc > self.n_mels or self.hop_length > self.n_fft:
            raise ConfigError("model.features: need n_mfcc <= n_mels and hop_length <= n_fft")
        if not 0 < self.rolloff < 1 or not 0 < self.contrast_quantile < 0.5:
            raise ConfigError("model.features: rolloff must be in (0, 1), contrast_quantile in "
                              "(0, 0.5)")  # fmt: skip
        if not 0 < self.segment_hop_seconds <= self.segment_seconds:
            raise ConfigError("model.features: need 0 < segment_hop_seconds <= segment_seconds")
        if CONTRAST_FMIN * 2 ** (CONTRAST_BANDS - 1) >= self.sample_rate / 2:
            raise ConfigError(
                f"model.features.sample_rate={self.sample_rate}: spectral contrast needs a "
                f"Nyquist above {CONTRAST_FMIN * 2 ** (CONTRAST_BANDS - 1):g} Hz"
            )

    @property
    def segment_frames(self) -> int:
        return max(1, round(self.segment_seconds * self.sample_rate / self.hop_length))

    @property
    def segment_hop_frames(self) -> int:
        return max(1, round(self.segment_hop_seconds * self.sample_rate / self.hop_length))

    def num_segments(self, num_samples: int) -> int:
        """Segments of a clip of ``num_samples`` (0 when it is shorter than one segment)."""
        frames = 1 + num_samples // self.hop_length
        if frames < self.segment_frames:
            return 0
        return 1 + (frames - self.segment_frames) // self.segment_hop_frames


def _stats_names(family: str, names: list[str]) -> list[str]:
    return [f"{family}.{stat}.{n}" for stat in ("mean", "std") for n in names]


def family_names(family: str, cfg: DescriptorConfig) -> list[str]:
    """Column names of one family."""
    if family == "logmel":
        return _stats_names(family, [str(k) for k in range(cfg.n_mels)])
    if family == "mfcc":
        return _stats_names(family, [str(k) for k in range(cfg.n_mfcc)])
    if family == "chroma":
        return _stats_names(family, list(_PITCH_CLASSES))
    if family == "spectral":
        contrast = [f"contrast{k}" for k in range(CONTRAST_BANDS + 1)]
        return _stats_names(family, [*SPECTRAL_SHAPE, *contrast])
    if family == "onset":
        return ["onset.mean.strength", "onset.std.strength", "onset.tempo_bpm", "onset.clarity"]
    return ["rms.mean_db", "rms.std_db", "rms.range_db", "rms.mean_abs_change_db"]


def feature_names(cfg: DescriptorConfig) -> tuple[str, ...]:
    """Every column name of ``describe``'s output, in order."""
    return tuple(n for family in cfg.families for n in family_names(family, cfg))


def layout_fingerprint(cfg: DescriptorConfig) -> int:
    """CRC-32 of the column names and the settings that change their values."""
    settings = dataclasses.asdict(cfg)
    return zlib.crc32(repr((feature_names(cfg), sorted(settings.items()))).encode())


def power_to_db(power: jax.Array) -> jax.Array:
    """``10 log10(max(power, 1e-10))``."""
    return 10.0 * jnp.log10(jnp.maximum(power, _AMIN))


def chroma_filterbank(sample_rate: int, n_fft: int) -> np.ndarray:
    """Chroma filters ``[n_fft // 2 + 1, 12]`` (float32), C first: librosa's construction
    (Ellis' chromagram: Gaussian bumps two bins wide around each pitch class, each FFT bin's
    column L2-normalised, then weighted by a Gaussian over octaves centred on octave 5 with
    width 2), tuning 0 (A4 = 440 Hz)."""
    n_chroma = 12
    freqs = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    bins = n_chroma * np.log2(freqs / (440.0 / 16))
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))  # the DC bin: 1.5 octaves below
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1.0]))
    distance = bins[None, :] - np.arange(n_chroma, dtype=np.float64)[:, None]
    half = np.round(n_chroma / 2)
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / widths[None, :]) ** 2)
    weights /= np.linalg.norm(weights, axis=0, keepdims=True)
    weights *= np.exp(-0.5 * ((bins / n_chroma - 5.0) / 2.0) ** 2)[None, :]
    weights = np.roll(weights, -3, axis=0)  # A first -> C first
    return weights[:, : n_fft // 2 + 1].T.astype(np.float32)


def _contrast_bands(freqs: np.ndarray, quantile: float) -> list[tuple[int, int, int]]:
    """``(first bin, end bin, bins averaged)`` of each contrast band (librosa's edges: octaves
    from ``CONTRAST_FMIN``, each band but the first reaching one bin below its lower edge, the
    last up to Nyquist)."""
    edges = np.zeros(CONTRAST_BANDS + 2)
    edges[1:] = CONTRAST_FMIN * 2.0 ** np.arange(CONTRAST_BANDS + 1)
    bands = []
    for k, (low, high) in enumerate(itertools.pairwise(edges)):
        member = (freqs >= low) & (freqs <= high)
        idx = np.flatnonzero(member)
        if k > 0:
            member[idx[0] - 1] = True
        if k == CONTRAST_BANDS:
            member[idx[-1] + 1 :] = True
        chosen = np.flatnonzero(member)
        count = max(1, int(np.rint(quantile * member.sum())))
        end = chosen[-1] + 1 if k == CONTRAST_BANDS else chosen[-1]  # drop the top bin but last
        bands.append((int(chosen[0]), int(end), count))
    return bands


def spectral_shape(magnitude: jax.Array, cfg: DescriptorConfig) -> jax.Array:
    """Per-frame centroid, bandwidth, roll-off (Hz), flatness and contrast (dB)
    ``[..., frames, 4 + 7]`` of a magnitude spectrum ``[..., frames, n_fft // 2 + 1]``."""
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    total = magnitude.sum(-1, keepdims=True)
    share = magnitude / jnp.where(total > 0, total, 1.0)
    centroid = (share * freqs).sum(-1)
    bandwidth = jnp.sqrt((share * jnp.square(freqs - centroid[..., None])).sum(-1))
    reached = jnp.cumsum(magnitude, -1) >= cfg.rolloff * total
    rolloff = jnp.asarray(freqs, jnp.float32)[jnp.argmax(reached, axis=-1)]
    power = jnp.maximum(jnp.square(magnitude), _AMIN)
    flatness = jnp.exp(jnp.mean(jnp.log(power), -1)) / jnp.mean(power, -1)
    contrast = []
    for start, end, count in _contrast_bands(freqs, cfg.contrast_quantile):
        ordered = jnp.sort(magnitude[..., start:end], axis=-1)
        valley, peak = ordered[..., :count].mean(-1), ordered[..., -count:].mean(-1)
        contrast.append(power_to_db(peak) - power_to_db(valley))
    return jnp.stack([centroid, bandwidth, rolloff, flatness, *contrast], axis=-1)


def onset_strength(mel_db: jax.Array) -> jax.Array:
    """``[..., frames]``: mean over bands of ``max(0, mel_db[t] - mel_db[t - 1])``, 0 at
    ``t = 0``, of a dB mel spectrogram ``[..., frames, n_mels]``."""
    rise = jnp.maximum(0.0, mel_db[..., 1:, :] - mel_db[..., :-1, :]).mean(-1)
    return jnp.concatenate([jnp.zeros_like(rise[..., :1]), rise], axis=-1)


def tempo(envelope: jax.Array, cfg: DescriptorConfig) -> tuple[jax.Array, jax.Array]:
    """``(bpm, clarity)``, each ``[...]``, of onset envelopes ``[..., frames]``: the lag
    maximising the autocorrelation (summed over the lag and its neighbours) times a log-normal
    prior (``tempo_prior_bpm``, one octave), over ``TEMPO_RANGE_BPM``; clarity is that sum
    there over the sum at lag 0."""
    n = envelope.shape[-1]
    frame_rate = cfg.sample_rate / cfg.hop_length
    lags = np.arange(1, n)
    bpm = 60.0 * frame_rate / lags
    allowed = (bpm >= TEMPO_RANGE_BPM[0]) & (bpm <= TEMPO_RANGE_BPM[1])
    if not allowed.any():
        raise ConfigError(
            f"a segment of {n} frames holds no lag of {TEMPO_RANGE_BPM} BPM; lengthen "
            "model.features.segment_seconds"
        )
    spectrum = jnp.fft.rfft(envelope, n=2 * n, axis=-1)
    autocorr = jnp.fft.irfft(jnp.square(jnp.abs(spectrum)), n=2 * n, axis=-1)
    # Summed over three neighbouring lags: a period between two frame lags splits its peak.
    smoothed = autocorr[..., :n] + autocorr[..., 1 : n + 1] + jnp.roll(autocorr, 1, -1)[..., :n]
    prior = np.exp(-0.5 * np.square(np.log2(bpm) - np.log2(cfg.tempo_prior_bpm)))
    weighted = jnp.where(allowed, smoothed[..., 1:] * prior, -jnp.inf)
    best = jnp.argmax(weighted, axis=-1)
    chosen = jnp.take_along_axis(smoothed[..., 1:], best[..., None], -1)[..., 0]
    clarity = chosen / jnp.maximum(smoothed[..., 0], _AMIN)
    return jnp.asarray(bpm, jnp.float32)[best], clarity


def frame_rms(wav: jax.Array, cfg: DescriptorConfig) -> jax.Array:
    """RMS ``[..., 1 + samples // hop]`` of frames of ``n_fft`` samples centred on
    ``t * hop`` of the zero-padded ``wav`` ``[..., samples]``."""
    pad = cfg.n_fft // 2
    padded = jnp.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(pad, pad)])
    return jnp.sqrt(jnp.mean(jnp.square(frame(padded, cfg.n_fft, cfg.hop_length)), -1))


def segments(per_frame: jax.Array, cfg: DescriptorConfig) -> jax.Array:
    """Per-frame values ``[..., frames, d]`` cut into ``[..., segments, segment_frames, d]``."""
    moved = jnp.swapaxes(per_frame, -1, -2)  # [..., d, frames]
    cut = frame(moved, cfg.segment_frames, cfg.segment_hop_frames)  # [..., d, S, L]
    return jnp.moveaxis(cut, -3, -1)


def _mean_std(per_frame: jax.Array, cfg: DescriptorConfig) -> jax.Array:
    cut = segments(per_frame, cfg)
    return jnp.concatenate([cut.mean(-2), cut.std(-2)], axis=-1)


def describe(wav: jax.Array, cfg: DescriptorConfig) -> jax.Array:
    """Descriptors ``[..., segments, features]`` (float32; columns ``feature_names(cfg)``) of
    ``wav`` ``[..., samples]`` at ``cfg.sample_rate``.

    Raises:
      TooShortError: the clip is shorter than one segment.
    """
    _check_sample_rate(cfg.sample_rate)
    wav = as_real_signal(wav, "describe input wav")
    if cfg.num_segments(wav.shape[-1]) < 1:
        raise TooShortError(
            f"describe: {wav.shape[-1]} samples are shorter than one segment of "
            f"{cfg.segment_seconds} s at {cfg.sample_rate} Hz; use a longer clip"
        )
    spectrum = stft(wav, cfg.n_fft, cfg.hop_length, window="hann", center=True)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
    mel_db = power_to_db(power @ mel_filterbank(power.shape[-1], cfg.n_mels, cfg.sample_rate))
    parts = []
    for family in cfg.families:
        if family == "logmel":
            parts.append(_mean_std(mel_db, cfg))
        elif family == "mfcc":
            parts.append(_mean_std(dct(mel_db, cfg.n_mfcc), cfg))
        elif family == "chroma":
            chroma = power @ chroma_filterbank(cfg.sample_rate, cfg.n_fft)
            peak = chroma.max(-1, keepdims=True)
            parts.append(_mean_std(chroma / jnp.where(peak > 0, peak, 1.0), cfg))
        elif family == "spectral":
            parts.append(_mean_std(spectral_shape(jnp.sqrt(power), cfg), cfg))
        elif family == "onset":
            envelope = segments(onset_strength(mel_db)[..., None], cfg)[..., 0]  # [..., S, L]
            bpm, clarity = tempo(envelope, cfg)
            stats = [envelope.mean(-1), envelope.std(-1), bpm, clarity]
            parts.append(jnp.stack(stats, axis=-1))
        else:
            loudness = segments(power_to_db(jnp.square(frame_rms(wav, cfg)))[..., None], cfg)
            loudness = loudness[..., 0]
            change = jnp.abs(jnp.diff(loudness, axis=-1)).mean(-1)
            spread = loudness.max(-1) - loudness.min(-1)
            stats = [loudness.mean(-1), loudness.std(-1), spread, change]
            parts.append(jnp.stack(stats, axis=-1))
    return jnp.concatenate(parts, axis=-1)


def describe_fn(cfg: DescriptorConfig):
    """``describe`` jitted for ``cfg``: ``wav [..., samples] -> [..., segments, features]``."""
    return jax.jit(lambda wav: describe(wav, cfg))

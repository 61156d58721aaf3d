"""Short-time Fourier transform and its inverse (weighted overlap-add), batched over leading axes.

Conventions (those of ``torch.stft(normalized=False)`` and librosa): frame ``t`` starts at sample
``t * hop_length`` of the (optionally centre-padded) signal, is multiplied by the window and
transformed with an unscaled real FFT, ``X[t, k] = sum_n w[n] x[t*hop + n] exp(-2πi kn/n_fft)``.

Frames are cut without a gather: the signal is reshaped into ``[chunks, hop]`` rows and each frame
is the concatenation of ``ceil(n_fft / hop)`` consecutive rows (shifted slices, then a reshape);
overlap-add is the transpose (shifted pads summed). Measured on the 2-core CPU (batch 8 x 4 s at
16 kHz, n_fft 512/400, hop 128-256): on par with an index gather, and the whole STFT about 10x
faster forward and 20-30x faster backward than conv-based ``lax.conv_general_dilated_patches``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.errors import AudioError, ConfigError, TooShortError

WINDOW_NAMES = ("hann", "hamming", "rect", "boxcar", "sqrt_hann")
_NOLA_TOLERANCE = 1e-10  # same threshold as scipy.signal.check_NOLA and scipy.signal.istft


def get_window(window: str | np.ndarray, n_fft: int, win_length: int | None = None) -> np.ndarray:
    """The analysis window as a float32 numpy array ``[n_fft]``.

    ``window`` is a name from ``WINDOW_NAMES`` (periodic forms, as ``torch.hann_window`` and
    ``scipy.signal.get_window``) or a concrete array ``[win_length]``. A window shorter than
    ``n_fft`` is zero-padded on both sides so that it sits in the centre of the frame.
    """
    _check_positive(n_fft=n_fft)
    if isinstance(window, str):
        win_length = n_fft if win_length is None else win_length
        _check_positive(win_length=win_length)
        taper = _named_window(window, win_length)
    else:
        if isinstance(window, jax.core.Tracer):
            raise ConfigError("window: a traced array was given; pass a concrete (numpy) window")
        taper = np.asarray(window, dtype=np.float64)
        if taper.ndim != 1 or taper.size == 0:
            raise ConfigError(f"window: expected a 1-D array, got shape {taper.shape}")
        if win_length is not None and win_length != taper.size:
            raise ConfigError(
                f"window has {taper.size} samples but win_length={win_length}; "
                "pass win_length=None or a window of that length"
            )
        win_length = taper.size
    if win_length > n_fft:
        raise ConfigError(f"win_length={win_length} exceeds n_fft={n_fft}; raise n_fft")
    left = (n_fft - win_length) // 2
    return np.pad(taper, (left, n_fft - win_length - left)).astype(np.float32)


def _named_window(name: str, length: int) -> np.ndarray:
    phase = 2.0 * np.pi * np.arange(length) / length
    if name == "hann":
        return 0.5 - 0.5 * np.cos(phase)
    if name == "sqrt_hann":
        return np.sqrt(0.5 - 0.5 * np.cos(phase))
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    if name in ("rect", "boxcar"):
        return np.ones(length)
    raise ConfigError(f"window={name!r} is unknown; use one of {WINDOW_NAMES} or an array")


def check_nola(window: np.ndarray, hop_length: int) -> None:
    """Raises ConfigError unless the squared window ``[n_fft]`` overlap-adds to a positive sum
    everywhere at ``hop_length`` (the NOLA condition that istft needs)."""
    _check_positive(hop_length=hop_length)
    coverage = _squared_window_rows(window, hop_length).sum(axis=0)
    if coverage.min() <= _NOLA_TOLERANCE:
        raise ConfigError(
            f"window/hop_length={hop_length} violate NOLA (the squared windows sum to "
            f"{coverage.min():.3g} at some samples), so istft cannot invert; use a smaller "
            "hop_length or a window without zeros at the hop spacing"
        )


def frame(x: jax.Array, frame_length: int, hop_length: int) -> jax.Array:
    """Overlapping frames ``[..., 1 + (samples - frame_length) // hop, frame_length]`` of ``x``
    ``[..., samples]``, cut without a gather (reshape into hop-sized rows, stack shifted rows)."""
    _check_positive(frame_length=frame_length, hop_length=hop_length)
    n_samples = x.shape[-1]
    if n_samples < frame_length:
        raise TooShortError(
            f"signal has {n_samples} samples, fewer than one frame ({frame_length}); "
            "pad it or use a shorter frame"
        )
    n_frames = 1 + (n_samples - frame_length) // hop_length
    rows_per_frame = -(-frame_length // hop_length)
    n_rows = n_frames + rows_per_frame - 1
    x = _fit_last_axis(x, n_rows * hop_length)
    rows = x.reshape(*x.shape[:-1], n_rows, hop_length)
    shifted = jnp.stack([rows[..., i : i + n_frames, :] for i in range(rows_per_frame)], axis=-2)
    return shifted.reshape(*shifted.shape[:-2], rows_per_frame * hop_length)[..., :frame_length]


def overlap_add(frames: jax.Array, hop_length: int) -> jax.Array:
    """Sums frames ``[..., n_frames, frame_length]`` placed every ``hop_length`` samples into
    ``[..., (n_frames - 1) * hop_length + frame_length]`` (the transpose of ``frame``)."""
    _check_positive(hop_length=hop_length)
    n_frames, frame_length = frames.shape[-2:]
    rows_per_frame = -(-frame_length // hop_length)
    lead = [(0, 0)] * (frames.ndim - 2)
    padded = jnp.pad(frames, [*lead, (0, 0), (0, rows_per_frame * hop_length - frame_length)])
    rows = padded.reshape(*frames.shape[:-1], rows_per_frame, hop_length)
    total = sum(
        jnp.pad(rows[..., i, :], [*lead, (i, rows_per_frame - 1 - i), (0, 0)])
        for i in range(rows_per_frame)
    )
    return total.reshape(*total.shape[:-2], -1)[..., : (n_frames - 1) * hop_length + frame_length]


def _window_sum(taper: np.ndarray, hop_length: int, n_frames: int) -> np.ndarray:
    """Overlap-added squared window ``[(n_frames - 1) * hop + n_fft]`` (numpy, trace time), built
    hop-sized row by row so that memory stays that of one signal."""
    rows = _squared_window_rows(taper, hop_length)
    total = np.zeros((n_frames + rows.shape[0] - 1, hop_length))
    for i, row in enumerate(rows):
        total[i : i + n_frames] += row
    return total.reshape(-1)[: (n_frames - 1) * hop_length + taper.size]


def _squared_window_rows(taper: np.ndarray, hop_length: int) -> np.ndarray:
    """The squared window, zero-padded to whole hops, as float64 rows ``[ceil(n / hop), hop]``."""
    rows_per_frame = -(-taper.size // hop_length)
    squared = np.square(taper.astype(np.float64))
    squared = np.pad(squared, (0, rows_per_frame * hop_length - taper.size))
    return squared.reshape(rows_per_frame, hop_length)


def stft(
    x: jax.Array,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str | np.ndarray = "hann",
    center: bool = True,
) -> jax.Array:
    """Complex64 STFT ``[..., frames, n_fft // 2 + 1]`` of real ``x`` ``[..., samples]``.

    ``center=True`` reflect-pads ``n_fft // 2`` samples on both sides, giving
    ``1 + samples // hop_length`` frames; otherwise ``1 + (samples - n_fft) // hop_length``.
    Unscaled, as torch/librosa. ``scipy.signal.stft`` differs in two ways: it divides by
    ``sum(window)`` and pads with zeros (``boundary='zeros'``, ``padded=True``); with
    ``boundary=None, padded=False`` on the reflect-padded signal its frames equal these.
    bfloat16/float16 input is computed in float32.
    """
    x = as_real_signal(x, "stft input x")
    taper = get_window(window, n_fft, win_length)
    _check_positive(hop_length=hop_length)
    if center:
        pad = n_fft // 2
        if x.shape[-1] <= pad:
            raise TooShortError(
                f"stft input has {x.shape[-1]} samples; center=True needs more than "
                f"n_fft // 2 = {pad} for reflect padding; pad the signal or lower n_fft"
            )
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return jnp.fft.rfft(frame(x, n_fft, hop_length) * taper, n=n_fft, axis=-1)


def istft(
    spectrum: jax.Array,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: str | np.ndarray = "hann",
    center: bool = True,
    length: int | None = None,
) -> jax.Array:
    """Inverse of ``stft``: ``spectrum`` ``[..., frames, n_fft // 2 + 1]`` -> ``[..., samples]``.

    Weighted overlap-add: inverse FFT, multiply by the window, overlap-add, divide by the
    overlap-added squared window (left as is where that sum is below 1e-10, i.e. at the outer
    edges when ``center=False``). Raises ConfigError when the window and hop violate NOLA.
    Without ``length`` the output has ``(frames - 1) * hop + n_fft`` samples, less
    ``2 * (n_fft // 2)`` when ``center``; ``length`` trims or zero-pads to that many samples.
    Samples that no frame covers (possible only when ``hop_length > n_fft // 2``) are zero.
    Matches ``scipy.signal.istft(spectrum.T / sum(window), boundary=True)`` (see ``stft``).
    """
    if spectrum.ndim < 2 or spectrum.shape[-1] != n_fft // 2 + 1:
        raise ConfigError(
            f"istft input has shape {spectrum.shape}; expected [..., frames, n_fft // 2 + 1 = "
            f"{n_fft // 2 + 1}]; check n_fft"
        )
    if length is not None and length < 0:
        raise ConfigError(f"length={length} must be non-negative or None")
    taper = get_window(window, n_fft, win_length)
    check_nola(taper, hop_length)
    frames = jnp.fft.irfft(spectrum.astype(jnp.complex64), n=n_fft, axis=-1) * taper
    signal = overlap_add(frames, hop_length)
    window_sum = _window_sum(taper, hop_length, spectrum.shape[-2])
    covered = window_sum > _NOLA_TOLERANCE
    inverse_sum = np.where(covered, 1.0 / np.where(covered, window_sum, 1.0), 1.0)
    signal = signal * inverse_sum.astype(np.float32)
    start = n_fft // 2 if center else 0
    if length is None:
        length = signal.shape[-1] - 2 * start
    return _fit_last_axis(signal[..., start:], length)


def _fit_last_axis(x: jax.Array, size: int) -> jax.Array:
    """Trims or zero-pads the last axis of ``x`` to ``size``."""
    if x.shape[-1] >= size:
        return x[..., :size]
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])


def as_real_signal(x: jax.Array, name: str) -> jax.Array:
    """``x`` ``[..., samples]`` as float32; raises AudioError for a scalar or complex ``x``."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise AudioError(f"{name} is a scalar; expected a signal [..., samples]")
    if not jnp.issubdtype(x.dtype, jnp.floating) and not jnp.issubdtype(x.dtype, jnp.integer):
        raise AudioError(f"{name} has dtype {x.dtype}; expected a real signal (take .real?)")
    return x.astype(jnp.float32)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int | np.integer) or value <= 0:
            raise ConfigError(f"{name}={value!r} must be a positive int (a static Python int)")

"""Perceptual quality and intelligibility: PESQ (``pesq`` package) and STOI (``pystoi``).

Both are host (numpy) metrics on ``[..., samples]`` inputs, looped over the leading axes. Bad
input is refused with a ``jaxspeech.errors`` exception before the package is called, because
the packages either print usage text and raise bare errors (pesq) or warn and return 1e-5
(pystoi on audio that is too short or mostly silent).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pesq as pesq_package
from pystoi import utils as stoi_utils

from jaxspeech.audio import validate
from jaxspeech.errors import AudioError, ConfigError, SampleRateError, TooShortError
from jaxspeech.metrics.separation import check_not_silent

# the module (``pystoi.stoi`` the attribute is the function), for its constants
stoi_module = importlib.import_module("pystoi.stoi")

PESQ_MODES = {8000: "nb", 16000: "wb"}  # default mode per supported rate
PESQ_MIN_SECONDS = 0.25  # the ITU P.862 code refuses shorter buffers
STOI_MIN_FRAMES = stoi_module.N  # 30 non-silent frames (128-sample hop at 10 kHz: 384 ms)
STOI_MIN_SAMPLE_RATE = 8000  # its third-octave bands reach 4.3 kHz


def _checked_pair(ref, est) -> tuple[np.ndarray, np.ndarray]:
    """Validates ``ref``/``est`` ``[..., samples]``: equal shapes, finite, non-silent."""
    ref = validate(np.asarray(ref, dtype=np.float64), "ref")
    est = validate(np.asarray(est, dtype=np.float64), "est")
    if ref.shape != est.shape:
        raise AudioError(
            f"ref {ref.shape} and est {est.shape} must have the same shape [..., samples]; "
            "trim or pad the estimate to the reference length"
        )
    check_not_silent(ref, "ref")
    check_not_silent(est, "est")
    return ref, est


def _per_example(fn: Callable[[np.ndarray, np.ndarray], float], ref, est) -> np.ndarray:
    scores = np.empty(ref.shape[:-1])
    for index in np.ndindex(*scores.shape):
        scores[index] = fn(ref[index], est[index])
    return scores


def pesq(ref, est, sample_rate: int, mode: str | None = None) -> np.ndarray:
    """PESQ (ITU-T P.862 narrow-band / P.862.2 wide-band MOS-LQO) of ``est`` against ``ref``.

    Args:
      ref: clean reference ``[..., samples]``.
      est: processed signal, same shape.
      sample_rate: 8000 or 16000.
      mode: "wb" or "nb"; default "wb" at 16 kHz and "nb" at 8 kHz ("wb" needs 16 kHz).

    Returns:
      float64 scores ``[...]`` (a 0-d array for 1-D input), about -0.5..4.6.

    Raises:
      SampleRateError: rate not 8/16 kHz, or "wb" at 8 kHz. ConfigError: unknown mode.
      TooShortError: under 0.25 s. SilentAudioError: all-zero signal.
      NonFiniteAudioError / EmptyAudioError / AudioError: NaN/Inf, no samples, shape mismatch.
    """
    if sample_rate not in PESQ_MODES:
        raise SampleRateError(
            f"PESQ supports 8000 or 16000 Hz, got {sample_rate}; resample with "
            "jaxspeech.audio.resample"
        )
    mode = PESQ_MODES[sample_rate] if mode is None else mode
    if mode not in ("wb", "nb"):
        raise ConfigError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    if mode == "wb" and sample_rate != 16000:
        raise SampleRateError(
            f"wide-band PESQ needs 16000 Hz audio, got {sample_rate}; resample to 16000 "
            "or use mode='nb'"
        )
    ref, est = _checked_pair(ref, est)
    min_samples = int(np.ceil(PESQ_MIN_SECONDS * sample_rate))
    if ref.shape[-1] < min_samples:
        raise TooShortError(
            f"PESQ needs at least {min_samples} samples ({PESQ_MIN_SECONDS} s at "
            f"{sample_rate} Hz), got {ref.shape[-1]}; score longer utterances"
        )
    return _per_example(lambda r, e: pesq_package.pesq(sample_rate, r, e, mode), ref, est)


def _stoi_frame_count(ref: np.ndarray, sample_rate: int) -> int:
    """STFT frames pystoi keeps after dropping frames 40 dB below the loudest (its own code)."""
    frame, hop = stoi_module.N_FRAME, stoi_module.N_FRAME // 2
    if sample_rate != stoi_module.FS:
        ref = stoi_utils.resample_oct(ref, stoi_module.FS, sample_rate)
    if ref.shape[-1] <= frame:
        return 0
    kept, _ = stoi_utils.remove_silent_frames(ref, ref, stoi_module.DYN_RANGE, frame, hop)
    return len(range(0, kept.shape[-1] - frame, hop))


def stoi(ref, est, sample_rate: int, extended: bool = False) -> np.ndarray:
    """STOI (or extended STOI) of ``est`` against ``ref``, via ``pystoi``.

    Args:
      ref: clean reference ``[..., samples]``.
      est: processed signal, same shape.
      sample_rate: any rate >= 8000 (pystoi resamples to 10 kHz).
      extended: compute ESTOI instead of STOI.

    Returns:
      float64 scores ``[...]`` (a 0-d array for 1-D input), in about 0..1.

    Raises:
      SampleRateError: rate below 8 kHz. TooShortError: fewer than 30 non-silent frames
      (about 0.4 s of speech). SilentAudioError: all-zero signal.
      NonFiniteAudioError / EmptyAudioError / AudioError: NaN/Inf, no samples, shape mismatch.
    """
    if sample_rate < STOI_MIN_SAMPLE_RATE:
        raise SampleRateError(
            f"STOI needs at least {STOI_MIN_SAMPLE_RATE} Hz audio, got {sample_rate}"
        )
    ref, est = _checked_pair(ref, est)
    for index in np.ndindex(*ref.shape[:-1]):
        frames = _stoi_frame_count(ref[index], sample_rate)
        if frames < STOI_MIN_FRAMES:
            raise TooShortError(
                f"ref{list(index)}: STOI needs {STOI_MIN_FRAMES} non-silent frames (about "
                f"0.4 s of speech), got {frames}; score longer utterances"
            )
    return _per_example(
        lambda r, e: stoi_module.stoi(r, e, sample_rate, extended=extended), ref, est
    )

"""Separation metrics: SI-SNR improvement (JAX) and BSS-eval SDR / SDR improvement (host).

Sources are aligned: ``est[..., j, :]`` is scored against ``ref[..., j, :]``. Resolve the
permutation first (``jaxspeech.losses`` PIT) when the model output order is arbitrary; the
metrics never search permutations, so an evaluation table reports exactly the pairing the
training objective chose.

A mixture ``mix`` is either ``[..., samples]`` (one mixture shared by all sources, broadcast
over the source axis) or already has the shape of ``ref``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import solve_toeplitz

from jaxspeech.audio import validate
from jaxspeech.errors import AudioError, SilentAudioError
from jaxspeech.losses import si_snr

SDR_FILTER_LENGTH = 512  # distortion-filter taps, as museval / fast_bss_eval / mir_eval
SDR_MAX_DB = 150.0  # |SDR| cap: float64 cannot resolve a coherence closer to 0 or 1


def check_not_silent(x, name: str) -> None:
    """Raises SilentAudioError if any signal in concrete ``x`` ``[..., samples]`` is all zero.

    Traced values (inside ``jax.jit``/``vmap``) cannot be inspected and are not checked.
    """
    if isinstance(x, jax.core.Tracer):
        return
    x = np.asarray(x)
    silent = ~np.any(x != 0, axis=-1)
    if np.any(silent):
        first = tuple(int(i) for i in np.argwhere(silent)[0])
        raise SilentAudioError(
            f"{name}: {int(silent.sum())} all-zero signal(s) (first at index {first}); "
            "the metric is undefined for silence, drop these examples"
        )


def _broadcast_mixture(mix, ref_ndim: int):
    """Adds the source axis to a shared mixture ``[..., samples]`` so it broadcasts."""
    return mix[..., None, :] if mix.ndim == ref_ndim - 1 else mix


def si_snr_improvement(est: jax.Array, ref: jax.Array, mix: jax.Array) -> jax.Array:
    """SI-SNR gain of ``est`` over the unprocessed mixture, in dB.

    Args:
      est: estimates ``[..., samples]`` (e.g. ``[batch, n_src, samples]``).
      ref: references, same shape as ``est``.
      mix: mixture, shape of ``ref`` or ``ref.shape`` without the source axis.

    Returns:
      ``si_snr(est, ref) - si_snr(mix, ref)``, shape ``est.shape[:-1]``, float32.

    Raises:
      SilentAudioError: an all-zero ``ref`` or ``mix`` (checked only for concrete inputs; under
        ``jax.jit`` no check is possible and silence gives a meaningless number).
    """
    check_not_silent(ref, "ref")
    check_not_silent(mix, "mix")
    mix = _broadcast_mixture(jnp.asarray(mix), jnp.ndim(ref))
    return si_snr(est, ref) - si_snr(jnp.broadcast_to(mix, jnp.shape(ref)), ref)


def _host_float64(x, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array; raises EmptyAudioError / NonFiniteAudioError."""
    return validate(np.asarray(x, dtype=np.float64), name)


def sdr(est, ref, filter_length: int = SDR_FILTER_LENGTH) -> np.ndarray:
    """BSS-eval signal-to-distortion ratio of each aligned source over the whole signal, in dB.

    The target is the projection of the estimate onto the span of ``filter_length`` delayed
    copies of its own reference (a time-invariant distortion filter);
    ``SDR = 10 log10(|target|^2 / |est - target|^2)``. The filter solves the auto-correlation
    Toeplitz system (Levinson, scipy) with FFT statistics, as ``fast_bss_eval.sdr`` and
    ``mir_eval.separation.bss_eval_sources`` do, but without their permutation search (and
    without museval's framewise windows: one value per whole signal).

    This is a host (numpy float64) metric, not a jnp function: for band-limited speech (e.g.
    resampled to 8 kHz) the Toeplitz matrix has a condition number around 1e8, beyond float32,
    where a Cholesky solve returns NaN. Use it for evaluation tables; use
    ``si_snr_improvement`` inside jitted code.

    Args:
      est: estimates ``[..., n_src, samples]`` (numpy or JAX, any float dtype).
      ref: references, same shape.
      filter_length: distortion-filter taps (512 as in BSS-eval).

    Returns:
      float64 array ``[..., n_src]``, capped to ``[-150, 150]`` dB (an exact copy scores about 150).

    Raises:
      AudioError: shape mismatch. EmptyAudioError / NonFiniteAudioError: no samples, NaN/Inf.
      SilentAudioError: an all-zero reference (an all-zero estimate scores -150 dB).
    """
    est = _host_float64(est, "est")
    ref = _host_float64(ref, "ref")
    if est.shape != ref.shape:
        raise AudioError(f"est {est.shape} and ref {ref.shape} must have the same shape")
    check_not_silent(ref, "ref")
    n_samples = ref.shape[-1]
    n_fft = 1 << (n_samples + filter_length - 2).bit_length()  # no wrap-around at lags < L
    ref_norm = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    est_norm = est / np.maximum(np.linalg.norm(est, axis=-1, keepdims=True), 1e-300)
    ref_spec = np.fft.rfft(ref_norm, n_fft)
    acf = np.fft.irfft(np.abs(ref_spec) ** 2, n_fft)[..., :filter_length]
    xcorr = np.fft.irfft(np.conj(ref_spec) * np.fft.rfft(est_norm, n_fft), n_fft)
    xcorr = xcorr[..., :filter_length]
    coherence = np.empty(ref.shape[:-1])
    for index in np.ndindex(*coherence.shape):
        coherence[index] = xcorr[index] @ solve_toeplitz(acf[index], xcorr[index])
    floor = 10.0 ** (-SDR_MAX_DB / 10.0)
    coherence = np.clip(coherence, floor / (1 + floor), 1 / (1 + floor))
    return 10.0 * np.log10(coherence / (1.0 - coherence))


def sdr_improvement(est, ref, mix, filter_length: int = SDR_FILTER_LENGTH) -> np.ndarray:
    """``sdr(est, ref) - sdr(mix, ref)`` in dB, shape ``[..., n_src]`` (host, float64).

    ``mix`` is ``[..., samples]`` (shared by the sources) or ``[..., n_src, samples]``.

    Raises:
      SilentAudioError: an all-zero ``ref`` or ``mix``; otherwise as ``sdr``.
    """
    ref = _host_float64(ref, "ref")
    mix = _host_float64(mix, "mix")
    check_not_silent(mix, "mix")
    mix = np.broadcast_to(_broadcast_mixture(mix, ref.ndim), ref.shape)
    return sdr(est, ref, filter_length) - sdr(mix, ref, filter_length)

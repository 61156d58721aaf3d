"""Separation metrics: SI-SNR improvement (JAX); BSS-eval SDR, SDR improvement, SIR and SAR
(host).

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
    # every signal on its own: a one-source problem each
    xcorr, acf, _ = _correlations(est[..., None, :], ref[..., None, :], filter_length)
    coherence = np.empty(ref.shape[:-1])
    for index in np.ndindex(*coherence.shape):
        right = xcorr[index][0, 0]
        coherence[index] = right @ solve_toeplitz(acf[index][0, 0], right)
    return _ratio_db(coherence, 1.0 - coherence)


def _correlations(est: np.ndarray, ref: np.ndarray, filter_length: int):
    """``(xcorr, acf, full)`` of unit-norm signals ``[..., n_src, samples]``:
    ``xcorr[..., j, i, l] = <ref_i delayed by l, est_j>``, ``acf[..., j, i, l]`` the
    auto-correlation of ``ref_i`` at lag ``l`` (repeated over ``j``) and ``full[..., i, k, :]``
    the circular cross-correlation of ``ref_i`` with ``ref_k`` (every lag)."""
    n_samples = ref.shape[-1]
    n_fft = 1 << (n_samples + filter_length - 2).bit_length()  # no wrap-around at lags < L
    ref_norm = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
    est_norm = est / np.maximum(np.linalg.norm(est, axis=-1, keepdims=True), 1e-300)
    ref_spec = np.fft.rfft(ref_norm, n_fft)
    est_spec = np.fft.rfft(est_norm, n_fft)
    full = np.fft.irfft(np.conj(ref_spec)[..., :, None, :] * ref_spec[..., None, :, :], n_fft)
    xcorr = np.fft.irfft(np.conj(ref_spec)[..., None, :, :] * est_spec[..., :, None, :], n_fft)
    acf = np.diagonal(full, axis1=-3, axis2=-2).swapaxes(-1, -2)[..., :filter_length]
    acf = np.broadcast_to(acf[..., None, :, :], (*xcorr.shape[:-1], filter_length))
    return xcorr[..., :filter_length], acf, full


def _ratio_db(signal: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """``10 log10(signal / distortion)`` of energy shares of a unit-norm estimate, capped to
    ``[-SDR_MAX_DB, SDR_MAX_DB]`` (float64 cannot resolve shares closer to 0 or 1)."""
    floor = 10.0 ** (-SDR_MAX_DB / 10.0)
    signal, distortion = np.maximum(signal, 0.0), np.maximum(distortion, 0.0)
    ratio = (signal + floor * 1e-3) / (distortion + floor * 1e-3)
    return 10.0 * np.log10(np.clip(ratio, floor, 1.0 / floor))


def bss_eval(est, ref, filter_length: int = SDR_FILTER_LENGTH) -> dict[str, np.ndarray]:
    """BSS-eval decomposition of each aligned source's estimate: ``{"SDR", "SIR", "SAR"}`` in
    dB, each ``[..., n_src]`` (host, float64; capped to ``[-150, 150]`` dB).

    ``est_j = s_target + e_interf + e_artif``: ``s_target`` is the projection onto
    ``filter_length`` delays of ``ref_j`` (as in :func:`sdr`), ``s_target + e_interf`` the
    projection onto the delays of every reference, ``e_artif`` the rest.
    ``SIR = |s_target|² / |e_interf|²``, ``SAR = |s_target + e_interf|² / |e_artif|²``, as
    ``mir_eval.separation.bss_eval_sources`` and ``fast_bss_eval.bss_eval_sources`` compute
    them without their permutation search (and without regularisation).

    Raises: as :func:`sdr`.
    """
    est = _host_float64(est, "est")
    ref = _host_float64(ref, "ref")
    if est.shape != ref.shape or est.ndim < 2:
        raise AudioError(
            f"est {est.shape} and ref {ref.shape} must have the same shape [..., n_src, samples]"
        )
    check_not_silent(ref, "ref")
    n_src = ref.shape[-2]
    xcorr, _, full = _correlations(est, ref, filter_length)
    lags = np.arange(filter_length)
    wrapped = (lags[:, None] - lags[None, :]) % full.shape[-1]  # [k, l]: lag k - l
    own, projected = np.empty(ref.shape[:-1]), np.empty(ref.shape[:-1])
    for index in np.ndindex(*ref.shape[:-2]):
        # gram[(i, k), (m, l)] = <ref_i delayed by k, ref_m delayed by l>
        gram = full[index][:, :, wrapped].transpose(0, 2, 1, 3)
        gram = gram.reshape(n_src * filter_length, n_src * filter_length)
        right = xcorr[index].reshape(n_src, n_src * filter_length)  # [j, (i, l)]
        projected[index] = np.sum(right * np.linalg.solve(gram, right.T).T, axis=-1)
        for j in range(n_src):
            own_right, own_acf = xcorr[(*index, j, j)], full[(*index, j, j)][:filter_length]
            own[(*index, j)] = own_right @ solve_toeplitz(own_acf, own_right)
    return {
        "SDR": _ratio_db(own, 1.0 - own),
        "SIR": _ratio_db(own, projected - own),
        "SAR": _ratio_db(projected, 1.0 - projected),
    }


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

"""SI-SNRi against a float64 numpy reference; SDR/SDRi against brute force, fast_bss_eval and
mir_eval on real speech."""

from __future__ import annotations

import fast_bss_eval
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soxr
from scipy.signal import fftconvolve

from jaxspeech.audio import load
from jaxspeech.errors import AudioError, EmptyAudioError, NonFiniteAudioError, SilentAudioError
from jaxspeech.metrics import (
    bss_eval,
    check_not_silent,
    sdr,
    sdr_improvement,
    si_snr_improvement,
)

SR = 8000


def si_snr_reference(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    est = est - est.mean(-1, keepdims=True)
    ref = ref - ref.mean(-1, keepdims=True)
    target = (est * ref).sum(-1, keepdims=True) / (ref * ref).sum(-1, keepdims=True) * ref
    return 10 * np.log10((target**2).sum(-1) / ((est - target) ** 2).sum(-1))


def sdr_brute_force(est: np.ndarray, ref: np.ndarray, taps: int = 512) -> float:
    """Least-squares projection of the zero-padded estimate on ``taps`` delays of ``ref``."""
    n = ref.size
    delays = np.zeros((n + taps - 1, taps))
    for k in range(taps):
        delays[k : k + n, k] = ref
    padded = np.concatenate([est, np.zeros(taps - 1)])
    coef, *_ = np.linalg.lstsq(delays, padded, rcond=None)
    target = delays @ coef
    return 10 * np.log10((target**2).sum() / ((padded - target) ** 2).sum())


@pytest.fixture(scope="module")
def speech(shared_data):
    """Three real utterances (different speakers) and real noise: 2.5 s at 8 kHz, float64."""
    root = shared_data / "librispeech" / "test-other"
    paths = [sorted((root / spk).glob("*.flac"))[0] for spk in ("1998", "2033", "3080")]
    sources = np.stack([load(p, SR)[0][SR : SR + 5 * SR // 2] for p in paths])
    noise_wav, noise_sr = load(sorted((shared_data / "noise").glob("*.wav"))[0])
    noise = soxr.resample(noise_wav, noise_sr, SR)[: sources.shape[-1]]
    return sources.astype(np.float64), noise.astype(np.float64)


def realistic_estimates(sources, noise, rng):
    """Per source: a reverberant-filtered copy + leakage of the others + noise."""
    n, length = sources.shape
    decay = np.exp(-np.arange(200) / 40.0)
    est = []
    for j in range(n):
        room = rng.standard_normal(200) * decay
        room[0] = 3.0
        filtered = fftconvolve(sources[j], room)[:length] / 3.0
        leak = sum(0.2 * (j + 1) * sources[i] for i in range(n) if i != j)
        est.append(filtered + leak + 0.05 * (j + 1) * noise)
    return np.stack(est)


def test_sdr_matches_fast_bss_eval_on_real_speech(speech):
    sources, noise = speech
    rng = np.random.default_rng(1)
    for n_src in (2, 3):
        ref = sources[:n_src]
        est = realistic_estimates(ref, noise, rng)
        expected, perm = fast_bss_eval.sdr(ref, est, filter_length=512, return_perm=True)
        np.testing.assert_array_equal(perm, np.arange(n_src))  # aligned is the best pairing
        got = sdr(est.astype(np.float32), ref.astype(np.float32))
        assert got.shape == (n_src,)
        assert np.all(np.abs(got - expected) < 0.05), (got, expected)
        assert np.ptp(got) > 1.0  # the estimates really differ in quality


@pytest.mark.filterwarnings("ignore:mir_eval.separation.bss_eval_sources:FutureWarning")
def test_sdr_matches_mir_eval(speech):
    mir_eval = pytest.importorskip("mir_eval")
    sources, noise = speech
    ref = sources[:2, : 2 * SR]
    est = realistic_estimates(ref, noise[: 2 * SR], np.random.default_rng(2))
    expected = mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=False)[0]
    np.testing.assert_allclose(sdr(est, ref), expected, atol=0.05)


def test_sdr_matches_brute_force_projection_batched(rng):
    ref = rng.standard_normal((2, 2, 600))
    est = 0.5 * np.roll(ref, 7, axis=-1) + 0.4 * rng.standard_normal(ref.shape)
    got = sdr(est, ref, filter_length=64)
    assert got.shape == (2, 2)
    expected = [[sdr_brute_force(est[b, j], ref[b, j], 64) for j in range(2)] for b in range(2)]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(sdr(est[0, 0], ref[0, 0]), sdr_brute_force(est[0, 0], ref[0, 0]))


def test_sdr_is_invariant_to_filtering_within_512_taps(rng):
    ref = rng.standard_normal(3000)
    ref[-100:] = 0.0  # so that the filtered copy loses no tail when cut to 3000 samples
    est = fftconvolve(ref, rng.standard_normal(100))[:3000]
    assert sdr(est, ref) > 100.0
    assert 15.0 < sdr(est + 0.1 * est.std() * rng.standard_normal(3000), ref) < 25.0
    assert 140.0 < sdr(ref, ref) <= 150.0  # an exact copy hits the float64 cap
    assert sdr(np.zeros(3000), ref) == pytest.approx(-150.0)


def test_sdr_improvement(rng):
    ref = rng.standard_normal((3, 2, 2000))
    mix = ref.sum(axis=1) + 0.1 * rng.standard_normal((3, 2000))
    est = ref + 0.2 * rng.standard_normal(ref.shape)
    got = sdr_improvement(est, ref, mix)
    expected = sdr(est, ref) - sdr(np.stack([mix, mix], axis=1), ref)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert np.all(got > 5.0)
    np.testing.assert_allclose(sdr_improvement(est, ref, np.stack([mix, mix], 1)), got)


def test_sdr_bad_inputs(rng):
    ref = rng.standard_normal((2, 1000))
    with pytest.raises(SilentAudioError, match="ref"):
        sdr(ref, ref * np.array([[1.0], [0.0]]))
    with pytest.raises(SilentAudioError, match="mix"):
        sdr_improvement(ref, ref, np.zeros(1000))
    with pytest.raises(AudioError, match="same shape"):
        sdr(ref[:, :999], ref)
    with pytest.raises(NonFiniteAudioError, match="est"):
        sdr(np.full_like(ref, np.nan), ref)
    with pytest.raises(NonFiniteAudioError, match="mix"):
        sdr_improvement(ref, ref, np.full(1000, np.inf))
    with pytest.raises(EmptyAudioError, match="est"):
        sdr(ref[:, :0], ref[:, :0])


def test_si_snr_improvement_matches_numpy(rng):
    ref = rng.standard_normal((4, 2, 800)).astype(np.float32)
    mix = ref.sum(axis=1) + 0.3 * rng.standard_normal((4, 800)).astype(np.float32)
    est = ref + 0.1 * rng.standard_normal(ref.shape).astype(np.float32)
    expected = si_snr_reference(est.astype(np.float64), ref) - si_snr_reference(
        mix[:, None, :].astype(np.float64), ref
    )
    got = si_snr_improvement(est, ref, mix)
    assert got.shape == (4, 2) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, atol=1e-3)
    jitted = jax.jit(si_snr_improvement)(est, ref, mix)
    np.testing.assert_allclose(jitted, expected, atol=1e-3)
    mapped = jax.vmap(si_snr_improvement)(est, ref, mix)
    np.testing.assert_allclose(mapped, expected, atol=1e-3)


def test_si_snr_improvement_refuses_silence_when_concrete(rng):
    ref = rng.standard_normal((2, 400)).astype(np.float32)
    with pytest.raises(SilentAudioError, match="ref"):
        si_snr_improvement(ref, ref * np.array([[1.0], [0.0]], np.float32), ref)
    with pytest.raises(SilentAudioError, match="mix"):
        si_snr_improvement(ref, ref, np.zeros(400, np.float32))
    # Under jit no check is possible: a number comes back.
    assert jax.jit(si_snr_improvement)(ref, ref, jnp.zeros(400)).shape == (2,)


def test_check_not_silent_names_first_silent_example():
    x = np.ones((2, 3, 5))
    x[1, 2] = 0
    with pytest.raises(SilentAudioError, match=r"wav: 1 all-zero.*\(1, 2\)"):
        check_not_silent(x, "wav")
    check_not_silent(np.ones(5), "wav")


@pytest.mark.filterwarnings("ignore:mir_eval.separation.bss_eval_sources:FutureWarning")
def test_bss_eval_matches_fast_bss_eval_and_mir_eval_on_real_speech(speech):
    sources, noise = speech
    rng = np.random.default_rng(3)
    for n_src in (2, 3):
        ref = sources[:n_src, : 2 * SR]
        est = realistic_estimates(ref, noise[: 2 * SR], rng)
        got = bss_eval(est, ref)
        expected = fast_bss_eval.bss_eval_sources(
            ref, est, filter_length=512, compute_permutation=False, use_cg_iter=200
        )  # its direct solver fails under numpy 2; conjugate gradients converge to it
        for name, values in zip(("SDR", "SIR", "SAR"), expected, strict=False):
            assert got[name].shape == (n_src,)
            np.testing.assert_allclose(got[name], values, atol=0.05, err_msg=name)
        np.testing.assert_allclose(got["SDR"], sdr(est, ref), atol=1e-6)
    mir_eval = pytest.importorskip("mir_eval")
    sdr_, sir, sar, _ = mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=False)
    np.testing.assert_allclose(got["SDR"], sdr_, atol=0.05)
    np.testing.assert_allclose(got["SIR"], sir, atol=0.05)
    np.testing.assert_allclose(got["SAR"], sar, atol=0.05)


def test_bss_eval_batched_and_extremes(rng):
    ref = rng.standard_normal((2, 2, 800))
    leak = ref + 0.3 * ref[:, ::-1]
    got = bss_eval(leak, ref, filter_length=32)
    assert got["SIR"].shape == (2, 2)
    np.testing.assert_allclose(got["SIR"], 20 * np.log10(1 / 0.3), atol=1.0)
    assert np.all(got["SAR"] > 60)  # no artefacts: all of it lies in the references' span
    for b in range(2):
        single = bss_eval(leak[b], ref[b], filter_length=32)
        np.testing.assert_allclose(single["SAR"], got["SAR"][b], atol=1e-6)
    with pytest.raises(AudioError):
        bss_eval(ref[0, 0], ref[0, 0])

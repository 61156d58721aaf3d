"""PESQ and STOI wrappers: same values as the packages on real speech, and every bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pesq as pesq_package
import pytest
import soundfile as sf
from pystoi import stoi as stoi_package

from jaxspeech.audio import load, resample
from jaxspeech.errors import (
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
    SampleRateError,
    SilentAudioError,
    TooShortError,
)
from jaxspeech.metrics import pesq, stoi


@pytest.fixture(scope="module")
def noisy_speech(shared_data):
    """Two real 2 s utterances at 16 kHz and their versions with real noise at 5 and 15 dB."""
    root = shared_data / "librispeech" / "test-other"
    paths = [
        next(p for p in sorted((root / spk).glob("*.flac")) if sf.info(p).frames > 48000)
        for spk in ("367", "2414")
    ]
    clean = np.stack([load(p)[0][16000:48000] for p in paths])
    noise = load(sorted((shared_data / "noise").glob("*.wav"))[-1], 16000)[0][:32000]
    gains = np.array([[10 ** (-5 / 20)], [10 ** (-15 / 20)]])
    noise = noise / np.sqrt(np.mean(noise**2)) * np.sqrt(np.mean(clean**2, -1, keepdims=True))
    return clean, (clean + gains * noise).astype(np.float32)


def test_pesq_passes_through_package_values(noisy_speech):
    clean, noisy = noisy_speech
    got = pesq(clean, noisy, 16000)
    expected = [pesq_package.pesq(16000, c, n, "wb") for c, n in zip(clean, noisy, strict=True)]
    assert got.shape == (2,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0] < got[1]  # 5 dB SNR sounds worse than 15 dB
    clean8, noisy8 = resample(clean[:1], 16000, 8000), resample(noisy[:1], 16000, 8000)
    narrow = pesq(clean8[0], noisy8[0], 8000)
    assert narrow.shape == ()
    assert float(narrow) == pytest.approx(pesq_package.pesq(8000, clean8[0], noisy8[0], "nb"))
    assert pesq(clean[0], clean[0], 16000) > 4.4


def test_stoi_passes_through_package_values(noisy_speech):
    clean, noisy = noisy_speech
    for extended in (False, True):
        got = stoi(clean, noisy, 16000, extended=extended)
        expected = [
            stoi_package(c, n, 16000, extended=extended) for c, n in zip(clean, noisy, strict=True)
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert got[0] < got[1] < 1.0
    assert stoi(clean[0], clean[0], 16000) == pytest.approx(1.0, abs=1e-6)


def test_pesq_minimum_length_is_the_package_minimum(noisy_speech):
    clean, noisy = noisy_speech
    assert np.isfinite(pesq(clean[0, :4000], noisy[0, :4000], 16000))
    with pytest.raises(TooShortError, match="4000 samples"):
        pesq(clean[0, :3999], noisy[0, :3999], 16000)
    with pytest.raises(pesq_package.BufferTooShortError):  # what we prevent
        pesq_package.pesq(16000, clean[0, :3999], noisy[0, :3999], "wb")


def test_stoi_minimum_length_matches_package_warning(noisy_speech):
    clean, noisy = noisy_speech
    # Find the shortest prefix pystoi accepts (it warns and returns 1e-5 below it).
    lengths = range(4000, 8001, 80)
    accepted = []
    for n in lengths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                stoi_package(clean[0, :n], noisy[0, :n], 16000)
                accepted.append(n)
            except RuntimeWarning:
                pass
    assert accepted and accepted[0] > lengths[0]
    shortest = accepted[0]
    assert np.isfinite(stoi(clean[0, :shortest], noisy[0, :shortest], 16000))
    with pytest.raises(TooShortError, match="non-silent frames"):
        stoi(clean[0, : shortest - 80], noisy[0, : shortest - 80], 16000)
    with pytest.raises(TooShortError):
        stoi(clean[0, :100], noisy[0, :100], 16000)


@pytest.mark.parametrize("metric", [pesq, stoi])
def test_bad_audio(metric, noisy_speech):
    clean, noisy = noisy_speech[0][0], noisy_speech[1][0]
    with pytest.raises(SilentAudioError, match="ref"):
        metric(np.zeros_like(clean), noisy, 16000)
    with pytest.raises(SilentAudioError, match="est"):
        metric(clean, np.zeros_like(noisy), 16000)
    bad = noisy.copy()
    bad[100] = np.nan
    with pytest.raises(NonFiniteAudioError, match="est"):
        metric(clean, bad, 16000)
    with pytest.raises(EmptyAudioError):
        metric(clean[:0], noisy[:0], 16000)
    with pytest.raises(ValueError, match="same shape"):
        metric(clean, noisy[:-1], 16000)
    with pytest.raises(SampleRateError):
        metric(clean, noisy, 4000)


def test_pesq_modes(noisy_speech):
    clean, noisy = noisy_speech[0][0], noisy_speech[1][0]
    with pytest.raises(SampleRateError, match="wide-band"):
        pesq(clean, noisy, 8000, mode="wb")
    with pytest.raises(SampleRateError, match="8000 or 16000"):
        pesq(clean, noisy, 44100)
    with pytest.raises(ConfigError, match="mode"):
        pesq(clean, noisy, 16000, mode="xb")
    narrow = pesq(clean, noisy, 16000, mode="nb")
    assert float(narrow) == pytest.approx(pesq_package.pesq(16000, clean, noisy, "nb"))

"""Mel filterbank, log-mel fbank and MFCC of `jaxspeech.dsp.features` against librosa.

librosa's defaults are other conventions than ours, so every setting is passed explicitly:
HTK mel scale without area normalisation (`htk=True, norm=None`; librosa's default is the
Slaney scale with `norm="slaney"`), power spectrum (`power=2`), reflect padding of centred
frames (librosa's default is zero padding), pre-emphasis with `x[-1] = x[0]` (librosa's default
initial state extrapolates), natural log (librosa's `power_to_db` is `10·log10`, the same up to
the factor `10 / ln 10`), and an orthonormal DCT-II without liftering for the MFCC.
"""

import math

import jax
import librosa
import numpy as np
import pytest
import scipy.signal

from jaxspeech import dsp

#: natural log = decibels × ln(10) / 10
DB_TO_NATURAL_LOG = math.log(10.0) / 10.0


@pytest.fixture(scope="module")
def signals():
    """Two 0.4 s signals at 16 kHz: a chirp plus noise, and two tones."""
    rate = 16000
    t = np.arange(round(0.4 * rate)) / rate
    noise = np.random.default_rng(3).standard_normal(t.size)
    chirp = scipy.signal.chirp(t, 60, t[-1], 7500) + 0.05 * noise
    tones = np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3100 * t)
    return rate, np.stack([chirp, tones]).astype(np.float32)


def librosa_log_mel(wav, rate, n_mels, f_min, f_max, preemphasis, log_floor, n_fft=None):
    """Our fbank recipe (25 ms Hann window, 10 ms hop) written with librosa calls."""
    win_length, hop = round(0.025 * rate), round(0.010 * rate)
    n_fft = n_fft or 1 << (win_length - 1).bit_length()
    wav = np.asarray(wav, np.float64)
    if preemphasis:
        wav = librosa.effects.preemphasis(wav, coef=preemphasis, zi=-preemphasis * wav[..., :1])
    power = librosa.feature.melspectrogram(
        y=wav,
        sr=rate,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=n_mels,
        fmin=f_min,
        fmax=f_max,
        htk=True,
        norm=None,
    )  # [..., n_mels, frames]
    decibels = librosa.power_to_db(power, ref=1.0, amin=log_floor, top_db=None)
    return np.swapaxes(decibels, -1, -2)  # [..., frames, n_mels]


@pytest.mark.parametrize(
    ("n_fft", "n_mels", "rate", "f_min", "f_max"),
    [(256, 24, 8000, 20.0, 3800.0), (512, 40, 16000, 0.0, None), (512, 80, 16000, 20.0, 7600.0)],
)
def test_mel_filterbank_matches_librosa_htk(n_fft, n_mels, rate, f_min, f_max):
    ours = np.asarray(dsp.mel_filterbank(n_fft // 2 + 1, n_mels, rate, f_min, f_max))
    reference = librosa.filters.mel(
        sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, htk=True, norm=None
    )
    np.testing.assert_allclose(ours, reference.T, atol=1e-6)


def test_mel_filterbank_is_not_librosa_default_slaney():
    """The convention: HTK mel scale with peak-1 triangles, not librosa's Slaney default."""
    ours = np.asarray(dsp.mel_filterbank(257, 40, 16000, 0.0, 8000.0))
    slaney = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=0.0, fmax=8000.0).T
    assert ours.max() == pytest.approx(1.0, abs=0.01)  # peak-1 triangles: no area norm
    assert slaney.max() < 0.05  # area-normalised: peaks 2 / bandwidth in Hz
    slaney_shape = librosa.filters.mel(
        sr=16000, n_fft=512, n_mels=40, fmin=0.0, fmax=8000.0, htk=False, norm=None
    ).T
    assert np.abs(ours - slaney_shape).max() > 0.1  # and other centre frequencies


@pytest.mark.parametrize(
    ("n_mels", "f_min", "f_max", "preemphasis", "log_floor"),
    [(40, 20.0, None, 0.97, 1e-6), (80, 0.0, 7600.0, 0.0, 1e-3), (24, 100.0, 4000.0, 0.5, 1e-8)],
)
def test_fbank_matches_librosa(signals, n_mels, f_min, f_max, preemphasis, log_floor):
    rate, wav = signals
    ours = jax.jit(
        lambda w: dsp.fbank(
            w,
            rate,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            preemphasis=preemphasis,
            log_floor=log_floor,
        )
    )(wav)
    reference = DB_TO_NATURAL_LOG * librosa_log_mel(
        wav, rate, n_mels, f_min, f_max or rate / 2, preemphasis, log_floor
    )
    assert ours.shape == reference.shape == (2, 1 + wav.shape[-1] // 160, n_mels)
    # float32 FFT rounding against librosa's float64: about 1e-6 relative to each frame's peak,
    # which the log turns into small absolute errors except near the floor.
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_fbank_preemphasis_initial_state_is_first_sample(signals):
    """`x[-1] = x[0]`, so the first pre-emphasised sample is `(1 − a)·x[0]`; librosa's default
    initial state gives another first frame and the same later frames."""
    rate, wav = signals
    ours = np.asarray(dsp.fbank(wav, rate, n_mels=40))
    default_state = librosa.effects.preemphasis(wav.astype(np.float64), coef=0.97)
    theirs = DB_TO_NATURAL_LOG * librosa_log_mel(default_state, rate, 40, 20.0, 8000.0, 0.0, 1e-6)
    np.testing.assert_allclose(ours[:, 2:], theirs[:, 2:], atol=2e-3)
    assert np.abs(ours[:, 0] - theirs[:, 0]).max() > 1e-2


@pytest.mark.parametrize(("n_mfcc", "n_mels"), [(13, 40), (20, 24)])
def test_mfcc_matches_librosa(signals, n_mfcc, n_mels):
    rate, wav = signals
    ours = np.asarray(dsp.mfcc(wav, rate, n_mfcc=n_mfcc, n_mels=n_mels))
    decibels = librosa_log_mel(wav, rate, n_mels, 20.0, rate / 2, 0.97, 1e-6)
    # librosa's MFCC takes the DCT over the mel axis of [..., n_mels, frames].
    cepstra = librosa.feature.mfcc(
        S=np.swapaxes(decibels, -1, -2), n_mfcc=n_mfcc, dct_type=2, norm="ortho", lifter=0
    )
    reference = DB_TO_NATURAL_LOG * np.swapaxes(cepstra, -1, -2)
    assert ours.shape == reference.shape == (2, 1 + wav.shape[-1] // 160, n_mfcc)
    np.testing.assert_allclose(ours, reference, atol=5e-3)
    liftered = librosa.feature.mfcc(
        S=np.swapaxes(decibels, -1, -2), n_mfcc=n_mfcc, dct_type=2, norm="ortho", lifter=22
    )
    assert np.abs(ours - DB_TO_NATURAL_LOG * np.swapaxes(liftered, -1, -2)).max() > 0.1

"""Fused descriptors, every family against librosa's per-frame features cut into segments."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxspeech.dsp import descriptors
from jaxspeech.dsp.descriptors import DescriptorConfig, describe, feature_names
from jaxspeech.errors import ConfigError, TooShortError

librosa = pytest.importorskip("librosa")

RATE = 22050
CFG = DescriptorConfig(sample_rate=RATE, n_fft=1024, hop_length=256, segment_seconds=1.0,
                       segment_hop_seconds=0.5)  # fmt: skip


@pytest.fixture(scope="module")
def signal():
    """4 s of a rising chord (C4 E4 G4) with a decaying note every 0.4 s, over quiet noise."""
    rng = np.random.default_rng(0)
    t = np.arange(4 * RATE) / RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    pulse = np.exp(-((t % 0.4) / 0.05)) * np.sin(2 * np.pi * 880 * t)
    wav = 0.1 * chord * (0.3 + t / 4) + 0.3 * pulse + 0.01 * rng.standard_normal(t.size)
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def ours(signal):
    return np.asarray(descriptors.describe_fn(CFG)(signal))


def _segment_stats(per_frame: np.ndarray) -> np.ndarray:
    """Reference: ``[d, frames]`` -> means then stds of each segment ``[segments, 2d]``."""
    starts = range(0, per_frame.shape[1] - CFG.segment_frames + 1, CFG.segment_hop_frames)
    cuts = [per_frame[:, s : s + CFG.segment_frames] for s in starts]
    return np.stack([np.concatenate([c.mean(1), c.std(1)]) for c in cuts])


def _columns(values: np.ndarray, family: str) -> np.ndarray:
    names = feature_names(CFG)
    index = [i for i, n in enumerate(names) if n.startswith(f"{family}.")]
    return values[:, index]


def _stft_options():
    return dict(sr=RATE, n_fft=CFG.n_fft, hop_length=CFG.hop_length, pad_mode="reflect")


def _mel_db(signal):
    mel = librosa.feature.melspectrogram(
        y=signal, **_stft_options(), n_mels=CFG.n_mels, htk=True, norm=None
    )
    return librosa.power_to_db(mel, top_db=None)


def test_layout_and_segments(ours, signal):
    frames = 1 + signal.size // CFG.hop_length
    assert ours.shape == (CFG.num_segments(signal.size), len(feature_names(CFG)))
    assert ours.shape[0] == 1 + (frames - CFG.segment_frames) // CFG.segment_hop_frames == 7
    assert len(feature_names(CFG)) == 2 * 40 + 2 * 20 + 2 * 12 + 2 * 11 + 4 + 4
    assert np.all(np.isfinite(ours))


def test_logmel_and_mfcc_against_librosa(ours, signal):
    mel_db = _mel_db(signal)
    np.testing.assert_allclose(_columns(ours, "logmel"), _segment_stats(mel_db), atol=2e-3)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=CFG.n_mfcc, norm="ortho")
    np.testing.assert_allclose(_columns(ours, "mfcc"), _segment_stats(mfcc), atol=1e-2)


def test_chroma_against_librosa(ours, signal):
    chroma = librosa.feature.chroma_stft(y=signal, **_stft_options(), tuning=0.0)
    np.testing.assert_allclose(_columns(ours, "chroma"), _segment_stats(chroma), atol=1e-4)
    means = _columns(ours, "chroma")[:, :12].mean(0)
    assert set(np.argsort(means)[-3:]) == {0, 4, 7}  # C, E, G


def test_spectral_shape_against_librosa(ours, signal):
    options = _stft_options()
    reference = np.concatenate(
        [
            librosa.feature.spectral_centroid(y=signal, **options),
            librosa.feature.spectral_bandwidth(y=signal, **options),
            librosa.feature.spectral_rolloff(y=signal, **options, roll_percent=CFG.rolloff),
            librosa.feature.spectral_flatness(
                y=signal, n_fft=CFG.n_fft, hop_length=CFG.hop_length, pad_mode="reflect"
            ),
            librosa.feature.spectral_contrast(y=signal, **options, fmin=200.0, n_bands=6),
        ]
    )
    expected = _segment_stats(reference)
    got = _columns(ours, "spectral")
    scale = np.abs(expected).max(0) + 1e-6  # Hz and dB: compare relative to each column
    np.testing.assert_allclose(got / scale, expected / scale, atol=2e-4)


def test_onset_strength_and_tempo_against_librosa(ours, signal):
    envelope = librosa.onset.onset_strength(S=_mel_db(signal), lag=1, center=False)
    got = _columns(ours, "onset")
    np.testing.assert_allclose(got[:, :2], _segment_stats(envelope[None]), atol=1e-3)
    # A click track: our per-segment tempo and librosa's agree with each other and the truth.
    cfg = dataclasses.replace(CFG, segment_seconds=4.0, segment_hop_seconds=2.0)
    describe_clicks = descriptors.describe_fn(cfg)  # one compilation for both tempi
    for bpm in (90.0, 150.0):
        clicks = librosa.clicks(
            times=np.arange(0, 8, 60 / bpm), sr=RATE, length=8 * RATE, click_duration=0.02
        )
        ours_bpm = np.asarray(describe_clicks(clicks))[
            :, feature_names(cfg).index("onset.tempo_bpm")
        ]
        theirs = librosa.feature.tempo(y=clicks, sr=RATE, hop_length=CFG.hop_length)[0]
        assert abs(theirs - bpm) / bpm < 0.05
        np.testing.assert_allclose(ours_bpm, theirs, rtol=0.05)
    assert np.all(got[:, 3] > 0)  # clarity


def test_rms_dynamics_against_librosa(ours, signal):
    rms = librosa.feature.rms(
        y=signal, frame_length=CFG.n_fft, hop_length=CFG.hop_length, pad_mode="constant"
    )[0]
    db = 10 * np.log10(np.maximum(rms**2, 1e-10))
    starts = range(0, db.size - CFG.segment_frames + 1, CFG.segment_hop_frames)
    cuts = np.stack([db[s : s + CFG.segment_frames] for s in starts])
    expected = np.stack(
        [cuts.mean(1), cuts.std(1), np.ptp(cuts, 1), np.abs(np.diff(cuts, axis=1)).mean(1)], 1
    )
    np.testing.assert_allclose(_columns(ours, "rms"), expected, atol=2e-3)


def test_family_order_is_the_column_order_and_bad_settings_are_refused(ours, signal):
    cfg = dataclasses.replace(CFG, families=("rms", "chroma"))
    names = feature_names(cfg)
    assert names[:4] == tuple(descriptors.family_names("rms", CFG)) and len(names) == 28
    got = np.asarray(describe(signal, cfg))
    np.testing.assert_allclose(got[:, :4], _columns(ours, "rms"), atol=1e-5)
    np.testing.assert_allclose(got[:, 4:], _columns(ours, "chroma"), atol=1e-5)
    assert descriptors.layout_fingerprint(cfg) != descriptors.layout_fingerprint(CFG)
    with pytest.raises(ConfigError, match="at most once"):
        dataclasses.replace(CFG, families=("rms", "rms"))
    with pytest.raises(ConfigError, match="tempo"):
        dataclasses.replace(CFG, families=("tempo",))
    with pytest.raises(TooShortError, match="shorter than one segment"):
        describe(signal[: RATE // 2], CFG)
    silent = np.asarray(describe(np.zeros(2 * RATE, np.float32), cfg))
    assert np.all(np.isfinite(silent))

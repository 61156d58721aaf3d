"""Front-end pieces of the i-vector system against independent references: deltas against
``librosa.feature.delta``, sliding-window CMN and energy VAD against plain loops written
from Kaldi's ``apply-cmvn-sliding`` and ``compute-vad``, per-utterance padding against
``numpy.pad``; each on a padded batch whose rows have different lengths."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from jaxspeech import dsp
from jaxspeech.errors import ConfigError

LENGTHS = np.array([37, 420, 611], np.int32)  # frames: shorter and longer than a 300 window


@pytest.fixture(scope="module")
def padded_features():
    """``[3, 611, 5]`` float32 with a mean drift (as real cepstra have) and garbage padding."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, LENGTHS.max(), 5)) + np.linspace(0, 8, LENGTHS.max())[:, None]
    for b, n in enumerate(LENGTHS):
        x[b, n:] = 1e3
    return x.astype(np.float32)


def test_deltas_match_librosa_per_utterance(padded_features):
    ours = np.asarray(dsp.deltas(padded_features, LENGTHS, window=2))
    double = np.asarray(dsp.deltas(dsp.deltas(padded_features, LENGTHS), LENGTHS))
    for b, n in enumerate(LENGTHS):
        utt = padded_features[b, :n].astype(np.float64).T
        reference = librosa.feature.delta(utt, width=5, mode="nearest").T
        np.testing.assert_allclose(ours[b, :n], reference, atol=1e-4)
        second = librosa.feature.delta(
            librosa.feature.delta(utt, width=5, mode="nearest"), width=5, mode="nearest"
        ).T
        np.testing.assert_allclose(double[b, :n], second, atol=1e-4)
        assert not ours[b, n:].any()


def kaldi_sliding_cmn(feats: np.ndarray, window: int) -> np.ndarray:
    """Kaldi's SlidingWindowCmnInternal, center=true, norm_vars=false, as a loop."""
    n = feats.shape[0]
    out = np.empty_like(feats)
    for t in range(n):
        start = t - window // 2
        end = start + window
        if start < 0:
            end -= start
            start = 0
        if end > n:
            start -= end - n
            end = n
            start = max(start, 0)
        out[t] = feats[t] - feats[start:end].mean(0)
    return out


@pytest.mark.parametrize("window", [300, 7])
def test_sliding_cmn_matches_kaldi_loop(padded_features, window):
    ours = np.asarray(dsp.sliding_cmn(padded_features, LENGTHS, window))
    for b, n in enumerate(LENGTHS):
        reference = kaldi_sliding_cmn(padded_features[b, :n].astype(np.float64), window)
        np.testing.assert_allclose(ours[b, :n], reference, atol=2e-5)
        assert not ours[b, n:].any()


def kaldi_vad(log_energy, threshold, mean_scale, context, proportion) -> np.ndarray:
    """Kaldi's ComputeVadEnergy as a loop."""
    n = log_energy.shape[0]
    level = threshold + mean_scale * log_energy.sum() / n
    voiced = np.zeros(n, bool)
    for t in range(n):
        num = den = 0
        for t2 in range(t - context, t + context + 1):
            if 0 <= t2 < n:
                den += 1
                num += log_energy[t2] > level
        voiced[t] = num >= den * proportion
    return voiced


@pytest.mark.parametrize("context", [0, 3])
def test_energy_vad_matches_kaldi_loop(context):
    rng = np.random.default_rng(4)
    energy = rng.normal(10.0, 3.0, size=(3, LENGTHS.max())).astype(np.float32)
    ours = np.asarray(dsp.energy_vad(energy, LENGTHS, 5.5, 0.5, context, 0.6))
    for b, n in enumerate(LENGTHS):
        reference = kaldi_vad(energy[b, :n].astype(np.float64), 5.5, 0.5, context, 0.6)
        np.testing.assert_array_equal(ours[b, :n], reference)
        assert 0 < reference.sum() < n and not ours[b, n:].any()


def test_reflect_padding_per_row_and_frames_as_alone():
    rng = np.random.default_rng(5)
    lengths = np.array([900, 1600], np.int32)
    wav = rng.normal(size=(2, 1600)).astype(np.float32)
    wav[0, 900:] = 0.0
    padded = np.asarray(dsp.reflect_pad_lengths(wav, lengths, 256))
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(padded[b, : n + 512], np.pad(wav[b, :n], 256, "reflect"))
    batch = np.asarray(dsp.fbank(padded, 16000, n_mels=8, preemphasis=0.0, center=False))
    alone = np.asarray(dsp.fbank(wav[0, :900], 16000, n_mels=8, preemphasis=0.0))
    np.testing.assert_allclose(batch[0, : alone.shape[0]], alone, atol=1e-4)
    energy = np.asarray(dsp.frame_log_energy(wav[1], 16000))
    centre = np.pad(wav[1].astype(np.float64), 256, "reflect")
    reference = [np.log(np.sum(centre[t * 160 + 56 : t * 160 + 456] ** 2)) for t in range(11)]
    np.testing.assert_allclose(energy[:11], reference, rtol=1e-5)


def test_frontend_rejects_bad_arguments(padded_features):
    with pytest.raises(ConfigError, match="lengths has shape"):
        dsp.deltas(padded_features, LENGTHS[:2])
    with pytest.raises(ConfigError, match="window=0"):
        dsp.sliding_cmn(padded_features, LENGTHS, 0)
    with pytest.raises(ConfigError, match="context=-1"):
        dsp.energy_vad(padded_features[..., 0], LENGTHS, context=-1)

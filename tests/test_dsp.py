"""jaxspeech.dsp against numpy/scipy references: STFT/ISTFT, framing, mel features, statistics."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import scipy.signal

from jaxspeech import audio, dsp
from jaxspeech.errors import (
    AudioError,
    ConfigError,
    NonFiniteAudioError,
    SampleRateError,
    TooShortError,
)


def reference_window(window, n_fft, win_length):
    """Window from scipy, centred in n_fft samples."""
    if isinstance(window, str):
        name = {"rect": "boxcar", "sqrt_hann": "hann"}.get(window, window)
        taper = scipy.signal.get_window(name, win_length, fftbins=True)
        taper = np.sqrt(taper) if window == "sqrt_hann" else taper
    else:
        taper = np.asarray(window, np.float64)
    left = (n_fft - taper.size) // 2
    return np.pad(taper, (left, n_fft - taper.size - left))


def reference_stft(x, n_fft, hop, window, center=True):
    """np.fft.rfft of index-framed signal (float64)."""
    x = np.asarray(x, np.float64)
    if center:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    n_frames = 1 + (x.shape[-1] - n_fft) // hop
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)
    return np.fft.rfft(x[..., index] * window, axis=-1)


def assert_close_relative(actual, expected, tol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    error = np.max(np.abs(actual - expected)) / np.max(np.abs(expected))
    assert error <= tol, f"relative error {error:.3g} > {tol}"


# (window, n_fft, hop, win_length) combinations that satisfy NOLA.
ROUND_TRIP_CASES = [
    ("hann", 64, 16, None),  # hop = n_fft / 4
    ("hann", 64, 32, None),  # hop = n_fft / 2
    ("hamming", 64, 16, 48),  # win_length < n_fft
    ("sqrt_hann", 64, 32, None),
    ("rect", 32, 32, None),
    ("hann", 63, 21, None),  # odd n_fft
    (scipy.signal.get_window("blackman", 40), 64, 10, None),  # array window
]


@pytest.fixture(scope="module")
def signal_batch():
    return np.random.default_rng(1).standard_normal((2, 3, 640)).astype(np.float32)


@pytest.mark.parametrize("window,n_fft,hop,win_length", ROUND_TRIP_CASES)
def test_stft_matches_numpy_and_istft_round_trips(signal_batch, window, n_fft, hop, win_length):
    win_length = win_length or (n_fft if isinstance(window, str) else len(window))
    spectrum = dsp.stft(signal_batch, n_fft, hop, win_length, window)
    assert spectrum.dtype == jnp.complex64
    assert spectrum.shape == (2, 3, 1 + 640 // hop, n_fft // 2 + 1)
    taper = reference_window(window, n_fft, win_length)
    np.testing.assert_allclose(dsp.get_window(window, n_fft, win_length), taper, atol=1e-7)
    assert_close_relative(spectrum, reference_stft(signal_batch, n_fft, hop, taper), 1e-5)
    restored = dsp.istft(spectrum, n_fft, hop, win_length, window, length=640)
    assert_close_relative(restored, signal_batch, 1e-5)


@pytest.mark.parametrize("window,n_fft,hop", [("hann", 64, 16), ("hamming", 32, 16)])
def test_stft_istft_match_scipy(window, n_fft, hop):
    x = np.random.default_rng(2).standard_normal(500)
    taper = reference_window(window, n_fft, n_fft)
    padded = np.pad(x, n_fft // 2, mode="reflect")
    # scipy divides by sum(window) and zero-pads; reflect-pad ourselves and disable its padding.
    _, _, scipy_spectrum = scipy.signal.stft(
        padded, window=taper, nperseg=n_fft, noverlap=n_fft - hop, boundary=None, padded=False
    )
    spectrum = dsp.stft(x, n_fft, hop, window=window)
    assert_close_relative(spectrum, scipy_spectrum.T * taper.sum(), 1e-5)
    _, scipy_signal = scipy.signal.istft(
        scipy_spectrum, window=taper, nperseg=n_fft, noverlap=n_fft - hop, boundary=True
    )
    restored = dsp.istft(spectrum, n_fft, hop, window=window)
    assert restored.shape == scipy_signal.shape == ((spectrum.shape[0] - 1) * hop,)
    assert_close_relative(restored, scipy_signal, 1e-5)


def test_uncentred_stft_and_interior_round_trip(signal_batch):
    x = signal_batch[0, 0]
    spectrum = dsp.stft(x, 64, 16, center=False)
    taper = reference_window("hann", 64, 64)
    assert_close_relative(spectrum, reference_stft(x, 64, 16, taper, center=False), 1e-5)
    restored = dsp.istft(spectrum, 64, 16, center=False)
    assert restored.shape == (16 * (spectrum.shape[0] - 1) + 64,)
    # Near the outer edges only one tapered frame covers a sample: compare where all overlap.
    assert_close_relative(restored[48:-48], x[48 : restored.shape[0] - 48], 1e-5)


def test_istft_length_trims_and_pads():
    x = np.random.default_rng(3).standard_normal(256).astype(np.float32)
    spectrum = dsp.stft(x, 32, 8)
    full = np.asarray(dsp.istft(spectrum, 32, 8))
    assert full.shape == (256,)
    np.testing.assert_allclose(dsp.istft(spectrum, 32, 8, length=100), full[:100])
    longer = np.asarray(dsp.istft(spectrum, 32, 8, length=300))
    np.testing.assert_allclose(longer[:256], full)
    assert np.all(longer[256 + 16 :] == 0)


def test_jit_vmap_and_grad_through_round_trip(signal_batch):
    x = jnp.asarray(signal_batch[0])
    transform = jax.jit(lambda s: dsp.stft(s, 64, 16))
    batched = dsp.stft(x, 64, 16)
    np.testing.assert_allclose(jax.vmap(transform)(x), batched, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(transform(x[1]), batched[1], rtol=1e-5, atol=1e-4)

    weights = jnp.linspace(-1.0, 1.0, x.shape[-1])

    def loss(s):
        return jnp.sum(
            jnp.sin(dsp.istft(dsp.stft(s, 64, 16), 64, 16, length=s.shape[-1])) * weights
        )

    gradient = jax.jit(jax.grad(loss))(x)
    np.testing.assert_allclose(gradient, jnp.cos(x) * weights, atol=1e-5)


def test_bfloat16_input_is_computed_in_float32(signal_batch):
    low = jnp.asarray(signal_batch[0, 0], jnp.bfloat16)
    spectrum = dsp.stft(low, 32, 8)
    assert spectrum.dtype == jnp.complex64
    np.testing.assert_array_equal(spectrum, dsp.stft(low.astype(jnp.float32), 32, 8))
    restored = dsp.istft(spectrum, 32, 8, length=low.shape[-1])
    assert_close_relative(restored, low.astype(jnp.float32), 1e-5)


@pytest.mark.parametrize("frame_length,hop", [(8, 3), (8, 8), (5, 7)])
def test_frame_and_overlap_add_match_indexing(frame_length, hop):
    x = np.random.default_rng(4).standard_normal((2, 40)).astype(np.float32)
    n_frames = 1 + (40 - frame_length) // hop
    index = np.arange(n_frames)[:, None] * hop + np.arange(frame_length)
    np.testing.assert_array_equal(dsp.frame(x, frame_length, hop), x[:, index])
    frames = np.random.default_rng(5).standard_normal((2, n_frames, frame_length))
    expected = np.zeros((2, (n_frames - 1) * hop + frame_length))
    for t in range(n_frames):
        expected[:, t * hop : t * hop + frame_length] += frames[:, t]
    np.testing.assert_allclose(
        dsp.overlap_add(jnp.asarray(frames, jnp.float32), hop), expected, rtol=1e-5, atol=1e-5
    )


def test_stft_bad_input():
    x = np.zeros(100, np.float32)
    with pytest.raises(ConfigError, match="unknown"):
        dsp.stft(x, 16, 4, window="kaiser")
    with pytest.raises(ConfigError, match="win_length"):
        dsp.stft(x, 16, 4, win_length=12, window=np.ones(10))
    with pytest.raises(ConfigError, match="exceeds n_fft"):
        dsp.stft(x, 16, 4, win_length=20)
    with pytest.raises(ConfigError, match="1-D"):
        dsp.stft(x, 16, 4, window=np.ones((4, 4)))
    with pytest.raises(ConfigError, match="hop_length"):
        dsp.stft(x, 16, 0)
    with pytest.raises(ConfigError, match="n_fft"):
        dsp.stft(x, 16.0, 4)
    with pytest.raises(AudioError, match="real signal"):
        dsp.stft(x.astype(np.complex64), 16, 4)
    with pytest.raises(AudioError, match="scalar"):
        dsp.stft(np.float32(1.0), 16, 4)
    with pytest.raises(TooShortError, match="reflect"):
        dsp.stft(x[:8], 16, 4)
    with pytest.raises(TooShortError, match="fewer than one frame"):
        dsp.stft(x[:12], 16, 4, center=False)
    with pytest.raises(ConfigError, match="traced"):
        jax.jit(lambda w: dsp.stft(x, 16, 4, window=w))(jnp.ones(16))


def test_istft_bad_input():
    spectrum = dsp.stft(np.ones(100, np.float32), 16, 4)
    with pytest.raises(ConfigError, match="n_fft // 2 \\+ 1"):
        dsp.istft(spectrum, 32, 4)
    with pytest.raises(ConfigError, match="NOLA"):
        dsp.istft(spectrum, 16, 16)  # periodic hann is 0 at every hop boundary
    with pytest.raises(ConfigError, match="NOLA"):
        dsp.istft(spectrum, 16, 20, window="rect")  # gaps between frames
    with pytest.raises(ConfigError, match="length"):
        dsp.istft(spectrum, 16, 4, length=-1)


# ----------------------------------------------------------------------------------- features


def reference_mel_filterbank(n_freqs, n_mels, sample_rate, f_min, f_max):
    """librosa (htk=True, norm=None) formula, one filter and one bin at a time."""

    def mel(hz):
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    step = (mel(f_max) - mel(f_min)) / (n_mels + 1)
    edges = [hz(mel(f_min) + i * step) for i in range(n_mels + 2)]
    filters = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        for k in range(n_freqs):
            f = k * sample_rate / (2 * (n_freqs - 1))
            up = (f - edges[j]) / (edges[j + 1] - edges[j])
            down = (edges[j + 2] - f) / (edges[j + 2] - edges[j + 1])
            filters[k, j] = max(0.0, min(up, down))
    return filters


def reference_fbank(wav, sample_rate, n_mels, preemphasis=0.97, f_min=20.0, log_floor=1e-6):
    win_length, hop = sample_rate // 40, sample_rate // 100
    n_fft = 2 ** math.ceil(math.log2(win_length))
    wav = np.asarray(wav, np.float64)
    emphasised = wav - preemphasis * np.concatenate([wav[..., :1], wav[..., :-1]], axis=-1)
    spectrum = reference_stft(emphasised, n_fft, hop, reference_window("hann", n_fft, win_length))
    filters = reference_mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, sample_rate / 2)
    return np.log(np.maximum(np.abs(spectrum) ** 2 @ filters, log_floor))


def test_mel_filterbank_matches_htk_formula():
    filters = dsp.mel_filterbank(129, 24, 8000, 20.0, 3800.0)
    assert filters.shape == (129, 24) and filters.dtype == jnp.float32
    np.testing.assert_allclose(
        filters, reference_mel_filterbank(129, 24, 8000, 20.0, 3800.0), atol=1e-6
    )
    np.testing.assert_allclose(
        dsp.mel_to_hz(dsp.hz_to_mel([0.0, 700.0, 4000.0])), [0.0, 700.0, 4000.0]
    )
    assert dsp.hz_to_mel(700.0) == pytest.approx(2595.0 * math.log10(2.0))


def test_mel_filterbank_bad_input_and_empty_filters():
    with pytest.warns(UserWarning, match="cover no FFT bin"):
        dsp.mel_filterbank(33, 40, 16000)
    with pytest.raises(ConfigError, match="f_max"):
        dsp.mel_filterbank(257, 40, 16000, f_max=9000.0)
    with pytest.raises(ConfigError, match="f_min"):
        dsp.mel_filterbank(257, 40, 16000, f_min=5000.0, f_max=4000.0)
    with pytest.raises(ConfigError, match="n_mels"):
        dsp.mel_filterbank(257, 0, 16000)
    with pytest.raises(SampleRateError):
        dsp.mel_filterbank(257, 40, 0)


def test_dct_matches_scipy():
    x = np.random.default_rng(6).standard_normal((3, 5, 24))
    np.testing.assert_allclose(dsp.dct(x), scipy.fft.dct(x, norm="ortho"), atol=1e-5)
    np.testing.assert_allclose(dsp.dct(x, 13), scipy.fft.dct(x, norm="ortho")[..., :13], atol=1e-5)
    with pytest.raises(ConfigError, match="n_out"):
        dsp.dct(x, 25)


@pytest.fixture(scope="module")
def speech_like():
    """Two 0.3 s signals at 8 kHz: a chirp plus noise and a 1 kHz tone."""
    t = np.arange(2400) / 8000
    noise = np.random.default_rng(7).standard_normal(2400)
    chirp = scipy.signal.chirp(t, 100, t[-1], 3500) + 0.1 * noise
    return np.stack([chirp, np.sin(2 * np.pi * 1000 * t)]).astype(np.float32)


def test_fbank_and_mfcc_match_numpy(speech_like):
    features = jax.jit(lambda w: dsp.fbank(w, 8000, n_mels=24))(speech_like)
    expected = reference_fbank(speech_like, 8000, 24)
    assert features.shape == (2, 1 + 2400 // 80, 24)
    # float32 FFT rounding is ~1e-7 of the peak; far-off bins of the tone are ~1e-9 of it.
    np.testing.assert_allclose(features, expected, atol=1e-3)
    # The 1 kHz tone's energy peaks in the filter centred nearest 1 kHz.
    centres = dsp.mel_to_hz(np.linspace(dsp.hz_to_mel(20.0), dsp.hz_to_mel(4000.0), 26))[1:-1]
    assert np.argmax(features[1, 10]) == np.argmin(np.abs(centres - 1000.0))
    cepstra = dsp.mfcc(speech_like, 8000, n_mfcc=13, n_mels=24)
    np.testing.assert_allclose(cepstra, scipy.fft.dct(expected, norm="ortho")[..., :13], atol=2e-3)
    plain = dsp.fbank(speech_like[0], 8000, n_mels=24, preemphasis=0.0, log_floor=1e-3)
    np.testing.assert_allclose(
        plain, reference_fbank(speech_like[0], 8000, 24, 0.0, log_floor=1e-3), atol=2e-4
    )


def test_fbank_on_recording(shared_data):
    path = shared_data / "arctic" / "arctic_a0010.wav"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    wav, sample_rate = audio.load(path, sample_rate=16000)
    wav = wav[8000:24000]
    features = dsp.fbank(wav, sample_rate)
    assert features.shape == (1 + wav.shape[0] // 160, 80)
    np.testing.assert_allclose(features, reference_fbank(wav, 16000, 80), atol=1e-3)


def test_feature_bad_input():
    wav = np.zeros(1600, np.float32)
    with pytest.raises(SampleRateError):
        dsp.fbank(wav, -8000)
    with pytest.raises(ConfigError, match="preemphasis"):
        dsp.fbank(wav, 8000, preemphasis=1.0)
    with pytest.raises(ConfigError, match="log_floor"):
        dsp.fbank(wav, 8000, log_floor=0.0)
    with pytest.raises(ConfigError, match="fewer than one sample"):
        dsp.fbank(wav, 8000, frame_shift_ms=0.01)
    with pytest.raises(ConfigError, match="exceeds n_fft"):
        dsp.fbank(wav, 8000, n_fft=128)
    with pytest.raises(ConfigError, match="n_mfcc"):
        dsp.mfcc(wav, 8000, n_mfcc=30, n_mels=20)
    with pytest.raises(ConfigError, match="floor"):
        dsp.log_magnitude(jnp.ones(3, jnp.complex64), floor=0.0)


def test_log_magnitude_values_and_gradient_at_zero():
    spectrum = jnp.asarray([[3 + 4j, 0j, -1e-3j]], jnp.complex64)
    np.testing.assert_allclose(
        dsp.log_magnitude(spectrum), np.log([[5.0, 1e-8, 1e-3 + 1e-8]]), rtol=1e-6
    )
    gradient = jax.grad(lambda s: jnp.sum(dsp.log_magnitude(s)))(spectrum)
    assert np.all(np.isfinite(gradient))
    # d/dRe - i d/dIm of log(|z| + floor) at z = 3 + 4j (JAX's convention for real losses).
    np.testing.assert_allclose(gradient[0, 0], (3 - 4j) / 5 / (5 + 1e-8), rtol=1e-5)


# ------------------------------------------------------------------------------ normalisation


def test_mean_var_stats_normalize_and_cmvn_match_numpy():
    features = np.random.default_rng(8).normal(3.0, 2.0, (4, 50, 6)).astype(np.float32)
    mean, std = dsp.mean_var_stats(features)
    np.testing.assert_allclose(mean, features.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(std, features.std(axis=(0, 1)), rtol=1e-5)
    mean_t, std_t = dsp.mean_var_stats(features, axis=1)
    np.testing.assert_allclose(mean_t, features.mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std_t, features.std(axis=1), rtol=1e-5)
    np.testing.assert_allclose(
        dsp.normalize(features, mean, std), (features - mean) / std, rtol=1e-5, atol=1e-5
    )
    expected = (features - features.mean(1, keepdims=True)) / features.std(1, keepdims=True)
    np.testing.assert_allclose(jax.jit(dsp.cmvn)(features), expected, atol=1e-5)
    np.testing.assert_allclose(
        dsp.cmvn(features, variance=False), features - features.mean(1, keepdims=True), atol=1e-5
    )
    constant = jnp.ones((10, 3))
    np.testing.assert_array_equal(dsp.normalize(constant, 1.0, 0.0), 0.0)
    gradient = jax.grad(lambda f: jnp.sum(dsp.cmvn(f) * jnp.arange(3.0)))(constant)
    assert np.all(np.isfinite(gradient))


def test_running_stats_accumulate_like_numpy():
    rng = np.random.default_rng(9)
    batches = [rng.normal(1e4, 0.5, (3, 20, 4)) for _ in range(3)]
    masks = [rng.random((3, 20)) > 0.3 for _ in range(3)]
    stats = dsp.running_stats_init(4)
    for batch, mask in zip(batches, masks, strict=True):
        stats = dsp.running_stats_update(stats, batch, mask)
    stats = dsp.running_stats_update(stats, batches[0], np.zeros((3, 20), bool))
    mean, std = dsp.running_stats_finalize(stats)
    valid = np.concatenate([b[m] for b, m in zip(batches, masks, strict=True)])
    assert stats.count == valid.shape[0]
    np.testing.assert_allclose(mean, valid.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(std, valid.std(axis=0), rtol=1e-5)
    with pytest.raises(ConfigError, match="expected"):
        dsp.running_stats_update(stats, np.zeros((5, 3)))
    with pytest.raises(NonFiniteAudioError):
        dsp.running_stats_update(stats, np.full((5, 4), np.nan))
    with pytest.raises(ConfigError, match="empty"):
        dsp.running_stats_finalize(dsp.running_stats_init(4))

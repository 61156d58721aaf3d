"""On-the-fly mixtures: checked against brute-force numpy/scipy references on synthetic tones.

Every synthetic speaker speaks a pure tone at its own frequency, recorded at 16 kHz and mixed
at 8 kHz, so the frequency of a source tells who it is and whether it was resampled.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from synthetic import tone, write_tone_corpus

from jaxspeech.audio import load
from jaxspeech.data.corpus import audio_files, group_by_speaker, scan_corpus
from jaxspeech.data.mixing import (
    AudioCache,
    MixtureConfig,
    colored_noise,
    make_mixture,
    tilt_spectrum,
)
from jaxspeech.errors import ConfigError, SilentAudioError

FILE_RATE, RATE = 16000, 8000
TONES = {"s0": 300.0, "s1": 550.0, "s2": 800.0, "s3": 1050.0, "s4": 1300.0}
SECONDS = (0.3, 1.0, 1.6)  # 0.3 s is shorter than the 0.5 s segment: zero padding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``(root, speakers, noises, rirs)`` of synthetic 16 kHz files."""
    root = write_tone_corpus(
        tmp_path_factory.mktemp("corpus"), TONES, SECONDS, FILE_RATE, {"long": 24000, "short": 3000}
    )
    speakers = group_by_speaker(scan_corpus(root / "speech"))
    return root, speakers, audio_files(root / "noise"), audio_files(root / "rir")


@pytest.fixture(scope="module")
def audio():
    return AudioCache(RATE)


def _cfg(**kw):
    return MixtureConfig(**{"sample_rate": RATE, "segment_seconds": 0.5, **kw})


def _mix(seed, corpus, audio, cfg, n_src=2, **kw):
    _, speakers, noises, rirs = corpus
    rng = np.random.default_rng(seed)
    return make_mixture(rng, cfg, speakers, noises, rirs, audio, n_src=n_src, **kw)


def _dominant_hz(x):
    return np.argmax(np.abs(np.fft.rfft(x, 8 * RATE))) * RATE / (8 * RATE)


def _window(wav, start, length):
    """Brute-force reference crop: zero-pad both sides generously, then slice."""
    padded = np.concatenate([np.zeros(length), wav, np.zeros(length)])
    return padded[start + length : start + 2 * length]


def _active(ex, k, audio):
    """Samples of source ``k`` that its utterance covers (the rest is zero padding)."""
    n = len(audio(ex["info"]["source_files"][k]))
    start = ex["info"]["source_starts"][k]
    return ex["sources"][k, max(0, -start) : min(len(ex["mixture"]), n - start)]


def _db(x):
    return 10 * np.log10(np.mean(np.square(x.astype(np.float64))))


@pytest.mark.parametrize("reverb", [0.0, 1.0])
def test_mixture_properties(corpus, audio, reverb):
    cfg = _cfg(noise_snr_db_range=(-5.0, 20.0), reverb_prob=reverb)
    for seed in range(12):
        ex = _mix(seed, corpus, audio, cfg, n_src=3)
        mix, src, noise = ex["mixture"], ex["sources"], ex["noise"]
        assert mix.shape == noise.shape == (4000,) and src.shape == (3, 4000)
        assert all(a.dtype == np.float32 for a in (mix, src, noise, ex["snr_db"], ex["gains_db"]))
        np.testing.assert_array_equal(mix, src.sum(0) + noise)
        np.testing.assert_allclose(mix - noise, src.sum(0), atol=1e-7)
        speakers = ex["info"]["speakers"]
        assert len(set(speakers)) == 3
        for k, spk in enumerate(speakers):  # the right speaker, resampled to 8 kHz
            assert _dominant_hz(src[k]) == pytest.approx(TONES[spk], abs=2.0)
        assert -5.0 <= ex["snr_db"] <= 20.0
        measured = _db(src.sum(0)) - _db(noise)
        assert measured == pytest.approx(float(ex["snr_db"]), abs=1e-3)
        assert ex["gains_db"][0] == 0.0 and np.all(np.abs(ex["gains_db"]) <= 5.0)
        if not reverb:
            levels = [_db(_active(ex, k, audio)) for k in range(3)]
            np.testing.assert_allclose(np.subtract(levels, levels[0]), ex["gains_db"], atol=1e-3)
        peak = max(np.abs(a).max() for a in (mix, src, noise))
        assert peak <= 0.9 + 1e-6


def test_speed_perturbation_scales_pitch_and_tempo(corpus, audio):
    fixed = _cfg(speed_range=(1.5, 1.5))
    ex = _mix(0, corpus, audio, fixed, n_src=2)
    for k, spk in enumerate(ex["info"]["speakers"]):
        assert _dominant_hz(ex["sources"][k]) == pytest.approx(1.5 * TONES[spk], abs=3.0)
    drawn = _cfg(speed_range=(0.8, 1.2))
    ratios = set()
    for seed in range(6):
        ex = _mix(seed, corpus, audio, drawn, n_src=1)
        ratio = _dominant_hz(ex["sources"][0]) / TONES[ex["info"]["speakers"][0]]
        assert 0.8 - 0.01 <= ratio <= 1.2 + 0.01
        ratios.add(round(ratio, 2))
    assert len(ratios) > 1


def test_crops_pads_and_reverb_match_reference(corpus, audio):
    """Each source is a scaled crop of the resampled file (convolved with the RIR)."""
    root, *_ = corpus
    rir = load(root / "rir" / "room.wav", RATE)[0].astype(np.float64)
    padded = 0
    for seed in range(10):
        for reverb in (0.0, 1.0):
            ex = _mix(seed, corpus, audio, _cfg(reverb_prob=reverb))
            for k, path in enumerate(ex["info"]["source_files"]):
                wav = load(path, RATE)[0].astype(np.float64)
                if reverb:
                    assert ex["info"]["rir_files"][k].endswith("room.wav")
                    wav = np.convolve(wav, rir)
                start = ex["info"]["source_starts"][k]
                padded += start < 0
                ref = _window(wav, start, 4000)
                src = ex["sources"][k].astype(np.float64)
                scale = src @ ref / (ref @ ref)
                assert scale > 0
                np.testing.assert_allclose(src, scale * ref, atol=1e-6)
    assert padded > 0  # the 0.3 s files were zero-padded at a random offset


def test_loud_sources_are_rescaled_not_clipped(corpus, audio):
    cfg = _cfg(level_db_range=(0.0, 0.0), gain_db_range=(3.0, 3.0), noise_snr_db_range=(0, 0))
    ex = _mix(0, corpus, audio, cfg)
    peak = max(np.abs(a).max() for a in (ex["mixture"], ex["sources"], ex["noise"]))
    assert peak == pytest.approx(0.9, abs=1e-6)
    assert _db(ex["sources"].sum(0)) - _db(ex["noise"]) == pytest.approx(0.0, abs=1e-3)
    gains = _db(_active(ex, 1, audio)) - _db(_active(ex, 0, audio))
    assert gains == pytest.approx(3.0, abs=1e-3)


def test_enhancement_snr_override_and_determinism(corpus, audio):
    cfg = _cfg(noise_snr_db_range=(0.0, 10.0))
    _, speakers, *_ = corpus
    first = speakers["s2"][1]
    ex = _mix(5, corpus, audio, cfg, n_src=1, first=first, snr_db=-7.5)
    assert ex["sources"].shape == (1, 4000) and ex["info"]["source_files"] == [first.path]
    assert ex["snr_db"] == -7.5
    assert _db(ex["sources"][0]) - _db(ex["noise"]) == pytest.approx(-7.5, abs=1e-3)
    again = _mix(5, corpus, audio, cfg, n_src=1, first=first, snr_db=-7.5)
    for key in ("mixture", "sources", "noise"):
        np.testing.assert_array_equal(ex[key], again[key])
    assert ex["info"] == again["info"]
    other = _mix(6, corpus, audio, cfg, n_src=1, first=first, snr_db=-7.5)
    assert not np.array_equal(ex["mixture"], other["mixture"])
    quiet = _mix(0, corpus, audio, _cfg())
    assert np.all(quiet["noise"] == 0) and quiet["snr_db"] == np.inf


def test_tilt_spectrum_scales_each_frequency_by_its_octaves_from_the_pivot():
    t = np.arange(RATE) / RATE  # one second: every whole-Hz sine is one rfft bin
    hz = np.array([62.0, 250.0, 1000.0, 3000.0])  # 62 Hz is below the floor, pivot / 8
    tones = np.sin(2 * np.pi * hz[:, None] * t)
    tilted = tilt_spectrum(tones.sum(0), 6.0, RATE)
    amplitudes = [2 * np.abs(np.dot(tilted, np.exp(-2j * np.pi * f * t))) / RATE for f in hz]
    octaves = np.log2(np.maximum(hz, 125.0) / 1000.0)
    np.testing.assert_allclose(amplitudes, 10 ** (6.0 * octaves / 20), rtol=1e-6)
    np.testing.assert_allclose(tilt_spectrum(tones[1], 0.0, RATE), tones[1], atol=1e-12)


def test_noise_tilt_keeps_the_snr_and_spreads_the_noise_spectrum(corpus, audio):
    plain = _mix(3, corpus, audio, _cfg(noise_snr_db_range=(5.0, 5.0)), n_src=1)
    tilted = _mix(
        3, corpus, audio, _cfg(noise_snr_db_range=(5.0, 5.0), noise_tilt_db_range=(12, 12))
    )
    for ex in (plain, tilted):
        np.testing.assert_array_equal(ex["mixture"], ex["sources"].sum(0) + ex["noise"])
        assert _db(ex["sources"].sum(0)) - _db(ex["noise"]) == pytest.approx(5.0, abs=1e-3)
    high_share = [
        np.square(np.abs(np.fft.rfft(ex["noise"]))[1000:]).sum()  # above 2 kHz of 4 kHz
        / np.square(np.abs(np.fft.rfft(ex["noise"]))).sum()
        for ex in (plain, tilted)
    ]
    assert high_share[1] > 2 * high_share[0]


def test_colored_noise_has_its_drawn_octave_gains():
    """Welch's PSD (scipy) follows the documented envelope: the generator's first draw gives
    the gains at 62.5 Hz · 2^k and the Nyquist rate, linear in dB over log-frequency."""
    rate, db = 16000, 12.0
    noise = colored_noise(np.random.default_rng(5), 30 * rate, rate, db)
    anchors = np.append(62.5 * 2.0 ** np.arange(7), rate / 2)  # 62.5 Hz … 4 kHz, then 8 kHz
    gains_db = np.random.default_rng(5).uniform(-db, db, size=len(anchors))
    freqs, psd = scipy.signal.welch(noise, rate, nperseg=2048)
    band = (freqs >= 100) & (freqs <= 7900)
    expected = np.interp(np.log2(freqs[band]), np.log2(anchors), gains_db)
    error = 10 * np.log10(psd[band]) - expected
    error -= np.median(error)  # the overall level is not part of the envelope
    assert np.median(np.abs(error)) < 0.4 and np.percentile(np.abs(error), 95) < 1.2
    flat = colored_noise(np.random.default_rng(1), 30 * rate, rate, 0.0)
    _, flat_psd = scipy.signal.welch(flat, rate, nperseg=2048)
    assert np.percentile(np.abs(10 * np.log10(flat_psd[band] / np.median(flat_psd))), 95) < 1.2


def test_babble_and_colored_noise_replace_the_recording_at_their_rates(corpus, audio):
    cfg = _cfg(
        noise_snr_db_range=(5.0, 5.0), babble_prob=0.3, colored_noise_prob=0.4,
        babble_talkers=(2, 3),
    )  # fmt: skip
    kinds = []
    for seed in range(60):
        ex = _mix(seed, corpus, audio, cfg, n_src=1)
        np.testing.assert_array_equal(ex["mixture"], ex["sources"].sum(0) + ex["noise"])
        assert _db(ex["sources"].sum(0)) - _db(ex["noise"]) == pytest.approx(5.0, abs=1e-3)
        name = ex["info"]["noise_file"]
        kinds.append(name.split(":")[0] if ":" in name else name)
        if name.startswith("babble:"):
            talkers = {f.split("/")[-2] for f in name[len("babble:") :].split("+")}
            assert 2 <= len(talkers) <= 3 and ex["info"]["speakers"][0] not in talkers
            spectrum = np.abs(np.fft.rfft(ex["noise"], RATE))  # 1 Hz bins
            assert all(spectrum[round(TONES[t])] > 10 * np.median(spectrum) for t in talkers)
    counts = {kind: kinds.count(kind) for kind in ("babble", "colored")}
    assert 8 <= counts["babble"] <= 30 and 12 <= counts["colored"] <= 36  # binomial, ±3σ
    assert len(kinds) - sum(counts.values()) >= 8  # the rest are the recordings
    with pytest.raises(ConfigError, match="babble needs at least 5"):
        _mix(
            0,
            corpus,
            audio,
            dataclasses.replace(
                cfg, babble_prob=1.0, colored_noise_prob=0.0, babble_talkers=(5, 6)
            ),
            n_src=1,
        )


def test_first_source_is_kept_and_others_differ(corpus, audio):
    _, speakers, *_ = corpus
    for seed in range(10):
        first = speakers[f"s{seed % 5}"][0]
        ex = _mix(seed, corpus, audio, _cfg(), n_src=5, first=first)
        assert ex["info"]["speakers"][0] == first.speaker
        assert sorted(ex["info"]["speakers"]) == sorted(TONES)


def test_silent_crops_are_redrawn(tmp_path, audio):
    """A 2.5 s file with speech only in its last 0.3 s: crops must reach the speech."""
    wav = np.zeros(round(2.5 * FILE_RATE), np.float32)
    wav[-round(0.3 * FILE_RATE) :] = tone(400.0, 0.3, FILE_RATE)
    sf.write(tmp_path / "0_late_0.wav", wav, FILE_RATE)
    speakers = group_by_speaker(scan_corpus(tmp_path))
    late = audio(tmp_path / "0_late_0.wav")
    threshold = 0.1 * np.sqrt(np.mean(np.square(late, dtype=np.float64)))  # -20 dB
    fallback = int(np.clip(np.argmax(np.abs(late)) - 2000, 0, len(late) - 4000))
    for tries, fallbacks in ((1, range(8, 16)), (40, range(3))):
        cfg = _cfg(crop_tries=tries)
        starts = []
        for seed in range(15):
            rng = np.random.default_rng(seed)
            ex = make_mixture(rng, cfg, speakers, [], [], audio, n_src=1)
            start = ex["info"]["source_starts"][0]
            crop = late[start : start + 4000].astype(np.float64)
            assert np.sqrt(np.mean(np.square(crop))) >= threshold
            starts.append(start)
        assert starts.count(fallback) in fallbacks  # ~85% of single draws miss the speech


def test_audio_cache(corpus):
    root, *_ = corpus
    path = root / "speech" / "s0" / "1.wav"
    cache = AudioCache(RATE, max_bytes=20000)
    wav = cache(path)
    assert len(wav) == 8000 and wav.dtype == np.float32  # 1 s at 16 kHz -> 8000 samples
    assert _dominant_hz(wav) == pytest.approx(300.0, abs=2.0)
    assert cache(path) is wav and not wav.flags.writeable
    cache(root / "speech" / "s1" / "1.wav")  # 32 kB > 20 kB: the first file is evicted
    assert cache(path) is not wav
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.sample_rate == RATE and clone(path) is not cache(path)
    np.testing.assert_array_equal(clone(path), wav)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"segment_seconds": 0.0},
        {"sample_rate": -8000},
        {"gain_db_range": (5.0, -5.0)},
        {"level_db_range": (1.0,)},
        {"noise_snr_db_range": (10.0, 0.0)},
        {"reverb_prob": 1.5},
        {"max_peak": 0.0},
        {"crop_tries": 0},
        {"speed_range": (1.2, 0.8)},
        {"speed_range": (0.0, 1.1)},
        {"noise_tilt_db_range": (6.0, -6.0)},
        {"babble_prob": -0.1},
        {"babble_prob": 0.6, "colored_noise_prob": 0.5},
        {"colored_noise_db": -1.0},
        {"babble_talkers": (0, 3)},
        {"babble_talkers": (4, 3)},
        {"lone_speaker_prob": 1.0},
        {"lone_speaker_prob": -0.1},
    ],
)
def test_bad_config(kwargs):
    with pytest.raises(ConfigError, match="MixtureConfig"):
        _cfg(**kwargs)


def test_bad_inputs(corpus, audio, tmp_path):
    _, speakers, noises, rirs = corpus
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="6 distinct speakers"):
        make_mixture(rng, _cfg(), speakers, noises, rirs, audio, n_src=6)
    with pytest.raises(ConfigError, match="n_src must be >= 1"):
        make_mixture(rng, _cfg(), speakers, noises, rirs, audio, n_src=0)
    with pytest.raises(ConfigError, match="no noise files"):
        make_mixture(rng, _cfg(noise_snr_db_range=(0, 5)), speakers, [], rirs, audio, n_src=2)
    with pytest.raises(ConfigError, match="noise_snr_db_range is None"):
        make_mixture(rng, _cfg(), speakers, noises, rirs, audio, n_src=2, snr_db=0.0)
    with pytest.raises(ConfigError, match="no RIR files"):
        make_mixture(rng, _cfg(reverb_prob=0.5), speakers, noises, [], audio, n_src=2)
    with pytest.raises(ConfigError, match="AudioCache"):
        make_mixture(rng, _cfg(), speakers, noises, rirs, AudioCache(16000), n_src=2)
    sf.write(tmp_path / "0_zeros_0.wav", np.zeros(9000, np.float32), FILE_RATE)
    silent = group_by_speaker(scan_corpus(tmp_path))
    with pytest.raises(SilentAudioError, match=r"0_zeros_0\.wav"):
        make_mixture(rng, _cfg(), silent, noises, rirs, audio, n_src=1)
    sf.write(tmp_path / "zero_rir.wav", np.zeros(100, np.float32), FILE_RATE)
    with pytest.raises(SilentAudioError, match=r"zero_rir\.wav"):
        make_mixture(
            rng,
            _cfg(reverb_prob=1.0),
            speakers,
            noises,
            [tmp_path / "zero_rir.wav"],
            audio,
            n_src=2,
        )


def test_lone_speaker_mixtures_hold_the_first_speaker_alone(corpus, audio):
    """With ``lone_speaker_prob`` the other sources of some mixtures are silent (zeros) and
    the mixture is the first speaker's voice; at 0 the random stream is the one before."""
    cfg = _cfg()
    lone_cfg = _cfg(lone_speaker_prob=0.5)
    lone = 0
    for seed in range(40):
        ex = _mix(seed, corpus, audio, lone_cfg)
        silent = not np.any(ex["sources"][1])
        lone += silent
        np.testing.assert_allclose(ex["mixture"], ex["sources"].sum(0), atol=1e-6)
        if silent:
            assert np.any(ex["sources"][0])
            assert abs(_dominant_hz(ex["mixture"]) - TONES[ex["info"]["speakers"][0]]) < 20
    assert 10 <= lone <= 30
    first = _mix(3, corpus, audio, cfg)
    np.testing.assert_array_equal(_mix(3, corpus, audio, cfg)["mixture"], first["mixture"])
    assert np.any(first["sources"][1])
    one = _mix(0, corpus, audio, _cfg(lone_speaker_prob=0.9), n_src=1)
    assert np.any(one["sources"][0])  # a single-speaker mixture keeps its speaker

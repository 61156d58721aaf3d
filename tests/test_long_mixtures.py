"""Long real mixtures (``evaluate.py --long-mixtures``): the track measures against hand-made
cases (an oracle, a swap half way, a split voice), through the chunk stitching with an oracle
model, and the mixtures of whole utterances of the held-out speakers."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from test_separate_long import CHUNK, OVERLAP, chunked, oracle, shuffled

from jaxspeech import infer
from jaxspeech.data import corpus
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.evaluation import long_mixtures
from jaxspeech.metrics import tracks

RATE, WINDOW = 8000, 4000


def talkers(rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """``[2, T]`` two independent noise "voices" standing in for speech, each with its own
    level (from 0.3 to 1) every 0.25 s."""
    length = round(seconds * RATE)
    envelope = np.repeat(rng.uniform(0.3, 1.0, (2, length // 2000)), 2000, axis=-1)
    return rng.standard_normal((2, length)) * envelope


def numpy_si_snr(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """SI-SNR (dB) over the last axis, written out for this test."""
    est = est - est.mean(-1, keepdims=True)
    ref = ref - ref.mean(-1, keepdims=True)
    target = (est * ref).sum(-1, keepdims=True) / (ref * ref).sum(-1, keepdims=True) * ref
    return 10 * np.log10((target**2).sum(-1) / ((est - target) ** 2).sum(-1))


def test_oracle_stays_on_its_tracks(rng):
    refs = talkers(rng)
    est = refs[::-1] + 0.01 * rng.standard_normal(refs.shape)
    swaps = tracks.track_swaps(est, refs, WINDOW)
    assert swaps == {"active": 12, "decided": 12, "off_track": 0, "switches": 0}
    np.testing.assert_array_equal(tracks.file_permutation(est, refs), [1, 0])
    scores = long_mixtures.score_mixture(est, refs, WINDOW)
    assert scores["on tracks"] and scores["decided windows"] == 12
    mix_snr = numpy_si_snr(np.broadcast_to(refs.sum(0), refs.shape), refs)
    aligned = numpy_si_snr(est[::-1], refs)
    assert aligned.min() > 35  # the estimate really is that close
    assert scores["SI-SNRi (dB)"] == pytest.approx((aligned - mix_snr).mean(), abs=1e-3)
    worst = scores["worst speaker SI-SNRi (dB)"]
    assert worst == pytest.approx((aligned - mix_snr).min(), abs=1e-3)


@pytest.mark.parametrize("swap_window", [3, 8])
def test_a_swap_part_way_is_found_where_it_happens(rng, swap_window):
    """The tracks trade speakers at the start of window ``swap_window`` of 12: the windows of
    the minority side are off the whole file's permutation, with one switch."""
    refs = talkers(rng)
    est = refs.copy()
    est[:, swap_window * WINDOW :] = refs[::-1, swap_window * WINDOW :]
    permutations, clear = tracks.window_permutations(est, refs, WINDOW)
    assert clear.all()
    expected = np.array([[0, 1]] * swap_window + [[1, 0]] * (12 - swap_window))
    np.testing.assert_array_equal(permutations, expected)
    swaps = tracks.track_swaps(est, refs, WINDOW)
    assert swaps["off_track"] == min(swap_window, 12 - swap_window)
    assert swaps["switches"] == 1
    assert not long_mixtures.score_mixture(est, refs, WINDOW)["on tracks"]


def test_unclear_windows_are_not_decided(rng):
    """Both tracks a copy of the mixture: no permutation is better, none is decided."""
    refs = talkers(rng)
    est = np.stack([refs.sum(0), refs.sum(0)])
    swaps = tracks.track_swaps(est, refs, WINDOW)
    assert swaps["active"] == 12 and swaps["decided"] == 0 and swaps["off_track"] == 0


def test_only_windows_where_every_speaker_talks_count(rng):
    """A second voice silent for the last 5 windows and 40 dB down in window 2: those are not
    active, so a swap there is not counted."""
    refs = talkers(rng)
    refs[1, 7 * WINDOW :] = 0.0
    refs[1, 2 * WINDOW : 3 * WINDOW] *= 0.01
    active = tracks.active_windows(refs, WINDOW)
    np.testing.assert_array_equal(np.flatnonzero(active), [0, 1, 3, 4, 5, 6])
    est = refs.copy()
    est[:, 2 * WINDOW : 3 * WINDOW] = refs[::-1, 2 * WINDOW : 3 * WINDOW]
    assert tracks.track_swaps(est, refs, WINDOW)["off_track"] == 0


@pytest.mark.parametrize(
    ("residue_db", "split"), [(None, False), (-20.0, False), (-16.0, False), (-10.0, True)]
)
def test_one_speaker_with_a_faint_second_track(rng, residue_db, split):
    """The voice on track 1 and a copy of it ``residue_db`` below on track 0 (or silence)."""
    voice = talkers(rng)[0]
    faint = 0.0 if residue_db is None else 10.0 ** (residue_db / 20.0)
    where = tracks.one_speaker_tracks(np.stack([faint * voice, voice]), voice, WINDOW)
    assert where["louder_db"] == pytest.approx(0.0, abs=1e-9)
    quieter = tracks.FLOOR_DB if residue_db is None else residue_db
    assert where["quieter_db"] == pytest.approx(quieter, abs=1e-9)
    assert where["gap_db"] == pytest.approx(-quieter, abs=1e-9)
    assert where["split"] is split
    assert where["split_windows"] == (1.0 if split else 0.0)
    assert where["active"] == 12


def test_a_voice_that_moves_to_the_other_track_is_split(rng):
    """Track 0 has the first 4 windows of the voice, track 1 the other 8: 4.8 dB apart, split,
    and the 4 windows on the quieter track are split windows."""
    voice = talkers(rng)[0]
    est = np.zeros((2, voice.size))
    est[0, : 4 * WINDOW], est[1, 4 * WINDOW :] = voice[: 4 * WINDOW], voice[4 * WINDOW :]
    where = tracks.one_speaker_tracks(est, voice, WINDOW)
    energy = np.sum(est**2, axis=-1) / np.sum(voice**2)
    assert where["gap_db"] == pytest.approx(10 * np.log10(energy[1] / energy[0]))
    assert where["split"] and where["split_windows"] == pytest.approx(4 / 12)


def test_stitching_keeps_a_lone_speaker_whole_and_the_measure_sees_it(rng):
    """A lone speaker through ``separate_long`` with an oracle model that puts the voice on a
    random track of every chunk and a −30 dB trace of it on the other: the stitched tracks
    are not split. The same chunks laid end to end without matching them are split."""
    voice = talkers(rng, 8.0)[0].astype(np.float32)
    voice_chunks = chunked(voice)
    outputs = shuffled(np.stack([voice_chunks, 0.03 * voice_chunks], axis=1).astype(np.float32))
    out = infer.separate_long(oracle(voice, outputs), {}, voice, chunk=CHUNK, overlap=OVERLAP)
    where = long_mixtures.score_single(np.asarray(out, np.float64), voice, WINDOW)
    assert not where["split"] and where["split windows"] == 0.0
    assert where["quieter below louder (dB)"] == pytest.approx(30.46, abs=0.1)
    unmatched = np.concatenate(list(outputs[:, :, : CHUNK - OVERLAP]), axis=-1)
    cut = voice[: unmatched.shape[-1]]
    assert long_mixtures.score_single(unmatched.astype(np.float64), cut, WINDOW)["split"]


def test_stitching_keeps_two_speakers_on_their_tracks(rng):
    """Two voices through ``separate_long`` with an oracle model that shuffles the tracks of
    every chunk: on their tracks, every window decided."""
    refs = talkers(rng, 8.0).astype(np.float32)
    mixture = refs.sum(0)
    out = infer.separate_long(
        oracle(mixture, shuffled(chunked(refs))), {}, mixture, chunk=CHUNK, overlap=OVERLAP
    )
    scores = long_mixtures.score_mixture(np.asarray(out, np.float64), refs, WINDOW)
    assert scores["on tracks"] and scores["decided windows"] == scores["active windows"] == 16


def test_summary_of_hand_made_rows():
    mixed = [
        {
            "talkers": 2,
            "SI-SNRi (dB)": v,
            "on tracks": t,
            "active windows": 10,
            "decided windows": d,
        }
        for v, t, d in [(8.0, True, 10), (-1.0, False, 6), (4.0, True, 8), (12.0, True, 10)]
    ]
    alone = [
        {"talkers": 1, "quieter below louder (dB)": g, "split": s}
        for g, s in [(30.0, False), (5.0, True)]
    ]
    row = long_mixtures.summary(mixed + alone)
    assert row == {
        "mixtures": 4,
        "SI-SNRi median (dB)": 6.0,
        "SI-SNRi min (dB)": -1.0,
        "below 0 dB": 0.25,
        "no swap": 0.75,
        "windows decided": 34 / 40,
        "one-speaker files": 2,
        "gap median (dB)": 17.5,
        "one-speaker split": 0.5,
    }


def test_bad_shapes_are_one_line():
    with pytest.raises(ShapeError, match="same shape"):
        tracks.track_swaps(np.zeros((2, 100)), np.zeros((3, 100)), 10)
    with pytest.raises(ShapeError, match="S >= 2"):
        tracks.one_speaker_tracks(np.zeros((1, 100)), np.zeros(100), 10)


@pytest.fixture(scope="module")
def test_speakers(shared_data):
    """The test split of the smoke separation recipe's speech folders."""
    from test_cli import RECIPE

    from jaxspeech.data.pipeline import MixtureData
    from jaxspeech.train.stages import load_recipe

    config = load_recipe(f"{RECIPE}:smoke")
    return config.data.mixture, MixtureData(config.data, 8, 2).splits["test"]


def test_mixtures_of_whole_utterances_of_held_out_speakers(test_speakers):
    cfg, utterances = test_speakers
    make = dict(n_src=2, count=6, seed=2, min_samples=2 * RATE)
    examples = long_mixtures.long_mixtures(utterances, cfg, **make)
    again = long_mixtures.long_mixtures(utterances, cfg, **make)
    assert [e["id"] for e in examples] == [*(f"mix{i}" for i in range(6)), "one0"]
    known = {(u.speaker, pathlib.Path(u.path).name): u for u in utterances}
    for example, same in zip(examples, again, strict=True):
        np.testing.assert_array_equal(example["mixture"], same["mixture"])
        sources, info = example["sources"], example["info"]
        np.testing.assert_allclose(example["mixture"], sources.sum(0), atol=1e-6)
        assert len(set(info["speakers"])) == len(sources)
        assert min(info["offsets"]) == 0  # the longest utterance sets the length
        levels = []
        for row, name, offset, speaker in zip(
            sources, info["files"], info["offsets"], info["speakers"], strict=True
        ):
            utterance = known[speaker, name]
            assert utterance.seconds > 2.0
            wave = corpus.load_audio(utterance.path, RATE)
            whole = row[offset : offset + wave.size]  # the whole utterance, scaled
            gain = np.dot(whole, wave) / np.dot(wave, wave)
            np.testing.assert_allclose(whole, gain * wave, atol=1e-6)
            assert not np.any(row[:offset]) and not np.any(row[offset + wave.size :])
            levels.append(20 * np.log10(np.sqrt(np.mean(np.square(whole, dtype=np.float64)))))
        assert levels[0] <= cfg.level_db_range[1] + 1e-6
        np.testing.assert_allclose(np.subtract(levels, levels[0]), info["gains_db"], atol=1e-3)
        assert all(cfg.gain_db_range[0] <= g <= cfg.gain_db_range[1] for g in info["gains_db"])


def test_too_few_long_utterances_is_one_line(test_speakers):
    cfg, utterances = test_speakers
    with pytest.raises(ConfigError, match=r"an utterance longer than 60\.00 s"):
        long_mixtures.long_mixtures(
            utterances, cfg, n_src=2, count=2, seed=0, min_samples=60 * RATE
        )

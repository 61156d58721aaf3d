"""Labelled utterance crops: checked against brute-force numpy/scipy references on tones.

Every synthetic speaker speaks a pure tone at its own frequency, recorded at 16 kHz and cropped
at 8 kHz, so the frequency of a crop tells whose it is.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
from synthetic import assert_stratified, batches_equal, take, write_tone_corpus

from jaxspeech.audio import load
from jaxspeech.data.corpus import group_by_speaker, scan_corpus
from jaxspeech.data.mixing import AudioCache
from jaxspeech.data.source import StreamOptions
from jaxspeech.data.utterances import (
    UtteranceData,
    UtteranceDataConfig,
    make_crop,
    utterance_dataset,
)
from jaxspeech.errors import ConfigError
from jaxspeech.train.stages import load_recipe

FILE_RATE, RATE = 16000, 8000
TONES = {f"s{k}": 300.0 + 250.0 * k for k in range(6)}
SECONDS = (0.3, 1.0, 1.6)  # 0.3 s is shorter than the 0.5 s crop: zero padding


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data root with ``speech/<speaker>/*.wav`` tones, ``noise/`` and ``rir/``."""
    return write_tone_corpus(
        tmp_path_factory.mktemp("data"), TONES, SECONDS, FILE_RATE, {"short": 3000}
    )


def _cfg(root, **kw):
    return UtteranceDataConfig(
        **{
            "root": str(root),
            "speech": ("speech",),
            "sample_rate": RATE,
            "crop_seconds": 0.5,
            "split_fractions": (4 / 6, 1 / 6, 1 / 6),
            **kw,
        }
    )


def _dominant_hz(x):
    return np.argmax(np.abs(np.fft.rfft(x, 8 * RATE))) * RATE / (8 * RATE)


def _window(wav, start, length):
    """Brute-force reference crop: zero-pad both sides generously, then slice."""
    padded = np.concatenate([np.zeros(length), wav, np.zeros(length)])
    return padded[start + length : start + 2 * length]


def _db(x):
    return 10 * np.log10(np.mean(np.square(np.asarray(x, np.float64))))


def test_crops_reverb_and_noise_match_reference(root):
    utts = scan_corpus(root / "speech")
    audio = AudioCache(RATE)
    rir = load(root / "rir" / "room.wav", RATE)[0].astype(np.float64)
    noise_wav = load(root / "noise" / "short.wav", RATE)[0].astype(np.float64)
    cfg = _cfg(root, noise_snr_db_range=(-5.0, 20.0), noise_prob=0.5, reverb_prob=0.5)
    seen = {"padded": 0, "reverberant": 0, "noisy": 0, "clean": 0}
    for seed in range(16):
        utt = utts[seed % len(utts)]
        ex = make_crop(np.random.default_rng(seed), cfg, utt, [root / "noise" / "short.wav"],
                       [root / "rir" / "room.wav"], audio)  # fmt: skip
        info = ex["info"]
        assert ex["audio"].shape == (4000,) and ex["audio"].dtype == np.float32
        assert info["speaker"] == utt.speaker and info["path"] == utt.path
        speech = load(utt.path, RATE)[0].astype(np.float64)
        if info["rir_file"]:
            speech = np.convolve(speech, rir)  # the full tail, then the same crop of it
            seen["reverberant"] += 1
        ref = _window(speech, info["start"], 4000)
        seen["padded"] += info["start"] < 0
        if info["noise_file"]:
            seen["noisy"] += 1
            noise = np.tile(noise_wav, 5)[info["noise_start"] : info["noise_start"] + 4000]
            assert -5.0 <= info["snr_db"] <= 20.0
            added = ex["audio"] - ref
            assert _db(ref) - _db(added) == pytest.approx(info["snr_db"], abs=1e-4)
            ref = ref + noise * (added @ noise) / (noise @ noise)  # a scaled crop of the noise
        else:
            seen["clean"] += 1
            assert info["snr_db"] == np.inf
            assert _dominant_hz(ex["audio"]) == pytest.approx(TONES[utt.speaker], abs=2.0)
        np.testing.assert_allclose(ex["audio"], ref, atol=1e-6)
    assert all(seen.values()), seen
    again = make_crop(np.random.default_rng(3), cfg, utts[3], [root / "noise" / "short.wav"],
                      [root / "rir" / "room.wav"], audio)  # fmt: skip
    first = make_crop(np.random.default_rng(3), cfg, utts[3], [root / "noise" / "short.wav"],
                      [root / "rir" / "room.wav"], audio)  # fmt: skip
    np.testing.assert_array_equal(again["audio"], first["audio"])


def test_training_stream_labels_epochs_and_determinism(root):
    data = UtteranceData(_cfg(root), batch_size=2)
    train_speakers = sorted({u.speaker for u in data.splits["train"]})
    assert data.speaker_ids == {s: i for i, s in enumerate(train_speakers)}
    assert data.num_speakers == 4 and len(data.splits["train"]) == 12
    names = {i: s for s, i in data.speaker_ids.items()}
    batches = take(data.train_dataset(seed=3), 12)  # two epochs of 12 crops
    assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {
        "audio": ((2, 4000), np.float32),
        "speaker": ((2,), np.int32),
    }
    labels = [int(s) for b in batches for s in b["speaker"]]
    for batch in batches:
        for crop, label in zip(batch["audio"], batch["speaker"], strict=True):
            assert _dominant_hz(crop) == pytest.approx(TONES[names[int(label)]], abs=2.0)
    counts = [sorted(labels[:12]), sorted(labels[12:])]  # each utterance once per epoch
    assert counts[0] == counts[1] == sorted(list(range(4)) * 3)
    again = take(data.train_dataset(seed=3), 12)
    assert all(batches_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = take(data.train_dataset(seed=4), 1)
    assert not np.array_equal(other[0]["audio"], batches[0]["audio"])


def test_every_epoch_covers_each_utterance_once(root):
    """Crops longer than every file hold a whole, zero-padded file: each tells its file."""
    cfg = _cfg(root, crop_seconds=2.0)
    utts = scan_corpus(root / "speech")
    ids = {s: i for i, s in enumerate(TONES)}
    ds = utterance_dataset(cfg, utts, ids, [], [], StreamOptions(3, num_epochs=2))
    crops = [c for b in ds for c in b["audio"]]
    assert len(crops) == 2 * len(utts)
    energies = np.array([np.sum(load(u.path, RATE)[0].astype(np.float64) ** 2) for u in utts])
    found = [int(np.argmin(np.abs(energies - np.sum(c.astype(np.float64) ** 2)))) for c in crops]
    assert sorted(found[: len(utts)]) == sorted(found[len(utts) :]) == list(range(len(utts)))
    assert found[: len(utts)] != found[len(utts) :]  # each epoch in a fresh order


def test_state_restore_and_process_shards(root):
    data = UtteranceData(_cfg(root, reverb_prob=0.5, rir="rir"), batch_size=4)
    it = iter(data.train_dataset(seed=1))
    for _ in range(4):  # crosses the end of the first epoch (12 crops, 4 per batch)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    resumed = take(data.train_dataset(seed=1), 2, state=state)
    assert all(batches_equal(a, b) for a, b in zip(expected, resumed, strict=True))
    whole = take(data.train_dataset(seed=1), 2)
    shards = [take(data.train_dataset(p, 2, seed=1), 2) for p in range(2)]
    for step in range(2):
        for p in range(2):
            for key, value in shards[p][step].items():
                assert value.shape[0] == 2
                np.testing.assert_array_equal(value, whole[step][key][p::2])


def test_eval_sets_whole_and_fixed_crops(root):
    data = UtteranceData(_cfg(root), batch_size=2)
    test = data.test_items("test")
    test_speakers = {u.speaker for u in data.splits["test"]}
    assert len(test) == 3 and {e["info"]["speaker"] for e in test} == test_speakers
    assert not test_speakers & set(data.speaker_ids)
    for ex in test:
        np.testing.assert_array_equal(ex["audio"], load(ex["info"]["path"], RATE)[0])
        assert ex["speaker"] == 0 and ex["speaker"].dtype == np.int32
    cropped = UtteranceData(_cfg(root, eval_seconds=0.5), batch_size=2)
    valid = cropped.test_items("valid")
    assert [e["info"]["path"] for e in valid] == [u.path for u in cropped.splits["valid"]]
    for ex in valid:
        wav = load(ex["info"]["path"], RATE)[0]
        np.testing.assert_array_equal(ex["audio"], _window(wav, ex["info"]["start"], 4000))
    assert any(e["info"]["start"] < 0 for e in valid) and any(e["info"]["start"] > 0 for e in valid)
    augmented = _cfg(root, eval_seconds=0.5, noise="noise", noise_snr_db_range=(0.0, 5.0))
    again = UtteranceData(augmented, batch_size=2).test_items("valid")  # always clean
    assert all(batches_equal(a, b) for a, b in zip(valid, again, strict=True))
    reseeded = UtteranceData(_cfg(root, eval_seconds=0.5, split_seed=1), 2).test_items("valid")
    assert [e["info"] for e in reseeded] != [e["info"] for e in valid]
    capped = UtteranceData(_cfg(root, eval_per_speaker=2), batch_size=2).test_items("test")
    paths = [e["info"]["path"] for e in capped]
    assert len(paths) == 2 and paths == sorted(paths)  # 2 of the test speaker's 3
    assert set(paths) < {e["info"]["path"] for e in test}
    with pytest.raises(ConfigError, match="eval_per_speaker"):
        _cfg(root, eval_per_speaker=0)


def test_two_speakers_of_one_split_get_distinct_labels(root):
    data = UtteranceData(_cfg(root, split_fractions=(0.5, 0.0, 0.5)), batch_size=2)
    test = data.test_items("test")
    by_name = {e["info"]["speaker"]: int(e["speaker"]) for e in test}
    assert sorted(by_name.values()) == [0, 1, 2] and list(by_name) == sorted(by_name)
    assert len(test) == 9 and data.test_items("valid") == []


def test_bad_inputs(root):
    for bad in (
        {"crop_seconds": 0.0},
        {"eval_seconds": 1e-6},
        {"noise_prob": 1.5},
        {"reverb_prob": -0.1},
        {"noise_snr_db_range": (5.0, 0.0)},
        {"crop_tries": 0},
    ):
        with pytest.raises(ConfigError, match="UtteranceDataConfig"):
            _cfg(root, **bad)
    with pytest.raises(ConfigError, match=r"data\.speech is empty"):
        UtteranceData(UtteranceDataConfig(), batch_size=2)
    with pytest.raises(ConfigError, match=r"data\.noise is not"):
        UtteranceData(_cfg(root, noise_snr_db_range=(0.0, 5.0)), batch_size=2)
    with pytest.raises(ConfigError, match=r"data\.rir with"):
        UtteranceData(_cfg(root, reverb_prob=0.5), batch_size=2)
    data = UtteranceData(_cfg(root), batch_size=3)
    with pytest.raises(ConfigError, match="unknown split"):
        data.test_items("train")
    with pytest.raises(ConfigError, match="multiple of process_count"):
        data.train_dataset(process_count=2)
    utts = data.splits["train"]
    with pytest.raises(ConfigError, match="no label"):
        utterance_dataset(data.cfg, utts, {}, [], [], StreamOptions(2))
    with pytest.raises(ConfigError, match="no utterances"):
        utterance_dataset(data.cfg, [], {}, [], [], StreamOptions(2))
    with pytest.raises(ConfigError, match="AudioCache"):
        make_crop(np.random.default_rng(0), data.cfg, utts[0], [], [], AudioCache(16000))
    noisy = dataclasses.replace(data.cfg, noise_snr_db_range=(0.0, 1.0))
    with pytest.raises(ConfigError, match="no noise files"):
        make_crop(np.random.default_rng(0), noisy, utts[0], [], [], AudioCache(RATE))


def test_real_speechocean_with_noise_and_reverb(shared_data):
    cfg = UtteranceDataConfig(
        speech=("speechocean762",),
        noise="noise",
        rir=str(shared_data / "rir"),
        root=str(shared_data),
        crop_seconds=2.0,
        noise_snr_db_range=(0.0, 15.0),
        reverb_prob=0.5,
        split_fractions=(0.6, 0.2, 0.2),
    )
    data = UtteranceData(cfg, batch_size=8)
    assert data.num_speakers == 120 and len(data.splits["train"]) == 720
    speakers = {k: {u.speaker for u in v} for k, v in data.splits.items()}
    assert not speakers["train"] & speakers["test"] and not speakers["valid"] & speakers["test"]
    assert len(data.noises) == 8 and len(data.rirs) == 4
    (batch,) = take(data.train_dataset(seed=0), 1)
    assert batch["audio"].shape == (8, 32000) and np.all(np.isfinite(batch["audio"]))
    assert np.all((batch["speaker"] >= 0) & (batch["speaker"] < 120))
    test = data.test_items("test")
    assert len(test) == 240 and {int(e["speaker"]) for e in test} == set(range(40))
    groups = group_by_speaker(data.splits["test"])
    first = test[0]
    assert first["audio"].shape == (groups[first["info"]["speaker"]][0].num_samples,)


def test_real_speaker_recipe_data_with_grid_s1(shared_data):
    """The smoke recipe's student data: GRID s1 is one stratified speaker among 219, and its
    clips crop like any utterance."""
    pytest.importorskip("av", reason='needs the video extra: pip install -e ".[video]"')
    recipe = pathlib.Path(__file__).resolve().parents[1] / "configs/speaker/resnet_kd.py"
    student = load_recipe(f"{recipe}:smoke").stages[2].config
    cfg = dataclasses.replace(student.data, root=str(shared_data))
    data = UtteranceData(cfg, batch_size=student.train.batch_size)
    corpus = sorted(u for split in data.splits.values() for u in split)
    assert len({u.speaker for u in corpus}) == 219
    assert data.num_speakers == student.model.num_speakers == 175
    holding = [
        name for name, utts in data.splits.items() if any(u.speaker == "grid_s1" for u in utts)
    ]
    assert len(holding) == 1
    grid = [u for u in data.splits[holding[0]] if u.speaker == "grid_s1"]
    assert len(grid) == 40 and {u.sample_rate for u in grid} == {44100}
    assert_stratified(corpus, data.splits, cfg.split_fractions)
    (batch,) = take(data.train_dataset(seed=0), 1)
    assert batch["audio"].shape == (16, 32000) and np.all(np.isfinite(batch["audio"]))
    crop = make_crop(
        np.random.default_rng(0), cfg, grid[0], data.noises, data.rirs, AudioCache(16000)
    )
    assert crop["audio"].shape == (32000,) and crop["info"]["speaker"] == "grid_s1"
    assert np.all(np.isfinite(crop["audio"])) and np.std(crop["audio"]) > 1e-3


def test_speed_perturbation_scales_the_pitch(root):
    utt = next(u for u in scan_corpus(root / "speech") if u.seconds > 1.5)
    cfg = _cfg(root, speed_range=(1.25, 1.25))
    crop = make_crop(np.random.default_rng(0), cfg, utt, [], [], AudioCache(RATE))["audio"]
    assert _dominant_hz(crop) == pytest.approx(1.25 * TONES[utt.speaker], abs=3.0)
    with pytest.raises(ConfigError, match="positive"):
        _cfg(root, speed_range=(0.0, 1.0))


@pytest.mark.parametrize("sampling", ["utterance", "speaker"])
def test_speaker_sampling_evens_out_speakers_with_more_utterances(root, sampling):
    """s0 keeps its 3 utterances, s1..s3 one each: per-utterance crops give s0 half the
    stream, per-speaker crops give every speaker a quarter."""
    groups = group_by_speaker(scan_corpus(root / "speech"))
    utts = groups["s0"] + [groups[s][0] for s in ("s1", "s2", "s3")]
    ids = {s: i for i, s in enumerate(("s0", "s1", "s2", "s3"))}
    cfg = _cfg(root, sampling=sampling)
    ds = utterance_dataset(cfg, utts, ids, [], [], StreamOptions(6, num_epochs=60))
    batches = list(ds)
    labels = np.concatenate([b["speaker"] for b in batches])
    for crop, label in zip(batches[0]["audio"], batches[0]["speaker"], strict=True):
        assert _dominant_hz(crop) == pytest.approx(TONES[f"s{int(label)}"], abs=2.0)
    shares = np.bincount(labels, minlength=4) / len(labels)
    assert len(labels) == 360
    if sampling == "utterance":
        np.testing.assert_allclose(shares, [0.5, 1 / 6, 1 / 6, 1 / 6])
    else:
        assert np.all(np.abs(shares - 0.25) < 0.07), shares


def test_unknown_sampling_is_refused(root):
    with pytest.raises(ConfigError, match="sampling='speakers'"):
        _cfg(root, sampling="speakers")


def test_speaker_corpora_in_official_layouts(tmp_path, shared_data, capsys):
    """``data.corpus``: VoxCeleb2 dev trains (its M4A files decoded), VoxCeleb1's test
    speakers test with veri_test2; with VoxCeleb1 alone, its dev split trains."""
    from corpus_trees import build_voxceleb1, build_voxceleb2

    from jaxspeech.data.utterances import official_trials

    vox1 = build_voxceleb1(tmp_path / "VoxCeleb1", shared_data)
    cfg = UtteranceDataConfig(
        root=str(tmp_path), corpus=".", crop_seconds=0.5, split_fractions=(0.5, 0.5, 0.0)
    )
    with pytest.raises(ConfigError, match="not both"):
        dataclasses.replace(cfg, speech=("VoxCeleb1/wav",))

    def speakers(data):
        return {name: sorted({u.speaker for u in utts}) for name, utts in data.splits.items()}

    alone = UtteranceData(cfg, batch_size=2)
    assert speakers(alone) == {
        "train": ["id10002"],
        "valid": ["id10001"],
        "test": ["id10270", "id10271"],
    }
    assert "training on VoxCeleb1 dev (1 speakers" in capsys.readouterr().err
    build_voxceleb2(tmp_path / "VoxCeleb2", shared_data)
    data = UtteranceData(cfg, batch_size=2)
    split = speakers(data)
    assert sorted(split["train"] + split["valid"]) == ["id00012", "id00015"]
    assert split["test"] == ["id10270", "id10271"]
    assert "training on VoxCeleb2 dev" in capsys.readouterr().err
    assert all(u.path.endswith(".m4a") for u in data.splits["train"])
    batch = next(iter(data.train_dataset()))
    assert batch["audio"].shape == (2, 8000) and np.abs(batch["audio"]).max() > 0.01
    assert set(batch["speaker"]) == {0}
    name, trials = official_trials(tmp_path)
    lines = (vox1 / "veri_test2.txt").read_text().splitlines()
    assert name == "VoxCeleb1-veri_test2" and len(trials) == len(lines)
    label, enrol, test = lines[3].split()
    assert trials[3] == (int(label), str(vox1 / "wav" / enrol), str(vox1 / "wav" / test))

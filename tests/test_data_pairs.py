"""Pairs from a CSV: checking, disjoint splits (against brute-force components), crops."""

from __future__ import annotations

import csv
import itertools
import pickle

import numpy as np
import pytest
import soundfile as sf

from jaxspeech.audio import load
from jaxspeech.data.pairs import Pair, PairData, PairDataConfig, read_pairs, split_pairs
from jaxspeech.errors import ConfigError

RATE = 8000


def _write_csv(path, rows, header=("audio", "music", "label")):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """``clips/c{k}.wav`` (k tones, 0.3 to 1.4 s), ``music/m{j}.flac`` (16 kHz stereo), and
    ``lists/pairs.csv``: every clip with every piece of music, label 1 when k + j is even."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    (root / "clips").mkdir()
    (root / "music").mkdir()
    for k in range(8):
        t = np.arange(round((0.3 + 0.15 * k) * RATE)) / RATE
        sf.write(root / "clips" / f"c{k}.wav", 0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t), RATE)
    for j in range(3):
        sf.write(root / "music" / f"m{j}.flac", 0.2 * rng.standard_normal((16000, 2)), 16000)
    rows = [
        (f"../clips/c{k}.wav", f"../music/m{j}.flac", (k + j + 1) % 2)
        for k in range(8)
        for j in range(3)
    ]
    _write_csv(root / "lists" / "pairs.csv", rows)
    return root


def _cfg(root, **kw):
    return PairDataConfig(
        **{
            "root": str(root),
            "csv": "lists/pairs.csv",
            "sample_rate": RATE,
            "crop_seconds": 0.5,
            "split_fractions": (0.5, 0.25, 0.25),
            **kw,
        }
    )


def test_read_pairs_paths_and_labels(root, tmp_path):
    pairs = read_pairs(root / "lists" / "pairs.csv", "audio", "music", "label", root / "lists")
    assert len(pairs) == 24 and pairs[0].line == 2 and pairs[-1].line == 25
    assert pairs[1] == Pair(str(root / "clips/c0.wav"), str(root / "music/m1.flac"), 0.0, 3)
    assert sum(p.label for p in pairs) == 12
    rows = [  # other column names and order, absolute paths, labels written as floats
        ("x", f"{root}/music/m0.flac", "1.0", f"{root}/clips/c1.wav"),
        ("y", f"{root}/music/m2.flac", " 0 ", f"{root}/clips/c2.wav"),
        ("z", "../music/m2.flac", "1", f"{root}/lists/../clips/./c1.wav"),  # the same files
    ]
    path = _write_csv(tmp_path / "other.csv", rows, ("id", "song", "suits", "story"))
    other = read_pairs(path, "story", "song", "suits", root / "lists")
    assert [(p.first, p.second, p.label) for p in other] == [
        (f"{root}/clips/c1.wav", f"{root}/music/m0.flac", 1.0),
        (f"{root}/clips/c2.wav", f"{root}/music/m2.flac", 0.0),
        (f"{root}/clips/c1.wav", f"{root}/music/m2.flac", 1.0),
    ]
    for seed in range(4):  # c1, written two ways, is one item: its pairs stay together
        splits = split_pairs(other, (0.5, 0.5, 0.0), seed).values()
        assert [other[0] in v for v in splits] == [other[2] in v for v in splits]


def test_bad_csv_reports_every_row_with_its_line(root, tmp_path):
    with pytest.raises(ConfigError, match="no such pairs CSV"):
        read_pairs(tmp_path / "none.csv", "audio", "music", "label", tmp_path)
    path = _write_csv(tmp_path / "cols.csv", [("a", "b")], ("audio", "song"))
    with pytest.raises(
        ConfigError, match=r"cols\.csv: no column\(s\) 'music', 'label'.*first_column"
    ):
        read_pairs(path, "audio", "music", "label", tmp_path)
    path = _write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(ConfigError, match="no rows"):
        read_pairs(path, "audio", "music", "label", tmp_path)
    clip, music = f"{root}/clips/c0.wav", f"{root}/music/m0.flac"
    rows = [
        (clip, music, "1"),
        (clip, f"{root}/music/missing.flac", "0"),
        (clip, music, "yes"),
        (clip, music, "0.5"),
        ("", music, "1"),
        (clip, music, "nan"),
    ]
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ConfigError) as err:
        read_pairs(path, "audio", "music", "label", tmp_path)
    message = str(err.value)
    assert "5 bad cell(s)" in message and "labels 0 or 1" in message
    assert f"{path} line 3: 'music' file {root}/music/missing.flac does not exist" in message
    assert f"{path} line 4: label 'yes' is not a number" in message
    assert f"{path} line 5: label '0.5' is not 0 or 1" in message
    assert f"{path} line 6: empty 'audio'" in message
    assert f"{path} line 7: label 'nan' is not 0 or 1" in message
    assert "line 2" not in message
    many = _write_csv(tmp_path / "many.csv", [(clip, music, "2")] * 13)
    with pytest.raises(ConfigError, match=r"(?s)13 bad cell\(s\).*\.\.\. and 3 more"):
        read_pairs(many, "audio", "music", "label", tmp_path)


def _components(pairs):
    """Brute-force reference: repeatedly merge groups of pairs that share a file."""
    groups = [({p.first, p.second}, [p]) for p in pairs]
    merged = True
    while merged:
        merged = False
        for a, b in itertools.combinations(range(len(groups)), 2):
            if groups[a][0] & groups[b][0]:
                groups[a] = (groups[a][0] | groups[b][0], groups[a][1] + groups[b][1])
                del groups[b]
                merged = True
                break
    return sorted(sorted(g[1]) for g in groups)


def test_split_keeps_items_disjoint():
    rng = np.random.default_rng(0)
    pairs = [  # 30 clips against 12 pieces of music, two random pieces each
        Pair(f"/clip{k}", f"/music{j}", float(rng.integers(2)), 2 * k + n)
        for k in range(30)
        for n, j in enumerate(rng.choice(12, 2, replace=False))
    ]
    for seed in range(3):
        splits = split_pairs(pairs, (0.6, 0.2, 0.2), seed)
        assert sorted(p for v in splits.values() for p in v) == sorted(pairs)
        firsts = {k: {p.first for p in v} for k, v in splits.items()}
        assert [len(firsts[k]) for k in ("train", "valid", "test")] == [18, 6, 6]
        assert not any(firsts[a] & firsts[b] for a, b in itertools.combinations(firsts, 2))
        assert split_pairs(list(reversed(pairs)), (0.6, 0.2, 0.2), seed) == splits
    assert split_pairs(pairs, (0.6, 0.2, 0.2), 1) != split_pairs(pairs, (0.6, 0.2, 0.2), 0)

    sparse = [  # chains and stars of shared files; one file in both columns
        Pair("/a", "/x", 1.0, 2), Pair("/b", "/x", 0.0, 3), Pair("/b", "/y", 1.0, 4),
        Pair("/c", "/z", 0.0, 5), Pair("/d", "/w", 1.0, 6), Pair("/w", "/v", 0.0, 7),
        Pair("/e", "/u", 1.0, 8), Pair("/f", "/t", 1.0, 9), Pair("/g", "/t", 0.0, 10),
    ]  # fmt: skip
    reference = _components(sparse)
    assert len(reference) == 5
    for seed in range(4):
        splits = split_pairs(sparse, (0.4, 0.2, 0.4), seed, disjoint="both")
        files = {k: {f for p in v for f in (p.first, p.second)} for k, v in splits.items()}
        assert not any(files[a] & files[b] for a, b in itertools.combinations(files, 2))
        groups = sorted(g for v in splits.values() for g in _components(v))
        assert groups == reference  # whole components, never cut
        assert [len(_components(splits[k])) for k in ("train", "valid", "test")] == [2, 1, 2]
    with pytest.raises(ConfigError, match=r"2 groups of pairs \(disjoint='both'\) cannot fill 3"):
        split_pairs(sparse[:3] + sparse[4:6], disjoint="both")
    with pytest.raises(ConfigError, match="disjoint='none'"):
        split_pairs(sparse, disjoint="none")


def test_sources_give_centred_crops_and_labels(root):
    data = PairData(_cfg(root), batch_size=4)
    assert len(data.pairs) == 24
    lengths = {k: len(v) for k, v in data.splits.items()}
    assert lengths == {"train": 12, "valid": 6, "test": 6}  # 4, 2, 2 clips of 3 pairs each
    ds = data.source("train")
    assert len(ds) == 12 and data.sample_rate == RATE
    for i, pair in enumerate(data.splits["train"]):
        item = ds[i]
        assert item["label"] == pair.label and item["label"].dtype == np.float32
        for key, path in (("first", pair.first), ("second", pair.second)):
            wav = load(path, RATE)[0].astype(np.float64)  # downmixed and resampled
            padded = np.concatenate([np.zeros(4000), wav, np.zeros(4000)])
            start = 4000 + (len(wav) - 4000) // 2
            assert item[key].shape == (4000,) and item[key].dtype == np.float32
            np.testing.assert_allclose(item[key], padded[start : start + 4000], atol=1e-7)
    batch = next(iter(data.train_dataset(seed=1)))
    assert batch["first"].shape == (4, 4000) and batch["label"].shape == (4,)
    assert {float(x) for x in batch["label"]} <= {p.label for p in data.splits["train"]}
    assert len(data.valid_batches()) == 1  # 6 validation pairs: one whole batch of 4
    items = data.test_items("test")
    assert [i["id"] for i in items] == [str(p.line) for p in data.splits["test"]]
    assert items[0]["info"]["first"] == data.splits["test"][0].first
    copied = pickle.loads(pickle.dumps(data.source("test")))
    assert all(
        np.array_equal(copied[i]["first"], data.source("test")[i]["first"]) for i in range(6)
    )


def test_feature_function_runs_once_per_file(root):
    calls = []

    def stats(wav):
        calls.append(len(wav))
        return np.array([len(wav), np.mean(wav**2)], np.float32)

    data = PairData(_cfg(root, split_fractions=(1.0, 0.0, 0.0)), 4, features=stats)
    source = data.source("train")
    items = [source[i] for i in range(len(source))] + [source[0]]
    assert len(calls) == 8 + 3  # eight clips and three pieces of music
    for item, pair in zip(items, data.splits["train"], strict=False):
        wav = load(pair.second, RATE)[0]
        np.testing.assert_allclose(item["second"], [len(wav), np.mean(wav**2)], rtol=1e-6)


def test_paths_relative_to_the_data_root_and_config_errors(root, tmp_path):
    rows = [(f"clips/c{k}.wav", "music/m0.flac", k % 2) for k in range(4)]
    _write_csv(root / "lists" / "from_root.csv", rows)
    data = PairData(_cfg(root, csv="lists/from_root.csv", paths_relative_to="root"), 4)
    assert data.pairs[0].first == str(root / "clips" / "c0.wav")
    with pytest.raises(ConfigError, match="does not exist"):
        PairData(_cfg(root, csv="lists/from_root.csv"), 4)  # relative to the CSV folder: absent
    with pytest.raises(ConfigError, match="paths_relative_to='cwd'"):
        _cfg(root, paths_relative_to="cwd")
    with pytest.raises(ConfigError, match="disjoint='pairs'"):
        _cfg(root, disjoint="pairs")
    with pytest.raises(ConfigError, match="at least one sample"):
        _cfg(root, crop_seconds=0.0)
    with pytest.raises(ConfigError, match=r"data\.csv is empty"):
        PairData(PairDataConfig(), 4)
    with pytest.raises(ConfigError, match="unknown split"):
        data.source("dev")


def test_real_story_and_music_pairs(shared_data, tmp_path):
    """LibriSpeech utterances against the stereo 44.1 kHz OGG music, paths from the root."""
    clips = sorted((shared_data / "librispeech" / "test-other").rglob("*.flac"))[:6]
    music = sorted((shared_data / "music").glob("*.ogg"))[:2]
    rows = [
        (str(c.relative_to(shared_data)), str(m.relative_to(shared_data)), (i + j) % 2)
        for i, c in enumerate(clips)
        for j, m in enumerate(music)
    ]
    _write_csv(tmp_path / "pairs.csv", rows, ("story", "music", "suits"))
    cfg = PairDataConfig(
        root=str(shared_data),
        csv=str(tmp_path / "pairs.csv"),
        first_column="story",
        label_column="suits",
        paths_relative_to="root",
        crop_seconds=2.0,
        split_fractions=(4 / 6, 1 / 6, 1 / 6),
    )
    data = PairData(cfg, 4)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 8, "valid": 2, "test": 2}
    item = data.source("test")[1]
    assert item["first"].shape == item["second"].shape == (32000,)
    assert np.all(np.isfinite(item["second"])) and np.abs(item["second"]).max() > 0.01


def test_graded_labels_groups_and_splits_disjoint_on_each_side(root, tmp_path):
    clip, music = f"{root}/clips/c0.wav", f"{root}/music/m0.flac"
    rows = [(clip, music, "0.25", "s1"), (clip, music, "1.5", "s1"), (clip, music, "-0.1", "")]
    path = _write_csv(tmp_path / "graded.csv", rows, ("audio", "music", "label", "speaker"))
    with pytest.raises(ConfigError) as err:
        read_pairs(path, "audio", "music", "label", tmp_path, graded=True, group_column="speaker")
    assert "2 bad cell(s)" in str(err.value) and "'1.5' is not in [0, 1]" in str(err.value)
    assert "labels in [0, 1]" in str(err.value)
    good = _write_csv(tmp_path / "good.csv", rows[:1], ("audio", "music", "label", "speaker"))
    (pair,) = read_pairs(good, "audio", "music", "label", tmp_path, True, "speaker")
    assert (pair.label, pair.first_group) == (0.25, "s1")
    with pytest.raises(ConfigError, match=r"'0\.25' is not 0 or 1"):
        read_pairs(good, "audio", "music", "label", tmp_path)

    grid = [  # 12 clips of 6 speakers against 10 tracks
        Pair(f"/clip{k}", f"/music{j}", (k + j) % 3 / 2, 1 + 10 * k + j, f"speaker{k // 2}")
        for k in range(12)
        for j in range(10)
    ]
    for seed in range(3):
        splits = split_pairs(grid, (0.6, 0.2, 0.2), seed, disjoint="each")
        speakers = {k: {p.first_group for p in v} for k, v in splits.items()}
        tracks = {k: {p.second for p in v} for k, v in splits.items()}
        assert [len(speakers[k]) for k in ("train", "valid", "test")] == [4, 1, 1]
        assert [len(tracks[k]) for k in ("train", "valid", "test")] == [6, 2, 2]
        for a, b in itertools.combinations(splits, 2):
            assert not speakers[a] & speakers[b] and not tracks[a] & tracks[b]
        kept = {p for v in splits.values() for p in v}  # the whole grid of each split, no more
        assert len(kept) == 8 * 6 + 2 * 2 + 2 * 2
        assert split_pairs(list(reversed(grid)), (0.6, 0.2, 0.2), seed, disjoint="each") == splits
    with pytest.raises(ConfigError, match="in both columns"):
        split_pairs([*grid, Pair("/music0", "/music1", 1.0, 999)], disjoint="each")

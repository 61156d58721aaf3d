"""The audio-visual recipe's corpus variants on miniature GRID and LRS3 trees in their
official layouts: which clips each split gets, and test items with IDs."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf
from corpus_trees import LRS3_CLIPS, build_grid, build_lrs3

from jaxspeech.data.av import AVData
from jaxspeech.train import stages

RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs/av/lipgate.py"
GRID = [("noise", 0.0), ("talker", 0.0)]


@pytest.fixture(autouse=True)
def _video():
    pytest.importorskip("av", reason='needs the video extra: pip install -e ".[video]"')
    pytest.importorskip("cv2", reason='needs the video extra: pip install -e ".[video]"')


def _data(root: pathlib.Path, variant: str, batch_size: int = 2) -> AVData:
    """The lips stage's data of ``variant`` at the data root ``root`` (with a noise file)."""
    (root / "noise").mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).standard_normal(16000)
    sf.write(root / "noise" / "hiss.wav", 0.05 * noise, 16000)
    config = stages.load_recipe(f"{RECIPE}:{variant}").stages[1].config.data
    config = dataclasses.replace(
        config,
        root=str(root),
        valid_size=batch_size,
        segment_seconds=0.5,
        split_fractions=(0.4, 0.3, 0.3),
        cache_dir=str(root / "cache"),
    )
    return AVData(config, batch_size, hop=256)


def test_grid_variant_deals_the_talkers_into_the_splits(tmp_path, shared_data):
    grid = build_grid(tmp_path / "GRID", shared_data, n=2)
    for talker in ("s2", "s3"):  # GRID's layout: one folder of videos and of alignments each
        shutil.copytree(grid / "s1", grid / talker)
        shutil.copytree(grid / "align" / "s1", grid / "align" / talker)
    data = _data(tmp_path, "grid")
    talkers = {name: {c.ref.talker for c in clips} for name, clips in data.splits.items()}
    assert sorted(t for ts in talkers.values() for t in ts) == ["s1", "s2", "s3"]
    assert all(len(ts) == 1 for ts in talkers.values())  # one whole talker per split
    assert all(len(clips) == 2 and clips[0].audio.size > 0 for clips in data.splits.values())
    (talker,) = talkers["test"]
    items = data.test_items("test", GRID[:1], 2)
    assert [item["id"] for item in items] == ["test-000000", "test-000001"]
    assert [pathlib.Path(item["info"]["path"]).parent.name for item in items] == [talker] * 2
    assert items[0]["mixture"].shape == (8000,) and items[0]["face"].any()


def test_lrs3_variant_trains_on_pretrain_and_trainval_and_tests_on_test(tmp_path, shared_data):
    build_lrs3(tmp_path / "LRS3", shared_data)
    data = _data(tmp_path, "lrs3", batch_size=1)
    talks = {name: [c.ref.talker for c in clips] for name, clips in data.splits.items()}
    (test_talk,) = [talk for split, talk, _, _ in LRS3_CLIPS if split == "test"]
    assert talks["test"] == [test_talk]
    assert sorted(talks["train"] + talks["valid"]) == sorted(
        talk for split, talk, _, _ in LRS3_CLIPS if split != "test"
    )
    (item,) = data.test_items("test", GRID[:1], 1)
    assert item["id"] == "test-000000" and item["info"]["talker"] == test_talk
    assert item["info"]["path"].endswith(".mp4") and np.abs(item["clean"]).max() > 0
    assert not item["face"].any()  # a flat grey picture has no face: the audio-only fallback

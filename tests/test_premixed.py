"""Pre-mixed corpora as a data source: crops, dynamic mixing, validation and whole test items
on miniature LibriMix and wsj0-2mix trees (tests/corpus_trees.py), and the ``librimix``
Conv-TasNet variant trained a few steps, evaluated on its test split and, with ``--corpus``,
on a wsj0-2mix tree."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from corpus_trees import build_librimix, build_wsj0mix
from synthetic import take
from test_cli import TINY_TASNET

import evaluate
from jaxspeech.audio import load
from jaxspeech.data.premixed import PremixedData, PremixedDataConfig
from jaxspeech.errors import ConfigError, TooShortError
from jaxspeech.train import stages

COUNTS = (("train-100", 4), ("dev", 2), ("test", 3))


@pytest.fixture(scope="module")
def librimix(shared_data, tmp_path_factory):
    """A data root holding ``Libri2Mix/wav8k/min`` (0.5 s mixtures at 8 kHz)."""
    root = tmp_path_factory.mktemp("root")
    build_librimix(root, shared_data, counts=COUNTS, types=("mix_clean",))
    return root


def _csv_ids(root, split: str) -> list[str]:
    path = root / "Libri2Mix" / "wav8k" / "min" / "metadata" / f"mixture_{split}_mix_clean.csv"
    with open(path, newline="") as f:
        return [row["mixture_ID"] for row in csv.DictReader(f)]


def _config(root, **overrides) -> PremixedDataConfig:
    fields = dict(root=str(root), corpus="Libri2Mix", segment_seconds=0.25, valid_size=4)
    return PremixedDataConfig(**{**fields, **overrides})


def test_crops_are_aligned_and_test_items_whole_with_ids(librimix):
    data = PremixedData(_config(librimix), batch_size=2, n_src=2)
    assert data.roles == {"train": "train-100", "valid": "dev", "test": "test"}
    batch = take(data.train_dataset(seed=3), 1)[0]
    assert batch["mixture"].shape == (2, 2000) and batch["sources"].shape == (2, 2, 2000)
    # mix_clean is the sum of the sources: a crop at one place in every file keeps that.
    np.testing.assert_allclose(batch["mixture"], batch["sources"].sum(1), atol=1e-4)
    valid = data.valid_batches()
    assert len(valid) == 2 and valid[0]["mixture"].shape == (2, 2000)
    assert all(
        np.array_equal(a["mixture"], b["mixture"])
        for a, b in zip(valid, data.valid_batches(), strict=True)
    )
    items = data.test_items("test")
    assert [i["id"] for i in items] == sorted(_csv_ids(librimix, "test"))
    wav, _ = load(librimix / "Libri2Mix/wav8k/min/test/mix_clean" / f"{items[0]['id']}.wav")
    np.testing.assert_array_equal(items[0]["mixture"], wav)  # whole, at the corpus's rate
    speakers = [utterance.split("-")[0] for utterance in items[0]["id"].split("_")]
    assert items[0]["info"]["speakers"] == speakers


def test_resampled_to_the_model_rate(librimix):
    data = PremixedData(_config(librimix, sample_rate=16000), batch_size=2, n_src=2)
    item = data.test_items("test")[0]
    assert item["mixture"].shape == (8000,)  # 0.5 s at 16 kHz from the 8 kHz files
    wav, _ = load(librimix / "Libri2Mix/wav8k/min/test/mix_clean" / f"{item['id']}.wav", 16000)
    np.testing.assert_allclose(item["mixture"], wav, atol=1e-6)


def test_dynamic_mixing_remixes_sources_of_other_items(librimix):
    data = PremixedData(_config(librimix, dynamic_mixing=True), batch_size=4, n_src=2)
    batches = take(data.train_dataset(seed=0), 3)
    for batch in batches:
        np.testing.assert_allclose(batch["mixture"], batch["sources"].sum(1), atol=1e-6)
        assert np.abs(batch["mixture"]).max() <= 0.9 + 1e-6
        # Levels by RMS (every crop lies inside its 0.5 s file): the first at most -25 dBFS
        # (a peak rescale only lowers it), the second within 5 dB of it.
        rms = np.sqrt(np.mean(np.square(batch["sources"].astype(np.float64)), axis=-1))
        assert np.all(20 * np.log10(rms[:, 0]) <= -25.0 + 1e-3)
        assert np.all(np.abs(20 * np.log10(rms[:, 1] / rms[:, 0])) <= 5.0 + 1e-3)
    again = take(data.train_dataset(seed=0), 3)
    assert all(
        np.array_equal(a["sources"], b["sources"]) for a, b in zip(batches, again, strict=True)
    )


def test_short_mixtures_are_left_out_with_a_count(librimix, capsys):
    data = PremixedData(_config(librimix, segment_seconds=0.6), batch_size=2, n_src=2)
    with pytest.raises(TooShortError, match="every one of the 4 mixtures"):
        data.train_items()
    with pytest.raises(ConfigError, match="mixes 2 sources, the model separates 3"):
        PremixedData(_config(librimix), batch_size=2, n_src=3)
    with pytest.raises(ConfigError, match=r"no train split"):
        PremixedData(_config(librimix, splits=("train-360", "dev", "test")), 2, 2)


@pytest.mark.slow
def test_librimix_variant_trains_then_evaluates_here_and_on_wsj0_2mix(
    librimix, shared_data, tmp_path
):
    recipe = stages.load_recipe("configs/separation/convtasnet.py:librimix")
    overrides = [
        f"data.root={librimix}",
        "data.segment_seconds=0.25",
        "data.valid_size=8",
        "train.steps=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
        *TINY_TASNET,
    ]
    workdir = tmp_path / "run"
    stages.run(stages.apply_overrides(recipe, overrides), workdir)
    evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest"])
    rows = json.loads((workdir / "eval" / "test.json").read_text())
    overall = {r["system"]: r for r in rows if r["input SI-SNR (dB)"] == "all"}
    assert overall["mixture"]["sources"] == 2 * len(_csv_ids(librimix, "test"))
    assert overall["mixture"]["SI-SNRi mean"] == pytest.approx(0.0, abs=1e-4)

    before = (workdir / "eval" / "test.json").read_text()
    wsj0 = build_wsj0mix(
        tmp_path / "wsj0-2mix", shared_data, counts=(("tt", 3), ("cv", 1), ("tr", 1))
    )
    evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest", "--corpus", str(wsj0)])
    name = "wsj0-2mix_wav8k_min_mix-tt"
    rows = json.loads((workdir / "eval" / f"{name}.json").read_text())
    overall = {r["system"]: r for r in rows if r["input SI-SNR (dB)"] == "all"}
    assert overall["mixture"]["sources"] == 2 * 3  # every mixture of tt/, both speakers
    assert overall["oracle IRM"]["SI-SNRi mean"] > 5.0
    assert (workdir / "eval" / "test.json").read_text() == before

"""The evaluation package: groups, per-item rows and their means, the written tables, trial
lists, cosine scores and batched embedding; and that no module probes a task."""

from __future__ import annotations

import ast
import csv
import json
import pathlib

import numpy as np
import pytest
from scipy.spatial.distance import cosine

import jaxspeech
from jaxspeech.data.corpus import Utterance
from jaxspeech.errors import TrialError
from jaxspeech.evaluation import Evaluation, item_rows, write_evaluation
from jaxspeech.evaluation.groups import band_labels, bands, snr_groups, talker_metadata
from jaxspeech.evaluation.verification import (
    cosine_scores,
    embed_waveforms,
    pair_trials,
    read_trials,
    trial_items,
    write_trials,
)


def test_snr_groups():
    groups = dict(snr_groups(np.array([5.0, -5.0, 5.0, 0.0])))
    assert list(groups) == ["all", "-5", "0", "5"]
    assert groups["5"].tolist() == [True, False, True, False]
    assert groups["all"].all()


def test_bands_partition_values_and_label_each():
    values = np.array([-7.0, -5.0, -0.1, 0.0, 4.9, 12.0])
    edges = (-5.0, 0.0, 5.0)
    found = dict(bands(values, edges))
    assert found["all"].all()
    assert found["[-inf, -5)"].tolist() == [True, False, False, False, False, False]
    assert found["[-5, 0)"].tolist() == [False, True, True, False, False, False]
    assert found["[0, 5)"].tolist() == [False, False, False, True, True, False]
    assert found["[5, inf)"].tolist() == [False, False, False, False, False, True]
    labels = band_labels(values, edges)
    for label, member in found.items():
        if label != "all":
            assert [x == label for x in labels] == member.tolist()


def test_talker_metadata_gives_gender_pairs_and_age_groups():
    utterances = [
        Utterance("/a/1.flac", "a", None, 10, 16000, "M", 9),
        Utterance("/b/1.flac", "b", None, 10, 16000, "F", 30),
        Utterance("/c/1.flac", "c", None, 10, 16000),
    ]
    examples = [
        {"info": {"speakers": ["a", "b"], "source_files": ["/a/1.flac", "/b/1.flac"]}},
        {"info": {"speakers": ["c", "a"], "source_files": ["/c/1.flac", "/a/1.flac"]}},
    ]
    rows, groups = talker_metadata(examples, utterances)
    assert groups == ("gender", "age group")
    assert rows[0] == {
        "speakers": "a+b",
        "files": "1.flac+1.flac",
        "gender": "F+M",
        "age group": "adult+child",
    }
    assert (rows[1]["gender"], rows[1]["age group"]) == ("?+M", "?+child")
    unknown = [{"info": {"speakers": ["c"], "source_files": ["/c/1.flac"]}}]
    assert talker_metadata(unknown, utterances)[1] == ()


def test_group_means_and_written_tables(tmp_path):
    rng = np.random.default_rng(0)
    scores = {"PESQ": rng.random(6), "SI-SDR": rng.normal(size=6)}
    snrs = ["0", "5", "0", "5", "0", "5"]
    metadata = [{"SNR (dB)": snr, "speakers": f"s{i}"} for i, snr in enumerate(snrs)]
    items = item_rows("model", scores, metadata) + item_rows("noisy", scores, metadata)
    evaluation = Evaluation([{"system": "model", "PESQ": 1.0}], items, ("SNR (dB)",))
    means = evaluation.group_means()
    assert [(r["system"], r["value"], r["items"]) for r in means] == [
        ("model", "0", 3),
        ("model", "5", 3),
        ("noisy", "0", 3),
        ("noisy", "5", 3),
    ]
    np.testing.assert_allclose(means[1]["SI-SDR"], scores["SI-SDR"][1::2].mean(), rtol=1e-12)
    assert "speakers" not in means[0]
    # joined stages: a group's means count only the items (of one system) that have its column
    stage = item_rows("lips", scores, [{"condition": "noise"}] * 6)
    stage += item_rows("noisy", scores, [{"condition": "talker"}] * 6)
    joined = Evaluation([], items + stage, ("SNR (dB)", "condition")).group_means()
    assert [(r["system"], r["group"], r["items"]) for r in joined] == [
        *[("model", "SNR (dB)", 3)] * 2,
        *[("noisy", "SNR (dB)", 3)] * 2,
        ("noisy", "condition", 6),
        ("lips", "condition", 6),
    ]
    markdown, written = write_evaluation(evaluation, tmp_path, "test")
    assert markdown.startswith("| system | PESQ |")
    assert written == [tmp_path / "eval" / name for name in ("test", "test_items", "test_groups")]
    with (tmp_path / "eval" / "test_items.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and rows[7]["item"] == "1" and rows[7]["speakers"] == "s1"
    assert float(rows[7]["PESQ"]) == pytest.approx(scores["PESQ"][1])
    assert json.loads((tmp_path / "eval" / "test_groups.json").read_text()) == means
    _, written = write_evaluation(Evaluation([{"a": 1}]), tmp_path, "valid")
    assert written == [tmp_path / "eval" / "valid"]


def test_trial_lists_round_trip_and_reject_bad_lines(tmp_path):
    assert pair_trials(["a", "b", "a"]) == [(0, 0, 1), (1, 0, 2), (0, 1, 2)]
    path = tmp_path / "trials.txt"
    trials = [(1, "x/1.wav", "x/2.wav"), (0, "x/1.wav", "y/1.wav")]
    write_trials(path, trials)
    assert path.read_text() == "1 x/1.wav x/2.wav\n0 x/1.wav y/1.wav\n"
    assert read_trials(path) == trials
    items = trial_items("cosine", trials, np.array([0.5, np.nan]), missing=["y/1.wav"])
    assert items[0]["missing"] == ""
    assert {k: v for k, v in items[1].items() if k != "score"} == {
        "system": "cosine",
        "item": 2,
        "label": 0,
        "enrol": "x/1.wav",
        "test": "y/1.wav",
        "missing": "y/1.wav",
    }
    assert np.isnan(items[1]["score"])
    path.write_text("1 a.wav b.wav\n2 a.wav c.wav\n")
    with pytest.raises(TrialError, match="line 2"):
        read_trials(path)


def test_cosine_scores_match_scipy():
    rng = np.random.default_rng(1)
    enrol, test = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    expected = [1 - cosine(a, b) for a, b in zip(enrol, test, strict=True)]
    np.testing.assert_allclose(cosine_scores(enrol, test), expected, rtol=1e-12)


def test_embed_waveforms_keeps_the_order_and_bounds_batches():
    calls = []

    def embed(wav, lengths):
        calls.append(wav.shape)
        return np.stack([wav[i, : lengths[i]].sum(keepdims=True) for i in range(len(lengths))])

    waves = [np.full(n, 1.0, np.float32) for n in (5, 40, 3, 17, 9)]
    out = embed_waveforms(embed, waves, 2, bucket=4, max_batch_samples=40)
    np.testing.assert_allclose(out[:, 0], [5, 40, 3, 17, 9])
    assert calls == [(2, 8), (2, 20), (1, 40)]


def _probes(tree: ast.AST) -> list[int]:
    """Lines of ``hasattr``/``getattr`` calls whose object mentions a task."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and node.args
            and "task" in ast.unparse(node.args[0]).lower()
        ):
            found.append(node.lineno)
    return found


def test_no_module_probes_a_task():
    """Optional behaviour is declared (``Task.capabilities``), never found by probing."""
    assert _probes(ast.parse("ok = getattr(config, 'x')")) == []
    assert _probes(ast.parse("bad = hasattr(run.task, 'embed')")) == [1]
    package = pathlib.Path(jaxspeech.__file__).parent
    probing = {
        str(path.relative_to(package)): lines
        for path in sorted(package.rglob("*.py"))
        if (lines := _probes(ast.parse(path.read_text())))
    }
    # inside train/tasks every ``self`` is a task
    for path in sorted((package / "train" / "tasks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "hasattr",
                "getattr",
            ):
                probing.setdefault(str(path.relative_to(package)), []).append(node.lineno)
    assert probing == {}

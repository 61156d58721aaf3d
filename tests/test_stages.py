"""Stage machinery on the toy tasks (tests/toy_task.py): stage lists and overrides, an
estimation-kind stage (running statistics) on 1 and 8 devices with resume, a gradient stage
reading it frozen, and runs restored from their workdir alone."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest
import scipy.stats
import toy_task

from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import config as config_lib
from jaxspeech.train import stages
from jaxspeech.train import task as task_lib
from jaxspeech.train.logging import read_metrics
from jaxspeech.train.loop import run
from jaxspeech.train.restore import restore_run


def toy_config(steps=2, **model):
    return toy_task.ToyConfig(
        model=toy_task.ToyModelConfig(**model),
        data=toy_task.ToyDataConfig(),
        train=config_lib.TrainConfig(
            steps=steps, batch_size=8, checkpoint_every=2, eval_every=2, log_every=1
        ),
    )


def statistics_config(steps=3, batches_per_step=2):
    return toy_task.StatisticsConfig(
        model=toy_task.ToyStatisticsConfig(batches_per_step=batches_per_step),
        train=config_lib.TrainConfig(
            steps=steps, batch_size=8, checkpoint_every=1, eval_every=2, log_every=1
        ),
    )


def numpy_statistics(batches: int, batch_size: int = 8, seed: int = 0):
    """Mean and (biased) variance of the first ``batches`` global batches, in float64."""
    x = toy_task.examples(seed, np.arange(batches * batch_size))["x"]
    x = toy_task.SHIFT + toy_task.SCALE * x.astype(np.float64)
    return x.mean(0), x.var(0)


def test_multistage_rejects_bad_stage_lists():
    config = toy_config()
    with pytest.raises(ConfigError, match="not an earlier stage"):
        stages.MultiStage((stages.Stage("a", config, reads=("b",)),))
    with pytest.raises(ConfigError, match="unique"):
        stages.MultiStage((stages.Stage("a", config), stages.Stage("a", config)))
    with pytest.raises(ConfigError, match="folder"):
        stages.MultiStage((stages.Stage("../a", config),))
    with pytest.raises(ConfigError, match="no stages"):
        stages.MultiStage(())


def test_overrides_apply_to_every_stage_or_one():
    recipe = stages.MultiStage((stages.Stage("a", toy_config()), stages.Stage("b", toy_config())))
    both = stages.apply_overrides(recipe, ["train.steps=7"])
    assert [s.config.train.steps for s in both.stages] == [7, 7]
    one = stages.apply_overrides(recipe, ["b.train.steps=9", "a.model.hidden=3"])
    assert [s.config.train.steps for s in one.stages] == [2, 9]
    assert [s.config.model.hidden for s in one.stages] == [3, 8]
    with pytest.raises(ConfigError, match="unknown config key"):
        stages.apply_overrides(recipe, ["c.train.steps=1"])


@pytest.fixture(scope="module")
def statistics_run(tmp_path_factory):
    """Three estimation steps of two batches each on the eight simulated devices."""
    workdir = tmp_path_factory.mktemp("stats8")
    return workdir, jax.device_get(run(statistics_config(), workdir))


def test_estimation_stage_sums_statistics_over_replicas_and_batches(statistics_run):
    workdir, state = statistics_run
    mean, var = numpy_statistics(batches=6)
    np.testing.assert_allclose(state.params["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(state.params["var"], var, rtol=1e-4)
    assert int(state.step) == 3
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert [r["examples"] for r in records] == [16, 32, 48]
    assert "valid_mean_error" in records[1] and "valid_mean_error" in records[2]
    assert all(r["samples_per_s"] > 0 for r in records)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [1, 2, 3]
    restored = restore_run(workdir, "2")
    np.testing.assert_allclose(restored.params["mean"], numpy_statistics(4)[0], rtol=1e-5)


def test_estimation_stage_on_one_device_and_after_a_kill(statistics_run, tmp_path):
    _, state8 = statistics_run
    one = jax.device_get(run(statistics_config(), tmp_path / "one", devices=jax.devices()[:1]))
    np.testing.assert_allclose(one.params["mean"], state8.params["mean"], rtol=1e-6)
    killed = tmp_path / "killed"
    run(statistics_config(steps=2), killed)
    shutil.rmtree(killed / "checkpoints" / "2")  # killed before step 2's checkpoint
    resumed = jax.device_get(run(statistics_config(), killed))
    np.testing.assert_allclose(resumed.params["mean"], state8.params["mean"], rtol=1e-6)
    np.testing.assert_allclose(resumed.params["var"], state8.params["var"], rtol=1e-6)
    assert [r["step"] for r in read_metrics(killed)] == [1, 2, 3]


def test_gradient_stage_reads_a_frozen_estimation_stage(tmp_path):
    recipe = stages.MultiStage(
        (
            stages.Stage("stats", statistics_config(steps=2)),
            stages.Stage(
                "model", toy_config(steps=4, normalizer="stats"), reads=("stats",),
                read_checkpoint="latest",
            ),
        )
    )  # fmt: skip
    stages.run(recipe, tmp_path)
    assert json.loads((tmp_path / "stages.json").read_text()) == {"stages": ["stats", "model"]}
    assert json.loads((tmp_path / "model" / "frozen.json").read_text()) == {
        "stats": {"workdir": "../stats", "step": 2}
    }
    model = restore_run(tmp_path / "model", "latest")
    assert model.step == 4
    # the model's task got the frozen statistics of four batches, restored from frozen.json
    np.testing.assert_allclose(model.task.normalizer["mean"], numpy_statistics(4)[0], rtol=1e-5)
    evaluation, markdown, written = stages.evaluate(tmp_path, "test", "latest")
    rows = evaluation.table
    assert [(r["stage"], r["checkpoint_step"]) for r in rows] == [("stats", 2), ("model", 4)]
    assert rows[0]["examples"] == 32
    assert markdown.startswith("| stage |")
    assert written == [tmp_path / "eval" / f"test{s}" for s in ("", "_items", "_groups")]
    # one row per test example of the model stage, and their means by group
    items = json.loads((tmp_path / "eval" / "test_items.json").read_text())
    assert [(r["stage"], r["item"]) for r in items] == [("model", i) for i in range(len(items))]
    assert json.loads((tmp_path / "model" / "eval" / "test_items.json").read_text())[0]["item"] == 0
    groups = json.loads((tmp_path / "eval" / "test_groups.json").read_text())
    first = [r["squared_error"] for r in items if r["half"] == "first"]
    assert [(g["value"], g["items"]) for g in groups] == [
        ("first", len(first)),
        ("second", len(items) - len(first)),
    ]
    np.testing.assert_allclose(groups[0]["squared_error"], np.mean(first), rtol=1e-12)
    # the stage folders can move together
    shutil.move(tmp_path, tmp_path.parent / "moved")
    moved = restore_run(tmp_path.parent / "moved" / "model", "latest")
    np.testing.assert_allclose(moved.task.normalizer["var"], model.task.normalizer["var"])


def test_frozen_stages_must_be_declared_and_present(tmp_path):
    with pytest.raises(ConfigError, match=r"reads no stage; add 'teacher' to the stage's reads"):
        task_lib.frozen_run({}, "teacher", "model.teacher='teacher'")
    with pytest.raises(ConfigError, match=r"reads no earlier stage.*\['teacher'\]"):
        task_lib.refuse_frozen({"teacher": None}, "separation")
    recipe = stages.MultiStage(
        (
            stages.Stage("stats", statistics_config(steps=1)),
            stages.Stage("model", toy_config(normalizer="stats"), reads=("stats",)),
        )
    )
    stages.run(recipe, tmp_path / "recipe")
    shutil.rmtree(tmp_path / "recipe" / "stats")
    with pytest.raises(JaxspeechError, match="holds no training run"):
        restore_run(tmp_path / "recipe" / "model")


def test_restore_needs_no_optimizer_and_any_device_count(statistics_run, tmp_path):
    # batch size 8 does not divide 3 devices: training refuses, restoring does not
    config = toy_config(steps=2)
    with pytest.raises(ConfigError, match="multiple of the 3 devices"):
        run(config, tmp_path / "three", devices=jax.devices()[:3])
    run(config, tmp_path / "eight")
    restored = restore_run(tmp_path / "eight", "latest", devices=jax.devices()[:3])
    assert restored.step == 2 and set(restored.params) == {"Dense_0", "BatchNorm_0", "Dense_1"}
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(restored.params)} == {3}


def test_comparisons_are_recorded_and_paired_by_example(tmp_path):
    with pytest.raises(ConfigError, match="unknown: \\['c'\\]"):
        stages.MultiStage(
            (stages.Stage("a", toy_config()),), (stages.Comparison("x", ("a",), ("c",)),)
        )
    seeded = [dataclasses.replace(toy_config(steps=2), train=dataclasses.replace(
        toy_config().train, seed=seed, steps=2)) for seed in (0, 1)]  # fmt: skip
    recipe = stages.MultiStage(
        (
            stages.Stage("a0", seeded[0]),
            stages.Stage("a1", seeded[1]),
            stages.Stage("b", toy_config(steps=4)),
        ),
        (stages.Comparison("a − b", ("a0", "a1"), ("b",)),),
    )
    stages.run(recipe, tmp_path)
    listing = json.loads((tmp_path / "stages.json").read_text())
    assert listing["comparisons"] == [{"name": "a − b", "a": ["a0", "a1"], "b": ["b"]}]
    _, markdown, _ = stages.evaluate(tmp_path, "test", "latest")
    (row,) = json.loads((tmp_path / "eval" / "test-paired.json").read_text())
    assert "| comparison |" in markdown
    errors = {}
    for name in ("a0", "a1", "b"):
        run_ = restore_run(tmp_path / name, "latest")
        errors[name] = run_.task.evaluate(run_.params, run_.model_state, "test").scores
    a = (errors["a0"]["squared_error"] + errors["a1"]["squared_error"]) / 2
    b = errors["b"]["squared_error"]
    reference = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert row["metric"] == "squared_error" and row["utterances"] == a.size
    np.testing.assert_allclose(row["difference"], np.mean(a - b), rtol=1e-6)
    np.testing.assert_allclose([row["low"], row["high"]], reference, rtol=1e-6)
    seed_means = [errors[n]["squared_error"].mean() for n in ("a0", "a1")]
    np.testing.assert_allclose([row["A seed min"], row["A seed max"]], sorted(seed_means))


def test_a_comparison_needs_per_item_scores():
    comparison = stages.Comparison("a − b", ("a",), ("b",))
    scores = {"a": None, "b": {"squared_error": np.ones(3)}}
    with pytest.raises(ConfigError, match="no per-item scores"):
        stages.paired_rows(comparison, scores)

"""Trainer pieces without a training run: configs, optimisers, schedules, tables, parallel."""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_task

from jaxspeech import parallel
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import markdown_table, write_table
from jaxspeech.models.masknet import LSTMMaskNetConfig
from jaxspeech.train import config as config_lib
from jaxspeech.train import optim, stages
from jaxspeech.train.logging import mean_metrics
from jaxspeech.train.tasks import get_task_class

REPO = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture
def config() -> config_lib.Config:
    return toy_task.ToyConfig(
        task="toy_task:Task", model=toy_task.ToyModelConfig(), data=toy_task.ToyDataConfig()
    )


def test_overrides_are_parsed_by_field_type(config):
    new = config_lib.apply_overrides(
        config,
        [
            "train.steps=20",
            "optim.learning_rate=3e-4",
            "optim.clip_norm=5",
            "train.compute_dtype=bfloat16",
            "data.nan_batches=(1, 2)",
            "data.root=/data/x",
            "model.hidden=4",
        ],
    )
    assert new.train.steps == 20 and new.optim.learning_rate == 3e-4
    assert new.optim.clip_norm == 5.0 and isinstance(new.optim.clip_norm, float)
    assert new.data.nan_batches == (1, 2) and new.data.root == "/data/x"
    assert new.model.hidden == 4 and new.train.compute_dtype == "bfloat16"
    assert config_lib.apply_overrides(new, ["optim.clip_norm=None"]).optim.clip_norm is None
    assert config.train.steps == 1000  # frozen original untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stepz=3", r"'train.stepz'.*batch_size, checkpoint_every, compute_dtype"),
        ("trian.steps=3", r"top level: data, model, optim, schedule, task, train"),
        ("train.steps=3.5", r"train.steps='3.5' is not an int"),
        ("train.steps=abc", r"train.steps='abc' is not an int"),
        ("optim.learning_rate=fast", r"not a float"),
        ("optim.clip_norm=x", r"optim.clip_norm='x'"),
        (
            "data.nan_batches=1,a",
            r"data.nan_batches='1,a' is not a tuple\[int, \.\.\.\]: 'a' is not an int",
        ),
        ("train=3", r"train is a section"),
        ("train.steps.x=1", r"train.steps is a value"),
        ("train.steps", r"section.key=value"),
    ],
)
def test_bad_overrides_raise_config_error(config, override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.apply_overrides(config, [override])


def test_bool_values():
    assert config_lib._parse_value("true", bool, "x") is True
    assert config_lib._parse_value("0", bool, "x") is False
    with pytest.raises(ConfigError, match="not a bool"):
        config_lib._parse_value("maybe", bool, "x")


def test_json_round_trip_keeps_types(config):
    config = config_lib.apply_overrides(config, ["data.nan_batches=3,4", "optim.clip_norm=1"])
    text = config_lib.to_json(config)
    tree = json.loads(text)
    assert tree["format_version"] == config_lib.FORMAT_VERSION
    assert tree["config"]["__class__"] == "toy_task:ToyConfig"
    assert tree["config"]["model"]["__class__"] == "toy_task:ToyModelConfig"
    assert tree["config"]["train"]["__class__"] == "jaxspeech.train.config:TrainConfig"
    restored = config_lib.from_json(text)
    assert restored == config and isinstance(restored.data.nan_batches, tuple)


def test_json_round_trip_of_the_recipes():
    for spec in ("convtasnet.py", "convtasnet.py:causal", "convtasnet.py:cpu", "dpcl.py:smoke"):
        recipe = stages.load_recipe(f"{REPO}/configs/separation/{spec}")
        assert config_lib.from_json(config_lib.to_json(recipe)) == recipe


def test_config_json_of_an_earlier_version_is_refused():
    """A config.json as jaxspeech wrote it before the format was versioned (no version; model
    settings in classes of the task module, n_src in data.mixture)."""
    old = (TEST_DATA / "config_unversioned_convtasnet_smoke.json").read_text()
    assert "format_version" not in json.loads(old)
    with pytest.raises(ConfigError, match=r"earlier version of jaxspeech.*retrain in a new"):
        config_lib.from_json(old)
    newer = json.dumps({"format_version": config_lib.FORMAT_VERSION + 1, "config": {}})
    with pytest.raises(ConfigError, match=rf"format version {config_lib.FORMAT_VERSION + 1}"):
        config_lib.from_json(newer)


def test_renamed_fields_of_earlier_config_json_still_load():
    """A speaker config.json written when minDCF had one prior (``eval.p_target``) loads with
    that prior and 0.05; a field no version knows is one ConfigError naming it."""
    recipe = stages.load_recipe(f"{REPO}/configs/speaker/resnet_kd.py:smoke")
    config = recipe.stages[-1].config
    tree = json.loads(config_lib.to_json(config))
    del tree["config"]["eval"]["p_targets"]
    tree["config"]["eval"]["p_target"] = 0.001
    loaded = config_lib.from_json(json.dumps(tree))
    assert loaded.eval.p_targets == (0.001, 0.01, 0.05)
    assert dataclasses.replace(loaded, eval=config.eval) == config
    tree["config"]["eval"]["no_such_key"] = 1
    with pytest.raises(ConfigError, match="SpeakerEvalConfig has no field no_such_key"):
        config_lib.from_json(json.dumps(tree))
    gate = stages.load_recipe(f"{REPO}/configs/av/lipgate.py:smoke").stages[-1].config
    tree = json.loads(config_lib.to_json(gate))
    del tree["config"]["model"]["band_range_db"]
    tree["config"]["model"]["band_threshold"] = 1e-5  # the frame-relative band IBM's
    assert config_lib.from_json(json.dumps(tree)) == gate


def test_sections_must_have_their_declared_types(config):
    with pytest.raises(ConfigError, match=r"ToyConfig\.model is a ToyDataConfig; .*ToyModelConfig"):
        dataclasses.replace(config, model=toy_task.ToyDataConfig())
    separation = stages.load_recipe(f"{REPO}/configs/separation/convtasnet.py:smoke")
    with pytest.raises(ConfigError, match=r"ConvTasNetConfig or DeepClusteringConfig"):
        dataclasses.replace(separation, model=LSTMMaskNetConfig())
    tcn = dataclasses.replace(separation.model, tcn=LSTMMaskNetConfig())
    with pytest.raises(ConfigError, match=r"SeparationConfig\.model\.tcn is a LSTMMaskNetConfig"):
        dataclasses.replace(separation, model=tcn)


def test_overrides_reach_nested_model_sections():
    recipe = stages.load_recipe(f"{REPO}/configs/separation/convtasnet.py:smoke")
    new = config_lib.apply_overrides(recipe, ["model.n_src=3", "model.tcn.norm=cLN"])
    assert new.model.n_src == 3 and new.model.tcn.norm == "cLN"
    with pytest.raises(ConfigError, match=r"'model\.tcn\.hiden'.*hidden_channels"):
        config_lib.apply_overrides(recipe, ["model.tcn.hiden=3"])


def test_to_json_rejects_unimportable_classes(config):
    @dataclasses.dataclass(frozen=True)
    class Local(toy_task.ToyModelConfig):
        x: int = 1

    with pytest.raises(ConfigError, match="cannot be re-imported"):
        config_lib.to_json(dataclasses.replace(config, model=Local()))


def test_load_recipe_and_errors(tmp_path):
    recipe = tmp_path / "r.py"
    recipe.write_text(
        "from jaxspeech.train import config as C\n"
        "def get_config(variant: str = ''):\n"
        "    return C.Config(task='x', train=C.TrainConfig(steps=len(variant) + 1))\n"
    )
    assert stages.load_recipe(str(recipe)).train.steps == 1
    assert stages.load_recipe(f"{recipe}:abc").train.steps == 4
    with pytest.raises(ConfigError, match="not found"):
        stages.load_recipe(str(tmp_path / "missing.py"))
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="no get_config"):
        stages.load_recipe(str(tmp_path / "bad.py"))
    (tmp_path / "listed.py").write_text(recipe.read_text() + "VARIANTS = ('', 'abc')\n")
    assert stages.load_recipe(f"{tmp_path / 'listed.py'}:abc").train.steps == 4
    with pytest.raises(ConfigError, match=r"no variant 'ab'; its variants: '', 'abc'"):
        stages.load_recipe(f"{tmp_path / 'listed.py'}:ab")
    assert config_lib.recipe_info(tmp_path / "listed.py") == ("", ("", "abc"))


def test_validate_rejects_bad_values(config):
    with pytest.raises(ConfigError, match="compute_dtype='float16'"):
        config_lib.validate(config_lib.apply_overrides(config, ["train.compute_dtype=float16"]))
    with pytest.raises(ConfigError, match=r"train\.log_every=0"):
        config_lib.validate(config_lib.apply_overrides(config, ["train.log_every=0"]))
    assert config.train.dtype == jnp.float32


def test_task_registry():
    assert get_task_class("toy_task:Task") is toy_task.Task
    with pytest.raises(ConfigError, match="unknown task 'nope'; available"):
        get_task_class("nope")
    with pytest.raises(ConfigError, match="cannot load task"):
        get_task_class("toy_task:Missing")


def _one_update(name, grads, params, **kwargs):
    """The first descent direction (minus the update at learning rate 1)."""
    tx = optim.make_optimizer(config_lib.OptimConfig(name=name, **kwargs), 1.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    return -np.asarray(updates)


def test_optimizers_against_hand_written_first_step():
    g, w = jnp.array([0.5, -2.0, 1e-3]), jnp.array([1.0, 2.0, -3.0])
    gn, wn = np.asarray(g), np.asarray(w)
    # adam step 1 with bias correction: m̂ = g, v̂ = g² → g / (|g| + eps)
    np.testing.assert_allclose(_one_update("adam", g, w), gn / (np.abs(gn) + 1e-8), rtol=1e-5)
    coupled = gn + 0.1 * wn
    np.testing.assert_allclose(
        _one_update("adam", g, w, weight_decay=0.1), coupled / (np.abs(coupled) + 1e-8), rtol=1e-5
    )
    np.testing.assert_allclose(
        _one_update("adamw", g, w, weight_decay=0.1),
        gn / (np.abs(gn) + 1e-8) + 0.1 * wn,
        rtol=1e-5,
    )
    # nesterov at step 1: trace = g, update = g + momentum * trace
    np.testing.assert_allclose(_one_update("sgd-nesterov", g, w, momentum=0.9), 1.9 * gn)
    clipped = _one_update("sgd-nesterov", g, w, momentum=0.0, clip_norm=1.0)
    np.testing.assert_allclose(clipped, gn / np.linalg.norm(gn), rtol=1e-6)
    with pytest.raises(ConfigError, match=r"optim\.name='sgd'"):
        optim.make_optimizer(config_lib.OptimConfig(name="sgd"), 1.0)


def test_optimizer_applies_schedule_times_plateau_scale_and_skips_non_finite():
    # momentum 0: the unit-rate direction is the gradient itself
    schedule = lambda step: 0.1 / (1 + step)
    tx = optim.make_optimizer(config_lib.OptimConfig("sgd-nesterov", momentum=0.0), schedule)
    g, w = jnp.array([0.5, -2.0]), jnp.array([1.0, 2.0])
    state = tx.init(w)
    updates, state = tx.update(g, state, w)
    np.testing.assert_allclose(updates, -0.1 * g, rtol=1e-6)
    assert float(optim.applied_learning_rate(state)) == pytest.approx(0.1)
    state = optim.with_plateau_scale(state, jnp.float32(0.5))
    updates, state = tx.update(g, state, w)
    np.testing.assert_allclose(updates, -0.05 / 2 * g, rtol=1e-6)
    assert float(optim.applied_learning_rate(state)) == pytest.approx(0.05 / 2)
    inner = optim.finite_guard(state).inner_state
    updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state, w)
    np.testing.assert_array_equal(updates, [0.0, 0.0])
    guard = optim.finite_guard(state)
    assert (int(guard.notfinite_count), int(guard.total_notfinite)) == (1, 1)
    assert not bool(guard.last_finite)
    jax.tree.map(np.testing.assert_array_equal, guard.inner_state, inner)
    # the schedule advanced on the skipped update: the next one is step 3's
    updates, state = tx.update(g, state, w)
    np.testing.assert_allclose(updates, -0.1 / 4 / 2 * g, rtol=1e-6)
    guard = optim.finite_guard(state)
    assert (int(guard.notfinite_count), int(guard.total_notfinite)) == (0, 1)


def test_schedules_against_closed_forms():
    lr, total = 0.01, 100
    cosine = optim.make_schedule(
        config_lib.ScheduleConfig("warmup_cosine", warmup_steps=10, final_factor=0.1), lr, total
    )
    for step in (0, 5, 10, 40, 99):
        if step < 10:
            expected = lr / 10 + (lr - lr / 10) * step / 10
        else:
            t = (step - 10) / 90
            expected = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))
        assert float(cosine(step)) == pytest.approx(expected, rel=1e-5), step
    expo = optim.make_schedule(
        config_lib.ScheduleConfig("warmup_exponential", decay_rate=0.5, decay_every=10), lr, total
    )
    assert [float(expo(s)) for s in (0, 10, 25)] == pytest.approx([lr, lr / 2, lr * 0.5**2.5])
    assert float(optim.make_schedule(config_lib.ScheduleConfig(), lr, total)(77)) == lr
    with pytest.raises(ConfigError, match=r"schedule\.name='linear'"):
        optim.make_schedule(config_lib.ScheduleConfig("linear"), lr, total)


def _plateau_scales(values, mode, schedule):
    """Scales after each validation of ``values`` through optim.plateau_update, and the state."""
    plateau, state, scales = optim.make_plateau(schedule), optim.init_plateau(), []
    for value in values:
        state = optim.plateau_update(plateau, state, value, mode)
        scales.append(float(state.scale))
    return scales, state


def test_plateau_halves_after_patience_validations():
    schedule = config_lib.ScheduleConfig(plateau_patience=2, plateau_factor=0.5)
    scales, plateau = _plateau_scales((3.0, 2.0, 2.5, 2.1, 2.2, 2.3, 1.0, 1.5), "min", schedule)
    assert scales == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert plateau.best_value == 1.0 and plateau.plateau_count == 1
    _, maximise = _plateau_scales((5.0, 4.0), "max", schedule)
    assert maximise.plateau_count == 1
    assert optim.make_plateau(config_lib.ScheduleConfig()) is None  # patience 0: off
    for bad in (dict(plateau_patience=-1), dict(plateau_patience=1, plateau_factor=1.0)):
        with pytest.raises(ConfigError, match=r"schedule\.plateau_"):
            optim.make_plateau(config_lib.ScheduleConfig(**bad))


def _strict_plateau_rule(values, mode, patience, factor):
    """Reference: the best value improves only strictly; after ``patience`` validations in a row
    without improvement the scale is multiplied by ``factor`` and the count restarts."""
    best, bad, scale, scales = None, 0, 1.0, []
    for value in values:
        if best is None or (value < best if mode == "min" else value > best):
            best, bad = value, 0
        elif bad + 1 >= patience:
            bad, scale = 0, scale * factor
        else:
            bad += 1
        scales.append(scale)
    return scales, best, bad


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_plateau_matches_the_strict_improvement_rule(mode, patience, rng):
    # coarse float32 values, so that ties are common, and neighbours one float32 step apart
    coarse = np.round(rng.normal(size=40), 1).astype(np.float32)
    eps = np.finfo(np.float32).eps
    near = (np.float32(1.0) + eps * rng.integers(-2, 3, 40)).astype(np.float32)
    for values in (coarse, near):
        values = [float(v) for v in values]
        schedule = config_lib.ScheduleConfig(plateau_patience=patience, plateau_factor=0.7)
        scales, state = _plateau_scales(values, mode, schedule)
        ref_scales, ref_best, ref_bad = _strict_plateau_rule(values, mode, patience, 0.7)
        np.testing.assert_allclose(scales, ref_scales, rtol=1e-6)
        assert float(state.best_value) == (ref_best if mode == "min" else -ref_best)
        assert int(state.plateau_count) == ref_bad
        assert min(ref_scales) < 1  # the sequence did reach a plateau


def test_tables_and_metric_means(tmp_path):
    rows = [{"name": "a", "sdr": 1.23456, "n": 3}, {"name": "b", "sdr": float("nan"), "n": 4}]
    md = write_table(rows, tmp_path / "eval" / "test")
    assert md == markdown_table(rows)
    assert md.splitlines() == [
        "| name | sdr | n |",
        "|---|---|---|",
        "| a | 1.2346 | 3 |",
        "| b | nan | 4 |",
    ]
    with (tmp_path / "eval" / "test.csv").open() as f:
        assert next(iter(csv.DictReader(f))) == {"name": "a", "sdr": "1.23456", "n": "3"}
    assert json.loads((tmp_path / "eval" / "test.json").read_text())[1]["n"] == 4
    means = mean_metrics([{"a": jnp.float32(1.0)}, {"a": jnp.float32(2.0)}])
    assert means == {"a": 1.5}


def test_mesh_sharding_and_data_parallel_mean():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == len(jax.devices())
    x = np.arange(16.0, dtype=np.float32).reshape(8, 2)
    batch = parallel.shard_batch(mesh, {"x": x})
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(batch["x"]), x)
    np.testing.assert_array_equal(parallel.local_rows({"x": x})["x"], x)  # one process

    def per_replica(w, b):
        grads = jax.grad(lambda w: jnp.mean((b["x"] @ w) ** 2))(w)
        return parallel.pmean_floats({"g": grads, "count": jnp.int32(1)})

    step = parallel.data_parallel(per_replica, mesh, sharded_argnums=(1,), num_args=2)
    w = parallel.replicate(mesh, np.array([1.0, -1.0], np.float32))
    expected = jax.grad(lambda w: jnp.mean((x @ w) ** 2))(jnp.array([1.0, -1.0]))
    out = step(w, batch)
    np.testing.assert_allclose(np.asarray(out["g"]), np.asarray(expected), rtol=1e-6)
    assert int(out["count"]) == 1


def test_distributed_initialisation_only_for_clusters(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MEGASCALE_COORDINATOR_ADDRESS", raising=False)
    assert parallel.maybe_initialize_distributed() is False and calls == []
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel.maybe_initialize_distributed() is False
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert parallel.maybe_initialize_distributed() is True and calls == [{}]
    monkeypatch.delenv("SLURM_NTASKS")
    assert parallel.maybe_initialize_distributed("h:1", 2, 1) is True
    assert calls[-1] == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}

"""The generic trainer end to end on the toy task (tests/toy_task.py): data parallelism over 1
and 8 devices and over 2 processes, kill/resume, the non-finite guard, the CLIs."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import toy_task

from jaxspeech.errors import JaxspeechError
from jaxspeech.train import config as config_lib
from jaxspeech.train import loop, optim
from jaxspeech.train.logging import read_metrics
from jaxspeech.train.loop import run
from jaxspeech.train.restore import restore_run
from jaxspeech.train.workdir import read_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent


def toy_config(**train) -> config_lib.Config:
    settings = dict(steps=6, batch_size=8, checkpoint_every=2, eval_every=3, log_every=2)
    return toy_task.ToyConfig(
        task="toy_task:Task",
        model=toy_task.ToyModelConfig(),
        data=toy_task.ToyDataConfig(),
        train=config_lib.TrainConfig(**{**settings, **train}),
    )


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Six uninterrupted steps on all 8 devices: (workdir, final state)."""
    workdir = tmp_path_factory.mktemp("ref8")
    return workdir, jax.device_get(run(toy_config(), workdir))


def test_run_writes_config_metrics_and_checkpoints(reference):
    workdir, state = reference
    assert config_lib.from_json((workdir / "config.json").read_text()) == toy_config()
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    for key in ("loss", "lr", "grad_norm", "steps_per_s", "samples_per_s", "mae", "time"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert "valid_mse" in records[1] and "valid_mse" in records[3]
    assert records[0]["lr"] == pytest.approx(1e-3)
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4, 6]
    assert int(state.step) == 6 and int(state.nonfinite_total) == 0
    # batch norm ran and its running statistics were updated (synchronised over replicas)
    assert np.abs(np.asarray(state.model_state["batch_stats"]["BatchNorm_0"]["mean"])).max() > 0
    restored = restore_run(workdir, "latest")
    assert restored.step == 6
    assert_trees_close(restored.params, state.params, rtol=0, atol=0)


def test_one_device_matches_eight_devices(reference, tmp_path):
    workdir, state8 = reference
    state1 = jax.device_get(run(toy_config(), tmp_path, devices=jax.devices()[:1]))
    assert_trees_close(state1.params, state8.params)
    assert_trees_close(state1.model_state, state8.model_state)
    losses1 = [r["loss"] for r in read_metrics(tmp_path)]
    losses8 = [r["loss"] for r in read_metrics(workdir)]
    np.testing.assert_allclose(losses1, losses8, rtol=1e-5)


def test_killed_run_resumes_to_the_same_params(reference, tmp_path):
    reference_workdir, uninterrupted = reference
    run(toy_config(steps=5), tmp_path)
    # "kill" after step 5 before its checkpoint was written: the restart resumes from step 4,
    # and the record of step 5 (written after that checkpoint) is dropped
    shutil.rmtree(tmp_path / "checkpoints" / "5")
    resumed = jax.device_get(run(toy_config(), tmp_path))
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == [r["step"] for r in read_metrics(reference_workdir)] == [2, 3, 4, 6]
    assert_trees_close(resumed.params, uninterrupted.params)
    assert_trees_close(resumed.opt_state, uninterrupted.opt_state)
    assert_trees_close(resumed.model_state, uninterrupted.model_state)


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path):
    # batch k feeds step k+1: step 3 is poisoned alone, then steps 5, 6, 7, ... in a row
    config = toy_config(steps=8, checkpoint_every=1, log_every=1, keep_checkpoints=10)
    config = dataclasses.replace(
        config,
        data=toy_task.ToyDataConfig(nan_batches=(2, *range(4, 8))),
        train=dataclasses.replace(config.train, max_nonfinite_steps=2),
    )
    with pytest.raises(JaxspeechError, match=r"stopped at step 6: 2 steps in a row .*step 5"):
        run(config, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["skipped"] for r in records] == [0, 0, 1, 0, 1]
    assert [r["nonfinite_total"] for r in records] == [0, 0, 1, 1, 2]

    def params_at(step):
        return restore_run(tmp_path, str(step)).params

    assert_trees_close(params_at(3), params_at(2), rtol=0, atol=0)  # skipped step
    assert_trees_close(params_at(5), params_at(4), rtol=0, atol=0)
    # ... and so were the batch-norm statistics and the optimiser's moments
    state_at = {step: train_state_at(tmp_path, step) for step in (2, 3)}
    assert_trees_close(state_at[3].model_state, state_at[2].model_state, rtol=0, atol=0)
    moments = [optim.finite_guard(state_at[s].opt_state).inner_state for s in (3, 2)]
    assert_trees_close(*moments, rtol=0, atol=0)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: np.any(a != b), params_at(4), params_at(3)))
    assert any(changed)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params_at(5)))
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [1, 2, 3, 4, 5]


def train_state_at(workdir: pathlib.Path, step: int) -> loop.TrainState:
    """The whole train state of checkpoint ``step``, optimiser state included."""
    setup = loop._Setup(read_config(workdir), workdir, None, {})
    with setup.checkpointer:
        return setup.checkpointer.restore(step, loop._GradientDescent(setup).new_state())


def test_halted_run_stays_frozen_until_the_next_check(tmp_path):
    # steps 2 and 3 are not finite; steps 4.. are, but the run halted at step 3 and the host
    # first looks at step 4: it must still see the halt and stop before saving step 4
    config = toy_config(steps=6, checkpoint_every=2, log_every=2, eval_every=10)
    config = dataclasses.replace(
        config,
        data=toy_task.ToyDataConfig(nan_batches=(1, 2)),
        train=dataclasses.replace(config.train, max_nonfinite_steps=2),
    )
    with pytest.raises(JaxspeechError, match=r"stopped at step 4: 2 steps in a row .*step 2"):
        run(config, tmp_path)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2]


def test_plateau_scales_the_learning_rate_after_validations(tmp_path):
    """The logged ``lr`` of step s is 1e-3 times the scale that the strict plateau rule gives
    for the validations of steps 1 … s-1 (patience 2, factor 0.5)."""
    config = dataclasses.replace(
        toy_config(steps=8, eval_every=1, log_every=1, checkpoint_every=8),
        schedule=config_lib.ScheduleConfig(plateau_patience=2, plateau_factor=0.5),
    )
    state = jax.device_get(run(config, tmp_path))
    records = read_metrics(tmp_path)
    best, bad, scale, scales = np.inf, 0, 1.0, [1.0]
    for record in records:
        if record["valid_mse"] < best:
            best, bad = record["valid_mse"], 0
        elif bad + 1 == 2:
            bad, scale = 0, scale * 0.5
        else:
            bad += 1
        scales.append(scale)
    lrs = [r["lr"] for r in records]
    np.testing.assert_allclose(lrs, np.multiply(1e-3, scales[:-1]), rtol=1e-6)
    assert scales[-1] < 1  # the run did reach a plateau
    assert float(state.plateau.scale) == scales[-1]
    assert float(state.opt_state.hyperparams["plateau_scale"]) == scales[-1]


def test_bfloat16_compute_keeps_float32_params(reference, tmp_path):
    workdir, _ = reference
    config = toy_config(steps=2, compute_dtype="bfloat16")
    state = run(config, tmp_path, devices=jax.devices()[:1])
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    loss16 = read_metrics(tmp_path)[0]["loss"]
    loss32 = read_metrics(workdir)[0]["loss"]
    assert loss16 == pytest.approx(loss32, rel=0.05) and loss16 != loss32


def numpy_test_mse(state) -> float:
    """The toy model's test MSE computed in numpy from a train state (BN in inference mode)."""
    p, stats = state.params, state.model_state["batch_stats"]["BatchNorm_0"]
    batch = toy_task.examples(toy_task.TEST_SEED, np.arange(toy_task.ToyDataConfig.test_examples))
    h = batch["x"] @ np.asarray(p["Dense_0"]["kernel"])
    h = (h - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * p["BatchNorm_0"]["scale"]
    h = np.maximum(h + p["BatchNorm_0"]["bias"], 0)
    pred = h @ np.asarray(p["Dense_1"]["kernel"])[:, 0] + np.asarray(p["Dense_1"]["bias"])[0]
    return float(np.mean((pred - batch["y"]) ** 2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


RECIPE = """
import toy_task
from jaxspeech.train import config as C


def get_config(variant: str = ""):
    steps = {"": 6, "short": 3}[variant]
    return toy_task.ToyConfig(
        task="toy_task:Task",
        model=toy_task.ToyModelConfig(),
        data=toy_task.ToyDataConfig(),
        train=C.TrainConfig(steps=steps, batch_size=8, checkpoint_every=2, eval_every=2),
    )
"""


def test_two_processes_train_and_evaluate_through_the_clis(reference, tmp_path):
    """train.py in 2 CPU processes (jax.distributed, gloo) agrees with the 8-device run in this
    process; evaluate.py then rebuilds everything from the workdir."""
    ref_workdir, ref_state = reference
    recipe = tmp_path / "toy_recipe.py"
    recipe.write_text(RECIPE)
    workdir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device per process
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]), JAX_PLATFORMS="cpu")
    overrides = ["train.steps=6", "train.eval_every=3", "train.log_every=2"]
    command = [sys.executable, str(REPO / "train.py"), "--config", f"{recipe}:short"]
    command += ["--workdir", str(workdir), *(f"--config.{o}" for o in overrides)]
    command += ["--coordinator", f"localhost:{_free_port()}", "--num_processes", "2"]
    processes = [
        subprocess.Popen(
            [*command, "--process_id", str(i)],
            env=env,
            cwd=tmp_path,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs

    config = config_lib.from_json((workdir / "config.json").read_text())
    assert config == toy_config()
    distributed = restore_run(workdir, "latest")
    assert_trees_close(distributed.params, ref_state.params)
    assert_trees_close(distributed.model_state, ref_state.model_state)
    losses = [[r["loss"] for r in read_metrics(d)] for d in (workdir, ref_workdir)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert len(list((workdir / "checkpoints" / "6" / "data").glob("process_*-of-2.json"))) == 2

    evaluation = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--workdir", str(workdir)],
        env=env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=120,
        check=True,
    )
    rows = json.loads((workdir / "eval" / "test.json").read_text())
    valid = [(r["valid_mse"], r["step"]) for r in read_metrics(workdir) if "valid_mse" in r]
    assert rows[0]["checkpoint_step"] == min(valid)[1] and rows[0]["split"] == "test"
    best = restore_run(workdir, "best")
    assert rows[0]["mse"] == pytest.approx(numpy_test_mse(best), rel=1e-4)
    markdown = (workdir / "eval" / "test.md").read_text()
    assert markdown in evaluation.stdout
    assert markdown.startswith("| checkpoint_step | split | examples | mse |")
    assert (workdir / "eval" / "test.csv").read_text().startswith("checkpoint_step,split")

"""Nothing lost: workdirs of one run, saving on SIGTERM, kill -9 and resume, failed and damaged
checkpoints, earlier evaluations kept, one-line errors from the entry points (toy task,
tests/toy_task.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import toy_task
from orbax.checkpoint._src.path import deleter

from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import checkpoint, stages
from jaxspeech.train import config as config_lib
from jaxspeech.train.checkpoint import UnreadableCheckpointError
from jaxspeech.train.logging import read_metrics
from jaxspeech.train.loop import run
from jaxspeech.train.restore import restore_run
from jaxspeech.workdir import DELETED_CHECKPOINTS

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent
STEPS = 40

RECIPE = """
import toy_task
from jaxspeech.train import config as C


def get_config(variant: str = ""):
    return toy_task.ToyConfig(
        model=toy_task.ToyModelConfig(),
        data=toy_task.ToyDataConfig(delay_seconds=0.05),
        train=C.TrainConfig(steps=%d, batch_size=8, checkpoint_every=%d, eval_every=10,
                            log_every=5),
    )
"""


def toy_config(steps=STEPS, checkpoint_every=10, **model) -> config_lib.Config:
    return toy_task.ToyConfig(
        model=toy_task.ToyModelConfig(**model),
        data=toy_task.ToyDataConfig(),
        train=config_lib.TrainConfig(
            steps=steps, batch_size=8, checkpoint_every=checkpoint_every, eval_every=10,
            log_every=5,
        ),
    )  # fmt: skip


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(workdir, final params) of STEPS uninterrupted steps, in one process on one device, as
    the subprocesses below run."""
    workdir = tmp_path_factory.mktemp("whole")
    state = run(toy_config(), workdir, devices=jax.devices()[:1])
    return workdir, jax.device_get(state.params)


def train_command(tmp_path, checkpoint_every=10) -> list[str]:
    recipe = tmp_path / "slow_recipe.py"
    recipe.write_text(RECIPE % (STEPS, checkpoint_every))
    return [sys.executable, str(REPO / "train.py"), "--config", str(recipe)]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]), JAX_PLATFORMS="cpu")
    env["JAXSPEECH_MALLOC"] = "system"
    return env


def stderr_tail(finished: subprocess.CompletedProcess) -> str:
    """The end of a finished subprocess's stderr, where its error is, one progress bar a line."""
    return finished.stderr.decode(errors="replace").replace("\r", "\n")[-4000:]


def wait_for_records(workdir: pathlib.Path, count: int, process, timeout=120.0) -> None:
    """Waits until ``workdir/metrics.jsonl`` holds ``count`` records."""
    deadline = time.monotonic() + timeout
    path = workdir / "metrics.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} records in {path} (exit {process.poll()})")


def test_a_workdir_of_another_run_is_refused_before_writing(tmp_path):
    run(toy_config(steps=2), tmp_path)
    written = (tmp_path / "config.json").read_bytes()
    with pytest.raises(ConfigError, match=r"other settings: model\.hidden \(8 -> 4\).*another"):
        run(toy_config(steps=4, hidden=4), tmp_path)
    assert (tmp_path / "config.json").read_bytes() == written
    with pytest.raises(ConfigError, match=r"holds a 'toy_task:Task' run, not a 'toy_task:Stat"):
        run(dataclasses.replace(toy_config(), task="toy_task:StatisticsTask"), tmp_path)
    recipe = stages.MultiStage((stages.Stage("a", toy_config(steps=2)),))
    with pytest.raises(ConfigError, match="holds a single run"):
        stages.run(recipe, tmp_path)
    stages.run(recipe, tmp_path / "recipe")
    with pytest.raises(ConfigError, match="holds a multi-stage recipe"):
        run(toy_config(steps=2), tmp_path / "recipe")
    other = stages.MultiStage((stages.Stage("b", toy_config(steps=2)),))
    with pytest.raises(ConfigError, match=r"stages \['a'\], not \['b'\]"):
        stages.run(other, tmp_path / "recipe")
    # more steps (and other logging) resume; other settings only on purpose
    run(toy_config(steps=4, checkpoint_every=1), tmp_path)
    assert restore_run(tmp_path).step == 4
    slower = dataclasses.replace(
        toy_config(steps=6), optim=config_lib.OptimConfig(learning_rate=1e-4)
    )
    with pytest.raises(ConfigError, match=r"optim\.learning_rate \(0\.001 -> 0\.0001\)"):
        run(slower, tmp_path)
    assert int(run(slower, tmp_path, allow_changes=True).step) == 6
    run(toy_config(steps=6, hidden=4), tmp_path / "fresh")
    # continuing on purpose with a model whose params do not fit the checkpoints is refused
    # rather than trained afresh over them
    with pytest.raises(UnreadableCheckpointError, match="none of the checkpoints"):
        run(toy_config(steps=8, hidden=3), tmp_path / "fresh", allow_changes=True)


def test_a_finished_run_says_so(tmp_path, capsys):
    run(toy_config(steps=2), tmp_path)
    capsys.readouterr()
    assert int(run(toy_config(steps=2), tmp_path).step) == 2
    out = capsys.readouterr()
    assert f"{tmp_path}: already complete at step 2" in out.out
    assert "step/s" not in out.err  # no empty progress bars


def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes_the_same(uninterrupted, tmp_path):
    reference_dir, reference = uninterrupted
    workdir = tmp_path / "run"
    command = [*train_command(tmp_path), "--workdir", str(workdir)]
    process = subprocess.Popen(
        command, env=subprocess_env(), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for_records(workdir, 2, process)  # past step 10
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if "checkpoint saved" in line]
    assert len(message) == 1 and "rerun the same command to resume" in message[0], err
    stopped = int(message[0].split("stopped at step ")[1].split(",")[0])
    assert 10 < stopped < STEPS
    assert restore_run(workdir, "latest").step == stopped
    finished = subprocess.run(command, env=subprocess_env(), cwd=tmp_path, capture_output=True)
    assert finished.returncode == 0, stderr_tail(finished)
    assert f"resuming from the checkpoint of step {stopped}" in finished.stdout.decode()
    assert_same_params(restore_run(workdir, "latest").params, reference)
    # the finished run removed the dropped checkpoints for good
    assert not (workdir / "checkpoints" / DELETED_CHECKPOINTS).exists()
    steps = [r["step"] for r in read_metrics(workdir)]
    assert steps == [r["step"] for r in read_metrics(reference_dir)]  # none twice, none lost


@pytest.mark.slow
def test_kill_9_five_times_then_resume_to_the_same_params(uninterrupted, tmp_path):
    _, reference = uninterrupted
    workdir = tmp_path / "run"
    command = [*train_command(tmp_path, checkpoint_every=1), "--workdir", str(workdir)]
    rng = random.Random(0)
    for _ in range(5):
        records = len(read_metrics(workdir)) if (workdir / "metrics.jsonl").is_file() else 0
        process = subprocess.Popen(
            command, env=subprocess_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_records(workdir, records + 1, process)
        time.sleep(rng.uniform(0.0, 0.3))
        process.kill()  # SIGKILL: nothing is saved on the way out
        process.wait()
        # every checkpoint left on disk is complete and readable: orbax writes a save to
        # "<step>.orbax-checkpoint-tmp..." and renames it when complete; a killed save's
        # temporary folder is never taken for a checkpoint, and a dropped checkpoint is renamed
        # into "deleted/" whole before it is removed
        folders = [p.name for p in (workdir / "checkpoints").iterdir()]
        steps = sorted(int(name) for name in folders if name.isdigit())
        assert all(
            name.isdigit() or "orbax-checkpoint-tmp" in name or name == DELETED_CHECKPOINTS
            for name in folders
        )
        for step in steps:
            assert restore_run(workdir, str(step)).step == step
        if steps:  # (a kill before the first save completed leaves none)
            assert restore_run(workdir, "latest").step == steps[-1]
    assert restore_run(workdir, "latest").step < STEPS
    finished = subprocess.run(command, env=subprocess_env(), cwd=tmp_path, capture_output=True)
    assert finished.returncode == 0, stderr_tail(finished)
    assert_same_params(restore_run(workdir, "latest").params, reference)
    # the finished run removed the dropped checkpoints for good
    assert not (workdir / "checkpoints" / DELETED_CHECKPOINTS).exists()
    steps = [r["step"] for r in read_metrics(workdir)]
    assert len(steps) == len(set(steps)) and steps == sorted(steps)


def test_deleted_checkpoints_are_emptied_only_between_saves(tmp_path, monkeypatch):
    """Orbax drops an old checkpoint in its background "save_finalize" thread, by a rename into
    ``checkpoints/deleted/``; emptying that folder while the thread runs can pull it away
    mid-rename and fail the save, so it is emptied only when no save is in flight."""
    emptied, dropped_in, remove, drop = [], set(), shutil.rmtree, deleter.PathDeleter.delete

    def rmtree(path, *args, **kwargs):
        if pathlib.Path(path).name == DELETED_CHECKPOINTS:
            threads = threading.enumerate()
            emptied.append(any(t.name == "save_finalize" and t.is_alive() for t in threads))
        return remove(path, *args, **kwargs)

    def recorded_drop(self, path, **kwargs):
        dropped_in.add(threading.current_thread().name)
        return drop(self, path, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", rmtree)
    monkeypatch.setattr(deleter.PathDeleter, "delete", recorded_drop)
    run(toy_config(steps=6, checkpoint_every=1), tmp_path)
    assert restore_run(tmp_path, "latest").step == 6
    assert dropped_in == {"save_finalize"}  # the thread watched for above
    assert len(emptied) >= 6 and not any(emptied)  # (each save, and the close)


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_earlier_ones(tmp_path, monkeypatch):
    save = ocp.CheckpointManager.save

    def full_disk_at_step_20(self, step, *args, **kwargs):
        if step == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk_at_step_20)
    with pytest.raises(JaxspeechError) as raised:
        run(toy_config(), tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "could not write checkpoint 20" in message and "latest: 10" in message
    assert "No space left on device" in message
    assert restore_run(tmp_path, "latest").step == 10


def test_a_full_disk_during_a_checkpoint(uninterrupted, tmp_path):
    """A real size-limited folder (tmpfs), where the machine allows mounting one."""
    _, reference = uninterrupted
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here; the simulated full disk test covers it")
    try:
        run(toy_config(steps=10), disk / "run")
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
            while True:  # until the disk is full
                filler.write(b"\0" * 4096)
                filler.flush()
        with pytest.raises(JaxspeechError) as raised:
            run(toy_config(steps=20), disk / "run")
        assert "\n" not in str(raised.value) and "could not write" in str(raised.value)
        assert "No space left on device" in str(raised.value)
        assert restore_run(disk / "run", "latest").step == 10
        (disk / "filler").unlink()
        run(toy_config(), disk / "run", devices=jax.devices()[:1])  # space again: it finishes
        assert_same_params(restore_run(disk / "run", "latest").params, reference)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_damaged_checkpoint_is_named_and_the_one_before_is_used(uninterrupted, tmp_path, capsys):
    _, reference = uninterrupted
    run(toy_config(steps=20), tmp_path, devices=jax.devices()[:1])
    for path in (tmp_path / "checkpoints" / "20" / "model").rglob("*"):
        if path.is_file():
            path.write_bytes(b"damaged")
    with pytest.raises(UnreadableCheckpointError, match=r"checkpoints/20 cannot be read"):
        restore_run(tmp_path, "20")
    capsys.readouterr()
    run(toy_config(), tmp_path, devices=jax.devices()[:1])
    err = capsys.readouterr().err
    assert "checkpoints/20 cannot be read" in err and "trying the one before" in err
    assert_same_params(restore_run(tmp_path, "latest").params, reference)


def entry_point(script: str, *args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], env=subprocess_env(), cwd=cwd,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_an_earlier_evaluation_is_replaced_only_with_overwrite(tmp_path, capsys):
    import evaluate

    run(toy_config(steps=2), tmp_path / "run")
    stages.run(stages.MultiStage((stages.Stage("a", toy_config(steps=2)),)), tmp_path / "recipe")
    for workdir, earlier in [
        (tmp_path / "run", tmp_path / "run" / "eval" / "test.md"),
        (tmp_path / "recipe", tmp_path / "recipe" / "a" / "eval" / "test.md"),
    ]:
        evaluate.main(["--workdir", str(workdir)])
        if earlier.parent != workdir / "eval":  # a stage's table alone is refused too
            shutil.rmtree(workdir / "eval")
        earlier.write_text("an earlier table")
        with pytest.raises(ConfigError, match=f"{earlier} holds an earlier evaluation; pass --ov"):
            evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest"])
        assert earlier.read_text() == "an earlier table"
        evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest", "--overwrite"])
        assert "checkpoint_step" in earlier.read_text()
        assert (workdir / "eval" / "test.md").read_text() in capsys.readouterr().out


def test_entry_points_print_one_line_errors(tmp_path):
    recipe = tmp_path / "slow_recipe.py"
    recipe.write_text(RECIPE % (2, 1))
    bad = entry_point(
        "train.py", "--config", str(recipe), "--workdir", "w", "--config.train.stepz=3",
        cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("train.py: error: unknown config key 'train.stepz'")
    debug = entry_point(
        "train.py", "--config", str(recipe), "--workdir", "w", "--config.train.stepz=3",
        "--debug", cwd=tmp_path,
    )  # fmt: skip
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    missing = entry_point("evaluate.py", "--workdir", str(tmp_path / "none"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "config.json not found" in missing.stderr
    # a truncated config.json is named in one line, by both entry points
    workdir = tmp_path / "run"
    assert entry_point("train.py", "--config", str(recipe), "--workdir", str(workdir),
                       cwd=tmp_path).returncode == 0  # fmt: skip
    text = (workdir / "config.json").read_text()
    (workdir / "config.json").write_text(text[: len(text) // 2])
    for result in (
        entry_point("train.py", "--config", str(recipe), "--workdir", str(workdir), cwd=tmp_path),
        entry_point("evaluate.py", "--workdir", str(workdir), cwd=tmp_path),
    ):
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"{workdir / 'config.json'} is damaged" in result.stderr
    helped = entry_point("train.py", "--help", cwd=tmp_path)
    assert "--config.SECTION.KEY=VALUE" in helped.stdout
    assert "--continue-with-changes" in helped.stdout
    evaluate_help = entry_point("evaluate.py", "--help", cwd=tmp_path).stdout
    assert "--split {test,valid}" in evaluate_help and "default: best" in evaluate_help

"""Runs restored from their workdir alone, for evaluation, inference and later stages.

Everything comes from ``WORKDIR/config.json``, the ``model`` item of a checkpoint (params and
model state; ``jaxspeech.train.checkpoint``) and ``WORKDIR/frozen.json``, which names the
earlier stages a stage read (relative path and checkpoint step), so that a stage whose model
runs on top of frozen ones (a gate over two frozen nets) is restored with them. No optimiser
is built, no training data is read (a task reads a split's data only when it evaluates it),
and any number of devices will do.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import jax

from jaxspeech import parallel
from jaxspeech.errors import ConfigError
from jaxspeech.inference.runs import CONFIG_FILE, FROZEN_FILE, frozen_stages, read_config
from jaxspeech.train import config as config_lib
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.logging import write_table
from jaxspeech.train.task import TrainedRun
from jaxspeech.train.tasks import make_task

#: ``CONFIG_FILE`` and ``read_config`` are the inference side's, re-exported for the trainer.
__all__ = [
    "CONFIG_FILE",
    "evaluate",
    "evaluate_run",
    "read_config",
    "restore_frozen",
    "restore_run",
    "scores_trials",
    "table_name",
    "write_frozen_record",
]


def write_frozen_record(workdir: pathlib.Path, frozen: Mapping[str, TrainedRun]) -> None:
    """Records in ``workdir/frozen.json`` which checkpoint of which run each read stage is
    (paths relative to ``workdir``, so a recipe's workdir can be moved whole)."""
    record = {
        name: {"workdir": os.path.relpath(run.workdir, workdir), "step": run.step}
        for name, run in frozen.items()
    }
    (workdir / FROZEN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def restore_frozen(workdir: pathlib.Path, devices: Sequence | None = None) -> dict[str, TrainedRun]:
    """The frozen stages the run in ``workdir`` was trained with (``{}`` for none)."""
    return {
        name: restore_run(source, str(step), devices)
        for name, (source, step) in frozen_stages(workdir).items()
    }


def restore_run(
    workdir: str | pathlib.Path, checkpoint: str = "latest", devices: Sequence | None = None
) -> TrainedRun:
    """The run in ``workdir`` at ``checkpoint`` ("best", "latest" or a step number), with the
    frozen stages it reads; params and model state replicated over ``devices`` (default:
    all devices of all processes)."""
    workdir = pathlib.Path(workdir).absolute()
    config = read_config(workdir)
    config_lib.validate(config)
    task = make_task(config, restore_frozen(workdir, devices))
    checkpointer = Checkpointer.for_run(workdir, config, task)
    try:
        step = checkpointer.resolve(checkpoint)
        replicated = jax.sharding.NamedSharding(
            parallel.make_mesh(devices), jax.sharding.PartitionSpec()
        )
        params, model_state = jax.eval_shape(task.init_model, jax.random.PRNGKey(0))
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
            {"params": params, "model_state": model_state},
        )
        model = checkpointer.restore_model(step, abstract)
    finally:
        checkpointer.close()
    return TrainedRun(workdir, task, model["params"], model["model_state"], step)


def scores_trials(task) -> bool:
    """Whether a task (or task class) scores trial lists: its ``evaluate`` then also takes the
    run's ``workdir`` (to write its trial lists and thresholds) and ``trials`` (a list file)."""
    return getattr(task, "scores_trials", False)


def evaluate_run(
    run: TrainedRun, split: str = "test", trials: str | None = None, with_scores: bool = False
) -> tuple[list[dict], dict | None]:
    """``(rows, scores)`` of a restored run: ``task.evaluate`` on ``split`` (or, for a task that
    ``scores_trials``, on the trial list ``trials`` when given) with a ``checkpoint_step``
    column; with ``with_scores``, ``task.evaluate_with_scores`` instead, whose per-utterance
    scores ``{metric: [utterances]}`` come back too (None without)."""
    scores = None
    if scores_trials(run.task):
        options = {"workdir": run.workdir if jax.process_index() == 0 else None, "trials": trials}
        rows = run.task.evaluate(run.params, run.model_state, split, **options)
    elif trials is not None:
        raise ConfigError(
            f"--trials: the run in {run.workdir} is a {run.task.config.task!r} run, which scores "
            "no trial lists; give a speaker-verification workdir"
        )
    elif with_scores:
        if not hasattr(run.task, "evaluate_with_scores"):
            raise ConfigError(
                f"the task of {run.workdir} ({run.task.config.task!r}) has no per-utterance "
                "scores (evaluate_with_scores), so it cannot be compared paired"
            )
        rows, scores = run.task.evaluate_with_scores(run.params, run.model_state, split)
    else:
        rows = run.task.evaluate(run.params, run.model_state, split)
    return [{"checkpoint_step": run.step, **row} for row in rows], scores


def evaluate(
    workdir: str | pathlib.Path,
    split: str = "test",
    checkpoint: str = "best",
    trials: str | None = None,
):
    """``evaluate_run`` of the run in ``workdir`` at ``checkpoint``, written to
    ``workdir/eval/<split or list name>.{md,csv,json}`` (process 0). Returns
    ``(rows, markdown)``."""
    run = restore_run(workdir, checkpoint)
    rows, _ = evaluate_run(run, split, trials)
    path = run.workdir / "eval" / table_name(split, trials)
    markdown = write_table(rows, path) if jax.process_index() == 0 else ""
    return rows, markdown


def table_name(split: str, trials: str | None) -> str:
    """The name of an evaluation's tables in ``eval/``: the split, or the trial list's stem."""
    return split if trials is None else pathlib.Path(trials).stem

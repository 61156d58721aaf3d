"""Runs restored from their workdir alone, for evaluation, inference and later stages.

Everything comes from ``WORKDIR/config.json``, the ``model`` item of a checkpoint (params and
model state; ``jaxspeech.train.checkpoint``) and ``WORKDIR/frozen.json``, which names the
earlier stages a stage read (relative path and checkpoint step), so that a stage whose model
runs on top of frozen ones (a gate over two frozen nets) is restored with them. No optimiser
is built, no training data is read (a task reads a split's data only when it evaluates it),
and any number of devices will do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence

import jax

from jaxspeech import files, parallel
from jaxspeech import workdir as names
from jaxspeech.data import crosscorpus
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation, write_evaluation
from jaxspeech.inference.runs import frozen_stages
from jaxspeech.train import config as config_lib
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.task import TrainedRun
from jaxspeech.train.tasks import make_task
from jaxspeech.train.workdir import read_config


def write_frozen_record(workdir: pathlib.Path, frozen: Mapping[str, TrainedRun]) -> None:
    """Records in ``workdir/frozen.json`` which checkpoint of which run each read stage is
    (paths relative to ``workdir``, so a recipe's workdir can be moved whole)."""
    record = {
        name: {"workdir": os.path.relpath(run.workdir, workdir), "step": run.step}
        for name, run in frozen.items()
    }
    files.write_text(workdir / names.FROZEN, json.dumps(record, indent=2) + "\n")


def restore_frozen(workdir: pathlib.Path, devices: Sequence | None = None) -> dict[str, TrainedRun]:
    """The frozen stages the run in ``workdir`` was trained with (``{}`` for none)."""
    return {
        name: restore_run(source, str(step), devices)
        for name, (source, step) in frozen_stages(workdir).items()
    }


def restore_run(
    workdir: str | pathlib.Path,
    checkpoint: str = "latest",
    devices: Sequence | None = None,
    corpus: str | None = None,
) -> TrainedRun:
    """The run in ``workdir`` at ``checkpoint`` ("best", "latest" or a step number), with the
    frozen stages it reads; params and model state replicated over ``devices`` (default:
    all devices of all processes). With ``corpus``, its task reads the corpus at that path
    instead of its own data (``jaxspeech.data.crosscorpus``)."""
    workdir = pathlib.Path(workdir).absolute()
    config = read_config(workdir)
    config_lib.validate(config)
    if corpus is not None:
        config = dataclasses.replace(config, data=crosscorpus.for_corpus(config.data, corpus))
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


def evaluate_run(run: TrainedRun, split: str = "test", trials: str | None = None) -> Evaluation:
    """``task.evaluate`` of a restored run on ``split`` (or, for a task that scores trial
    lists, on the list ``trials`` when given), with a ``checkpoint_step`` column first in its
    table."""
    if run.task.capabilities.scores_trials:
        options = {
            "workdir": run.workdir if jax.process_index() == 0 else None,
            "trials": trials,
            "step": run.step,
        }
        evaluation = run.task.evaluate(run.params, run.model_state, split, **options)
    elif trials is not None:
        raise ConfigError(
            f"--trials: the run in {run.workdir} is a {run.task.config.task!r} run, which scores "
            "no trial lists; give a speaker-verification workdir"
        )
    else:
        evaluation = run.task.evaluate(run.params, run.model_state, split)
    table = [{"checkpoint_step": run.step, **row} for row in evaluation.table]
    return dataclasses.replace(evaluation, table=table)


def evaluate(
    workdir: str | pathlib.Path,
    split: str = "test",
    checkpoint: str = "best",
    trials: str | None = None,
    corpus: str | None = None,
) -> tuple[Evaluation, str, list[pathlib.Path]]:
    """``evaluate_run`` of the run in ``workdir`` at ``checkpoint`` (on the test split of
    ``corpus`` when given), written to ``workdir/eval/<table>{,_items,_groups}.{md,csv,json}``
    (process 0; ``<table>``: :func:`table_name`). Returns ``(evaluation, the table's
    Markdown, the stems written)``."""
    run = restore_run(workdir, checkpoint, corpus=corpus)
    evaluation = evaluate_run(run, split, trials)
    if jax.process_index() != 0:
        return evaluation, "", []
    table = table_name(run.workdir, split, trials, corpus)
    markdown, written = write_evaluation(evaluation, run.workdir, table)
    return evaluation, markdown, written


def table_name(
    workdir: str | pathlib.Path, split: str, trials: str | None, corpus: str | None = None
) -> str:
    """The name of an evaluation's tables in ``eval/``: the split, the trial list's stem, or
    with ``corpus`` the corpus's layout and split (``resolve_corpus`` first)."""
    if corpus is None:
        return names.table_name(split, trials)
    data = crosscorpus.for_corpus(_first_config(workdir).data, corpus)
    return crosscorpus.table_name(data, split)


def _first_config(workdir: str | pathlib.Path) -> config_lib.Config:
    """The config of the run in ``workdir``, or of a multi-stage recipe's first stage."""
    workdir = pathlib.Path(workdir)
    if not names.is_run(workdir) and names.is_multi_stage(workdir):
        workdir = workdir / json.loads((workdir / names.STAGES).read_text())["stages"][0]
    return read_config(workdir)


def resolve_corpus(
    workdir: str | pathlib.Path, trials: str | None, corpus: str | None
) -> tuple[str | None, str | None]:
    """``(trials, corpus)`` for ``evaluate.py --corpus``: a speaker-verification run scores
    the corpus's official trial list (written to ``workdir/trials/``) or ``trials``, so the
    corpus becomes a trial list; other runs read the corpus's test split."""
    if corpus is None or not crosscorpus.scores_trial_lists(_first_config(workdir).data):
        return trials, corpus
    if trials is None:
        folder = pathlib.Path(workdir).absolute() / names.TRIALS
        trials = str(crosscorpus.write_trial_list(corpus, folder))
    return trials, None

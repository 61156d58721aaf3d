"""Reading a trained run for inference: which run of a workdir, its config, and one
checkpoint's params and model state, on one device. No task, optimiser or data is built.

A workdir is a single run (``config.json``, ``checkpoints/``) or a multi-stage recipe
(``stages.json`` and one run per stage). A stage trained on top of frozen earlier stages
names them in its ``frozen.json`` (relative path and checkpoint step).
"""

from __future__ import annotations

import json
import pathlib

import jax
import orbax.checkpoint as ocp

from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import config as config_lib
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.workdir import read_config as read_config_file

CONFIG_FILE, FROZEN_FILE = "config.json", "frozen.json"


def read_config(workdir: pathlib.Path) -> config_lib.Config:
    """The config of the run in ``workdir``; JaxspeechError when there is none."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise JaxspeechError(f"{path} not found; is {workdir} a training workdir?")
    return read_config_file(path)


def stage_workdir(workdir: str | pathlib.Path, stage: str | None) -> pathlib.Path:
    """The run to load from ``workdir``: itself for a single run; for a multi-stage workdir
    (with ``stages.json``) ``workdir/<stage>``, by default "student" (the distilled model of
    ``configs/enhancement/distill.py``) if there is one, else the last stage."""
    from jaxspeech.train.stages import stage_names

    names = stage_names(workdir)
    if names is None:
        if stage is not None:
            raise ConfigError(f"--stage={stage}: {workdir} is a single run, not multi-stage")
        return pathlib.Path(workdir)
    if stage is None:
        stage = "student" if "student" in names else names[-1]
    if stage not in names:
        raise ConfigError(f"--stage={stage} is not a stage of {workdir}; use one of {names}")
    path = pathlib.Path(workdir) / stage
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(
            f"stage {stage!r} has not been trained in {path}; finish the recipe with train.py "
            "or pick another --stage"
        )
    return path


def frozen_stages(workdir: pathlib.Path) -> dict[str, tuple[pathlib.Path, int]]:
    """``{stage name: (run folder, checkpoint step)}`` of the frozen stages the run in
    ``workdir`` was trained with (``{}`` for none)."""
    path = pathlib.Path(workdir) / FROZEN_FILE
    if not path.is_file():
        return {}
    stages = {}
    for name, entry in json.loads(path.read_text()).items():
        source = (pathlib.Path(workdir) / entry["workdir"]).resolve()
        if not (source / CONFIG_FILE).is_file():
            raise JaxspeechError(
                f"{path} says stage {name!r} is in {source}, which holds no training run; "
                "keep a multi-stage workdir's stage folders together"
            )
        stages[name] = (source, int(entry["step"]))
    return stages


def checkpoint_ranking(config) -> tuple[str, str]:
    """``(validation metric, "min" or "max")`` by which the trainer ranked the run's
    checkpoints ("best"), read from its task class (no task is built)."""
    from jaxspeech.train.tasks import get_task_class

    task_class = get_task_class(config.task)
    ranking = getattr(task_class, "checkpoint_ranking", None)
    if ranking is not None:
        return ranking(config)
    return task_class.valid_metric, task_class.valid_mode


def restore_variables(workdir: pathlib.Path, checkpoint: str, config) -> tuple[dict, dict, int]:
    """``(params, model_state, step)`` of checkpoint ``checkpoint`` ("best", "latest" or a
    step number) of the run in ``workdir``, on the first device; shapes are read from the
    checkpoint itself, so nothing is initialised."""
    workdir = pathlib.Path(workdir).absolute()
    metric, mode = checkpoint_ranking(config)
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        keep=config.train.keep_checkpoints,
        valid_metric=metric,
        valid_mode=mode,
    )
    try:
        step = checkpointer.resolve(checkpoint)
        one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        stored = ocp.StandardCheckpointHandler().metadata(
            checkpointer.directory / str(step) / "model"
        )
        abstract = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
            stored.tree,
        )
        model = checkpointer.restore_model(step, abstract)
    finally:
        checkpointer.close()
    return model["params"], model["model_state"], step

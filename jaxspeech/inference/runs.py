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

from jaxspeech import workdir as names
from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.workdir import read_config

#: ``read_config`` (the one reader of ``config.json``) is re-exported for the commands.
__all__ = [
    "checkpoint_ranking",
    "frozen_stages",
    "read_config",
    "restore_variables",
    "stage_workdir",
]


def stage_workdir(workdir: str | pathlib.Path, stage: str | None) -> pathlib.Path:
    """The run to load from ``workdir``: itself for a single run; for a multi-stage workdir
    (with ``stages.json``) ``workdir/<stage>``, by default "student" (the distilled model of
    ``configs/enhancement/distill.py``) if there is one, else the last stage."""
    stages = names.stage_names(workdir)
    if stages is None:
        if stage is not None:
            raise ConfigError(f"--stage={stage}: {workdir} is a single run, not multi-stage")
        return pathlib.Path(workdir)
    if stage is None:
        stage = "student" if "student" in stages else stages[-1]
    if stage not in stages:
        raise ConfigError(f"--stage={stage} is not a stage of {workdir}; use one of {stages}")
    path = pathlib.Path(workdir) / stage
    if not names.is_run(path):
        raise ConfigError(
            f"stage {stage!r} has not been trained in {path}; finish the recipe with train.py "
            "or pick another --stage"
        )
    return path


def frozen_stages(workdir: pathlib.Path) -> dict[str, tuple[pathlib.Path, int]]:
    """``{stage name: (run folder, checkpoint step)}`` of the frozen stages the run in
    ``workdir`` was trained with (``{}`` for none)."""
    path = pathlib.Path(workdir) / names.FROZEN
    if not path.is_file():
        return {}
    stages = {}
    for name, entry in json.loads(path.read_text()).items():
        source = (pathlib.Path(workdir) / entry["workdir"]).resolve()
        if not names.is_run(source):
            raise JaxspeechError(
                f"{path} says stage {name!r} is in {source}, which holds no training run; "
                "keep a multi-stage workdir's stage folders together"
            )
        stages[name] = (source, int(entry["step"]))
    return stages


#: How the trainer ranked the checkpoints of each system's runs before it recorded the
#: ranking in ``config.json`` (workdirs written earlier); the AV stages by ``model.net``.
RANKINGS_BEFORE_RECORDING = {
    "separation": ("si_snr_i", "max"),
    "enhancement": ("si_sdr", "max"),
    "speaker": ("cosine_gap", "max"),
    "bgm": ("bce", "min"),
    "av:lips": ("band_bce", "min"),
    "av:gate": ("si_sdr", "max"),
}


def checkpoint_ranking(workdir: pathlib.Path, config) -> tuple[str, str]:
    """``(validation metric, "min" or "max")`` by which the trainer ranked the checkpoints of
    the run in ``workdir`` ("best"): as recorded in its ``config.json``, or for a run written
    before that, as the trainer ranked runs of its system then."""
    recorded = names.recorded_ranking(workdir)
    if recorded is not None:
        return recorded
    system = f"av:{config.model.net}" if config.task == "av" else config.task
    return RANKINGS_BEFORE_RECORDING[system]


def restore_variables(workdir: pathlib.Path, checkpoint: str, config) -> tuple[dict, dict, int]:
    """``(params, model_state, step)`` of checkpoint ``checkpoint`` ("best", "latest" or a
    step number) of the run in ``workdir``, on the first device; shapes are read from the
    checkpoint itself, so nothing is initialised."""
    workdir = pathlib.Path(workdir).absolute()
    metric, mode = checkpoint_ranking(workdir, config)
    checkpointer = Checkpointer(
        workdir / names.CHECKPOINTS,
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

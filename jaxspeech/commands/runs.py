"""The trained run a command uses: the ``--workdir``/``--stage``/``--checkpoint`` arguments,
finding the run in a workdir or multi-stage workdir, reading its config, loading its model."""

from __future__ import annotations

import argparse
import pathlib

import jax

from jaxspeech.errors import ConfigError
from jaxspeech.workdir import is_run

#: The subcommand that runs the models of each task.
COMMANDS = {
    "separation": "separate",
    "enhancement": "enhance",
    "bgm": "match",
    "speaker": "embed",
}


def load_trained_model(workdir: str, checkpoint: str):
    """``(task, params, model_state, sample_rate)`` of a training run's checkpoint, the
    arrays on one device."""
    from jaxspeech.train.restore import restore_run  # imports the trainer only when needed

    run = restore_run(workdir, checkpoint, devices=jax.devices()[:1])
    return run.task, run.params, run.model_state, run.task.config.data.sample_rate


def stage_workdir(workdir: str, stage: str | None) -> pathlib.Path:
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
    if not is_run(path):
        raise ConfigError(
            f"stage {stage!r} has not been trained in {path}; finish the recipe with train.py "
            "or pick another --stage"
        )
    return path


def trained_run(workdir: str, stage: str | None, task: str, command: str | None = None):
    """``(run_dir, config)`` of the run in ``workdir`` (see :func:`stage_workdir`), read from its
    ``config.json`` without loading the model; ConfigError naming the command that serves the
    run when it is not of ``task`` (``command``: the one asking, default ``COMMANDS[task]``)."""
    from jaxspeech.train.workdir import read_config

    run_dir = stage_workdir(workdir, stage)
    config = read_config(run_dir)
    if config.task != task:
        other = COMMANDS.get(config.task)
        served = f"`jaxspeech {other}` runs it" if other else "no jaxspeech command runs it"
        raise ConfigError(
            f"{run_dir} is {_quoted_with_article(config.task)} run ({served}); "
            f"`jaxspeech {command or COMMANDS[task]}` needs {_quoted_with_article(task)} run "
            f"(configs/{task}/*.py)"
        )
    return run_dir, config


def _quoted_with_article(word: str) -> str:
    """``"a 'separation'"``, ``"an 'enhancement'"``."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word!r}"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        required=True,
        help="training workdir: a run (config.json) or a multi-stage recipe (stages.json)",
    )
    parser.add_argument(
        "--stage",
        help="for a multi-stage workdir: the stage to use, one of those in its stages.json "
        "(default: student if there is one, else the last stage)",
    )
    add_checkpoint_argument(parser)


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        default="best",
        metavar="{best,latest,STEP}",
        help="which checkpoint: best, latest or a step number (default: %(default)s)",
    )

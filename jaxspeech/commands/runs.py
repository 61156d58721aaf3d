"""The trained run a command uses: the ``--workdir``/``--stage``/``--checkpoint`` arguments,
and checking the run's task from its config before the model is loaded (``jaxspeech.load``)."""

from __future__ import annotations

import argparse

from jaxspeech.errors import ConfigError
from jaxspeech.inference.runs import read_config, stage_workdir

#: The subcommand that runs the models of each task.
COMMANDS = {
    "separation": "separate",
    "enhancement": "enhance",
    "bgm": "match",
    "speaker": "embed",
}


def trained_run(workdir: str, stage: str | None, task: str, command: str | None = None):
    """``(run_dir, config)`` of the run in ``workdir`` (see :func:`stage_workdir`), read from its
    ``config.json`` without loading the model; ConfigError naming the command that serves the
    run when it is not of ``task`` (``command``: the one asking, default ``COMMANDS[task]``)."""
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

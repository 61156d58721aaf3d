"""Train a recipe: ``python train.py --config configs/<task>/<recipe>.py[:variant] --workdir DIR``.

:data:`DESCRIPTION` and :data:`OVERRIDES_HELP` are the ``--help`` text; the memory allocator
restart is ``jaxspeech.allocator``, XLA:CPU's training options ``jaxspeech.xla_flags``, the
stages ``jaxspeech.train.stages``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from jaxspeech.allocator import allocator_in_use, restart_with_fast_allocator
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError, run_command
from jaxspeech.parallel import maybe_initialize_distributed
from jaxspeech.train.config import config_keys, recipe_info
from jaxspeech.train.workdir import CONTINUE_FLAG
from jaxspeech.xla_flags import use_training_xla_flags

DESCRIPTION = """\
Train a recipe in WORKDIR: checkpoints, metrics.jsonl (and TensorBoard event files when
tensorboardX is installed) and config.json. Each validation prints the metric and the best
step so far; the end of training prints the best step.

Running the same command again resumes from the latest checkpoint in WORKDIR. Ctrl-C (SIGINT)
or SIGTERM saves a checkpoint after the current step and stops. A multi-stage recipe trains its
stages in WORKDIR/<stage>, in order. The process restarts itself once under a faster memory
allocator (JAXSPEECH_MALLOC=system skips that).
"""
OVERRIDES_HELP = """\
overrides:
  --config.SECTION.KEY=VALUE
      set one key of the recipe's config, e.g. --config.train.steps=1000,
      --config.data.root=/data, "--config.data.mixture.speed_range=(0.9,1.1)". The value is
      parsed by the key's type; a wrong key or value is an error naming the expected type or
      the valid keys. In a multi-stage recipe it sets every stage that has the key;
      --config.STAGE.SECTION.KEY=VALUE sets one stage.
  --config FILE[:VARIANT] --help
      lists that recipe's keys with their types and values.
"""
#: The recipes listed by --help: every file below configs/ beside this script.
CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"


def recipes_help() -> str:
    """Every recipe file below :data:`CONFIGS`, with its variants and summary."""
    lines = ["recipes (--config FILE[:VARIANT]; no variant: the default one):"]
    for path in sorted(CONFIGS.glob("*/*.py")):
        summary, variants = recipe_info(path)
        shown = ", ".join(v or '""' for v in variants) if variants else "not listed"
        lines += [f"  {_shown_path(path)}", f"      {summary}", f"      variants: {shown}"]
    return "\n".join(lines) + "\n"


def _shown_path(path: pathlib.Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def keys_help(spec: str) -> str:
    """The keys of recipe ``spec`` (``FILE[:VARIANT]``) with their types and values; a
    multi-stage recipe's per stage."""
    from jaxspeech.train import stages  # imports the tasks: only to describe a recipe

    recipe = stages.load_recipe(spec)
    if isinstance(recipe, stages.MultiStage):
        parts = [
            f"keys of stage {stage.name!r} (--config.{stage.name}.KEY=VALUE sets this stage alone"
            + (f"; it reads {', '.join(stage.reads)}" if stage.reads else "")
            + "):\n"
            + _keys(stage.config)
            for stage in recipe.stages
        ]
        return f"{spec}: stages {', '.join(recipe.names)}\n\n" + "\n".join(parts)
    return f"keys of {spec} (--config.KEY=VALUE):\n" + _keys(recipe)


def _keys(config) -> str:
    return "".join(f"  {key}: {kind} = {value!r}\n" for key, kind, value in config_keys(config))


def build_parser(epilog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description=DESCRIPTION,
        epilog=OVERRIDES_HELP + epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        help="recipe file[:variant], e.g. configs/separation/dpcl.py:smoke",
    )
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and config.json")
    parser.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process_id", type=int, help="multi-host: index of this process")
    parser.add_argument(
        CONTINUE_FLAG,
        action="store_true",
        help="resume a workdir whose config.json differs from this config in more than the "
        "steps, logging, checkpoint and evaluation settings (by default that is refused)",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The arguments and the overrides (``SECTION.KEY=VALUE``). ``--help`` lists the recipes,
    or with ``--config`` that recipe's keys."""
    argv = sys.argv[1:] if argv is None else argv
    wanted = argparse.ArgumentParser(add_help=False)
    wanted.add_argument("-h", "--help", action="store_true")
    wanted.add_argument("--config")
    asked = wanted.parse_known_args(argv)[0]
    epilog = (
        ""
        if not asked.help
        else "\n" + (keys_help(asked.config) if asked.config else recipes_help())
    )
    args, rest = build_parser(epilog).parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config.") or "=" not in item:
            raise ConfigError(
                f"unrecognised argument {item!r}; overrides look like "
                "--config.SECTION.KEY=VALUE (see train.py --help)"
            )
        overrides.append(item.removeprefix("--config."))
    return args, overrides


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    import jax

    from jaxspeech.train import stages  # after distributed initialisation

    if jax.process_index() == 0:
        print(f"memory allocator: {allocator_in_use()}", flush=True)
    recipe = stages.apply_overrides(stages.load_recipe(args.config), overrides)
    stages.run(recipe, args.workdir, allow_changes=args.continue_with_changes)


if __name__ == "__main__":
    use_training_xla_flags()  # see jaxspeech.xla_flags; kept by the restart below
    restart_with_fast_allocator()  # see jaxspeech.allocator; JAXSPEECH_MALLOC=system skips it
    sys.exit(run_command("train.py", main, None))

"""Train a recipe: ``python train.py --config configs/<task>/<recipe>.py[:variant] --workdir DIR
[--config.SECTION.KEY=VALUE ...] [--coordinator HOST:PORT --num_processes N --process_id I]``.

Running the same command again resumes from the latest checkpoint in ``DIR``; SIGINT (Ctrl-C)
or SIGTERM saves a checkpoint after the current step and stops. The process restarts itself
once under a faster memory allocator (``jaxspeech.allocator``), with XLA:CPU's training
options (``jaxspeech.xla_flags``). A multi-stage recipe trains its
stages in ``DIR/<stage>`` in order (``jaxspeech.train.stages``).
"""

from __future__ import annotations

import argparse
import sys

from jaxspeech.allocator import allocator_in_use, restart_with_fast_allocator
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError, run_command
from jaxspeech.parallel import maybe_initialize_distributed
from jaxspeech.train.workdir import CONTINUE_FLAG
from jaxspeech.xla_flags import use_training_xla_flags

OVERRIDES_HELP = """\
overrides:
  --config.SECTION.KEY=VALUE   set one field of the recipe's config (with '=': the value is
                               parsed by the field's type; a wrong key or type is an error
                               that lists the valid keys), e.g. --config.train.steps=1000,
                               --config.data.root=/data,
                               "--config.data.mixture.speed_range=(0.9,1.1)".
                               For a multi-stage recipe the override applies to every stage;
                               --config.STAGE.SECTION.KEY=VALUE to one stage.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="recipe file[:variant]")
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
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
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

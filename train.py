"""Train a recipe: ``python train.py --config configs/<task>/<recipe>.py[:variant] --workdir DIR
[--config.section.key=value ...] [--coordinator HOST:PORT --num_processes N --process_id I]``.

Running the same command again resumes from the latest checkpoint in ``DIR``. The process
restarts itself once under a faster memory allocator (``jaxspeech.allocator``). A multi-stage
recipe trains its stages in ``DIR/<stage>`` in order (``jaxspeech.train.stages``).
"""

from __future__ import annotations

import argparse

from jaxspeech.allocator import restart_with_fast_allocator
from jaxspeech.parallel import maybe_initialize_distributed


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe file[:variant]")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and config.json")
    parser.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process_id", type=int, help="multi-host: index of this process")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config.") or "=" not in item:
            parser.error(f"unrecognised argument {item!r}; overrides look like --config.a.b=value")
        overrides.append(item.removeprefix("--config."))
    return args, overrides


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxspeech.train import stages  # after distributed initialisation

    recipe = stages.apply_overrides(stages.load_recipe(args.config), overrides)
    stages.run(recipe, args.workdir)


if __name__ == "__main__":
    restart_with_fast_allocator()  # see jaxspeech.allocator; JAXSPEECH_MALLOC=system skips it
    main()

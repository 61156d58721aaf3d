"""Evaluate a trained run: ``python evaluate.py --workdir DIR [--split test]
[--checkpoint best|latest|STEP]``; writes ``DIR/eval/<split>.{md,csv,json}`` and prints the table.

Everything is rebuilt from ``DIR/config.json`` and ``DIR/checkpoints``; for a multi-stage
recipe, every stage's table is evaluated and concatenated into ``DIR/eval``.
"""

from __future__ import annotations

import argparse

from jaxspeech.parallel import maybe_initialize_distributed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default="best", help="best, latest or a step number")
    parser.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process_id", type=int, help="multi-host: index of this process")
    args = parser.parse_args(argv)
    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxspeech.train import stages  # after distributed initialisation

    _, markdown = stages.evaluate(args.workdir, args.split, args.checkpoint)
    print(markdown, end="")


if __name__ == "__main__":
    main()

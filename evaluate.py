"""Evaluate a trained run: ``python evaluate.py --workdir DIR [--split test]
[--checkpoint best|latest|STEP] [--trials FILE]``; writes ``DIR/eval/<split>.{md,csv,json}``
(the table, printed too), ``<split>_items.*`` (one row per test item: its ID and every score)
and ``<split>_groups.*`` (the scores' means by input SNR, gender pair, age group, ... as the
test items support). ``--trials``: score a trial list (``1 a.wav b.wav`` lines, paths below
the data root or absolute) with a speaker-verification run, into ``DIR/eval/<list name>.*``.

Everything is rebuilt from ``DIR/config.json`` and ``DIR/checkpoints``; for a multi-stage
recipe, every stage's table is evaluated and concatenated into ``DIR/eval``.
"""

from __future__ import annotations

import argparse
import sys

from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, run_command
from jaxspeech.parallel import maybe_initialize_distributed

SPLITS = ("test", "valid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", required=True, help="a training workdir (config.json, checkpoints/)"
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=SPLITS,
        help="which held-out speakers to evaluate on (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best (by the validation metric), latest, or a step number (default: %(default)s)",
    )
    parser.add_argument(
        "--trials",
        help="speaker verification: a trial list of 'label a.wav b.wav' lines to score instead "
        "of the split's own (paths below the data root or absolute)",
    )
    parser.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process_id", type=int, help="multi-host: index of this process")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxspeech.evaluation.tables import TABLE_SUFFIXES
    from jaxspeech.train import stages  # after distributed initialisation

    _, markdown, written = stages.evaluate(args.workdir, args.split, args.checkpoint, args.trials)
    print(markdown, end="")
    for stem in written:
        for suffix in TABLE_SUFFIXES:
            print(f"wrote {stem.with_suffix(suffix)}")


if __name__ == "__main__":
    sys.exit(run_command("evaluate.py", main, None))

"""Evaluate a trained run: ``python evaluate.py --workdir DIR [--split test]
[--checkpoint best|latest|STEP] [--trials FILE] [--corpus PATH]``; writes
``DIR/eval/<split>.{md,csv,json}`` and prints the table. ``--corpus``: evaluate on the test
split of another corpus in a supported layout (resampled to the run's rate), into
``DIR/eval/<corpus layout>-<its test split>.*`` (a speaker-verification run scores its
official trial list, into ``DIR/eval/<corpus>-<list name>.*``). ``--trials``: score a trial list
(``1 a.wav b.wav`` lines, paths below the data root or absolute) with a speaker-verification
run, into ``DIR/eval/<list name>.*``.

Everything is rebuilt from ``DIR/config.json`` and ``DIR/checkpoints``; for a multi-stage
recipe, every stage's table is evaluated and concatenated into ``DIR/eval``.
"""

from __future__ import annotations

import argparse
import pathlib
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
    parser.add_argument(
        "--corpus",
        help="evaluate on the test split of the corpus in this folder (any supported layout, "
        "e.g. a wsj0-2mix wav8k/min folder) instead of the run's own data",
    )
    parser.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process_id", type=int, help="multi-host: index of this process")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxspeech.train import restore, stages  # after distributed initialisation
    from jaxspeech.train.logging import TABLE_SUFFIXES

    trials, corpus = restore.resolve_corpus(args.workdir, args.trials, args.corpus)
    _, markdown = stages.evaluate(args.workdir, args.split, args.checkpoint, trials, corpus)
    print(markdown, end="")
    table = restore.table_name(args.workdir, args.split, trials, corpus)
    stem = pathlib.Path(args.workdir).absolute() / "eval" / table
    written = [stem]
    if trials is None and stages.comparisons(args.workdir):
        written.append(stem.with_name(f"{table}-paired"))
    for path in written:
        for suffix in TABLE_SUFFIXES:
            print(f"wrote {path.with_suffix(suffix)}")


if __name__ == "__main__":
    sys.exit(run_command("evaluate.py", main, None))

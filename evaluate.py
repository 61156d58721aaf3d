"""Evaluate a trained run: ``python evaluate.py --workdir DIR``; :data:`DESCRIPTION` is the
``--help`` text."""

from __future__ import annotations

import argparse
import sys

from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, run_command
from jaxspeech.parallel import maybe_initialize_distributed

SPLITS = ("test", "valid")
DESCRIPTION = """\
Evaluate a trained run (or every stage of a multi-stage recipe) on a held-out split: writes
WORKDIR/eval/<split>.md, .csv and .json (the table), <split>_items.* (one row per test item:
its ID and every score) and <split>_groups.* (means by input SNR band, gender pair, age group,
as the items support), prints the table and the paths written. Everything is
rebuilt from WORKDIR/config.json and WORKDIR/checkpoints; no optimiser is built.

A multi-stage recipe's stages are evaluated one by one into WORKDIR/<stage>/eval, and their
tables concatenated into WORKDIR/eval; a recipe that compares systems trained with several
seeds also writes WORKDIR/eval/<split>-paired.* (the difference paired by test utterance).
With --corpus, the run is evaluated on the test split of another corpus in a supported layout
(resampled to the run's rate) into WORKDIR/eval/<corpus layout>-<its test split>.*; a
speaker-verification run scores that corpus's official trial list. With --trials, a
speaker-verification run scores that list into WORKDIR/eval/<list name>.*.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    from jaxspeech.evaluation.tables import TABLE_SUFFIXES
    from jaxspeech.train import restore, stages  # after distributed initialisation

    trials, corpus = restore.resolve_corpus(args.workdir, args.trials, args.corpus)
    _, markdown, written = stages.evaluate(
        args.workdir, args.split, args.checkpoint, trials, corpus
    )
    print(markdown, end="")
    for stem in written:
        for suffix in TABLE_SUFFIXES:
            print(f"wrote {stem.with_suffix(suffix)}")


if __name__ == "__main__":
    sys.exit(run_command("evaluate.py", main, None))

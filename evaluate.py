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

Tables of an earlier evaluation of the same name are replaced only with --overwrite.

With --long-mixtures [N], a separation run trained on mixtures of speech folders is measured
as `jaxspeech separate` runs it (the loaded model, its default chunking) on N long real
mixtures (default 64) of whole utterances of the split's speakers, unseen in training, and
N/4 files of one speaker alone: per file the SI-SNRi, whether the speakers stay on their
tracks in 0.5 s windows, and for one speaker whether the voice is split over two tracks;
written to WORKDIR/eval/<split>-long-mixtures.* (the summary) and <split>-long-mixtures_items.*
(one row per file).
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
    parser.add_argument(
        "--long-mixtures",
        type=int,
        nargs="?",
        const=64,
        metavar="N",
        help="separation: measure the model as `jaxspeech separate` runs it on N long mixtures "
        "of whole utterances of the split's speakers (default N: %(const)s) and N/4 files of "
        "one speaker, instead of the split's table",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the tables of an earlier evaluation of the same name (refused otherwise)",
    )
    parser.add_argument("--coordinator", help="multi-host: address HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, help="multi-host: number of processes")
    parser.add_argument("--process_id", type=int, help="multi-host: index of this process")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return parser


def _long_mixtures(args: argparse.Namespace):
    """``(markdown, stems written)`` of ``--long-mixtures``: the run checked from its config,
    then loaded as ``jaxspeech separate`` loads it and measured."""
    import jaxspeech
    from jaxspeech import workdir as names
    from jaxspeech.errors import ConfigError
    from jaxspeech.evaluation import long_mixtures, write_evaluation
    from jaxspeech.inference.runs import read_config, stage_workdir

    if args.corpus is not None or args.trials is not None:
        raise ConfigError(
            "--long-mixtures measures the run's own held-out speakers; leave out --corpus and "
            "--trials"
        )
    config = read_config(stage_workdir(args.workdir, None))
    long_mixtures.check_run(config, args.workdir, args.long_mixtures)
    table = names.long_mixtures_table(args.split)
    _refuse_earlier_tables(args, table)
    model = jaxspeech.load(args.workdir, checkpoint=args.checkpoint)
    evaluation = long_mixtures.measure(model, args.split, args.long_mixtures)
    return write_evaluation(evaluation, model.workdir, table)


def _refuse_earlier_tables(args: argparse.Namespace, table: str) -> None:
    """Nothing is evaluated when tables named ``table`` exist, unless ``--overwrite``."""
    from jaxspeech import workdir as names
    from jaxspeech.errors import ConfigError

    earlier = names.earlier_tables(args.workdir, table)
    if earlier and not args.overwrite:
        raise ConfigError(
            f"{earlier[0]} holds an earlier evaluation; pass --overwrite to replace its tables, "
            "or move them away first"
        )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxspeech.evaluation.tables import TABLE_SUFFIXES
    from jaxspeech.train import restore, stages  # after distributed initialisation

    if args.long_mixtures is not None:
        markdown, written = _long_mixtures(args)
    else:
        trials, corpus = restore.resolve_corpus(args.workdir, args.trials, args.corpus)
        _refuse_earlier_tables(args, restore.table_name(args.workdir, args.split, trials, corpus))
        _, markdown, written = stages.evaluate(
            args.workdir, args.split, args.checkpoint, trials, corpus
        )
    print(markdown, end="")
    for stem in written:
        for suffix in TABLE_SUFFIXES:
            print(f"wrote {stem.with_suffix(suffix)}")


if __name__ == "__main__":
    sys.exit(run_command("evaluate.py", main, None))

"""``jaxspeech data check PATH``: which corpus layout a folder holds and whether it is whole."""

from __future__ import annotations

import argparse
import dataclasses

from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, CorpusError


def _variants(corpus) -> list:
    """The corpus once per mixture folder for a separation corpus, else itself."""
    from jaxspeech.data.corpora.mixtures import MixtureCorpus

    if isinstance(corpus, MixtureCorpus):
        return [dataclasses.replace(corpus, mixture=m) for m in corpus.mixtures]
    return [corpus]


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def check(path: str, progress: bool = True) -> tuple[str, list[str]]:
    """``(report, problems)``: per corpus found at ``path`` a table of its splits (items,
    hours, sample rates, problems) and its trial lists, and every problem as one line."""
    from jaxspeech.data.corpora import find_corpora

    sections, problems = [], []
    for corpus in find_corpora(path):
        for variant in _variants(corpus):
            rows = [("split", "items", "hours", "sample rates (Hz)", "problems")]
            for split in variant.splits:
                if not variant.split_present(split):
                    rows.append((split, "absent", "", "", ""))
                    continue
                items, found = variant.scan(split, progress)
                rates = sorted({item.sample_rate for item in items})
                hours = sum(item.seconds for item in items) / 3600
                rates_text = ", ".join(map(str, rates)) or "-"
                rows.append((split, str(len(items)), f"{hours:.3f}", rates_text, str(len(found))))
                problems += [f"{variant.name} {split}: {p}" for p in found]
            lines = [f"{variant.name} in {variant.root}", _table(rows)]
            for name in variant.trial_lists():
                trials, found = variant.scan_trials(name)
                lines.append(f"trial list {name}: {len(trials)} trials")
                problems += [f"{variant.name} trial list {name}: {p}" for p in found]
            sections.append("\n".join(lines))
    return "\n\n".join(sections), problems


def _check(args: argparse.Namespace) -> None:
    report, problems = check(args.path, progress=not args.quiet)
    print(report)
    if problems:
        print(f"\n{len(problems)} problems:")
        print("\n".join(problems), flush=True)
        raise CorpusError(f"{len(problems)} problems in {args.path}, listed above")
    print("\nno problems found", flush=True)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check a corpus folder",
        description="Tools for corpora in their official layouts.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION", help="check")
    checker = actions.add_parser(
        "check",
        help="name the layout of a corpus folder and list its problems",
        description="Names every corpus layout found at PATH (LibriMix, wsj0-mix, WHAM!, "
        "WHAMR!, VoxCeleb, CN-Celeb, VoiceBank-DEMAND, DNS Challenge, GRID, LRS3), counts the "
        "items and hours of each split present, lists their sample rates, counts the trials of "
        "each official trial list, and prints every problem found (a missing folder or file, "
        "an unreadable header, a sample-rate clash) one per line. Exit status 2 when there is "
        "a problem. Only file headers are read.",
    )
    checker.add_argument("path", metavar="PATH", help="the corpus folder")
    checker.add_argument("--quiet", action="store_true", help="no progress bars")
    checker.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    checker.set_defaults(run=_check)

"""``jaxspeech match``: rank a music library (or score one track) as background for a
recording with a background-music matcher."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

import jaxspeech
from jaxspeech import audio
from jaxspeech.commands.runs import add_checkpoint_argument, trained_run
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError


def _match(args: argparse.Namespace) -> None:
    from jaxspeech.library import model_key, update_library

    if (args.library is None) == (args.music is None):
        raise ConfigError("give either --library MUSIC_DIR (rank it) or --music TRACK (score it)")
    if args.k < 1:
        raise ConfigError(f"-k {args.k}: give how many tracks to list, at least 1")
    recording, file_rate = audio.load(args.recording)
    run_dir, config = trained_run(args.workdir, None, "bgm")
    if args.music is not None:
        audio.load(args.music)  # a bad track is a one-line error before the model loads
    model = jaxspeech.load(args.workdir, checkpoint=args.checkpoint)
    query = model.embed(audio.resample(recording, file_rate, model.sample_rate))
    if args.music is not None:
        score = model.score(query, model.embed_file(args.music))
        print(json.dumps({"path": args.music, "score": score}) if args.json else f"{score:.4f}")
        return
    settings = json.dumps(dataclasses.asdict(config.model), sort_keys=True)
    library = update_library(
        args.library,
        args.cache_dir or pathlib.Path(run_dir) / "library-cache",
        model_key(model.variables["params"], model.model_state, settings),
        model.embed_file,
        progress=not args.quiet,
    )
    for path, reason in library.skipped:
        print(f"skipped unreadable {path}: {reason}", file=sys.stderr)
    print(f"{args.library}: {library.summary()}", file=sys.stderr, flush=True)
    scores = model.rank(query, library.embeddings)
    best = np.argsort(-scores, kind="stable")[: args.k]
    if args.json:
        print(json.dumps([{"path": library.paths[i], "score": float(scores[i])} for i in best]))
        return
    print("| rank | score | track |\n|---:|---:|---|")
    for place, i in enumerate(best, 1):
        print(f"| {place} | {scores[i]:.4f} | {library.paths[i]} |")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "match",
        help="rank a music library (or score one track) as background for a recording",
        description="Scores how well music suits RECORDING (speech, a story, a podcast) with a "
        "trained matcher: --library ranks every audio file below a folder and prints the top "
        "k (the tracks' deep features are cached and updated when files are added, changed "
        "or removed; unreadable files are listed and skipped); --music prints one score.",
    )
    parser.add_argument("recording", help="the spoken recording (WAV, FLAC or OGG)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--library", help="folder of music to rank (searched recursively)")
    which.add_argument("--music", help="one track to score")
    parser.add_argument(
        "--workdir", required=True, help="training workdir of a matcher (configs/bgm/*.py)"
    )
    add_checkpoint_argument(parser)
    parser.add_argument("-k", type=int, default=5, help="tracks to list (default: %(default)s)")
    parser.add_argument(
        "--json", action="store_true", help='print [{"path": ..., "score": ...}], best first'
    )
    parser.add_argument(
        "--cache-dir", help="where the library cache lives (default: WORKDIR/library-cache)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    parser.set_defaults(run=_match)

"""``jaxspeech separate``: split a recording into its speakers with a separation run."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import jaxspeech
from jaxspeech import audio
from jaxspeech.commands.chunks import add_chunk_arguments, chunk_samples
from jaxspeech.commands.outputs import (
    add_run_arguments,
    check_output_file,
    check_output_folder,
    fit_to_full_scale,
    report_conversion,
)
from jaxspeech.commands.runs import add_model_arguments, trained_run


def _separate(args: argparse.Namespace) -> None:
    mixture, file_rate = audio.load(args.mixture, mono=False)  # [channels, samples]
    _, config = trained_run(args.workdir, args.stage, "separation")
    check_output_folder(args.output_dir)
    stem = pathlib.Path(args.mixture).stem
    paths = [
        pathlib.Path(args.output_dir) / f"{stem}_s{index}.wav"
        for index in range(1, config.model.n_src + 1)
    ]
    for path in paths:
        check_output_file(path, args.mixture, args.overwrite)
    model = jaxspeech.load(args.workdir, stage=args.stage, checkpoint=args.checkpoint)
    chunking = chunk_samples(args, model)
    channels, rate = mixture.shape[0], model.sample_rate
    mixture = audio.resample(mixture.mean(axis=0), file_rate, rate)
    report_conversion(args.mixture, channels, file_rate, rate, args.quiet)
    sources = model.separate(mixture, **chunking)
    peak = float(np.abs(mixture).max())
    sources = fit_to_full_scale(sources, args.mixture, peak, args.quiet)
    for path, source in zip(paths, sources, strict=True):
        audio.save(path, source, rate)
        print(path, flush=True)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "separate",
        help="split a recording into its speakers",
        description="Separates MIXTURE with a trained separation model into "
        "OUTPUT_DIR/<stem>_s1.wav, _s2.wav, … at the model's sample rate, each at its level "
        "in the mixture. Stereo input is downmixed, other rates are resampled (and said so on "
        "stderr). Existing outputs are refused before the model runs, unless --overwrite.",
    )
    parser.add_argument("mixture", help="audio file (WAV, FLAC or OGG)")
    add_model_arguments(parser)
    parser.add_argument(
        "-o",
        "--output-dir",
        required=True,
        help="folder for the sources, created if missing (not an existing file)",
    )
    add_chunk_arguments(parser)
    add_run_arguments(parser)
    parser.set_defaults(run=_separate)

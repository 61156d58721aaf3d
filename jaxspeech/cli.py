"""The ``jaxspeech`` command: run trained models on audio files.

    jaxspeech separate MIX.wav --workdir DIR -o OUTDIR [--checkpoint best|latest|STEP]
                               [--chunk-seconds S] [--overlap-seconds S]

Each subcommand is a ``_add_<name>(subparsers)`` function that declares its arguments and sets
``run`` to the function doing the work; bad input (a :class:`JaxspeechError`) is reported as
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

import jax
import numpy as np

from jaxspeech import audio, infer
from jaxspeech.errors import ConfigError, JaxspeechError


def load_trained_model(workdir: str, checkpoint: str):
    """``(task, params, sample_rate)`` of a training run's checkpoint, params on one device."""
    from jaxspeech.train.loop import restore_run  # imports the trainer only when needed

    task, state, _ = restore_run(workdir, checkpoint)
    params = jax.device_put(state.params, jax.devices()[0])
    return task, params, task.config.data.mixture.sample_rate


def seconds_to_samples(seconds: float, sample_rate: int, name: str) -> int:
    """``round(seconds · sample_rate)``; raises ConfigError naming ``name`` if not positive."""
    samples = round(seconds * sample_rate)
    if samples < 1:
        raise ConfigError(f"{name}={seconds} s is less than one sample at {sample_rate} Hz")
    return samples


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, help="training workdir (config.json)")
    parser.add_argument(
        "--checkpoint", default="best", help="best, latest or a step number (default: best)"
    )


def _separate(args: argparse.Namespace) -> None:
    if not 0 < 2 * args.overlap_seconds <= args.chunk_seconds:
        raise ConfigError(
            f"--overlap-seconds={args.overlap_seconds} must be positive and at most half of "
            f"--chunk-seconds={args.chunk_seconds}"
        )
    mixture, file_rate = audio.load(args.mixture)  # fails fast, before the model is loaded
    task, params, sample_rate = load_trained_model(args.workdir, args.checkpoint)
    mixture = audio.resample(mixture, file_rate, sample_rate)
    chunk = seconds_to_samples(args.chunk_seconds, sample_rate, "--chunk-seconds")
    overlap = seconds_to_samples(args.overlap_seconds, sample_rate, "--overlap-seconds")
    sources = infer.separate_long(task.separate, params, mixture, chunk=chunk, overlap=overlap)
    sources = np.asarray(infer.rescale_to_mixture(sources, mixture))
    stem = pathlib.Path(args.mixture).stem
    for index, source in enumerate(sources, start=1):
        path = pathlib.Path(args.output_dir) / f"{stem}_s{index}.wav"
        audio.save(path, source, sample_rate)
        print(path)


def _add_separate(subparsers) -> None:
    parser = subparsers.add_parser(
        "separate",
        help="split a recording into its speakers",
        description="Separates MIXTURE with a trained separation model into "
        "OUTPUT_DIR/<stem>_s1.wav, _s2.wav, … at the model's sample rate, each at its level "
        "in the mixture. Stereo input is downmixed, other rates are resampled.",
    )
    parser.add_argument("mixture", help="audio file (WAV, FLAC or OGG)")
    _add_model_arguments(parser)
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the sources")
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=infer.DEFAULT_CHUNK_SECONDS,
        help="length of the chunks the model sees; use about the training segment length "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        default=infer.DEFAULT_OVERLAP_SECONDS,
        help="overlap of neighbouring chunks, at most half a chunk; at least the model's "
        "receptive field is best (default: %(default)s)",
    )
    parser.set_defaults(run=_separate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxspeech", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_separate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except JaxspeechError as err:
        print(f"jaxspeech {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

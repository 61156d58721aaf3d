"""The ``--chunk-seconds``/``--overlap-seconds`` arguments of the commands that run a model over
a long file in overlapping chunks (``infer.separate_long``), checked and turned into samples."""

from __future__ import annotations

import argparse

from jaxspeech import infer
from jaxspeech.errors import ConfigError


def seconds_to_samples(seconds: float, sample_rate: int, name: str) -> int:
    """``round(seconds · sample_rate)``; raises ConfigError naming ``name`` if not positive."""
    samples = round(seconds * sample_rate)
    if samples < 1:
        raise ConfigError(f"{name}={seconds} s is less than one sample at {sample_rate} Hz")
    return samples


def add_chunk_arguments(parser: argparse.ArgumentParser) -> None:
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


def check_chunk_arguments(args: argparse.Namespace) -> None:
    if not 0 < 2 * args.overlap_seconds <= args.chunk_seconds:
        raise ConfigError(
            f"--overlap-seconds={args.overlap_seconds} must be positive and at most half of "
            f"--chunk-seconds={args.chunk_seconds}"
        )


def chunk_samples(args: argparse.Namespace, sample_rate: int) -> dict[str, int]:
    """``separate_long``'s ``chunk`` and ``overlap`` in samples."""
    return {
        "chunk": seconds_to_samples(args.chunk_seconds, sample_rate, "--chunk-seconds"),
        "overlap": seconds_to_samples(args.overlap_seconds, sample_rate, "--overlap-seconds"),
    }

"""The ``--chunk-seconds``/``--overlap-seconds`` arguments of the commands that run a model over
a long file in overlapping chunks (``infer.separate_long``), checked and turned into samples;
by default the loaded model's chunking (``model.chunk``, ``model.overlap``)."""

from __future__ import annotations

import argparse

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
        help="length of the chunks the model sees (default: 30 s for a Conv-TasNet, so most "
        "files in one call; otherwise the model's training crop)",
    )
    parser.add_argument(
        "--overlap-seconds",
        type=float,
        help="overlap of neighbouring chunks, at most half a chunk (default: the model's "
        "receptive field, or half a chunk for a recurrent model)",
    )


def chunk_samples(args: argparse.Namespace, model) -> dict[str, int]:
    """``separate_long``'s ``chunk`` and ``overlap`` in samples: the arguments given, else the
    loaded ``model``'s (the overlap at most half the chunk)."""
    rate = model.sample_rate
    chunk = model.chunk
    if args.chunk_seconds is not None:
        chunk = seconds_to_samples(args.chunk_seconds, rate, "--chunk-seconds")
    overlap = min(model.overlap, chunk // 2)
    if args.overlap_seconds is not None:
        overlap = seconds_to_samples(args.overlap_seconds, rate, "--overlap-seconds")
    if not 0 < 2 * overlap <= chunk:
        raise ConfigError(
            f"--overlap-seconds={overlap / rate:g} must be positive and at most half of "
            f"--chunk-seconds={chunk / rate:g}"
        )
    return {"chunk": chunk, "overlap": overlap}

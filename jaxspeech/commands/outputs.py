"""What the commands write: output paths checked before any work (never the input; an existing
file only with ``--overwrite``; a format ``audio.save`` writes; a folder that can be created),
the lines on stderr saying how an input was converted or an output scaled down, and the
``--overwrite``/``--quiet``/``--debug`` arguments."""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys

import numpy as np

from jaxspeech import audio
from jaxspeech.errors import DEBUG_FLAG, DEBUG_HELP, ConfigError


def check_output_folder(folder: str | os.PathLike) -> None:
    """Raises ConfigError when ``folder`` is a file or cannot be created because a file is in
    its way; a missing folder is created when the first output is written."""
    folder = pathlib.Path(folder).absolute()
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if existing == folder and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder; choose another output folder")
    if not existing.is_dir():
        raise ConfigError(
            f"cannot create the folder {folder}: {existing} is a file; choose another output path"
        )


def check_output_file(path: pathlib.Path, source: str, overwrite: bool) -> None:
    """Raises before any work when ``path`` would be written over the input ``source`` (never
    allowed), over an existing file without ``overwrite``, in a format ``audio.save`` does not
    write, or where its folder cannot be created."""
    audio.output_format(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the output a file name")
    if path.exists():
        if os.path.samefile(path, source):
            raise ConfigError(
                f"{path} is the input {source}; write to another file (an input is never "
                "replaced, not even with --overwrite)"
            )
        if not overwrite:
            raise ConfigError(
                f"{path} exists; pass --overwrite to replace it, or choose another name"
            )
    check_output_folder(path.parent)


def report_conversion(
    source: str, channels: int, file_rate: int, model_rate: int, quiet: bool
) -> None:
    """Says in one line on stderr (unless ``quiet``) that ``source`` was resampled from
    ``file_rate`` to ``model_rate`` or downmixed from ``channels`` channels."""
    changes = []
    if file_rate != model_rate:
        changes.append(f"{file_rate} Hz resampled to {model_rate} Hz")
    if channels > 1:
        changes.append(f"{channels} channels downmixed to mono")
    if changes and not quiet:
        print(f"{source}: {'; '.join(changes)}", file=sys.stderr, flush=True)


#: Largest magnitude the commands write (16-bit PCM never clips below 1).
OUTPUT_PEAK = 0.99


def fit_to_full_scale(output: np.ndarray, source: str, input_peak: float, quiet: bool):
    """``output`` scaled down (all of it by one factor) when a sample exceeds
    ``OUTPUT_PEAK``; when the input ``source`` itself peaks above full scale (float samples
    beyond ±1), says so on stderr with the factor, unless ``quiet``."""
    peak = float(np.abs(output).max())
    if peak <= OUTPUT_PEAK:
        return output
    gain = OUTPUT_PEAK / peak
    if input_peak > 1.0 and not quiet:
        print(
            f"{source}: float samples reach {input_peak:.3g}, above full scale (1.0); the "
            f"output is scaled by {gain:.3g} ({20 * math.log10(gain):.1f} dB) to fit",
            file=sys.stderr,
            flush=True,
        )
    return output * gain


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (never the input file)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="do not say on stderr that the input was resampled, downmixed or scaled down (the "
        "paths written are still printed)",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)

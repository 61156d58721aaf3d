"""Audio file I/O and validation (soundfile for WAV/FLAC/OGG, soxr for resampling).

Arrays are float32. Mono audio is ``[samples]``; multichannel audio is ``[channels, samples]``
so that the time axis is last, as everywhere else in jaxspeech. Files are written to a
temporary name beside the target and renamed into place (``files.atomic_output``), so an
interrupted write leaves the earlier file, never a half-written one.
"""

from __future__ import annotations

import errno
import os
import pathlib

import numpy as np
import soundfile as sf
import soxr

from jaxspeech import files
from jaxspeech.errors import (
    AudioFileError,
    ChannelError,
    EmptyAudioError,
    NonFiniteAudioError,
    SampleRateError,
)

#: The soundfile format :func:`save` writes for each extension (any letter case).
OUTPUT_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def validate(wav: np.ndarray, source: str = "audio") -> np.ndarray:
    """Checks that ``wav`` ``[..., samples]`` is non-empty and finite; returns it unchanged.

    ``source`` names the input (a path or an argument name) in the error message.
    """
    wav = np.asarray(wav)
    if wav.size == 0 or wav.shape[-1] == 0:
        raise EmptyAudioError(f"{source}: audio has no samples; pass a non-empty recording")
    if not np.all(np.isfinite(wav)):
        bad = int(np.size(wav) - np.count_nonzero(np.isfinite(wav)))
        raise NonFiniteAudioError(
            f"{source}: {bad} NaN/Inf sample(s); clean or re-export the recording"
        )
    return wav


def require_mono(wav: np.ndarray, source: str = "audio") -> np.ndarray:
    """Returns ``wav`` as ``[samples]``; raises ChannelError if it has more than one channel."""
    wav = np.asarray(wav)
    if wav.ndim == 2 and wav.shape[0] == 1:
        return wav[0]
    if wav.ndim != 1:
        raise ChannelError(
            f"{source}: expected mono audio [samples], got shape {wav.shape}; "
            "load it with mono=True to downmix"
        )
    return wav


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resamples ``wav`` ``[..., samples]`` from ``orig_sr`` to ``target_sr`` with soxr (HQ)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise SampleRateError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    if wav.ndim == 1:
        return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32)
    flat = wav.reshape(-1, wav.shape[-1])
    out = soxr.resample(flat.T, orig_sr, target_sr, quality="HQ").T  # soxr: [time, channels]
    return np.ascontiguousarray(out, dtype=np.float32).reshape(*wav.shape[:-1], -1)


def load(
    path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True
) -> tuple[np.ndarray, int]:
    """Reads an audio file.

    Args:
      path: WAV, FLAC or OGG file.
      sample_rate: resample to this rate (soxr) when given; keep the file's rate otherwise.
      mono: average the channels into ``[samples]``; otherwise return ``[channels, samples]``.

    Returns:
      ``(wav, sample_rate)`` with ``wav`` float32 in [-1, 1] for integer formats.

    Raises:
      AudioFileError: missing or unreadable file. EmptyAudioError: no samples.
      NonFiniteAudioError: NaN/Inf samples.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioFileError(f"{path}: no such file; check the path")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # [frames, channels]
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioFileError(
            f"{path}: cannot read audio ({err}); convert it to WAV, FLAC or OGG"
        ) from err
    wav = data.T  # [channels, samples]
    validate(wav, path)
    if mono:
        wav = wav.mean(axis=0)
    if sample_rate is not None:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def output_format(path: str | os.PathLike) -> str:
    """The soundfile format :func:`save` writes to ``path`` (by its extension); raises
    AudioFileError listing the supported extensions when it has another or none."""
    suffix = pathlib.Path(path).suffix
    if suffix.lower() not in OUTPUT_FORMATS:
        found = f"extension {suffix!r}" if suffix else "no extension"
        raise AudioFileError(
            f"{os.fspath(path)}: {found}; audio files are written as "
            f"{', '.join(OUTPUT_FORMATS)}: name the output with one of them"
        )
    return OUTPUT_FORMATS[suffix.lower()]


def save(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> None:
    """Writes ``wav`` (``[samples]`` or ``[channels, samples]``) to ``path``, creating its folder.

    The format follows the extension (:data:`OUTPUT_FORMATS`; WAV is 16-bit PCM, FLAC 16-bit,
    OGG Vorbis). Samples outside [-1, 1] are clipped by the integer formats, so rescale first if
    they may occur. The file is written to a temporary name and renamed into place; a failed
    write (a full disk) is a one-line JaxspeechError and leaves the earlier file unchanged.
    """
    audio_format = output_format(path)
    wav = validate(np.asarray(wav, dtype=np.float32), os.fspath(path))
    if wav.ndim > 2:
        raise ChannelError(f"{path}: expected [samples] or [channels, samples], got {wav.shape}")
    data = wav if wav.ndim == 1 else wav.T
    with files.reported_write_errors(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_output(path) as temporary:
        try:
            sf.write(temporary, data, int(sample_rate), format=audio_format)
        except sf.LibsndfileError as err:  # libsndfile reports a failed write, not an OSError
            raise OSError(errno.EIO, f"{str(err).rstrip('.')} (libsndfile)") from err

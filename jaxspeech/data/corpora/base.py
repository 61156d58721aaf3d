"""What every corpus reader shares: the :class:`Corpus` interface, header reading that
collects problems instead of skipping files, and the length check against a crop.

A reader lists a split with :meth:`Corpus.scan`, which returns the items and every problem
found (a missing folder or file, an unreadable header, a sample-rate clash), each a
:class:`~jaxspeech.errors.JaxspeechError` naming what was expected. :meth:`Corpus.items`
raises the first problem instead; ``jaxspeech data check`` prints them all. Only file headers
are read while listing (``soundfile``; a video's or an M4A's audio track is counted with PyAV).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import soundfile as sf
from tqdm import tqdm

from jaxspeech.data.corpora.records import Item, Trial
from jaxspeech.errors import (
    AudioFileError,
    CorpusError,
    JaxspeechError,
    SampleRateError,
    TooShortError,
)

#: Files whose audio is read with PyAV (the ``video`` extra) rather than soundfile.
PYAV_EXTENSIONS = (".mpg", ".mp4", ".m4a")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A corpus folder in one official layout. Subclasses set ``layout`` and ``splits`` and
    implement ``_scan``; those with trial lists override ``trial_lists`` and ``_trials``.

    Attributes:
      root: the folder the layout's paths are relative to.
      sample_rate: the rate every file must have (``wav8k`` → 8000), None when the corpus
        does not fix one.
    """

    root: pathlib.Path
    sample_rate: int | None = None

    layout: ClassVar[str] = "corpus"
    splits: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        """The layout and the variant read, e.g. ``Libri2Mix wav8k/min mix_clean``."""
        return self.layout

    def scan(self, split: str, progress: bool = False) -> tuple[list[Item], list[JaxspeechError]]:
        """``(items, problems)`` of ``split``, in a stable order (sorted by ID or as the
        corpus lists them); CorpusError for a split the layout does not define."""
        if split not in self.splits:
            raise CorpusError(f"{self.name} has no split {split!r}; use one of {self.splits}")
        problems: list[JaxspeechError] = []
        items = self._scan(split, problems, progress)
        rates = sorted({item.sample_rate for item in items})
        if len(rates) > 1:
            problems.append(
                SampleRateError(
                    f"{self.name} {split} in {self.root} mixes sample rates {rates} Hz; "
                    "convert its files to one rate"
                )
            )
        return items, problems

    def items(self, split: str, progress: bool = False) -> list[Item]:
        """The items of ``split``; the first problem :meth:`scan` finds is raised."""
        items, problems = self.scan(split, progress)
        raise_first(problems, self.root)
        return items

    def split_present(self, split: str) -> bool:
        """Whether the corpus folder holds ``split`` at all (its folder exists); a corpus
        copied without some splits (LibriMix without ``train-360``) is whole without them."""
        return (self.root / split).is_dir()

    def trial_lists(self) -> dict[str, pathlib.Path]:
        """The official trial lists present, by name (``veri_test2``: its file)."""
        return {}

    def trials(self, name: str) -> list[Trial]:
        """The trials of the list ``name`` (see :meth:`trial_lists`), paths absolute; a
        CorpusError names the line that does not parse, an AudioFileError the file that is
        missing."""
        trials, problems = self.scan_trials(name)
        raise_first(problems, self.root)
        return trials

    def scan_trials(self, name: str) -> tuple[list[Trial], list[JaxspeechError]]:
        """``(trials, problems)`` of the list ``name``: every line that parses is a trial,
        those naming a missing file too (each missing file is an AudioFileError problem)."""
        lists = self.trial_lists()
        if name not in lists:
            have = ", ".join(lists) or "none"
            raise CorpusError(f"{self.name} in {self.root} has no trial list {name!r} ({have})")
        problems: list[JaxspeechError] = []
        return self._trials(lists[name], problems), problems

    def _scan(self, split: str, problems: list, progress: bool) -> list[Item]:
        raise NotImplementedError

    def _trials(self, path: pathlib.Path, problems: list) -> list[Trial]:
        raise NotImplementedError

    def _progress(self, paths: Sequence, split: str, progress: bool) -> Iterable:
        return tqdm(
            paths, desc=f"{self.name} {split}", unit="file", leave=False, disable=not progress
        )


def raise_first(problems: Sequence[JaxspeechError], root: str | os.PathLike) -> None:
    """Raises the first of ``problems`` (of its own type), saying how many more there are."""
    if not problems:
        return
    first = problems[0]
    if len(problems) == 1:
        raise first
    more = f" (and {len(problems) - 1} more problems; `jaxspeech data check {root}` lists them)"
    raise type(first)(f"{first}{more}") from first


def read_header(path: str, expected_rate: int | None, problems: list) -> tuple[int, int] | None:
    """``(num_samples, sample_rate)`` of ``path``'s audio (its audio track for a video or an
    M4A file), or None after adding the problem to ``problems``: a missing or unreadable file,
    or a rate other than ``expected_rate``."""
    try:
        if path.lower().endswith(PYAV_EXTENSIONS):
            frames, rate = _track_header(path)
        else:
            info = sf.info(path)
            frames, rate = int(info.frames), int(info.samplerate)
    except JaxspeechError as err:  # PyAV missing, or an undecodable media file
        problems.append(err)
        return None
    except (sf.LibsndfileError, OSError, RuntimeError, TypeError, ValueError) as err:
        missing = not os.path.isfile(path)
        reason = "missing" if missing else f"cannot read its audio header ({err})"
        problems.append(AudioFileError(f"{path}: {reason}"))
        return None
    if expected_rate is not None and rate != expected_rate:
        problems.append(
            SampleRateError(f"{path}: {rate} Hz where the layout has {expected_rate} Hz files")
        )
        return None
    return frames, rate


def _track_header(path: str) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` of a media file's audio track: from the container's
    duration for MP4/M4A (AAC's priming samples make it differ from a decode by at most one
    frame of 1024), by decoding an MPEG programme stream, whose headers give no length."""
    from jaxspeech.data import video

    if path.lower().endswith(".mpg"):
        return video.audio_header(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    av = video.import_av()
    try:
        with av.open(path) as container:
            streams = container.streams.audio
            if not streams:
                raise AudioFileError(f"{path}: has no audio track")
            stream = streams[0]
            if stream.duration is not None:
                seconds = stream.duration * stream.time_base
            else:
                seconds = container.duration / av.time_base
            return round(seconds * stream.rate), int(stream.rate)
    except av.FFmpegError as err:
        raise AudioFileError(f"{path}: cannot read its audio header ({err})") from err


def check_same_length(paths: Sequence[str], lengths: Sequence[int], problems: list) -> bool:
    """True when every file of one item has the same length, else adds the problem."""
    if len(set(lengths)) <= 1:
        return True
    listed = ", ".join(f"{p} ({n})" for p, n in zip(paths, lengths, strict=True))
    problems.append(CorpusError(f"files of one item differ in length (samples): {listed}"))
    return False


def require_length(items: Sequence[Item], seconds: float, what: str) -> None:
    """TooShortError naming how many of ``items`` (of ``what``, e.g. ``Libri2Mix train-100``)
    are shorter than a crop of ``seconds``, and the shortest."""
    short = [item for item in items if item.seconds < seconds]
    if short:
        shortest = min(short, key=lambda item: item.seconds)
        raise TooShortError(
            f"{len(short)} of the {len(items)} items of {what} are shorter than the "
            f"{seconds:g} s crop (shortest: {shortest.id}, {shortest.seconds:.2f} s); lower "
            "the crop length or drop them from the corpus"
        )


def here_or_one_below(path: pathlib.Path, detect: Callable) -> list:
    """``[detect(path)]`` when ``path`` is a corpus folder, else what ``detect`` finds in its
    folders (``detect(folder)``: a :class:`Corpus`, or None)."""
    corpus = detect(path)
    if corpus is not None:
        return [corpus]
    return [c for c in (detect(path / sub) for sub in subfolders(path)) if c is not None]


def subfolders(path: pathlib.Path) -> list[str]:
    """Names of the folders in ``path``, sorted (none when it is not a folder)."""
    if not path.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


def files_with(path: pathlib.Path, extensions: Sequence[str]) -> list[str]:
    """Names of the files in ``path`` (not below) ending in one of ``extensions``, sorted."""
    if not path.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_file() and entry.name.lower().endswith(tuple(extensions))
    )

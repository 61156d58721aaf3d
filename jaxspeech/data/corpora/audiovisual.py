"""Talking-face corpora in their distributed layouts (videos read with PyAV, the ``video``
extra).

* GRID (Cooke et al. 2006): talker folders ``s1`` ... ``s34`` (no ``s21`` video) of
  ``<sentence>.mpg`` as ``s<N>.mpg_vcd.zip`` unpacks, with the word alignments of
  ``s<N>/align/s<N>.tar`` (``<start> <end> <word>`` per line, silences ``sil``/``sp``) kept in
  ``align/s<N>/``, in ``alignments/s<N>/`` (the Zenodo release) or beside the videos. One
  split, ``all``; the speaker is the talker folder, the text the aligned words.
* LRS3-TED: ``pretrain|trainval|test/<talk id>/<nnnnn>.mp4`` with ``<nnnnn>.txt`` whose first
  line is ``Text:  <WORDS>``; the speaker is the talk.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

from jaxspeech.data.corpora.base import (
    Corpus,
    files_with,
    here_or_one_below,
    read_header,
    subfolders,
)
from jaxspeech.data.corpora.records import Recording
from jaxspeech.errors import CorpusError

_GRID_TALKER = re.compile(r"^s\d+$")
_GRID_SILENCES = ("sil", "sp")
LRS3_SPLITS = ("pretrain", "trainval", "test")


@dataclasses.dataclass(frozen=True)
class Grid(Corpus):
    """GRID's talking-face videos and word alignments (module docstring)."""

    layout = "GRID"
    splits = ("all",)

    def split_present(self, split: str) -> bool:
        return True

    def _alignment(self, talker: str, sentence: str) -> pathlib.Path | None:
        for folder in (
            self.root / "align" / talker,
            self.root / "alignments" / talker,
            self.root / talker,
        ):
            if (folder / f"{sentence}.align").is_file():
                return folder / f"{sentence}.align"
        return None

    def _scan(self, split: str, problems: list, progress: bool) -> list[Recording]:
        clips = [
            (talker, name[: -len(".mpg")])
            for talker in subfolders(self.root)
            if _GRID_TALKER.match(talker)
            for name in files_with(self.root / talker, (".mpg",))
        ]
        items = []
        for talker, sentence in self._progress(clips, split, progress):
            path = self.root / talker / f"{sentence}.mpg"
            alignment = self._alignment(talker, sentence)
            if alignment is None:
                problems.append(
                    CorpusError(
                        f"{path}: no {sentence}.align in align/{talker}/, "
                        f"alignments/{talker}/ or {talker}/"
                    )
                )
                continue
            words = [
                line.split()[2]
                for line in alignment.read_text().splitlines()
                if len(line.split()) == 3
            ]
            header = read_header(str(path), self.sample_rate, problems)
            if header is not None:
                text = " ".join(w for w in words if w not in _GRID_SILENCES)
                items.append(
                    Recording(f"{talker}/{sentence}", str(path), *header, speaker=talker, text=text)
                )
        return items


@dataclasses.dataclass(frozen=True)
class LRS3(Corpus):
    """LRS3-TED's clips and transcripts (module docstring)."""

    layout = "LRS3"
    splits = LRS3_SPLITS

    def _scan(self, split: str, problems: list, progress: bool) -> list[Recording]:
        folder = self.root / split
        if not folder.is_dir():
            problems.append(CorpusError(f"{folder}: missing; LRS3 has {', '.join(LRS3_SPLITS)}"))
            return []
        clips = [
            (talk, name[: -len(".mp4")])
            for talk in subfolders(folder)
            for name in files_with(folder / talk, (".mp4",))
        ]
        items = []
        for talk, clip in self._progress(clips, split, progress):
            path, transcript = folder / talk / f"{clip}.mp4", folder / talk / f"{clip}.txt"
            first = (
                transcript.read_text(encoding="utf-8").split("\n", 1)[0]
                if transcript.is_file()
                else ""
            )
            if not first.startswith("Text:"):
                problems.append(
                    CorpusError(f"{transcript}: missing, or its first line is not 'Text:  <WORDS>'")
                )
                continue
            header = read_header(str(path), self.sample_rate, problems)
            if header is not None:
                text = first[len("Text:") :].strip()
                items.append(
                    Recording(f"{talk}/{clip}", str(path), *header, speaker=talk, text=text)
                )
        return items


def _detect(folder: pathlib.Path) -> Corpus | None:
    names = subfolders(folder)
    if any(_GRID_TALKER.match(n) and files_with(folder / n, (".mpg",)) for n in names):
        return Grid(folder)
    splits = set(names) & set(LRS3_SPLITS)
    if any(
        files_with(folder / s / talk, (".mp4",))
        for s in splits
        for talk in subfolders(folder / s)[:1]
    ):
        return LRS3(folder)
    return None


def find(path: pathlib.Path) -> list[Corpus]:
    """The talking-face corpora at ``path`` or in one of its folders (module docstring)."""
    return here_or_one_below(path, _detect)

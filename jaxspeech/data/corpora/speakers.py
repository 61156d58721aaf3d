"""Speaker-verification corpora in their distributed layouts, with their official trials.

* VoxCeleb1: ``wav/<speaker id>/<video id>/<nnnnn>.wav`` (16 kHz), the ``dev`` and ``test``
  splits from ``vox1_meta.csv`` (tab-separated ``VoxCeleb1 ID, VGGFace1 ID, Gender,
  Nationality, Set``; beside ``wav/`` or one folder up) or, without it, the official test
  speakers ``id10270``–``id10309``; trial lists ``veri_test.txt``, ``veri_test2.txt``,
  ``list_test_all[2].txt``, ``list_test_hard[2].txt`` (lines ``<1|0> <path> <path>``, paths
  relative to ``wav/``) found beside ``wav/`` or one folder up.
* VoxCeleb2: ``aac/<speaker id>/<video id>/<nnnnn>.m4a`` (AAC, read with PyAV, the ``video``
  extra), as ``dev/aac`` and ``test/aac`` or a single ``aac/`` whose speakers
  ``vox2_meta.csv`` (``VoxCeleb2 ID, VGGFace2 ID, Gender, Set``) assigns.
* CN-Celeb 1 and 2: ``data/<speaker>/<genre>-<session>-<n>.wav|flac``; CN-Celeb1's
  ``dev/dev.lst`` (the training speakers), ``eval/enroll/<speaker>-enroll.*``,
  ``eval/test/<speaker>-<genre>-<session>-<n>.*`` and ``eval/lists/{enroll.lst,trials.lst}``
  (an enrolment ``<speaker>-enroll enroll/<file>``; a trial ``<speaker>-enroll test/<file>
  <1|0>``, paths relative to ``eval/``). A listed ``.wav`` read from the FLAC release is its
  ``.flac``. The genre of every file is one of CN-Celeb's eleven.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

from jaxspeech.data.corpora.base import (
    Corpus,
    files_with,
    here_or_one_below,
    read_header,
    subfolders,
)
from jaxspeech.data.corpora.records import Recording, Trial, parse_trial_line
from jaxspeech.errors import AudioFileError, CorpusError

VOXCELEB1_TRIAL_LISTS = (
    "veri_test", "veri_test2", "list_test_all", "list_test_all2", "list_test_hard",
    "list_test_hard2",
)  # fmt: skip
#: VoxCeleb1's test speakers (the 40 whose names start with V to Z).
VOXCELEB1_TEST_SPEAKERS = frozenset(f"id{n}" for n in range(10270, 10310))
CNCELEB_GENRES = frozenset(
    "advertisement drama entertainment interview live_broadcast movie play recitation singing "
    "speech vlog".split()
)
_GENDERS = {"m": "M", "f": "F"}


@dataclasses.dataclass(frozen=True)
class VoxCeleb(Corpus):
    """VoxCeleb1 (``version`` 1, ``wav/``) or VoxCeleb2 (2, ``aac/`` or ``dev|test/aac``)."""

    version: int = 1
    splits = ("dev", "test")

    @property
    def name(self) -> str:
        return f"VoxCeleb{self.version}"

    def _audio_folders(self, split: str) -> list[pathlib.Path]:
        if self.version == 1:
            return [self.root / "wav"]
        per_split = self.root / split / "aac"
        return [per_split] if per_split.is_dir() else [self.root / "aac"]

    def split_present(self, split: str) -> bool:
        return any(folder.is_dir() for folder in self._audio_folders(split))

    def _meta(self) -> dict[str, tuple[str | None, str]]:
        """``{speaker: (gender, split)}`` from the metadata CSV, when present."""
        name = f"vox{self.version}_meta.csv"
        path = next((p for p in (self.root / name, self.root.parent / name) if p.is_file()), None)
        if path is None:
            return {}
        text = path.read_text(encoding="utf-8")
        dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
        rows = list(csv.reader(text.splitlines(), dialect=dialect))[1:]
        return {
            row[0].strip(): (_GENDERS.get(row[-3 if self.version == 1 else -2].strip().lower()),
                             row[-1].strip())
            for row in rows
            if len(row) >= 4
        }  # fmt: skip

    def _scan(self, split: str, problems: list, progress: bool) -> list[Recording]:
        folders = [f for f in self._audio_folders(split) if f.is_dir()]
        if not folders:
            expected = "wav/" if self.version == 1 else f"{split}/aac/ or aac/"
            problems.append(
                CorpusError(f"{self.root}: no {expected} folder of VoxCeleb{self.version}")
            )
            return []
        folder = folders[0]
        meta = self._meta()
        per_split_folder = self.version == 2 and folder.parent.name == split
        extension = ".wav" if self.version == 1 else ".m4a"
        files = []
        for speaker in subfolders(folder):
            if not per_split_folder and self._split_of(speaker, meta) != split:
                continue
            for video in subfolders(folder / speaker):
                files += [
                    (speaker, video, n) for n in files_with(folder / speaker / video, (extension,))
                ]
        if not files:
            problems.append(
                CorpusError(f"{folder}: no {split} recordings (<speaker>/<video>/*{extension})")
            )
        items = []
        for speaker, video, name in self._progress(files, split, progress):
            path = str(folder / speaker / video / name)
            header = read_header(path, self.sample_rate, problems)
            if header is not None:
                gender = meta.get(speaker, (None, None))[0]
                stem = name.rsplit(".", 1)[0]
                items.append(
                    Recording(
                        f"{speaker}/{video}/{stem}", path, *header, speaker=speaker, gender=gender
                    )
                )
        return items

    def _split_of(self, speaker: str, meta: dict) -> str:
        if speaker in meta:
            return meta[speaker][1]
        if self.version == 1:
            return "test" if speaker in VOXCELEB1_TEST_SPEAKERS else "dev"
        return "dev"

    def trial_lists(self) -> dict[str, pathlib.Path]:
        if self.version != 1:
            return {}
        lists = {}
        for name in VOXCELEB1_TRIAL_LISTS:
            for folder in (self.root, self.root.parent):
                if (folder / f"{name}.txt").is_file():
                    lists[name] = folder / f"{name}.txt"
                    break
        return lists

    def _trials(self, path: pathlib.Path, problems: list) -> list[Trial]:
        wav = self.root / "wav"
        trials = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                parsed = parse_trial_line(line)
            except ValueError as err:
                problems.append(CorpusError(f"{path} line {number}: {err}"))
                continue
            if parsed is not None:
                enrol, test = (_listed_file(wav, p, problems) for p in parsed[1:])
                trials.append(Trial(enrol, test, parsed[0] == 1))
        return trials


@dataclasses.dataclass(frozen=True)
class CNCeleb(Corpus):
    """CN-Celeb1 (``dev``, ``enroll`` and ``test`` splits, trials) or CN-Celeb2 (``dev``)."""

    version: int = 1

    @property
    def name(self) -> str:
        return f"CN-Celeb{self.version}"

    @property
    def splits(self) -> tuple[str, ...]:
        return ("dev", "enroll", "test") if self.version == 1 else ("dev",)

    def split_present(self, split: str) -> bool:
        return split == "dev" or (self.root / "eval" / split).is_dir()

    def _scan(self, split: str, problems: list, progress: bool) -> list[Recording]:
        extensions = (".wav", ".flac")
        if split == "dev":
            speakers = self._dev_speakers(problems)
            files = [
                (speaker, f"{speaker}-{name}", self.root / "data" / speaker / name)
                for speaker in speakers
                for name in files_with(self.root / "data" / speaker, extensions)
            ]
        else:
            folder = self.root / "eval" / split
            files = [
                (name.split("-")[0], name, folder / name) for name in files_with(folder, extensions)
            ]
        if not files:
            problems.append(CorpusError(f"{self.root}: no {split} recordings in CN-Celeb's layout"))
        items = []
        for speaker, name, path in self._progress(files, split, progress):
            stem = name.rsplit(".", 1)[0]
            genre = None
            if split != "enroll":
                genre = stem.split("-")[1] if stem.count("-") == 3 else None
                if genre not in CNCELEB_GENRES:
                    problems.append(
                        CorpusError(
                            f"{path}: not named <genre>-<session>-<n> with one of CN-Celeb's genres"
                        )
                    )
                    continue
            header = read_header(str(path), self.sample_rate, problems)
            if header is not None:
                items.append(Recording(stem, str(path), *header, speaker=speaker, genre=genre))
        return items

    def _dev_speakers(self, problems: list) -> list[str]:
        listed = self.root / ("dev/dev.lst" if self.version == 1 else "spk.lst")
        if listed.is_file():
            return listed.read_text(encoding="utf-8").split()
        if self.version == 1:
            problems.append(
                CorpusError(f"{listed}: missing; CN-Celeb1 lists its training speakers there")
            )
            return []
        return subfolders(self.root / "data")

    def trial_lists(self) -> dict[str, pathlib.Path]:
        path = self.root / "eval" / "lists" / "trials.lst"
        return {"trials": path} if self.version == 1 and path.is_file() else {}

    def _trials(self, path: pathlib.Path, problems: list) -> list[Trial]:
        eval_dir = self.root / "eval"
        enroll_list = path.parent / "enroll.lst"
        if not enroll_list.is_file():
            problems.append(CorpusError(f"{enroll_list}: missing; it maps enrolment ids to files"))
            return []
        enrolments = dict(
            line.split()[:2] for line in enroll_list.read_text().splitlines() if line.strip()
        )
        trials = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[2] not in ("0", "1") or fields[0] not in enrolments:
                problems.append(
                    CorpusError(
                        f"{path} line {number}: {line!r} is not '<enrolment id of enroll.lst> "
                        "<test path> <1|0>'"
                    )
                )
                continue
            enrol = _listed_file(eval_dir, enrolments[fields[0]], problems)
            trials.append(
                Trial(enrol, _listed_file(eval_dir, fields[1], problems), fields[2] == "1")
            )
        return trials


def _listed_file(folder: pathlib.Path, relative: str, problems: list) -> str:
    """``folder/relative``, or the FLAC file of a listed ``.wav``; a missing one is a problem."""
    path = folder / relative
    if not path.is_file() and path.with_suffix(".flac").is_file():
        path = path.with_suffix(".flac")
    if not path.is_file():
        problems.append(AudioFileError(f"{path}: listed in a trial list but missing"))
    return str(path)


def _detect(folder: pathlib.Path) -> Corpus | None:
    if (folder / "wav").is_dir() and any(s.startswith("id") for s in subfolders(folder / "wav")):
        return VoxCeleb(folder, sample_rate=16000, version=1)
    if any((folder / sub / "aac").is_dir() for sub in ("", "dev", "test")):
        return VoxCeleb(folder, sample_rate=16000, version=2)
    if (folder / "data").is_dir():
        if (folder / "eval" / "lists").is_dir() or (folder / "dev" / "dev.lst").is_file():
            return CNCeleb(folder, sample_rate=16000, version=1)
        if (folder / "spk.lst").is_file():
            return CNCeleb(folder, sample_rate=16000, version=2)
    return None


def find(path: pathlib.Path) -> list[Corpus]:
    """The speaker corpora at ``path`` or in one of its folders (module docstring)."""
    return here_or_one_below(path, _detect)

"""Speech corpora on disk: find the utterances, tell their speakers, split speakers apart.

Supported layouts (detected per root folder):

* nested, one folder per speaker: ``root/<speaker>/*.flac`` or LibriSpeech's
  ``root/<speaker>/<chapter>/*.flac`` (any depth below the speaker folder). Files named the
  LibriSpeech way (``<speaker>-<chapter>-<utterance>``) take the speaker from the name, so a
  root one level up (``LibriSpeech/`` holding ``train-clean-100/``, ``dev-clean/``) works too.
* flat, Free-Spoken-Digit style: ``root/<label>_<speaker>_<n>.wav`` (the label is the digit).
* flat, CMU ARCTIC style: ``root/cmu_arctic_us_<speaker>_<utterance>.wav`` (e.g.
  ``cmu_arctic_us_aew_a0001``). ARCTIC prompts without a speaker (``arctic_a0010.wav``, the
  name the CMU release gives every speaker's files) are left out: their speaker is unknown.
* GRID talking-face clips: ``<root>/s<N>/<sentence>.mpg``, or the talker folder ``s<N>`` itself
  as the root (e.g. ``grid/s1``), are talker N's: speaker ``grid_s<N>``, label the sentence code
  (``bbaf2n`` = "bin blue at f two now"). Their audio track is read with PyAV (the ``video``
  extra; without it reading one raises MissingExtraError). Clips outside a talker folder (the
  data root's ``grid/talkers/`` samples, named by sentence only) are left out: their talker is
  unknown.

Speaker metadata come from a speaker table in the root, below it or in a folder above it:
LibriSpeech's ``SPEAKERS.TXT`` (``ID | SEX | ...``: genders) or speechocean762's
``SPEAKERS.tsv`` (tab-separated ``speaker``, ``gender`` m/f, ``age`` columns with a header:
genders and ages). ``split_speakers`` uses them to give every split the same mix of female and
male voices, and of children, teenagers and adults.

Corpus folders in configs are relative to the data root (``resolve_data_root``), which is
looked up when data are read, never when a config is made, so configs stay portable.

Only the file headers are read (``soundfile``), so scanning thousands of files takes well under
a second; a GRID clip's audio track is decoded to count its samples (about 20 ms a clip).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import soundfile as sf

from jaxspeech import audio
from jaxspeech.data import video
from jaxspeech.data.corpora.base import PYAV_EXTENSIONS
from jaxspeech.errors import AudioFileError, ConfigError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
#: Video files whose audio track is speech (GRID's clips), read with PyAV.
VIDEO_EXTENSIONS = (".mpg",)
SPEECH_EXTENSIONS = AUDIO_EXTENSIONS + VIDEO_EXTENSIONS
SPLITS = ("train", "valid", "test")

_LIBRISPEECH_NAME = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utterance>\d+)$")
_FLAT_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<n>\d+)$")
_ARCTIC_NAME = re.compile(r"^cmu_arctic_us_(?P<speaker>[a-z]+)_(?P<utterance>[ab]\d{4})$")
_UNLABELLED_ARCTIC_NAME = re.compile(r"^arctic_[ab]\d{4}$")
_GRID_TALKER_FOLDER = re.compile(r"^s(?P<talker>\d+)$")
_LIBRISPEECH_TABLE, _TSV_TABLE = "SPEAKERS.TXT", "SPEAKERS.tsv"
_TSV_COLUMNS = ("speaker", "gender", "age")
#: Age groups of the speaker split: under 13, 13 to 17, 18 and over (upper bounds, exclusive).
AGE_GROUPS = {"child": 13, "teen": 18, "adult": math.inf}
#: Where the data root comes from when a config leaves ``data.root`` unset.
DATA_ROOT_ENV, DATA_ROOT_DEFAULT = "JAXSPEECH_DATA", pathlib.Path("../shared/data")


@dataclasses.dataclass(frozen=True, order=True)
class Utterance:
    """One recording of one speaker.

    Attributes:
      path: the audio file.
      speaker: speaker id (unique within the scanned corpora).
      label: what is said when the corpus names it (the digit for spoken digits, the sentence
        code for GRID), else None.
      num_samples: length at the file's own rate.
      sample_rate: the file's sample rate (Hz).
      gender: "F" or "M" when the corpus metadata says, else None.
      age: age in years when the corpus metadata says, else None.
    """

    path: str
    speaker: str
    label: str | None
    num_samples: int
    sample_rate: int
    gender: str | None = None
    age: int | None = None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


def _is_video(path: str | os.PathLike) -> bool:
    return pathlib.Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _header(path: str) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` from the file header (of a video's audio track:
    ``video.audio_header``); AudioFileError (VideoFileError) when unreadable."""
    if _is_video(path):
        return video.audio_header(path)
    try:
        with sf.SoundFile(path) as f:
            return int(f.frames), int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioFileError(
            f"{path}: cannot read the audio header ({err}); re-export it as WAV, FLAC or OGG "
            "or remove it from the corpus folder"
        ) from err


def audio_files(root: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[str]:
    """Sorted paths of every file below ``root``, recursively, with one of ``extensions``
    (default: the audio files, WAV, FLAC, OGG; ``SPEECH_EXTENSIONS`` adds GRID's videos).

    Raises:
      ConfigError: ``root`` is not a folder. AudioFileError: it holds no such file.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder; point the data path at an existing folder")
    files = sorted(
        str(p) for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file()
    )
    if not files:
        raise AudioFileError(
            f"{root}: no audio files ({', '.join(extensions)}) found below this folder; "
            "check the data path"
        )
    return files


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The mono float32 audio ``[samples]`` of a corpus file at ``sample_rate`` (soxr): an audio
    file through ``audio.load``; the audio track of a GRID or LRS3 clip or of a VoxCeleb2 M4A
    file through ``video.read_video_audio``.

    Raises:
      AudioFileError / VideoFileError: missing or unreadable; MissingExtraError: a video file
      without PyAV; EmptyAudioError, NonFiniteAudioError: as ``audio.validate``.
    """
    if pathlib.Path(path).suffix.lower() in PYAV_EXTENSIONS:
        return video.read_video_audio(path, sample_rate)
    return audio.load(path, sample_rate=sample_rate)[0]


def _speaker_and_label(root: pathlib.Path, path: str) -> tuple[str, str | None] | None:
    """Speaker and label of ``path`` under the layout rules of the module docstring; None for
    a file whose speaker is unknown (an unlabelled ARCTIC prompt, a GRID clip outside a talker
    folder)."""
    rel = pathlib.Path(path).relative_to(root)
    stem = rel.stem
    if _is_video(path):
        talker = _GRID_TALKER_FOLDER.match(pathlib.Path(path).parent.name)
        return None if talker is None else (f"grid_s{talker['talker']}", stem)
    if len(rel.parts) == 1:
        if _UNLABELLED_ARCTIC_NAME.match(stem):
            return None
        match = _ARCTIC_NAME.match(stem)
        if match is not None:
            return match["speaker"], None
        match = _FLAT_NAME.match(stem)
        if match is None:
            raise ConfigError(
                f"{path}: a file directly in {root} must be named <label>_<speaker>_<n> "
                "(spoken digits) or cmu_arctic_us_<speaker>_<utterance> (ARCTIC); otherwise "
                "put each speaker's files in a folder named after the speaker"
            )
        return match["speaker"], match["label"]
    match = _LIBRISPEECH_NAME.match(stem)
    if match is not None:
        return match["speaker"], None
    return rel.parts[0], None


class SpeakerInfo(NamedTuple):
    """What a speaker table says of one speaker (None where it is silent)."""

    gender: str | None
    age: int | None


def _librispeech_table(table: pathlib.Path) -> dict[str, SpeakerInfo]:
    """Genders of a LibriSpeech ``SPEAKERS.TXT`` (``ID | SEX | ...``; ``;`` starts a comment)."""
    speakers = {}
    for line in table.read_text(errors="replace").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) >= 2 and not line.startswith(";") and fields[1] in ("F", "M"):
            speakers[fields[0]] = SpeakerInfo(fields[1], None)
    return speakers


def _tsv_table(table: pathlib.Path) -> dict[str, SpeakerInfo]:
    """Genders and ages of a speechocean762-style ``SPEAKERS.tsv`` (speaker, gender m/f, age)."""
    with open(table, newline="", errors="replace") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in _TSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(
                f"{table}: no {', '.join(missing)} column(s) in the header; the first line must "
                f"name the tab-separated columns {', '.join(_TSV_COLUMNS)}"
            )
        speakers = {}
        for row in reader:
            gender, age = row["gender"].strip().upper(), row["age"].strip()
            if gender not in ("F", "M") or not age.isdigit():
                raise ConfigError(
                    f"{table} line {reader.line_num}: gender {row['gender']!r}, age "
                    f"{row['age']!r}; write the gender as m or f and the age in whole years"
                )
            speakers[row["speaker"].strip()] = SpeakerInfo(gender, int(age))
    return speakers


def speaker_metadata(root: str | os.PathLike) -> dict[str, SpeakerInfo]:
    """``{speaker: SpeakerInfo}`` from every speaker table (LibriSpeech ``SPEAKERS.TXT``,
    speechocean762 ``SPEAKERS.tsv``) in, below or above ``root``; genders are "F" / "M"."""
    root = pathlib.Path(root).resolve()
    readers = {_LIBRISPEECH_TABLE: _librispeech_table, _TSV_TABLE: _tsv_table}
    speakers = {}
    for name, read in readers.items():
        tables = [d / name for d in root.parents if (d / name).is_file()]
        for table in tables + sorted(root.rglob(name)):
            speakers.update(read(table))
    return speakers


def scan_corpus(roots: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Utterance]:
    """Finds every utterance below one root or several (e.g. LibriSpeech and FSDD together).

    Returns:
      Utterances sorted by ``(path, ...)``, hence the same list on every machine and run.

    Raises:
      ConfigError: a root is missing, a flat file is misnamed, a root has no file of a known
        speaker, or no root is given.
      AudioFileError: a root holds no audio, or a file header cannot be read.
      MissingExtraError: a root holds GRID clips and PyAV is not installed.
    """
    if isinstance(roots, str | os.PathLike):
        roots = [roots]
    roots = [pathlib.Path(r) for r in roots]
    if not roots:
        raise ConfigError("scan_corpus: no corpus folder given; pass at least one root")
    utterances = []
    for root in roots:
        metadata = speaker_metadata(root)
        files = audio_files(root, SPEECH_EXTENSIONS)
        named = [(path, _speaker_and_label(root, path)) for path in files]
        named = [(path, found) for path, found in named if found is not None]
        if not named:
            raise ConfigError(
                f"{root}: none of its {len(files)} files has a known speaker (module docstring "
                "of jaxspeech.data.corpus); GRID clips must be in their talker's folder s<N>"
            )
        for path, (speaker, label) in named:
            num_samples, sample_rate = _header(path)
            info = metadata.get(speaker, SpeakerInfo(None, None))
            utterances.append(
                Utterance(path, speaker, label, num_samples, sample_rate, info.gender, info.age)
            )
    return sorted(utterances)


def group_by_speaker(utterances: Iterable[Utterance]) -> dict[str, list[Utterance]]:
    """``{speaker: [utterances]}`` with speakers and utterances in sorted order."""
    groups: dict[str, list[Utterance]] = {}
    for utt in sorted(utterances):
        groups.setdefault(utt.speaker, []).append(utt)
    return dict(sorted(groups.items()))


def _stratified_order(strata: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(strata))`` in which each stratum is shuffled and spread
    evenly: item ``i`` of a stratum of ``n`` sits at quantile ``(i + 0.5) / n``."""
    keys = sorted(set(strata), key=repr)
    positions = np.empty(len(strata))
    for rank, key in enumerate(keys):
        members = np.flatnonzero([s == key for s in strata])
        shuffled = members[rng.permutation(len(members))]
        positions[shuffled] = (np.arange(len(members)) + 0.5) / len(members) + rank * 1e-9
    return np.argsort(positions, kind="stable")


def _stratified_speaker_order(groups: dict[str, list[Utterance]], seed: int) -> np.ndarray:
    """``_stratified_order`` of the speakers of ``groups`` by (gender, age group)."""
    strata = [(utts[0].gender, age_group(utts[0].age)) for utts in groups.values()]
    return _stratified_order(strata, np.random.default_rng(seed))


def split_sizes(n: int, fractions: Sequence[float], what: str, items: str) -> tuple[int, int, int]:
    """``(train, valid, test)`` numbers of ``n`` items (speakers, groups of pairs) to deal out.

    The valid and test splits get ``fraction * n`` items each (rounded half up; at least one
    when the fraction is positive), train gets the rest (at least one when its share is
    positive).

    Args:
      n: how many items there are.
      fractions: ``(train, valid, test)`` shares, non-negative, summing to 1.
      what, items: the caller and the kind of item, named in errors.

    Raises:
      ConfigError: bad fractions, or too few items for every split with a positive share.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"{what}: fractions must be three non-negative numbers (train, valid, test) "
            f"summing to 1, got {fractions}"
        )
    needed = sum(f > 0 for f in fractions)
    if n < needed:
        raise ConfigError(
            f"{what}: {n} {items} cannot fill {needed} disjoint splits; add {items} or set the "
            "fraction of a split to 0"
        )
    counts = [max(int(f > 0), int(f * n + 0.5)) for f in fractions[1:]]
    n_train = n - sum(counts)
    if fractions[0] > 0 and n_train < 1:
        counts[int(np.argmax(counts))] -= 1 - n_train
        n_train = 1
    return n_train, counts[0], counts[1]


def age_group(age: int | None) -> str | None:
    """The ``AGE_GROUPS`` name of ``age`` (None when unknown)."""
    if age is None:
        return None
    return next(name for name, bound in AGE_GROUPS.items() if age < bound)


def split_speakers(
    utterances: Sequence[Utterance],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[Utterance]]:
    """Splits utterances into speaker-disjoint ``train`` / ``valid`` / ``test`` sets.

    Speakers (not utterances) are dealt out in the numbers of ``split_sizes``. The deal is
    stratified by gender (F, M, unknown) and age group (``AGE_GROUPS``, unknown): each
    stratum's speakers are shuffled with ``seed`` and spread evenly over one common order, so
    every split holds each stratum in about its corpus share. The result depends only on the
    speakers, their genders and ages, and the seed.

    Args:
      utterances: the corpus, e.g. from ``scan_corpus``.
      fractions: ``(train, valid, test)`` shares of the speakers, non-negative, summing to 1.
      seed: shuffling seed.

    Returns:
      ``{"train": [...], "valid": [...], "test": [...]}``, each sorted.

    Raises:
      ConfigError: bad fractions, or too few speakers for every split with a positive share.
    """
    groups = group_by_speaker(utterances)
    speakers = list(groups)
    sizes = split_sizes(len(speakers), fractions, "split_speakers", "speakers")
    order = _stratified_speaker_order(groups, seed)
    bounds = np.cumsum([0, *sizes])
    return {
        name: sorted(u for i in order[bounds[k] : bounds[k + 1]] for u in groups[speakers[i]])
        for k, name in enumerate(SPLITS)
    }


def speaker_subset(
    utterances: Sequence[Utterance], n_speakers: int, seed: int = 0
) -> list[Utterance]:
    """The utterances of ``n_speakers`` of the speakers, drawn stratified by gender and age group
    (the first ``n_speakers`` of ``split_speakers``' stratified order), so a smaller training set
    keeps the corpus' mix of voices. A subset is a prefix of every larger one with the same seed.

    Raises:
      ConfigError: ``n_speakers`` is below 1 or above the number of speakers.
    """
    groups = group_by_speaker(utterances)
    speakers = list(groups)
    if not 1 <= n_speakers <= len(speakers):
        raise ConfigError(
            f"speaker_subset: n_speakers={n_speakers}, but there are {len(speakers)} speakers; "
            f"use 1 to {len(speakers)}"
        )
    order = _stratified_speaker_order(groups, seed)
    return sorted(u for i in order[:n_speakers] for u in groups[speakers[i]])


def split_files(
    files: Sequence[str], fractions: Sequence[float], seed: int = 0
) -> dict[str, list[str]]:
    """Deals ``files`` (e.g. noise recordings) into disjoint ``train`` / ``valid`` / ``test``
    lists in the numbers of ``split_sizes``, in an order shuffled with ``seed``; each list is
    sorted, and the result depends only on the set of files and the seed.

    Raises:
      ConfigError: bad fractions, or too few files for every split with a positive share.
    """
    files = sorted(files)
    sizes = split_sizes(len(files), fractions, "split_files", "files")
    order = np.random.default_rng(seed).permutation(len(files))
    bounds = np.cumsum([0, *sizes])
    return {
        name: sorted(files[i] for i in order[bounds[k] : bounds[k + 1]])
        for k, name in enumerate(SPLITS)
    }


def resolve_data_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The data root, as an absolute path: ``root`` (``--config.data.root``) if given, else
    ``$JAXSPEECH_DATA`` if set, else ``../shared/data`` relative to the working directory.

    Raises:
      ConfigError: the first of the three that is given is not a folder; the message names
        all three and how to set each.
    """
    env = os.environ.get(DATA_ROOT_ENV) or None
    candidates = [
        ("data.root", root, "set it with --config.data.root=DIR"),
        (f"${DATA_ROOT_ENV}", env, f"set it with export {DATA_ROOT_ENV}=DIR"),
        (
            f"{DATA_ROOT_DEFAULT} relative to the working directory {os.getcwd()}",
            DATA_ROOT_DEFAULT,
            "used when neither is set: run from the folder beside shared/data",
        ),
    ]
    chosen = next(value for _, value, _ in candidates if value is not None)
    folder = pathlib.Path(chosen).expanduser()
    if folder.is_dir():
        return folder.absolute()
    tried = "; ".join(
        f"{name}{'' if value is None or value is DATA_ROOT_DEFAULT else f'={value}'}"
        f"{' (not set)' if value is None else ''}, {how}"
        for name, value, how in candidates
    )
    raise ConfigError(
        f"no data root: {os.fspath(chosen)} is not a folder. The first of these that is set is "
        f"used: {tried}. Point it at the folder of recordings."
    )


def data_path(path: str | os.PathLike, root: str | os.PathLike | None) -> pathlib.Path:
    """``path`` if absolute, else ``path`` below the data root (``resolve_data_root(root)``)."""
    path = pathlib.Path(path).expanduser()
    return path if path.is_absolute() else resolve_data_root(root) / path

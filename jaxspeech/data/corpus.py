"""Speech corpora on disk: find the utterances, tell their speakers, split speakers apart.

Supported layouts (detected per root folder):

* nested, one folder per speaker: ``root/<speaker>/*.flac`` or LibriSpeech's
  ``root/<speaker>/<chapter>/*.flac`` (any depth below the speaker folder). Files named the
  LibriSpeech way (``<speaker>-<chapter>-<utterance>``) take the speaker from the name, so a
  root one level up (``LibriSpeech/`` holding ``train-clean-100/``, ``dev-clean/``) works too.
* flat, Free-Spoken-Digit style: ``root/<label>_<speaker>_<n>.wav`` (the label is the digit).

Speaker genders come from LibriSpeech's ``SPEAKERS.TXT`` (``ID | SEX | ...``) when one lies in
the root, below it or in a folder above it; ``split_speakers`` uses them to give every split
the same mix of female and male voices.

Only the file headers are read (``soundfile``), so scanning thousands of files takes well under
a second.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np
import soundfile as sf

from jaxspeech.errors import AudioFileError, ConfigError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SPLITS = ("train", "valid", "test")

_LIBRISPEECH_NAME = re.compile(r"^(?P<speaker>\d+)-(?P<chapter>\d+)-(?P<utterance>\d+)$")
_FLAT_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<n>\d+)$")
_SPEAKER_TABLE = "SPEAKERS.TXT"


@dataclasses.dataclass(frozen=True, order=True)
class Utterance:
    """One recording of one speaker.

    Attributes:
      path: the audio file.
      speaker: speaker id (unique within the scanned corpora).
      label: what is said when the corpus names it (the digit for spoken digits), else None.
      num_samples: length at the file's own rate.
      sample_rate: the file's sample rate (Hz).
      gender: "F" or "M" when the corpus metadata says, else None.
    """

    path: str
    speaker: str
    label: str | None
    num_samples: int
    sample_rate: int
    gender: str | None = None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


def _header(path: str) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` from the file header; AudioFileError when unreadable."""
    try:
        with sf.SoundFile(path) as f:
            return int(f.frames), int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioFileError(
            f"{path}: cannot read the audio header ({err}); re-export it as WAV, FLAC or OGG "
            "or remove it from the corpus folder"
        ) from err


def audio_files(root: str | os.PathLike) -> list[str]:
    """Sorted paths of every audio file (WAV, FLAC, OGG) below ``root``, recursively.

    Raises:
      ConfigError: ``root`` is not a folder. AudioFileError: it holds no audio file.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder; point the data path at an existing folder")
    files = sorted(
        str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )
    if not files:
        raise AudioFileError(
            f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found below this folder; "
            "check the data path"
        )
    return files


def _speaker_and_label(root: pathlib.Path, path: str) -> tuple[str, str | None]:
    """Speaker and label of ``path`` under the layout rules of the module docstring."""
    rel = pathlib.Path(path).relative_to(root)
    stem = rel.stem
    if len(rel.parts) == 1:
        match = _FLAT_NAME.match(stem)
        if match is None:
            raise ConfigError(
                f"{path}: a file directly in {root} must be named <label>_<speaker>_<n> "
                "(flat spoken-digit layout); otherwise put each speaker's files in a "
                "folder named after the speaker"
            )
        return match["speaker"], match["label"]
    match = _LIBRISPEECH_NAME.match(stem)
    if match is not None:
        return match["speaker"], None
    return rel.parts[0], None


def speaker_genders(root: str | os.PathLike) -> dict[str, str]:
    """``{speaker: "F" | "M"}`` from every LibriSpeech ``SPEAKERS.TXT`` in, below or above
    ``root`` (lines ``ID | SEX | ...``; ``;`` starts a comment)."""
    root = pathlib.Path(root).resolve()
    tables = [d / _SPEAKER_TABLE for d in root.parents if (d / _SPEAKER_TABLE).is_file()]
    tables += sorted(root.rglob(_SPEAKER_TABLE))
    genders = {}
    for table in tables:
        for line in table.read_text(errors="replace").splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) >= 2 and not line.startswith(";") and fields[1] in ("F", "M"):
                genders[fields[0]] = fields[1]
    return genders


def scan_corpus(roots: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Utterance]:
    """Finds every utterance below one root or several (e.g. LibriSpeech and FSDD together).

    Returns:
      Utterances sorted by ``(path, ...)``, hence the same list on every machine and run.

    Raises:
      ConfigError: a root is missing, a flat file is misnamed, or no root is given.
      AudioFileError: a root holds no audio, or a file header cannot be read.
    """
    if isinstance(roots, str | os.PathLike):
        roots = [roots]
    roots = [pathlib.Path(r) for r in roots]
    if not roots:
        raise ConfigError("scan_corpus: no corpus folder given; pass at least one root")
    utterances = []
    for root in roots:
        genders = speaker_genders(root)
        for path in audio_files(root):
            speaker, label = _speaker_and_label(root, path)
            num_samples, sample_rate = _header(path)
            utterances.append(
                Utterance(path, speaker, label, num_samples, sample_rate, genders.get(speaker))
            )
    return sorted(utterances)


def group_by_speaker(utterances: Iterable[Utterance]) -> dict[str, list[Utterance]]:
    """``{speaker: [utterances]}`` with speakers and utterances in sorted order."""
    groups: dict[str, list[Utterance]] = {}
    for utt in sorted(utterances):
        groups.setdefault(utt.speaker, []).append(utt)
    return dict(sorted(groups.items()))


def _stratified_order(strata: Sequence[str | None], rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(strata))`` in which each stratum is shuffled and spread
    evenly: item ``i`` of a stratum of ``n`` sits at quantile ``(i + 0.5) / n``."""
    keys = sorted(set(strata), key=lambda k: (k is None, k or ""))
    positions = np.empty(len(strata))
    for rank, key in enumerate(keys):
        members = np.flatnonzero([s == key for s in strata])
        shuffled = members[rng.permutation(len(members))]
        positions[shuffled] = (np.arange(len(members)) + 0.5) / len(members) + rank * 1e-9
    return np.argsort(positions, kind="stable")


def split_speakers(
    utterances: Sequence[Utterance],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, list[Utterance]]:
    """Splits utterances into speaker-disjoint ``train`` / ``valid`` / ``test`` sets.

    Speakers (not utterances) are dealt out: the valid and test splits get
    ``fraction * n_speakers`` speakers each (rounded half up; at least one when the fraction is
    positive), train gets the rest. The deal is stratified by gender (F, M, unknown): each
    gender's speakers are shuffled with ``seed`` and spread evenly over one common order, so
    every split holds each gender in about its corpus share. The result depends only on the
    speakers, their genders and the seed.

    Args:
      utterances: the corpus, e.g. from ``scan_corpus``.
      fractions: ``(train, valid, test)`` shares of the speakers, non-negative, summing to 1.
      seed: shuffling seed.

    Returns:
      ``{"train": [...], "valid": [...], "test": [...]}``, each sorted.

    Raises:
      ConfigError: bad fractions, or too few speakers for every split with a positive share.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"split_speakers: fractions must be three non-negative numbers (train, valid, test) "
            f"summing to 1, got {fractions}"
        )
    groups = group_by_speaker(utterances)
    speakers = list(groups)
    needed = sum(f > 0 for f in fractions)
    if len(speakers) < needed:
        raise ConfigError(
            f"split_speakers: {len(speakers)} speaker(s) cannot fill {needed} speaker-disjoint "
            "splits; add speakers or set the fraction of a split to 0"
        )
    order = _stratified_order(
        [groups[speaker][0].gender for speaker in speakers], np.random.default_rng(seed)
    )
    counts = [max(int(f > 0), int(f * len(speakers) + 0.5)) for f in fractions[1:]]
    n_train = len(speakers) - sum(counts)
    if fractions[0] > 0 and n_train < 1:
        counts[int(np.argmax(counts))] -= 1 - n_train
        n_train = 1
    bounds = np.cumsum([0, n_train, *counts])
    return {
        name: sorted(u for i in order[bounds[k] : bounds[k + 1]] for u in groups[speakers[i]])
        for k, name in enumerate(SPLITS)
    }


def default_data_root() -> pathlib.Path:
    """The real recordings: ``$JAXSPEECH_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("JAXSPEECH_DATA")
    return pathlib.Path(env) if env else pathlib.Path(__file__).resolve().parents[3] / "shared/data"

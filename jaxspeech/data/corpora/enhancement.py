"""Speech-enhancement corpora in their distributed layouts.

* VoiceBank-DEMAND (Valentini-Botinhao et al., Edinburgh DataShare 10283/2791):
  ``{clean,noisy}_trainset_28spk_wav/<speaker>_<nnn>.wav`` (split ``train``) and
  ``{clean,noisy}_testset_wav/`` (``test``), 48 kHz, with the noise and SNR of every file from
  ``log_trainset_28spk.txt`` and ``log_testset.txt`` (lines ``<id> <noise> <snr>``) beside the
  folders or in ``logfiles/``.
* DNS Challenge (Interspeech 2020 layout, 16 kHz): ``clean/`` and ``noise/`` (splits
  ``clean`` and ``noise``, any depth; mixed on the fly by the data source) and the synthetic
  test set ``test_set/synthetic/{no_reverb,with_reverb}/{clean,noisy}/`` (split ``test``):
  ``noisy/<...>_snr<S>_<...>_fileid_<N>.wav`` pairs with ``clean/clean_fileid_<N>.wav``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

from jaxspeech.data.corpora.base import (
    Corpus,
    check_same_length,
    files_with,
    here_or_one_below,
    read_header,
    subfolders,
)
from jaxspeech.data.corpora.records import NoisyPair, Recording
from jaxspeech.errors import CorpusError

VOICEBANK_FOLDERS = {"train": "trainset_28spk", "test": "testset"}
DNS_TEST_CONDITIONS = ("no_reverb", "with_reverb")
_DNS_NOISY = re.compile(r"_snr(?P<snr>-?\d+(?:\.\d+)?)_.*fileid_(?P<n>\d+)\.wav$")
_DNS_READER = re.compile(r"reader_(\d+)")


def _pair(id_, noisy, clean, rate, problems, **metadata) -> NoisyPair | None:
    headers = [read_header(str(p), rate, problems) for p in (noisy, clean)]
    if None in headers or not check_same_length(
        [str(noisy), str(clean)], [h[0] for h in headers], problems
    ):
        return None
    return NoisyPair(id_, str(noisy), str(clean), *headers[0], **metadata)


def _unpaired(noisy_names, clean_names, clean_dir: pathlib.Path, problems: list) -> None:
    for name in sorted(set(clean_names) - set(noisy_names)):
        problems.append(CorpusError(f"{clean_dir / name}: no noisy file of the same name"))


@dataclasses.dataclass(frozen=True)
class VoiceBankDemand(Corpus):
    """VoiceBank-DEMAND (module docstring)."""

    layout = "VoiceBank-DEMAND"
    splits = ("train", "test")

    def split_present(self, split: str) -> bool:
        return (self.root / f"noisy_{VOICEBANK_FOLDERS[split]}_wav").is_dir()

    def _log(self, split: str, problems: list) -> dict[str, tuple[str, float]] | None:
        name = f"log_{VOICEBANK_FOLDERS[split]}.txt"
        path = next(
            (p for p in (self.root / name, self.root / "logfiles" / name) if p.is_file()), None
        )
        if path is None:
            return None
        log = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            fields = line.split()
            try:
                log[fields[0]] = (fields[1], float(fields[2]))
            except (IndexError, ValueError):
                if fields:
                    problems.append(
                        CorpusError(f"{path} line {number}: {line!r} is not '<id> <noise> <snr>'")
                    )
        return log

    def _scan(self, split: str, problems: list, progress: bool) -> list[NoisyPair]:
        noisy_dir, clean_dir = (
            self.root / f"{kind}_{VOICEBANK_FOLDERS[split]}_wav" for kind in ("noisy", "clean")
        )
        missing = [d for d in (noisy_dir, clean_dir) if not d.is_dir()]
        if missing:
            problems.append(
                CorpusError(
                    f"{', '.join(map(str, missing))}: missing; VoiceBank-DEMAND's {split} split"
                )
            )
            return []
        noisy_names, clean_names = (
            files_with(noisy_dir, (".wav",)),
            files_with(clean_dir, (".wav",)),
        )
        _unpaired(noisy_names, clean_names, clean_dir, problems)
        log = self._log(split, problems)
        items = []
        for name in self._progress(noisy_names, split, progress):
            id_ = name[: -len(".wav")]
            noise_type = snr = None
            if log is not None:
                if id_ not in log:
                    problems.append(CorpusError(f"{noisy_dir / name}: not in the {split} log file"))
                    continue
                noise_type, snr = log[id_]
            item = _pair(id_, noisy_dir / name, clean_dir / name, self.sample_rate, problems,
                         speaker=id_.split("_")[0], noise_type=noise_type, snr=snr)  # fmt: skip
            if item is not None:
                items.append(item)
        return items


@dataclasses.dataclass(frozen=True)
class DNSChallenge(Corpus):
    """The DNS Challenge's training folders and synthetic test set (module docstring)."""

    layout = "DNS Challenge"
    splits = ("clean", "noise", "test")

    def split_present(self, split: str) -> bool:
        return (self.root / ("test_set/synthetic" if split == "test" else split)).is_dir()

    def _scan(self, split: str, problems: list, progress: bool) -> list:
        if split == "test":
            return self._test(problems, progress)
        folder = self.root / split
        if not folder.is_dir():
            problems.append(
                CorpusError(f"{folder}: missing; the DNS Challenge has clean/ and noise/")
            )
            return []
        paths = sorted(
            pathlib.Path(d, n).relative_to(folder)
            for d, _, names in os.walk(folder)
            for n in names
            if n.lower().endswith(".wav")
        )
        if not paths:
            problems.append(CorpusError(f"{folder}: no .wav files"))
        items = []
        for relative in self._progress(paths, split, progress):
            header = read_header(str(folder / relative), self.sample_rate, problems)
            reader = _DNS_READER.search(relative.name) if split == "clean" else None
            if header is not None:
                id_ = relative.with_suffix("").as_posix()
                items.append(Recording(id_, str(folder / relative), *header,
                                       speaker=reader.group(1) if reader else None))  # fmt: skip
        return items

    def _test(self, problems: list, progress: bool) -> list[NoisyPair]:
        synthetic = self.root / "test_set" / "synthetic"
        conditions = [c for c in DNS_TEST_CONDITIONS if (synthetic / c / "noisy").is_dir()]
        if not conditions:
            problems.append(
                CorpusError(
                    f"{synthetic}: no {{no_reverb,with_reverb}}/noisy/ of the synthetic test set"
                )
            )
            return []
        rows = []
        for condition in conditions:
            noisy_dir, clean_dir = synthetic / condition / "noisy", synthetic / condition / "clean"
            clean_names = files_with(clean_dir, (".wav",))
            paired = []
            for name in files_with(noisy_dir, (".wav",)):
                match = _DNS_NOISY.search(name)
                if match is None:
                    problems.append(
                        CorpusError(
                            f"{noisy_dir / name}: not named <...>_snr<S>_<...>_fileid_<N>.wav"
                        )
                    )
                    continue
                clean = f"clean_fileid_{match['n']}.wav"
                paired.append(clean)
                rows.append(
                    (
                        f"{condition}/fileid_{match['n']}",
                        noisy_dir / name,
                        clean_dir / clean,
                        float(match["snr"]),
                    )
                )
            _unpaired(paired, clean_names, clean_dir, problems)
        rows.sort(key=lambda row: (row[0].split("/")[0], int(row[0].rsplit("_", 1)[1])))
        items = []
        for id_, noisy, clean, snr in self._progress(rows, "test", progress):
            item = _pair(id_, noisy, clean, self.sample_rate, problems, snr=snr)
            if item is not None:
                items.append(item)
        return items


def _detect(folder: pathlib.Path) -> Corpus | None:
    names = set(subfolders(folder))
    sets = {f"{k}_{v}_wav" for k in ("clean", "noisy") for v in VOICEBANK_FOLDERS.values()}
    if names & sets:
        return VoiceBankDemand(folder, sample_rate=48000)
    if {"clean", "noise"} <= names or (folder / "test_set" / "synthetic").is_dir():
        return DNSChallenge(folder, sample_rate=16000)
    return None


def find(path: pathlib.Path) -> list[Corpus]:
    """The enhancement corpora at ``path`` or in one of its folders (module docstring)."""
    return here_or_one_below(path, _detect)

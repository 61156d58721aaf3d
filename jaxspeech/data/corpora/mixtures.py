"""Pre-mixed separation corpora as their generation scripts write them.

* wsj0-2mix / wsj0-3mix (MERL's ``create_wav_2speakers.m``):
  ``wav8k|wav16k/min|max/{tr,cv,tt}/{mix,s1,s2[,s3]}/<name>.wav``, the name
  ``<utt1>_<level1>_<utt2>_<level2>[...]`` of WSJ0 utterance ids (the speaker is an id's first
  three characters) and their relative levels in dB.
* WHAM! (``wham_scripts``): the same splits and names with ``mix_clean``, ``mix_both``,
  ``mix_single``, ``s1``, ``s2``, ``noise``; WHAMR! with ``mix_{clean,both,single}_{anechoic,
  reverb}``, ``s1_anechoic``, ``s2_anechoic`` (the references read), ``s1_reverb``, ...,
  ``noise``.
* LibriMix (``create_librimix_from_metadata.py``):
  ``Libri2Mix|Libri3Mix/wav8k|wav16k/min|max/{train-360,train-100,dev,test}/{mix_clean,
  mix_both,mix_single,s1,s2[,s3],noise}/<mixture_ID>.wav`` with
  ``metadata/mixture_<split>_<type>.csv`` (``mixture_ID,[original_mixture_ID,]mixture_path,
  source_1_path,...,[noise_path,]length``) and, when present, ``metrics_<split>_<type>.csv``
  (per-source and noise SNRs). The CSV's absolute paths are stale once the corpus is copied,
  so each is resolved as ``<split>/<folder>/<file>`` below the corpus folder. The CSV is the
  list of mixtures; a file it does not list is a problem, as is a listed file missing.

A corpus folder is one ``wav<R>k/<min|max>`` folder; :func:`find` also looks for them below
the folder given (e.g. ``Libri2Mix/`` holding ``wav8k/min`` and ``wav16k/min``).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import re

from jaxspeech.data.corpora.base import (
    Corpus,
    check_same_length,
    files_with,
    read_header,
    subfolders,
)
from jaxspeech.data.corpora.records import Mixture
from jaxspeech.errors import CorpusError

_RATE_FOLDER = re.compile(r"^wav(\d+)k$")
_LIBRIMIX_FOLDER = re.compile(r"^Libri(\d)Mix$")
_WSJ0_UTTERANCE = re.compile(r"^[0-9a-z]{8}$")
LIBRIMIX_SPLITS = ("train-360", "train-100", "dev", "test")
WSJ0_SPLITS = ("tr", "cv", "tt")
WHAM_MIXTURES = ("mix_clean", "mix_both", "mix_single")


@dataclasses.dataclass(frozen=True)
class MixtureCorpus(Corpus):
    """A ``wav<R>k/<min|max>`` folder of wsj0-mix, WHAM!, WHAMR! or LibriMix.

    Attributes:
      family: ``wsj0-2mix``, ``wsj0-3mix``, ``WHAM!``, ``WHAMR!``, ``Libri2Mix``, ...
      mode: ``min`` (mixtures cut to the shortest source) or ``max`` (zero-padded).
      n_src: number of speakers.
      mixture: the mixture folder read (``mix``, ``mix_clean``, ``mix_both_reverb``, ...).
      mixtures: every mixture folder the layout has.
    """

    family: str = "wsj0-2mix"
    mode: str = "min"
    n_src: int = 2
    mixture: str = "mix"
    mixtures: tuple[str, ...] = ("mix",)

    @property
    def layout(self) -> str:
        return self.family

    @property
    def splits(self) -> tuple[str, ...]:
        return LIBRIMIX_SPLITS if self.family.startswith("Libri") else WSJ0_SPLITS

    @property
    def name(self) -> str:
        return f"{self.family} wav{self.sample_rate // 1000}k/{self.mode} {self.mixture}"

    def with_mixture(self, mixture: str) -> MixtureCorpus:
        """The same corpus reading the mixture folder ``mixture`` (one of ``mixtures``)."""
        if mixture not in self.mixtures:
            raise CorpusError(
                f"{self.family} has no mixture {mixture!r}; use one of {self.mixtures}"
            )
        return dataclasses.replace(self, mixture=mixture)

    def reference_folders(self) -> tuple[tuple[str, ...], str | None]:
        """``(source folders, noise folder or None)`` of the mixture read."""
        suffix = "_anechoic" if self.family == "WHAMR!" else ""
        single = "_single" in self.mixture
        n_src = 1 if single else self.n_src
        sources = tuple(f"s{i + 1}{suffix}" for i in range(n_src))
        noisy = single or "_both" in self.mixture
        return sources, ("noise" if noisy else None)

    def _scan(self, split: str, problems: list, progress: bool) -> list[Mixture]:
        split_dir = self.root / split
        sources, noise = self.reference_folders()
        folders = (self.mixture, *sources, *([noise] if noise else []))
        missing = [f for f in folders if not (split_dir / f).is_dir()]
        if missing:
            problems.append(
                CorpusError(
                    f"{split_dir}: no {', '.join(f + '/' for f in missing)} folder; "
                    f"{self.family} has {split}/ holding {', '.join(f + '/' for f in folders)}"
                )
            )
            return []
        if self.family.startswith("Libri"):
            rows = self._librimix_rows(split, problems)
            listed = {pathlib.Path(row[1]).name for row in rows}
            for name in files_with(split_dir / self.mixture, (".wav",)):
                if name not in listed:
                    problems.append(
                        CorpusError(f"{split_dir / self.mixture / name}: not listed in the CSV")
                    )
        else:
            rows = self._wsj0_rows(split, sources, noise, problems)
        items = []
        for row in self._progress(rows, split, progress):
            item = self._mixture(*row, problems)
            if item is not None:
                items.append(item)
        return items

    def _mixture(self, mixture_id, path, source_paths, noise_path, expected, extra, problems):
        paths = [path, *source_paths, *([noise_path] if noise_path else [])]
        headers = [read_header(p, self.sample_rate, problems) for p in paths]
        if any(h is None for h in headers):
            return None
        lengths = [frames for frames, _ in headers]
        if expected is not None and lengths[0] != expected:
            problems.append(
                CorpusError(f"{path}: {lengths[0]} samples where the CSV says {expected}")
            )
            return None
        if not check_same_length(paths, lengths, problems):
            return None
        speakers, snrs, noise_snr = extra
        return Mixture(
            id=mixture_id,
            path=path,
            sources=tuple(source_paths),
            noise=noise_path,
            num_samples=lengths[0],
            sample_rate=self.sample_rate,
            speakers=speakers,
            snrs=snrs,
            noise_snr=noise_snr,
        )

    def _wsj0_rows(self, split, sources, noise, problems) -> list[tuple]:
        split_dir = self.root / split
        rows = []
        for name in files_with(split_dir / self.mixture, (".wav",)):
            parsed = _wsj0_name(name[: -len(".wav")], self.n_src)
            if parsed is None:
                problems.append(
                    CorpusError(
                        f"{split_dir / self.mixture / name}: not a {self.family} name "
                        f"(<utt1>_<dB1>_..._<utt{self.n_src}>_<dB{self.n_src}>.wav, WSJ0 "
                        "utterance ids of 8 characters)"
                    )
                )
                continue
            speakers, snrs = parsed
            if len(sources) == 1:
                speakers, snrs = speakers[:1], snrs[:1]
            paths = [str(split_dir / folder / name) for folder in sources]
            noise_path = str(split_dir / noise / name) if noise else None
            rows.append(
                (name[:-4], str(split_dir / self.mixture / name), paths, noise_path, None,
                 (speakers, snrs, None))
            )  # fmt: skip
        return rows

    def _librimix_rows(self, split, problems) -> list[tuple]:
        csv_path = self.root / "metadata" / f"mixture_{split}_{self.mixture}.csv"
        if not csv_path.is_file():
            problems.append(
                CorpusError(
                    f"{csv_path}: missing; LibriMix lists the mixtures of each split in "
                    "metadata/mixture_<split>_<type>.csv"
                )
            )
            return []
        sources, noise = self.reference_folders()
        columns = ["mixture_ID", "mixture_path"]
        columns += [f"source_{i + 1}_path" for i in range(len(sources))]
        columns += ["noise_path"] * bool(noise) + ["length"]
        table = _read_csv(csv_path, columns, problems)
        if table is None:
            return []
        metrics = self._librimix_metrics(split, problems)
        rows = []
        for line, row in enumerate(table, start=2):
            try:
                length = int(row["length"])
                mix_path = self._resolve(split, self.mixture, row["mixture_path"])
                paths = [
                    self._resolve(split, folder, row[f"source_{i + 1}_path"])
                    for i, folder in enumerate(sources)
                ]
                noise_path = self._resolve(split, noise, row["noise_path"]) if noise else None
            except (ValueError, TypeError) as err:
                problems.append(CorpusError(f"{csv_path} line {line}: {err}"))
                continue
            mixture_id = row["mixture_ID"]
            speakers = _librispeech_speakers(row.get("original_mixture_ID") or mixture_id)
            snrs, noise_snr = metrics.get(mixture_id, (None, None))
            extra = (speakers[: len(sources)], snrs, noise_snr)
            rows.append((mixture_id, mix_path, paths, noise_path, length, extra))
        return rows

    def _resolve(self, split: str, folder: str, stale: str) -> str:
        """``<root>/<split>/<folder>/<file>`` for a CSV path, wherever the corpus was made."""
        name = pathlib.PureWindowsPath(stale).name if "\\" in stale else pathlib.Path(stale).name
        if not name:
            raise ValueError(f"an empty path in the {folder} column")
        return str(self.root / split / folder / name)

    def _librimix_metrics(self, split: str, problems: list) -> dict:
        """``{mixture_ID: (source SNRs, noise SNR)}`` from the metrics CSV, when present."""
        path = self.root / "metadata" / f"metrics_{split}_{self.mixture}.csv"
        if not path.is_file():
            return {}
        sources, noise = self.reference_folders()
        columns = ["mixture_ID"] + [f"source_{i + 1}_SNR" for i in range(len(sources))]
        columns += ["noise_SNR"] * bool(noise)
        table = _read_csv(path, columns, problems)
        metrics = {}
        for line, row in enumerate(table or [], start=2):
            try:
                snrs = tuple(float(row[f"source_{i + 1}_SNR"]) for i in range(len(sources)))
                metrics[row["mixture_ID"]] = (snrs, float(row["noise_SNR"]) if noise else None)
            except (ValueError, TypeError) as err:
                problems.append(CorpusError(f"{path} line {line}: {err}"))
        return metrics


def _read_csv(path: pathlib.Path, columns: list[str], problems: list) -> list[dict] | None:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            problems.append(
                CorpusError(f"{path}: no column {', '.join(missing)}; expected {','.join(columns)}")
            )
            return None
        return list(reader)


def _wsj0_name(stem: str, n_src: int):
    """``(speakers, levels)`` of a wsj0-mix name, or None when it is not one."""
    parts = stem.split("_")
    if len(parts) != 2 * n_src or not all(_WSJ0_UTTERANCE.match(u) for u in parts[::2]):
        return None
    try:
        levels = tuple(float(level) for level in parts[1::2])
    except ValueError:
        return None
    return tuple(u[:3] for u in parts[::2]), levels


def _librispeech_speakers(mixture_id: str) -> tuple[str, ...]:
    """Speakers of a LibriMix ID ``<spk>-<chapter>-<utt>_<spk>-<chapter>-<utt>[...]``."""
    return tuple(utterance.split("-")[0] for utterance in mixture_id.split("_"))


def _variant_folders(path: pathlib.Path, depth: int = 3) -> list[pathlib.Path]:
    """Every ``wav<R>k/<min|max>`` folder at or up to ``depth`` levels below ``path``."""
    if path.name in ("min", "max") and _RATE_FOLDER.match(path.parent.name):
        return [path]
    if _RATE_FOLDER.match(path.name):
        return [path / mode for mode in subfolders(path) if mode in ("min", "max")]
    if depth == 0:
        return []
    return [v for sub in subfolders(path) for v in _variant_folders(path / sub, depth - 1)]


def find(path: pathlib.Path) -> list[MixtureCorpus]:
    """The separation corpora at or below ``path`` (module docstring), one per
    ``wav<R>k/<min|max>`` folder whose splits hold a known set of folders."""
    found = []
    for variant in _variant_folders(path):
        splits = subfolders(variant)
        rate = int(_RATE_FOLDER.match(variant.parent.name).group(1)) * 1000
        common = dict(root=variant, sample_rate=rate, mode=variant.name)
        libri = _LIBRIMIX_FOLDER.match(variant.parent.parent.name)
        if (variant / "metadata").is_dir() or set(splits) & set(LIBRIMIX_SPLITS):
            present = [s for s in LIBRIMIX_SPLITS if s in splits]
            folders = subfolders(variant / present[0]) if present else []
            n_src = int(libri.group(1)) if libri else _count_sources(folders)
            mixtures = tuple(m for m in WHAM_MIXTURES if m in folders) or ("mix_clean",)
            found.append(
                MixtureCorpus(**common, family=f"Libri{n_src}Mix", n_src=n_src,
                              mixture=mixtures[0], mixtures=mixtures)
            )  # fmt: skip
            continue
        present = [s for s in WSJ0_SPLITS if s in splits]
        if not present:
            continue
        folders = subfolders(variant / present[0])
        if "mix" in folders:
            n_src = _count_sources(folders)
            family, mixtures = f"wsj0-{n_src}mix", ("mix",)
        elif any(f.endswith(("_anechoic", "_reverb")) and f.startswith("mix_") for f in folders):
            family, n_src = "WHAMR!", 2
            mixtures = tuple(
                f"{m}_{space}" for space in ("anechoic", "reverb") for m in WHAM_MIXTURES
                if f"{m}_{space}" in folders
            )  # fmt: skip
        elif set(folders) & set(WHAM_MIXTURES):
            family, n_src = "WHAM!", 2
            mixtures = tuple(m for m in WHAM_MIXTURES if m in folders)
        else:
            continue
        found.append(
            MixtureCorpus(**common, family=family, n_src=n_src, mixture=mixtures[0],
                          mixtures=mixtures)
        )  # fmt: skip
    return found


def _count_sources(folders: list[str]) -> int:
    return sum(1 for i in range(1, 10) if f"s{i}" in folders) or 2

"""Labelled pairs of audio files listed in a CSV, for matching recipes (speech <-> music).

The CSV has a header row; two of its columns hold audio paths and one a label, 0 or 1, or any
number in [0, 1] with ``graded_labels`` (the column names are in the config; other columns are
ignored, except an optional group column, e.g. the speaker of the first file). Paths are
relative to the CSV's folder (``paths_relative_to="csv"``) or to the data root (``"root"``);
absolute paths are taken as they are. The whole file is checked when it is read: missing
columns, empty cells, missing audio files and bad labels are reported together, each with its
line.

Splits keep items disjoint. With ``disjoint="first"`` every pair of one first-column file
(e.g. one story clip and all the music it was rated against) lands in one split; with
``"both"`` no file of either column is in two splits (pairs linked through shared files form
one group). Groups are shuffled with the seed and dealt out in the numbers of
``corpus.split_sizes``. With ``"each"`` the groups of first files (by the group column, else
one per file) and the second files are dealt out separately; a pair is kept in a split when
both its sides fall in that split, and pairs across splits are left out (for a grid of every
recording against every track: no speaker and no track of the test split is seen in training,
on either side).

``PairData.source(split)`` is a grain random-access source: item ``i`` is a pure function of
``i`` (``first`` and ``second``: the centred ``crop_seconds`` crop of each file, zero-padded
when shorter, or a caller-given per-file feature function of the whole file; ``label``).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import threading
from collections.abc import Callable, Sequence

import grain
import numpy as np

from jaxspeech.data.corpus import SPLITS, data_path, resolve_data_root, split_sizes
from jaxspeech.data.mixing import AudioCache, crop_image
from jaxspeech.data.source import StreamOptions, batch_examples, training_stream
from jaxspeech.errors import ConfigError

#: What relative paths in the CSV are relative to.
PATH_BASES = ("csv", "root")
#: Which files splits keep apart (see the module docstring).
DISJOINT = ("first", "both", "each")
#: Row problems quoted in one error before the rest are counted.
_PROBLEMS_SHOWN = 10


@dataclasses.dataclass(frozen=True, order=True)
class Pair:
    """One row of a pairs CSV: two audio files, a label in [0, 1], the row's line in the file
    and the group of the first file ("" when the CSV names none)."""

    first: str
    second: str
    label: float
    line: int
    first_group: str = ""


@dataclasses.dataclass(frozen=True)
class PairDataConfig:
    """The data section of a matching task trained on labelled pairs from a CSV.

    Attributes:
      root: the data root, or None to look it up when the data are read
        (``corpus.resolve_data_root``: ``$JAXSPEECH_DATA``, else ``../shared/data``).
      csv: the CSV file, relative to the data root or absolute.
      first_column, second_column: the columns of the two audio paths.
      label_column: the column of the labels (0 or 1; in [0, 1] with ``graded_labels``).
      graded_labels: accept any label in [0, 1], not only 0 and 1.
      first_group_column: a column grouping first files for the splits (e.g. the speaker),
        or "" for one group per file.
      paths_relative_to: "csv" (the CSV's folder) or "root" (the data root).
      sample_rate: every file is resampled to this rate (Hz) and downmixed to mono.
      crop_seconds: length of the centred crop of each file (unused with a feature function).
      split_fractions: train/valid/test shares of the groups of pairs.
      split_seed: seed of the split.
      disjoint: "first", "both" or "each": which files the splits keep apart.
      valid_size: validation pairs (rounded down to whole batches).
    """

    root: str | None = None
    csv: str = ""
    first_column: str = "audio"
    second_column: str = "music"
    label_column: str = "label"
    graded_labels: bool = False
    first_group_column: str = ""
    paths_relative_to: str = "csv"
    sample_rate: int = 16000
    crop_seconds: float = 10.0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    disjoint: str = "first"
    valid_size: int = 512

    def __post_init__(self):
        if self.paths_relative_to not in PATH_BASES:
            raise ConfigError(
                f"data.paths_relative_to={self.paths_relative_to!r}; use one of {PATH_BASES}"
            )
        if self.disjoint not in DISJOINT:
            raise ConfigError(f"data.disjoint={self.disjoint!r}; use one of {DISJOINT}")
        if self.sample_rate <= 0 or round(self.crop_seconds * self.sample_rate) < 1:
            raise ConfigError(
                "data.sample_rate and data.crop_seconds must give at least one sample, got "
                f"{self.sample_rate} Hz x {self.crop_seconds} s"
            )

    @property
    def num_samples(self) -> int:
        """Samples per crop."""
        return round(self.crop_seconds * self.sample_rate)


def _label(text: str, graded: bool) -> tuple[float | None, str]:
    """``(label, "")`` for "0" / "1" (any spelling of those numbers; with ``graded`` any
    number in [0, 1]), else ``(None, why)``."""
    try:
        value = float(text)
    except ValueError:
        return None, f"label {text!r} is not a number"
    if graded and not 0.0 <= value <= 1.0:
        return None, f"label {text!r} is not in [0, 1]"
    if not graded and value not in (0.0, 1.0):
        return None, f"label {text!r} is not 0 or 1"
    return value, ""


def read_pairs(
    csv_path: str | os.PathLike,
    first_column: str,
    second_column: str,
    label_column: str,
    base: str | os.PathLike,
    graded: bool = False,
    group_column: str = "",
) -> list[Pair]:
    """Reads and checks every row of a pairs CSV.

    Args:
      csv_path: the CSV file (header row first).
      first_column, second_column, label_column: the column names.
      base: the folder relative paths are relative to.
      graded: accept labels in [0, 1], not only 0 and 1.
      group_column: the column of the first files' groups, or "" for none.

    Returns:
      The pairs in file order, with absolute, normalised paths (so a file written two ways
      is one item to the splits).

    Raises:
      ConfigError: the file is missing or empty, a column is missing, or rows have empty
        cells, missing audio files or labels that are not 0 or 1 (in [0, 1] when ``graded``),
        all listed, with lines.
    """
    csv_path, base = pathlib.Path(csv_path), pathlib.Path(base)
    columns = (first_column, second_column, label_column, *([group_column] if group_column else []))
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path}: no such pairs CSV; check data.csv and the data root")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(
                f"{csv_path}: no column(s) {', '.join(map(repr, missing))} in the header "
                f"{reader.fieldnames}; name them in the first row or set data.first_column, "
                "data.second_column, data.label_column and data.first_group_column"
            )
        pairs, problems = [], []
        for row in reader:
            where = f"{csv_path} line {reader.line_num}"
            paths = []
            for column in columns[:2]:
                cell = (row[column] or "").strip()
                path = pathlib.Path(os.path.abspath(base / cell))  # one spelling per file
                if not cell:
                    problems.append(f"{where}: empty {column!r}")
                elif not path.is_file():
                    problems.append(f"{where}: {column!r} file {path} does not exist")
                paths.append(os.fspath(path))
            label, why = _label((row[label_column] or "").strip(), graded)
            if why:
                problems.append(f"{where}: {why}")
            group = (row[group_column] or "").strip() if group_column else ""
            pairs.append(Pair(paths[0], paths[1], label, reader.line_num, group))
    if problems:
        shown = "\n  ".join(problems[:_PROBLEMS_SHOWN])
        more = len(problems) - _PROBLEMS_SHOWN
        raise ConfigError(
            f"{csv_path}: {len(problems)} bad cell(s):\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nFix the rows: paths relative to {base} (or absolute) of existing audio files, "
            + ("labels in [0, 1]" if graded else "labels 0 or 1")
        )
    if not pairs:
        raise ConfigError(f"{csv_path}: no rows below the header; list at least one pair")
    return pairs


def _groups(pairs: Sequence[Pair], disjoint: str) -> list[list[Pair]]:
    """Pairs grouped so that no file kept apart (``disjoint``) is in two groups: by first file
    (or its group), or (``"both"``) by the connected components of files linked by pairs.
    Each group sorted, groups in the order of their first pair."""
    parent: dict[str, str] = {}

    def find(path: str) -> str:
        while parent.setdefault(path, path) != path:
            parent[path] = parent[parent[path]]  # path halving
            path = parent[path]
        return path

    for pair in pairs:
        if pair.first_group:
            parent[find(pair.first)] = find("\0group:" + pair.first_group)
        if disjoint == "both":
            parent[find(pair.second)] = find(pair.first)
    groups: dict[str, list[Pair]] = {}
    for pair in sorted(pairs):
        groups.setdefault(find(pair.first), []).append(pair)
    return list(groups.values())


def _deal(keys: Sequence[str], fractions, rng: np.random.Generator, what: str) -> dict[str, str]:
    """``{key: split}``: the sorted ``keys`` shuffled and dealt out by ``split_sizes``."""
    keys = sorted(keys)
    sizes = split_sizes(len(keys), fractions, "split_pairs", what)
    order, bounds = rng.permutation(len(keys)), np.cumsum([0, *sizes])
    return {
        keys[i]: name for k, name in enumerate(SPLITS) for i in order[bounds[k] : bounds[k + 1]]
    }


def _split_each(pairs: Sequence[Pair], fractions, seed: int) -> dict[str, list[Pair]]:
    """``disjoint="each"`` (see the module docstring)."""
    shared = {p.first for p in pairs} & {p.second for p in pairs}
    if shared:
        raise ConfigError(
            f"split_pairs: disjoint='each' needs separate first and second files, but "
            f"{sorted(shared)[0]} (and {len(shared) - 1} more) is in both columns; use "
            "disjoint='both'"
        )
    rng = np.random.default_rng(seed)
    first = _deal({p.first_group or p.first for p in pairs}, fractions, rng, "first-file groups")
    second = _deal({p.second for p in pairs}, fractions, rng, "second files")
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in sorted(pairs):
        side = first[pair.first_group or pair.first]
        if side == second[pair.second]:
            splits[side].append(pair)
    return splits


def split_pairs(
    pairs: Sequence[Pair],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    disjoint: str = "first",
) -> dict[str, list[Pair]]:
    """Splits pairs into ``train`` / ``valid`` / ``test`` sets that share no item.

    Args:
      pairs: e.g. from ``read_pairs``.
      fractions: ``(train, valid, test)`` shares of the groups of pairs.
      seed: shuffling seed.
      disjoint: "first" (no first-column file, or group, in two splits), "both" (no file at
        all) or "each" (no first group and no second file in two splits; pairs across
        splits are left out).

    Returns:
      ``{"train": [...], "valid": [...], "test": [...]}``, each sorted; the result depends
      only on the set of pairs, the fractions and the seed.

    Raises:
      ConfigError: bad fractions or ``disjoint``, or too few groups for the splits.
    """
    if disjoint not in DISJOINT:
        raise ConfigError(f"split_pairs: disjoint={disjoint!r}; use one of {DISJOINT}")
    if disjoint == "each":
        return _split_each(pairs, fractions, seed)
    groups = _groups(pairs, disjoint)
    sizes = split_sizes(len(groups), fractions, "split_pairs", f"groups of pairs ({disjoint=})")
    order = np.random.default_rng(seed).permutation(len(groups))
    bounds = np.cumsum([0, *sizes])
    return {
        name: sorted(p for i in order[bounds[k] : bounds[k + 1]] for p in groups[i])
        for k, name in enumerate(SPLITS)
    }


class PairSource:
    """grain random-access source of labelled pairs (``len`` and ``[i]``).

    Args:
      pairs: the pairs.
      sample_rate: files are resampled to it and downmixed to mono.
      num_samples: length of the centred crop of each file, when ``features`` is None.
      features: a function of a whole file's audio ``[n]`` at ``sample_rate`` returning an
        array; its results are kept per file (a file is usually in many pairs).

    Item ``i`` is ``first``, ``second`` (float32 ``[num_samples]`` crops, or the features of
    each file) and ``label`` (float32 scalar in [0, 1]).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        sample_rate: int,
        num_samples: int,
        features: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.num_samples, self.features = num_samples, features
        self.audio = AudioCache(sample_rate)
        self._features: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.pairs)

    def files(self) -> list[str]:
        """Every file of the source's pairs, either column, sorted."""
        return sorted({p.first for p in self.pairs} | {p.second for p in self.pairs})

    def file_item(self, path: str) -> np.ndarray:
        """The crop or the features of one file."""
        wav = self.audio(path)
        if self.features is None:
            start = (len(wav) - self.num_samples) // 2  # negative: centred zero-padding
            return crop_image(wav, start, self.num_samples).astype(np.float32)
        with self._lock:
            cached = self._features.get(path)
        if cached is None:
            cached = np.asarray(self.features(wav))
            with self._lock:
                self._features[path] = cached
        return cached

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        pair = self.pairs[index]
        return {
            "first": self.file_item(pair.first),
            "second": self.file_item(pair.second),
            "label": np.float32(pair.label),
        }

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_features", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state, _features={}, _lock=threading.Lock())


class _Lookup(grain.transforms.MapWithIndex):
    """grain transform: (stream position, pair index) -> the pair's arrays."""

    def __init__(self, source: PairSource):
        self.source = source

    def map_with_index(self, index: int, element: int) -> dict[str, np.ndarray]:
        del index  # a pair's arrays do not depend on its position
        return self.source[element]


class PairData:
    """A matching task's data: the checked pairs of ``cfg.csv`` (or pairs the caller made),
    their disjoint splits, and a grain source per split (one per split, so a feature function
    runs once per file).

    Args:
      cfg: the data section.
      batch_size: the global training batch size.
      features: optional per-file feature function (see ``PairSource``); crops otherwise.
      pairs: the labelled pairs, when they come from elsewhere than ``cfg.csv``.
    """

    def __init__(
        self,
        cfg: PairDataConfig,
        batch_size: int,
        features: Callable[[np.ndarray], np.ndarray] | None = None,
        pairs: Sequence[Pair] | None = None,
    ) -> None:
        self.cfg, self.batch_size, self.features = cfg, batch_size, features
        if pairs is not None:
            self.pairs = list(pairs)
        else:
            if not cfg.csv:
                raise ConfigError("data.csv is empty; give the CSV file of labelled pairs")
            csv_path = data_path(cfg.csv, cfg.root)
            if cfg.paths_relative_to == "csv":
                base = csv_path.parent
            else:
                base = resolve_data_root(cfg.root)
            columns = (cfg.first_column, cfg.second_column, cfg.label_column)
            self.pairs = read_pairs(
                csv_path, *columns, base, cfg.graded_labels, cfg.first_group_column
            )
        self.splits = split_pairs(self.pairs, cfg.split_fractions, cfg.split_seed, cfg.disjoint)
        self._sources: dict[str, PairSource] = {}

    def source(self, split: str) -> PairSource:
        """The random-access source of ``split`` ("train", "valid" or "test")."""
        if split not in self.splits:
            raise ConfigError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        if split not in self._sources:
            self._sources[split] = PairSource(
                self.splits[split], self.cfg.sample_rate, self.cfg.num_samples, self.features
            )
        return self._sources[split]

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """The endless, shuffled training stream of this process."""
        options = StreamOptions(
            self.batch_size, seed, process_index, process_count, None, read_options
        )
        transform = _Lookup(self.source("train"))
        return training_stream(len(transform.source), transform, options, "PairData")

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        """``cfg.valid_size`` validation pairs drawn with the split seed, in whole batches."""
        source, batch = self.source("valid"), self.batch_size
        size = min(self.cfg.valid_size, len(source)) // batch * batch
        if size == 0:
            raise ConfigError(
                f"{len(source)} validation pairs do not fill one batch of {batch}; raise "
                "data.split_fractions' valid share or lower train.batch_size"
            )
        order = np.random.default_rng(self.cfg.split_seed).permutation(len(source))
        return batch_examples([source[int(i)] for i in order[:size]], batch)

    def test_items(self, split: str) -> list[dict]:
        """Every pair of ``split``: its arrays, ``id`` (``<line in the CSV>``, or the index
        for pairs given by the caller) and ``info`` (the two files, the first's group)."""
        source = self.source(split)
        return [
            {
                **source[i],
                "id": str(pair.line),
                "info": {"first": pair.first, "second": pair.second, "group": pair.first_group},
            }
            for i, pair in enumerate(source.pairs)
        ]

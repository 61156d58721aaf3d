"""The one interface every system's data implements, and the training stream they share.

A data source (:class:`DataSource`) gives a task three things and its rate:

* ``train_dataset(process_index, process_count, seed)``: this process's endless stream of
  training batches (a ``grain.IterDataset`` whose iterator state is checkpointed);
* ``valid_batches()``: the fixed validation set in global batches;
* ``test_items(split, ...)``: the examples of a held-out split, each a dict of arrays plus
  ``id`` (a string unique within the split: a corpus's own ID where it has one) and ``info``
  (plain metadata: speakers, genders, SNR, files), so an evaluation writes one row per item
  and groups rows by any metadata field;
* ``sample_rate``: the rate of every array it yields (files at other rates are resampled).

Implementations: ``pipeline.MixtureData`` (on-the-fly mixtures), ``premixed.PremixedData``
(pre-mixed corpora: LibriMix, wsj0-mix, WHAM!), ``noisy_pairs.NoisyPairData`` (noisy/clean
pairs: VoiceBank-DEMAND, DNS Challenge), ``utterances.UtteranceData`` (labelled crops by
speaker), ``av.AVData`` (talking faces) and ``pairs.PairData`` (labelled pairs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import grain
import numpy as np

from jaxspeech.errors import ConfigError, TooShortError


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How a training stream is cut, shuffled and read.

    Attributes:
      batch_size: the GLOBAL batch size; each process yields ``batch_size // process_count``.
      seed: fixes the shuffles (and, through the transform, every example).
      process_index, process_count: this process and the number of processes.
      num_epochs: None repeats forever.
      read_options: grain threading/prefetch; None: one background thread, two batches ahead.
    """

    batch_size: int
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    num_epochs: int | None = None
    read_options: grain.ReadOptions | None = None

    def check(self, what: str) -> None:
        """ConfigError naming ``what`` for a seed, process or batch size out of range."""
        check_seed(self.seed)
        if not 0 <= self.process_index < self.process_count:
            raise ConfigError(
                f"{what}: process_index {self.process_index} not in [0, {self.process_count})"
            )
        if self.batch_size < self.process_count or self.batch_size % self.process_count:
            raise ConfigError(
                f"{what}: global batch_size {self.batch_size} must be a positive multiple of "
                f"process_count {self.process_count}"
            )


def check_valid_size(valid_size: int, batch_size: int) -> None:
    """ConfigError unless the validation set fills whole global batches."""
    if valid_size % batch_size:
        raise ConfigError(
            f"data.valid_size={valid_size} must be a multiple of train.batch_size={batch_size}"
        )


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {seed}")


def training_stream(
    n_items: int, transform: grain.transforms.MapWithIndex, options: StreamOptions, what: str
) -> grain.IterDataset:
    """The shuffled, repeated, per-process batched stream of ``transform`` applied to
    ``(stream position, item index)`` for items ``range(n_items)``.

    Args:
      transform: makes one example (a dict of arrays) from its position in the global stream
        and the item index; seed its randomness from ``(options.seed, position)``.
      options: batch size, seed, processes, epochs, grain reading.
      what: the caller, named in errors.

    Returns:
      A ``grain.IterDataset`` of batched dicts whose iterators support ``get_state()`` /
      ``set_state()``.
    """
    options.check(what)
    ds = grain.MapDataset.range(n_items).seed(options.seed).shuffle()
    ds = ds.repeat(options.num_epochs).map_with_index(transform)
    ds = ds[options.process_index :: options.process_count]
    ds = ds.batch(options.batch_size // options.process_count, drop_remainder=True)
    return ds.to_iter_dataset(
        options.read_options or grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
    )


def crop(wav: np.ndarray, start: int, length: int) -> np.ndarray:
    """``wav[start : start + length]`` (float32) zero-padded at the end when ``wav`` is
    shorter."""
    out = np.zeros(length, np.float32)
    piece = wav[start : start + length]
    out[: len(piece)] = piece
    return out


def long_enough(items: Sequence, seconds: float, what: str, noun: str) -> list:
    """The ``items`` (corpus records with ``seconds``) at least one crop of ``seconds`` long;
    how many others are left out of training is printed (``what``: the corpus and split,
    ``noun``: what the items are).

    Raises:
      TooShortError: every item is shorter.
    """
    kept = [item for item in items if item.seconds >= seconds]
    if not kept:
        raise TooShortError(
            f"every one of the {len(items)} {noun} of {what} is shorter than the {seconds:g} s "
            "crop; lower data.segment_seconds"
        )
    if len(kept) < len(items):
        print(
            f"{what}: {len(items) - len(kept)} of {len(items)} {noun} shorter than {seconds:g} s "
            "left out of training",
            flush=True,
        )
    return kept


def arrays(example: dict) -> dict[str, np.ndarray]:
    """The array entries of an example (drops ``id`` and ``info``)."""
    return {k: v for k, v in example.items() if isinstance(v, np.ndarray | np.generic)}


def batch_examples(examples: Sequence[dict], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Stacks the arrays of ``examples`` into batches of ``batch_size`` (``id``, ``info``
    dropped).

    Raises:
      ConfigError: no examples, or their number is not a multiple of ``batch_size`` (static
        shapes: choose the set size as a multiple of the batch size).
    """
    if not examples or batch_size < 1 or len(examples) % batch_size:
        raise ConfigError(
            f"batch_examples: {len(examples)} examples do not fill batches of {batch_size}; "
            "make the set size a positive multiple of the batch size"
        )
    parts = [arrays(e) for e in examples]
    return [
        {k: np.stack([a[k] for a in parts[i : i + batch_size]]) for k in parts[0]}
        for i in range(0, len(parts), batch_size)
    ]


def length_batches(examples: Sequence[dict], batch_size: int) -> list[dict[str, np.ndarray]]:
    """The arrays of ``examples`` stacked into batches of at most ``batch_size`` consecutive
    examples of one length (whole-file test sets: every batch has static shapes)."""
    batches, run = [], []
    for example in examples:
        if run and (len(run) == batch_size or _shapes(run[0]) != _shapes(example)):
            batches.extend(batch_examples(run, len(run)))
            run = []
        run.append(example)
    if run:
        batches.extend(batch_examples(run, len(run)))
    return batches


def _shapes(example: dict) -> dict[str, tuple[int, ...]]:
    return {k: np.shape(v) for k, v in arrays(example).items()}


def with_ids(examples: Sequence[dict], split: str) -> list[dict]:
    """``examples`` with ``id`` ``<split>-<index, 6 digits>`` (sets drawn, not listed)."""
    return [{**example, "id": f"{split}-{i:06d}"} for i, example in enumerate(examples)]


class DataSource(Protocol):
    """What every system's data provides (see the module docstring)."""

    sample_rate: int

    def train_dataset(
        self,
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
        read_options: grain.ReadOptions | None = None,
    ) -> grain.IterDataset:
        """This process's endless stream of training batches (``read_options``: grain's
        threads and prefetch, see ``StreamOptions``)."""

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        """The fixed validation set in global batches."""

    def test_items(self, split: str) -> list[dict]:
        """The examples of ``split``, each with ``id`` and ``info`` besides its arrays
        (sources may take keyword options: sizes, SNR grids, lengths)."""


def corpus_folder(cfg, batch_size: int) -> str:
    """The folder of the corpus a corpus-backed data section reads (``cfg.corpus`` below
    ``cfg.root``), once the section names one and its validation set fills whole batches."""
    from jaxspeech.data.corpus import data_path

    if not cfg.corpus:
        raise ConfigError("data.corpus is empty; give the corpus folder below data.root")
    check_valid_size(cfg.valid_size, batch_size)
    return data_path(cfg.corpus, cfg.root)


class SplitListing:
    """A corpus reader's items per split, listed once (with a progress bar), then kept:
    ``listing(split) -> list``."""

    def __init__(self, corpus) -> None:
        self.corpus, self._items = corpus, {}

    def __call__(self, split: str) -> list:
        if split not in self._items:
            self._items[split] = self.corpus.items(split, progress=True)
        return self._items[split]

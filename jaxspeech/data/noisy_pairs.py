"""Noisy/clean pair corpora (VoiceBank-DEMAND, the DNS Challenge) as a data source.

The corpus folder (``data.corpus`` below the data root, a layout of
``jaxspeech.data.corpora.enhancement``) gives :class:`NoisyPairData` (``source.DataSource``).
Every example holds ``mixture`` [T] (the noisy speech), ``sources`` [1, T] (the clean
reference) and ``noise`` [T] (``mixture − clean``), every file resampled to the model's
``sample_rate`` (VoiceBank-DEMAND is 48 kHz; resampling is linear, so the noise stays the
difference of the two):

* VoiceBank-DEMAND: training crops ``segment_seconds`` long at one random place in a noisy
  file and its clean reference, from the trainset's pairs; validation: the pairs of the
  trainset speakers ``valid_speakers`` (p226 and p287 by default, a common choice), left out of
  training, ``valid_size`` crops drawn with the split seed; testing: every testset pair whole,
  with its ID (``p232_001``), speaker, noise and SNR (from the corpus's log files).
* DNS Challenge: training mixes ``clean/`` speech with ``noise/`` recordings on the fly
  (``mixing.make_mixture``: a crop of one file at an active level drawn from
  ``level_db_range`` dBFS, a noise crop at an SNR drawn from ``snr_db_range``); validation: a
  fixed set of ``valid_size`` such mixtures of the readers and noise files held out by
  ``valid_fraction`` (readers apart; a clean file whose name gives no reader counts as its
  own); testing: the synthetic test set's pairs whole, IDs ``no_reverb/fileid_<N>`` and the
  SNR of their names.

Training leaves out every file shorter than a crop and prints once how many (VoiceBank's
utterances last about 1 to 15 s); a training split left empty is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import grain
import numpy as np

from jaxspeech.data.corpus import Utterance, split_files, split_speakers
from jaxspeech.data.mixing import AudioCache, MixtureConfig
from jaxspeech.data.pipeline import fixed_mixture_set, mixture_dataset
from jaxspeech.data.source import (
    SplitListing,
    StreamOptions,
    batch_examples,
    corpus_folder,
    crop,
    long_enough,
    training_stream,
    with_ids,
)
from jaxspeech.errors import ConfigError

SPLITS = ("valid", "test")
_TRAIN_STREAM, _VALID_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class NoisyPairDataConfig:
    """The data section of an enhancement task trained on a noisy/clean pair corpus.

    Attributes:
      root: the data root (None: ``corpus.resolve_data_root`` when the data are read).
      corpus: the corpus folder below the data root (or absolute), holding a VoiceBank-DEMAND
        or DNS Challenge layout (``jaxspeech data check`` names it).
      sample_rate: the model's rate; files at other rates are resampled.
      segment_seconds: training crop length; shorter files are left out of training.
      valid_speakers: VoiceBank-DEMAND: the trainset speakers held out for validation.
      valid_fraction: DNS: the share of readers and of noise files held out for validation.
      snr_db_range, level_db_range: DNS: the SNR (dB) and the clean speech's active level
        (dBFS) of the mixtures made on the fly.
      valid_size: validation crops (a multiple of the batch size).
      split_seed: seed of the validation split, crops and mixtures.
    """

    root: str | None = None
    corpus: str = ""
    sample_rate: int = 16000
    segment_seconds: float = 2.0
    valid_speakers: tuple[str, ...] = ("p226", "p287")
    valid_fraction: float = 0.05
    snr_db_range: tuple[float, float] = (0.0, 40.0)
    level_db_range: tuple[float, float] = (-35.0, -15.0)
    valid_size: int = 32
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.num_samples < 1:
            raise ConfigError(
                "data.sample_rate and data.segment_seconds must give at least one sample, got "
                f"{self.sample_rate} Hz x {self.segment_seconds} s"
            )
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction={self.valid_fraction} must be in (0, 1)")

    @property
    def num_samples(self) -> int:
        """Samples per training crop."""
        return round(self.segment_seconds * self.sample_rate)

    @property
    def mixture(self) -> MixtureConfig:
        """How the DNS Challenge's training mixtures are made (``mixing.make_mixture``)."""
        return MixtureConfig(
            sample_rate=self.sample_rate,
            segment_seconds=self.segment_seconds,
            level_db_range=self.level_db_range,
            noise_snr_db_range=self.snr_db_range,
        )


def open_pair_corpus(path):
    """The VoiceBank-DEMAND or DNS Challenge corpus at ``path`` (or one folder below it);
    ConfigError when the folder holds another kind of corpus."""
    from jaxspeech.data.corpora import open_corpus
    from jaxspeech.data.corpora.enhancement import DNSChallenge, VoiceBankDemand

    corpus = open_corpus(path)
    if not isinstance(corpus, VoiceBankDemand | DNSChallenge):
        raise ConfigError(
            f"{path} is {corpus.name}, not a noisy/clean pair corpus (VoiceBank-DEMAND, DNS "
            "Challenge)"
        )
    return corpus


def pair_example(pair, audio: AudioCache, length: int | None = None, rng=None) -> dict:
    """``mixture`` [T], ``sources`` [1, T], ``noise`` [T] of a ``NoisyPair``: the whole files
    (``length`` None), or a crop of ``length`` samples at a start drawn from ``rng``, the same
    in both files (zero-padded at the end when shorter)."""
    noisy, clean = audio(pair.noisy), audio(pair.clean)
    if length is None:
        start, length = 0, len(noisy)
    else:
        start = int(rng.integers(0, max(len(noisy) - length, 0) + 1))
    noisy, clean = crop(noisy, start, length), crop(clean, start, length)
    return {"mixture": noisy, "sources": clean[None], "noise": noisy - clean}


class _PairCropper(grain.transforms.MapWithIndex):
    """grain transform: (stream position, pair index) -> an aligned crop (``pair_example``)."""

    def __init__(self, pairs, length: int, sample_rate: int, seed: int):
        self.pairs, self.length, self.seed = list(pairs), length, seed
        self.audio = AudioCache(sample_rate)

    def map_with_index(self, index: int, element: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, _TRAIN_STREAM, index))
        return pair_example(self.pairs[element], self.audio, self.length, rng)


class NoisyPairData:
    """A pair corpus's training stream, validation batches and test items (module docstring).

    Args:
      cfg: the data section.
      batch_size: the global training batch size.
    """

    def __init__(self, cfg: NoisyPairDataConfig, batch_size: int) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        self.corpus = open_pair_corpus(corpus_folder(cfg, batch_size))
        self.fixed_pairs = self.corpus.layout == "VoiceBank-DEMAND"
        self._listed = SplitListing(self.corpus)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @functools.cached_property
    def splits(self) -> dict[str, list]:
        """``{"train", "valid": ...}``: VoiceBank's ``NoisyPair``s, or the DNS clean speech as
        ``Utterance``s (speaker: the reader), split as the module docstring says."""
        if self.fixed_pairs:
            pairs, held_out = self._listed("train"), set(self.cfg.valid_speakers)
            valid = [p for p in pairs if p.speaker in held_out]
            if not valid:
                present = sorted({p.speaker for p in pairs})
                raise ConfigError(
                    f"{self.corpus.name} train in {self.corpus.root} has no pairs of "
                    f"data.valid_speakers {list(self.cfg.valid_speakers)}; its speakers: "
                    f"{present}"
                )
            return {"train": [p for p in pairs if p.speaker not in held_out], "valid": valid}
        utterances = [
            Utterance(r.path, r.speaker or r.id, None, r.num_samples, r.sample_rate)
            for r in self._listed("clean")
        ]
        share = self.cfg.valid_fraction
        return split_speakers(utterances, (1.0 - share, share, 0.0), self.cfg.split_seed)

    @functools.cached_property
    def noises(self) -> dict[str, list[str]]:
        """DNS: ``{"train", "valid": noise files}``, split by ``valid_fraction``."""
        files = [recording.path for recording in self._listed("noise")]
        share = self.cfg.valid_fraction
        return split_files(files, (1.0 - share, share, 0.0), self.cfg.split_seed)

    @functools.cached_property
    def train_items(self) -> list:
        """The training pairs (or DNS utterances) at least one crop long; the others are
        counted and printed (once)."""
        what = f"{self.corpus.name} {'train' if self.fixed_pairs else 'clean'}"
        return long_enough(self.splits["train"], self.cfg.segment_seconds, what, "training files")

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """The endless training stream of this process: aligned crops of the pairs (VoiceBank)
        or mixtures made on the fly (DNS)."""
        options = StreamOptions(
            self.batch_size, seed, process_index, process_count, None, read_options
        )
        items = self.train_items
        if not self.fixed_pairs:
            return mixture_dataset(
                self.cfg.mixture, items, self.noises["train"], [], options, n_src=1
            )
        maker = _PairCropper(items, self.cfg.num_samples, self.sample_rate, seed)
        return training_stream(len(items), maker, options, "NoisyPairData")

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        """``valid_size`` crops of the held-out pairs (or DNS mixtures), drawn with the split
        seed, in batches."""
        return batch_examples(self._valid_crops(), self.batch_size)

    def _valid_crops(self) -> list[dict]:
        size, seed = self.cfg.valid_size, self.cfg.split_seed
        if not self.fixed_pairs:
            utterances, noises = self.splits["valid"], self.noises["valid"]
            return fixed_mixture_set(self.cfg.mixture, utterances, noises, [], size, seed, n_src=1)
        pairs = self.splits["valid"]
        rng = np.random.default_rng((seed, _VALID_STREAM))
        chosen = rng.choice(len(pairs), size, replace=len(pairs) < size)
        audio = AudioCache(self.sample_rate)
        return [pair_example(pairs[int(i)], audio, self.cfg.num_samples, rng) for i in chosen]

    def test_items(self, split: str = "test") -> list[dict]:
        """``test``: every pair of the corpus's test split, whole, with its ID and ``info``
        (``speaker``, ``noise``, ``snr_db``: None where the corpus does not say; ``path``: the
        noisy file). ``valid``: VoiceBank's held-out pairs the same way, or the DNS validation
        mixtures (IDs ``valid-<index>``, ``path`` the clean file)."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
        if split == "valid" and not self.fixed_pairs:
            mixtures = [
                {key: m[key] for key in ("mixture", "sources", "noise")}
                | {"info": _mixture_info(m)}
                for m in self._valid_crops()
            ]
            return with_ids(mixtures, split)
        pairs = self.splits["valid"] if split == "valid" else self._listed("test")
        audio = AudioCache(self.sample_rate, max_bytes=0)
        examples = []
        for pair in pairs:
            info = {"speaker": pair.speaker, "noise": pair.noise_type, "snr_db": pair.snr}
            info["path"] = pair.noisy
            examples.append({**pair_example(pair, audio), "id": pair.id, "info": info})
        return examples


def _mixture_info(mixture: dict) -> dict:
    """A made mixture's ``info`` as a pair's: its speaker, SNR and clean file."""
    info, snr = mixture["info"], float(mixture["snr_db"])
    speaker, path = info["speakers"][0], info["source_files"][0]
    return {"speaker": speaker, "noise": None, "snr_db": snr, "path": path}


def for_corpus(data, path: str | os.PathLike) -> NoisyPairDataConfig:
    """The data section of an enhancement run (``data``: on-the-fly mixtures or a pair
    corpus) that reads the pair corpus at ``path`` at the run's rate and crop length."""
    seconds = data.num_samples / data.sample_rate
    return NoisyPairDataConfig(
        corpus=os.fspath(path), sample_rate=data.sample_rate, segment_seconds=seconds
    )

"""grain input pipelines of on-the-fly mixtures, and fixed mixture sets for validation/testing.

Training stream (``mixture_dataset``)::

    MapDataset.range(n_utterances) -> seed -> shuffle -> repeat(num_epochs)
      -> map_with_index(make_mixture) -> [process_index::process_count]
      -> batch(drop_remainder) -> to_iter_dataset

An epoch has one mixture per utterance. With ``sampling="utterance"`` each utterance is, in a
fresh order, the first source of one mixture, so speakers weigh by their utterance count. With
``sampling="speaker"`` (the default of ``MixtureDataConfig``) every source's speaker is drawn
uniformly, then one of their utterances, so a corpus of 500 short digits per speaker does not
drown one of ten long read utterances per speaker. The other speakers, crops, gains, noise and
RIRs come from a generator seeded by ``(seed, position in the stream)``. Every example is
therefore a pure function of its position, the global stream does not depend on the number of
processes (each process takes every ``process_count``-th example), and restoring an iterator's
state reproduces the next batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import grain
import numpy as np

from jaxspeech.data.corpus import (
    Utterance,
    audio_files,
    data_path,
    group_by_speaker,
    scan_corpus,
    speaker_subset,
    split_files,
    split_speakers,
)
from jaxspeech.data.mixing import AudioCache, MixtureConfig, make_mixture
from jaxspeech.data.source import (
    StreamOptions,
    arrays,
    batch_examples,
    check_seed,
    check_valid_size,
    training_stream,
    with_ids,
)
from jaxspeech.errors import ConfigError

# Distinct generator streams for the training pipeline and for fixed sets made with one seed.
_TRAIN_STREAM, _FIXED_STREAM = 0, 1
#: How the first source of a training mixture is chosen (see the module docstring).
SAMPLINGS = ("speaker", "utterance")
#: The fixed sets of ``MixtureData`` and the seed offset of each.
FIXED_SPLITS = {"valid": 1, "test": 2}


def fixed_set_seed(split_seed: int, split: str) -> int:
    """The seed of the fixed set of ``split`` ("valid" or "test"; ConfigError otherwise) for a
    data source dealt with ``split_seed``."""
    if split not in FIXED_SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {sorted(FIXED_SPLITS)}")
    return split_seed * 1000 + FIXED_SPLITS[split]


class _MixtureMaker(grain.transforms.MapWithIndex):
    """grain transform: (stream position, first-utterance index) -> mixture arrays."""

    def __init__(self, cfg, n_src, utterances, noises, rirs, seed, sampling):
        self.cfg, self.n_src, self.sampling = cfg, n_src, sampling
        self.utterances = list(utterances)
        self.speakers = group_by_speaker(self.utterances)
        self.noises = [os.fspath(p) for p in noises]
        self.rirs = [os.fspath(p) for p in rirs]
        self.seed = seed
        self.audio = AudioCache(cfg.sample_rate)

    def map_with_index(self, index: int, element: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, _TRAIN_STREAM, index))
        example = make_mixture(
            rng,
            self.cfg,
            self.speakers,
            self.noises,
            self.rirs,
            self.audio,
            n_src=self.n_src,
            first=self.utterances[element] if self.sampling == "utterance" else None,
        )
        return arrays(example)


def mixture_dataset(
    cfg: MixtureConfig,
    utterances: Sequence[Utterance],
    noises: Sequence[str | os.PathLike],
    rirs: Sequence[str | os.PathLike],
    options: StreamOptions,
    *,
    n_src: int,
    sampling: str = "utterance",
) -> grain.IterDataset:
    """This process's stream of training batches of on-the-fly mixtures.

    Args:
      cfg, noises, rirs, n_src: as for ``make_mixture``.
      utterances: the training utterances (an epoch has one mixture per utterance).
      options: batch size, seed (fixes the shuffles and every mixture), processes, epochs,
        grain reading (``source.training_stream``). Measured on 2 CPU cores: a batch of 8
        two-speaker 4 s mixtures at 8 kHz with noise and 50% reverberation takes ~25 ms, far
        below a training step, and ``mp_prefetch`` with 2 workers was no faster, so no worker
        processes are used by default.
      sampling: "utterance" (each utterance leads one mixture per epoch) or "speaker" (every
        source's speaker drawn uniformly); see the module docstring.

    Returns:
      A ``grain.IterDataset`` of dicts: ``mixture`` [b, T], ``sources`` [b, n_src, T],
      ``noise`` [b, T], ``snr_db`` [b], ``gains_db`` [b, n_src] (float32). Its iterators
      support ``get_state()`` / ``set_state()``.
    """
    if sampling not in SAMPLINGS:
        raise ConfigError(f"mixture_dataset: sampling={sampling!r}; use one of {SAMPLINGS}")
    if not utterances:
        raise ConfigError("mixture_dataset: no utterances; check the corpus path and split")
    maker = _MixtureMaker(cfg, n_src, sorted(utterances), noises, rirs, options.seed, sampling)
    return training_stream(len(maker.utterances), maker, options, "mixture_dataset")


def fixed_mixture_set(
    cfg: MixtureConfig,
    utterances: Sequence[Utterance],
    noises: Sequence[str | os.PathLike],
    rirs: Sequence[str | os.PathLike],
    n: int,
    seed: int,
    snrs: Sequence[float] | None = None,
    *,
    n_src: int,
) -> list[dict]:
    """``n`` mixtures for validation or testing; the same seed gives identical arrays.

    Args:
      cfg, utterances, noises, rirs, n_src: as for ``mixture_dataset``.
      snrs: when given, item ``i`` has noise at ``snrs[i % len(snrs)]`` dB instead of a drawn
        SNR (an evaluation grid such as ``range(-5, 25, 5)``); needs ``cfg.noise_snr_db_range``.

    Returns:
      ``make_mixture`` examples (arrays plus ``info``).
    """
    check_seed(seed)
    if n < 1:
        raise ConfigError(f"fixed_mixture_set: n must be >= 1, got {n}")
    if snrs is not None and len(snrs) == 0:
        raise ConfigError("fixed_mixture_set: snrs is empty; pass None to draw SNRs")
    speakers = group_by_speaker(utterances)
    audio = AudioCache(cfg.sample_rate)
    return [
        make_mixture(
            np.random.default_rng((seed, _FIXED_STREAM, i)),
            cfg,
            speakers,
            noises,
            rirs,
            audio,
            n_src=n_src,
            snr_db=None if snrs is None else float(snrs[i % len(snrs)]),
        )
        for i in range(n)
    ]


def _stem_paths(n_src: int) -> list[str]:
    return ["mix", *(f"s{k + 1}" for k in range(n_src)), "noise"]


def _csv_cell(value):
    """Lists become ``a;b;c`` (None as empty), other values stay."""
    if isinstance(value, list):
        return ";".join("" if x is None else str(x) for x in value)
    return value


@dataclasses.dataclass(frozen=True)
class MixtureDataConfig:
    """The data section of a task trained on mixtures (separation, enhancement).

    Folders are relative to the data root (absolute paths are taken as they are).

    Attributes:
      root: the data root, or None to look it up when the data are read
        (``corpus.resolve_data_root``: ``$JAXSPEECH_DATA``, else ``../shared/data``).
      speech: speech folders (LibriSpeech layout or flat ``{label}_{speaker}_{n}`` files).
      noise: folder of real noise recordings, or None for clean mixtures.
      rir: folder of room impulse responses (used with ``mixture.reverb_prob``).
      mixture: how each mixture is made (rate, length, speakers, gains, SNR range).
      split_fractions: train/valid/test shares of the speakers (speaker-disjoint).
      split_seed: seed of the speaker split, the noise split and the fixed sets.
      noise_split_fractions: train/valid/test shares of the noise files, so that the test
        noises are unseen in training; None: every split mixes with every noise file.
      train_noise: more folders of recordings used as noise in training only (any rate,
        resampled; e.g. music), added to the training share of ``noise``.
      valid_size: mixtures in the fixed validation set (a multiple of the batch size).
      sampling: how training mixtures pick their speakers: "speaker" (uniform over speakers)
        or "utterance" (weighted by utterance count); see the module docstring.
      train_speakers: train on this many of the training split's speakers (stratified by
        gender and age, ``corpus.speaker_subset``), or None for all; the validation and test
        speakers stay the same, so runs with different counts compare on one test set.
    """

    root: str | None = None
    speech: tuple[str, ...] = ()
    noise: str | None = None
    rir: str | None = None
    mixture: MixtureConfig = dataclasses.field(default_factory=MixtureConfig)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    noise_split_fractions: tuple[float, float, float] | None = None
    train_noise: tuple[str, ...] = ()
    valid_size: int = 32
    sampling: str = "speaker"
    train_speakers: int | None = None

    @property
    def sample_rate(self) -> int:
        """The model's rate (``mixture.sample_rate``)."""
        return self.mixture.sample_rate

    @property
    def num_samples(self) -> int:
        """Samples per training mixture."""
        return self.mixture.num_samples


class MixtureData:
    """A mixing task's data: the speaker-disjoint splits of the speech folders, the noise files
    of each split (``noises[split]``: disjoint with ``noise_split_fractions``) and the RIR files,
    the training stream, and the fixed validation and test sets.

    Args:
      cfg: the data section.
      batch_size: the global training batch size.
      n_src: speakers per mixture (the model's number of sources; 1 for enhancement).
    """

    def __init__(self, cfg: MixtureDataConfig, batch_size: int, n_src: int) -> None:
        if not cfg.speech:
            raise ConfigError("data.speech is empty; give the speech folders to mix")
        check_valid_size(cfg.valid_size, batch_size)
        self.cfg, self.batch_size, self.mixture = cfg, batch_size, cfg.mixture
        self.n_src = n_src
        corpus = scan_corpus([data_path(p, cfg.root) for p in cfg.speech])
        self.splits = split_speakers(corpus, cfg.split_fractions, cfg.split_seed)
        if cfg.train_speakers is not None:
            self.splits["train"] = speaker_subset(
                self.splits["train"], cfg.train_speakers, cfg.split_seed
            )
        noises = audio_files(data_path(cfg.noise, cfg.root)) if cfg.noise else []
        if noises and cfg.noise_split_fractions is not None:
            self.noises = split_files(noises, cfg.noise_split_fractions, cfg.split_seed)
        else:
            self.noises = dict.fromkeys(self.splits, noises)
        if cfg.train_noise and not noises:
            raise ConfigError("data.train_noise is set but data.noise is not; set both")
        self.noises["train"] = self.noises["train"] + [
            path for folder in cfg.train_noise for path in audio_files(data_path(folder, cfg.root))
        ]
        self.rirs = audio_files(data_path(cfg.rir, cfg.root)) if cfg.rir else []
        if cfg.mixture.noise_snr_db_range is not None and not noises:
            raise ConfigError("data.mixture.noise_snr_db_range is set but data.noise is not")
        if cfg.mixture.reverb_prob > 0 and not self.rirs:
            raise ConfigError("data.mixture.reverb_prob > 0 needs data.rir with RIR files")

    @property
    def sample_rate(self) -> int:
        return self.mixture.sample_rate

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """The endless training stream of this process (see ``mixture_dataset``)."""
        return mixture_dataset(
            self.mixture,
            self.splits["train"],
            self.noises["train"],
            self.rirs,
            StreamOptions(self.batch_size, seed, process_index, process_count, None, read_options),
            sampling=self.cfg.sampling,
            n_src=self.n_src,
        )

    def test_items(
        self, split: str, size: int, snrs: Sequence[float] | None = None, seconds=None
    ) -> list[dict]:
        """``size`` deterministic mixtures of ``split`` ("valid" or "test") from its speakers,
        with noise at ``snrs`` in turn (None: drawn), ``seconds`` long (None: the training
        length); IDs ``<split>-<index>``."""
        seed = fixed_set_seed(self.cfg.split_seed, split)
        # Training-only augmentations.
        mixture = dataclasses.replace(
            self.mixture,
            speed_range=None,
            noise_tilt_db_range=None,
            babble_prob=0.0,
            colored_noise_prob=0.0,
            lone_speaker_prob=0.0,
        )
        if seconds is not None:
            mixture = dataclasses.replace(mixture, segment_seconds=seconds)
        examples = fixed_mixture_set(
            mixture,
            self.splits[split],
            self.noises[split],
            self.rirs,
            size,
            seed,
            snrs,
            n_src=self.n_src,
        )
        return with_ids(examples, split)

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        """The fixed validation set in global batches."""
        return batch_examples(self.test_items("valid", self.cfg.valid_size), self.batch_size)

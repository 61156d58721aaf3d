"""Labelled single utterances for speaker-embedding recipes.

``UtteranceData`` gives speaker-disjoint splits of the speech folders (``split_speakers``), a
label map of the training speakers, an endless training stream of augmented random crops with
their speaker labels, and fixed, clean evaluation sets of the valid and test speakers (whole
utterances or fixed crops) from which trial lists are made.

Training stream (``utterance_dataset``), the pattern of ``pipeline.mixture_dataset``::

    MapDataset.range(n_utterances) -> seed -> shuffle -> repeat(num_epochs)
      -> map_with_index(make_crop) -> [process_index::process_count]
      -> batch(drop_remainder) -> to_iter_dataset

An epoch has one crop per utterance, in a fresh order. With ``sampling="utterance"`` each
utterance gives one crop per epoch, so a speaker with many utterances gives many crops; with
``sampling="speaker"`` every crop's speaker is drawn uniformly and then one of its utterances,
so each speaker contributes equally however many utterances it has. Each crop is drawn by a
generator seeded by ``(seed, position in the stream)``, so it is a pure function of its
position and a restored iterator state reproduces the next batch.

Recipe of ``make_crop`` (``T = crop_seconds * sample_rate`` samples, helpers of ``mixing``):

1. with ``speed_range``, the utterance played at a speed drawn from it (resampled, the
   speaker label unchanged, as SpeechBrain's speed perturbation), then
   a ``T``-sample crop at a random position that is not more than ``silent_crop_db`` below
   the utterance's RMS (re-drawn up to ``crop_tries`` times); a shorter utterance is placed
   at a random offset and zero-padded;
2. with probability ``reverb_prob``, convolved with a real room impulse response (the
   reverberation tail of the samples before the crop is kept);
3. with probability ``noise_prob`` (when ``noise_snr_db_range`` is set), a crop of a real
   noise (looped if shorter) is added at an SNR drawn from the range, measured against the
   (reverberant) speech crop.

The level is left as recorded (no rescaling): the result is float32 and feeds features.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

import grain
import numpy as np

from jaxspeech.data.corpora import Corpus, find_corpora
from jaxspeech.data.corpora.base import raise_first
from jaxspeech.data.corpora.speakers import CNCeleb, VoxCeleb
from jaxspeech.data.corpus import (
    Utterance,
    audio_files,
    data_path,
    group_by_speaker,
    scan_corpus,
    split_speakers,
)
from jaxspeech.data.mixing import (
    AudioCache,
    crop_image,
    draw_start,
    noise_crop,
    noise_gain,
    speed_perturbed,
)
from jaxspeech.data.pipeline import SAMPLINGS
from jaxspeech.data.source import StreamOptions, training_stream
from jaxspeech.errors import AudioFileError, ConfigError, CorpusError

#: The evaluation sets of ``UtteranceData`` and the generator stream of each one's crops.
EVAL_SPLITS = {"valid": 1, "test": 2}
#: The speaker corpora that ``UtteranceDataConfig.corpus`` trains on: the first found.
TRAINING_CORPORA = ("VoxCeleb2", "VoxCeleb1", "CN-Celeb2", "CN-Celeb1")
#: The official trial lists scored: the first found (VoxCeleb1-O cleaned, CN-Celeb1's).
TRIAL_LISTS = ("veri_test2", "trials")


def _check_range(name: str, value: tuple[float, float] | None) -> None:
    if value is not None and (len(value) != 2 or not value[0] <= value[1]):
        raise ConfigError(f"UtteranceDataConfig.{name} must be a (low, high) pair, got {value!r}")


@dataclasses.dataclass(frozen=True)
class UtteranceDataConfig:
    """The data section of a task trained on labelled single utterances (speaker embeddings).

    Folders are relative to the data root (absolute paths are taken as they are).

    Attributes:
      root: the data root, or None to look it up when the data are read
        (``corpus.resolve_data_root``: ``$JAXSPEECH_DATA``, else ``../shared/data``).
      speech: speech folders (layouts of ``corpus.scan_corpus``).
      corpus: instead of ``speech``, a folder holding speaker corpora in their official
        layouts (``jaxspeech.data.corpora``): the ``dev`` split of the first of
        ``TRAINING_CORPORA`` found is dealt into training and validation speakers by
        ``split_fractions``, and the test speakers are the ``test`` split of the corpus with
        an official trial list (``TRIAL_LISTS``; VoxCeleb1's 40 test speakers), whose list
        the test evaluation scores (:func:`official_trials`).
      noise: folder of real noise recordings, or None for no additive noise.
      rir: folder of room impulse responses (used with ``reverb_prob``).
      sample_rate: model rate (Hz); every file is resampled to it.
      crop_seconds: length of every training crop.
      speed_range: (low, high) speed factors of training-time perturbation, or None.
      noise_snr_db_range: speech-to-noise ratio range in dB, or None for no noise.
      noise_prob: probability that a training crop gets noise (with ``noise_snr_db_range``).
      reverb_prob: probability that a training crop is reverberant.
      silent_crop_db: a crop this many dB below its utterance's RMS counts as silent.
      crop_tries: random crops tried before centring on the loudest sample.
      eval_seconds: length of the fixed evaluation crops, or None for whole utterances.
      eval_per_speaker: the evaluation sets hold up to this many utterances of each speaker
        (drawn with the split seed), or None for all of them.
      split_fractions: train/valid/test shares of the speakers (speaker-disjoint).
      split_seed: seed of the speaker split (and of the evaluation crops).
      sampling: "utterance" (one crop per utterance and epoch) or "speaker" (each crop's
        speaker drawn uniformly, then one of its utterances); see the module docstring.
    """

    root: str | None = None
    speech: tuple[str, ...] = ()
    corpus: str | None = None
    noise: str | None = None
    rir: str | None = None
    sample_rate: int = 16000
    crop_seconds: float = 2.0
    speed_range: tuple[float, float] | None = None
    noise_snr_db_range: tuple[float, float] | None = None
    noise_prob: float = 1.0
    reverb_prob: float = 0.0
    silent_crop_db: float = 20.0
    crop_tries: int = 5
    eval_seconds: float | None = None
    eval_per_speaker: int | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    sampling: str = "utterance"

    def __post_init__(self):
        for name in ("crop_seconds", "eval_seconds"):
            seconds = getattr(self, name)
            if seconds is not None and round(seconds * self.sample_rate) < 1:
                raise ConfigError(
                    f"UtteranceDataConfig: sample_rate and {name} must give at least one "
                    f"sample, got {self.sample_rate} Hz x {seconds} s"
                )
        if self.sampling not in SAMPLINGS:
            raise ConfigError(
                f"UtteranceDataConfig.sampling={self.sampling!r}; use one of {SAMPLINGS}"
            )
        _check_range("noise_snr_db_range", self.noise_snr_db_range)
        _check_range("speed_range", self.speed_range)
        if self.speed_range is not None and self.speed_range[0] <= 0:
            raise ConfigError(
                f"UtteranceDataConfig.speed_range must be positive, got {self.speed_range}"
            )
        for name in ("noise_prob", "reverb_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"UtteranceDataConfig.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        if self.crop_tries < 1:
            raise ConfigError(f"UtteranceDataConfig.crop_tries must be >= 1, got {self.crop_tries}")
        if self.eval_per_speaker is not None and self.eval_per_speaker < 1:
            raise ConfigError(
                f"UtteranceDataConfig.eval_per_speaker must be >= 1 or None, got "
                f"{self.eval_per_speaker}"
            )
        if self.speech and self.corpus is not None:
            raise ConfigError(
                "UtteranceDataConfig: give data.speech (speech folders) or data.corpus (a "
                "folder of speaker corpora in their official layouts), not both"
            )

    @property
    def num_samples(self) -> int:
        """Samples per training crop, ``T``."""
        return round(self.crop_seconds * self.sample_rate)


def make_crop(
    rng: np.random.Generator,
    cfg: UtteranceDataConfig,
    utt: Utterance,
    noises: Sequence[str | os.PathLike],
    rirs: Sequence[str | os.PathLike],
    audio: AudioCache,
) -> dict:
    """One augmented training crop of ``utt`` (recipe in the module docstring).

    Args:
      rng: the only source of randomness.
      cfg: the recipe.
      utt: the utterance to crop.
      noises: noise files; needed when ``cfg.noise_snr_db_range`` is set.
      rirs: room impulse response files; needed when ``cfg.reverb_prob > 0``.
      audio: decoded-audio cache at ``cfg.sample_rate``.

    Returns:
      ``audio`` [T] float32 and ``info``: plain Python metadata (speaker, path, crop start,
      RIR file, noise file and start, SNR in dB: +inf and "" without noise or reverberation).
    """
    if audio.sample_rate != cfg.sample_rate:
        raise ConfigError(
            f"make_crop: the audio cache decodes at {audio.sample_rate} Hz but the config asks "
            f"for {cfg.sample_rate} Hz; build AudioCache(cfg.sample_rate)"
        )
    if cfg.noise_snr_db_range is not None and not noises:
        raise ConfigError("make_crop: noise_snr_db_range is set but no noise files given")
    if cfg.reverb_prob > 0 and not rirs:
        raise ConfigError("make_crop: reverb_prob > 0 but no RIR files given")
    length, tries = cfg.num_samples, (cfg.silent_crop_db, cfg.crop_tries)
    wav = speed_perturbed(rng, audio(utt.path), cfg.speed_range, cfg.sample_rate)
    start = draw_start(rng, wav, length, utt.path, *tries)
    rir_file = ""
    if cfg.reverb_prob > 0 and rng.random() < cfg.reverb_prob:
        rir_file = os.fspath(rirs[int(rng.integers(len(rirs)))])
    crop = crop_image(wav, start, length, audio(rir_file) if rir_file else None)
    noise_file, noise_start, snr = "", 0, math.inf
    if cfg.noise_snr_db_range is not None and rng.random() < cfg.noise_prob:
        noise_file = os.fspath(noises[int(rng.integers(len(noises)))])
        snr = float(rng.uniform(*cfg.noise_snr_db_range))
        noise, noise_start = noise_crop(rng, audio(noise_file), length, noise_file, *tries)
        crop = crop + noise * noise_gain(crop, noise, snr)
    info = {
        "speaker": utt.speaker,
        "path": utt.path,
        "start": int(start),
        "rir_file": rir_file,
        "noise_file": noise_file,
        "noise_start": int(noise_start),
        "snr_db": snr,
    }
    return {"audio": crop.astype(np.float32), "info": info}


class _CropMaker(grain.transforms.MapWithIndex):
    """grain transform: (stream position, utterance index) -> ``audio`` [T], ``speaker``."""

    def __init__(self, cfg, utterances, speaker_ids, noises, rirs, seed):
        self.cfg, self.utterances, self.seed = cfg, list(utterances), seed
        self.labels = [np.int32(speaker_ids[u.speaker]) for u in self.utterances]
        by_speaker: dict[str, list[int]] = {}
        for i, utt in enumerate(self.utterances):
            by_speaker.setdefault(utt.speaker, []).append(i)
        self.speaker_utterances = list(by_speaker.values())
        self.noises = [os.fspath(p) for p in noises]
        self.rirs = [os.fspath(p) for p in rirs]
        self.audio = AudioCache(cfg.sample_rate)

    def map_with_index(self, index: int, element: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, index))
        if self.cfg.sampling == "speaker":
            choices = self.speaker_utterances[rng.integers(len(self.speaker_utterances))]
            element = choices[rng.integers(len(choices))]
        utt = self.utterances[element]
        crop = make_crop(rng, self.cfg, utt, self.noises, self.rirs, self.audio)
        return {"audio": crop["audio"], "speaker": self.labels[element]}


def utterance_dataset(
    cfg: UtteranceDataConfig,
    utterances: Sequence[Utterance],
    speaker_ids: Mapping[str, int],
    noises: Sequence[str | os.PathLike],
    rirs: Sequence[str | os.PathLike],
    options: StreamOptions,
) -> grain.IterDataset:
    """This process's stream of training batches of augmented crops.

    Args:
      cfg, noises, rirs: as for ``make_crop``.
      utterances: the training utterances (an epoch has one crop per utterance).
      speaker_ids: ``{speaker: label}`` for every speaker of ``utterances``.
      options: batch size, seed (fixes the shuffles and every crop), processes, epochs,
        grain reading (``source.training_stream``).

    Returns:
      A ``grain.IterDataset`` of dicts ``audio`` [b, T] float32, ``speaker`` [b] int32. Its
      iterators support ``get_state()`` / ``set_state()``.
    """
    if not utterances:
        raise ConfigError("utterance_dataset: no utterances; check the corpus path and split")
    unlabelled = sorted({u.speaker for u in utterances} - set(speaker_ids))
    if unlabelled:
        raise ConfigError(
            f"utterance_dataset: speaker(s) {', '.join(unlabelled[:5])} have no label in "
            "speaker_ids; build the label map from the same utterances"
        )
    maker = _CropMaker(cfg, sorted(utterances), speaker_ids, noises, rirs, options.seed)
    return training_stream(len(maker.utterances), maker, options, "utterance_dataset")


class UtteranceData:
    """A speaker-embedding task's data: speaker-disjoint splits of the speech folders, the
    label map of the training speakers, the training stream and the evaluation sets.

    Args:
      cfg: the data section.
      batch_size: the global training batch size.

    Attributes:
      splits: ``{"train" | "valid" | "test": [Utterance]}``.
      speaker_ids: ``{speaker: label}`` of the training speakers, labels ``0..n-1`` in
        sorted speaker order.
      noises, rirs: the noise and impulse-response files.
    """

    def __init__(self, cfg: UtteranceDataConfig, batch_size: int) -> None:
        if not cfg.speech and cfg.corpus is None:
            raise ConfigError(
                "data.speech is empty and data.corpus unset; give the speech folders or a "
                "folder of speaker corpora in their official layouts"
            )
        self.cfg, self.batch_size = cfg, batch_size
        if cfg.corpus is None:
            corpus = scan_corpus([data_path(p, cfg.root) for p in cfg.speech])
            self.splits = split_speakers(corpus, cfg.split_fractions, cfg.split_seed)
        else:
            self.splits = corpus_splits(data_path(cfg.corpus, cfg.root), cfg)
        self.speaker_ids = _labels(self.splits["train"])
        self.noises = audio_files(data_path(cfg.noise, cfg.root)) if cfg.noise else []
        self.rirs = audio_files(data_path(cfg.rir, cfg.root)) if cfg.rir else []
        if cfg.noise_snr_db_range is not None and not self.noises:
            raise ConfigError("data.noise_snr_db_range is set but data.noise is not")
        if cfg.reverb_prob > 0 and not self.rirs:
            raise ConfigError("data.reverb_prob > 0 needs data.rir with RIR files")

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def num_speakers(self) -> int:
        """Training speakers (classes of the speaker classifier)."""
        return len(self.speaker_ids)

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """The endless training stream of this process (see ``utterance_dataset``)."""
        return utterance_dataset(
            self.cfg,
            self.splits["train"],
            self.speaker_ids,
            self.noises,
            self.rirs,
            StreamOptions(self.batch_size, seed, process_index, process_count, None, read_options),
        )

    def test_items(self, split: str) -> list[dict]:
        """The clean utterances of ``split`` ("valid" or "test"), in sorted order (up to
        ``cfg.eval_per_speaker`` of each speaker).

        Each is ``audio`` (float32: the whole utterance [n], or with ``cfg.eval_seconds`` a
        fixed, non-silent crop [T_eval], zero-padded when shorter), ``speaker`` (int32 label
        among the split's speakers, ``0..k-1`` in sorted order: equal labels make target
        trials), ``id`` (the file path) and ``info`` (speaker name, path, crop start). The
        crops depend only on the split seed.
        """
        if split not in EVAL_SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {sorted(EVAL_SPLITS)}")
        utterances = self.splits[split]
        if self.cfg.eval_per_speaker is not None:
            utterances = _per_speaker(
                utterances, self.cfg.eval_per_speaker, (self.cfg.split_seed, EVAL_SPLITS[split])
            )
        labels = _labels(utterances)
        audio = AudioCache(self.cfg.sample_rate)
        examples = []
        for i, utt in enumerate(utterances):
            wav, start = audio(utt.path), 0
            if self.cfg.eval_seconds is not None:
                length = round(self.cfg.eval_seconds * self.cfg.sample_rate)
                rng = np.random.default_rng((self.cfg.split_seed, EVAL_SPLITS[split], i))
                tries = (self.cfg.silent_crop_db, self.cfg.crop_tries)
                start = draw_start(rng, wav, length, utt.path, *tries)
                wav = crop_image(wav, start, length)
            examples.append(
                {
                    "audio": np.asarray(wav, np.float32),
                    "speaker": np.int32(labels[utt.speaker]),
                    "id": utt.path,
                    "info": {"speaker": utt.speaker, "path": utt.path, "start": int(start)},
                }
            )
        return examples


def speaker_corpora(folder: str | os.PathLike) -> dict[str, Corpus]:
    """``{name: corpus}`` of the speaker corpora (VoxCeleb1/2, CN-Celeb1/2) at ``folder`` or
    one level below it; CorpusError naming the layouts expected when there is none."""
    found = {c.name: c for c in find_corpora(folder) if isinstance(c, VoxCeleb | CNCeleb)}
    if not found:
        raise CorpusError(
            f"{folder} holds no speaker corpus in its official layout; expected "
            f"{', '.join(TRAINING_CORPORA)} (`jaxspeech data check` lists what it finds)"
        )
    return found


def trial_corpus(folder: str | os.PathLike) -> Corpus | None:
    """The first corpus at ``folder`` (see :func:`speaker_corpora`) with one of the official
    trial lists ``TRIAL_LISTS``, or None."""
    found = speaker_corpora(folder).values()
    return next((c for c in found if set(TRIAL_LISTS) & set(c.trial_lists())), None)


def official_trials(folder: str | os.PathLike) -> tuple[str, list[tuple[int, str, str]]]:
    """``(name, trials)``: the first official trial list of the corpora at ``folder``
    (``TRIAL_LISTS``), named ``<corpus>-<list>`` (``VoxCeleb1-veri_test2``), every line as
    ``(label, enrol path, test path)`` with absolute paths, those naming a missing file too
    (the evaluation counts and names them); a line that does not parse is a CorpusError."""
    corpus = trial_corpus(folder)
    if corpus is None:
        raise ConfigError(
            f"{folder}: no corpus there has an official trial list ({', '.join(TRIAL_LISTS)}); "
            "give one with --trials"
        )
    name = next(n for n in TRIAL_LISTS if n in corpus.trial_lists())
    trials, problems = corpus.scan_trials(name)
    raise_first([p for p in problems if not isinstance(p, AudioFileError)], corpus.root)
    return f"{corpus.name}-{name}", [(int(t.target), t.enrol, t.test) for t in trials]


def corpus_splits(folder: pathlib.Path, cfg: UtteranceDataConfig) -> dict[str, list[Utterance]]:
    """The splits of ``cfg.corpus`` (see :class:`UtteranceDataConfig`); says on stderr which
    corpora it reads."""
    found = speaker_corpora(folder)
    training = next((found[name] for name in TRAINING_CORPORA if name in found), None)
    if training is None:
        raise CorpusError(f"{folder}: none of {', '.join(TRAINING_CORPORA)} found")
    splits = split_speakers(_recordings(training, "dev"), cfg.split_fractions, cfg.split_seed)
    testing = trial_corpus(folder)
    if testing is not None:
        splits["test"] = _recordings(testing, "test")
    speakers = {name: len({u.speaker for u in utts}) for name, utts in splits.items()}
    test = f"{testing.name} test" if testing is not None else f"{training.name} dev"
    print(
        f"{folder}: training on {training.name} dev ({speakers['train']} speakers, "
        f"{speakers['valid']} more for validation), testing on {test} "
        f"({speakers['test']} speakers)",
        file=sys.stderr,
        flush=True,
    )
    return splits


def _recordings(corpus: Corpus, split: str) -> list[Utterance]:
    """The recordings of ``corpus``'s ``split`` as utterances, sorted."""
    return sorted(
        Utterance(r.path, r.speaker, None, r.num_samples, r.sample_rate, r.gender)
        for r in corpus.items(split, progress=True)
    )


def _per_speaker(utterances: Sequence[Utterance], count: int, seed) -> list[Utterance]:
    """Up to ``count`` of each speaker's ``utterances``, drawn with ``seed``, sorted."""
    groups = group_by_speaker(utterances)
    chosen = []
    for label, utts in enumerate(groups.values()):
        picks = np.random.default_rng((*seed, label)).permutation(len(utts))[:count]
        chosen += [utts[i] for i in picks]
    return sorted(chosen)


def _labels(utterances: Sequence[Utterance]) -> dict[str, int]:
    """``{speaker: label}`` with labels ``0..n-1`` in sorted speaker order."""
    return {speaker: i for i, speaker in enumerate(sorted({u.speaker for u in utterances}))}

"""Pre-mixed separation corpora (LibriMix, wsj0-2mix/3mix, WHAM!, WHAMR!) as a data source.

The corpus folder (``data.corpus`` below the data root, in any layout of
``jaxspeech.data.corpora.mixtures``) lists mixtures ``(id, mixture file, source files[, noise
file])``. :class:`PremixedData` gives (``source.DataSource``):

* training: per item, a random crop of ``segment_seconds`` taken at the same place in the
  mixture and in every reference (Asteroid's recipes do the same). Mixtures shorter than a
  crop are left out of training and their number is printed (the documented behaviour of
  the wsj0-2mix and LibriMix recipes: their ``min`` mixtures go down to about 1.3 s and 3 s);
  a split left empty is an error. With ``dynamic_mixing`` every example is a new mixture: the
  item's first source and ``n_src - 1`` sources of other random items (of other speakers
  where the corpus names them), each cropped at its own random place, the first set to an
  active level drawn from ``level_db_range`` dBFS, the others at a gain drawn from
  ``gain_db_range`` relative to it, plus the item's own noise crop, if any, as it is in the
  corpus; ``mixture == sources.sum(0) + noise``;
* validation: ``valid_size`` items of the validation split drawn with the split seed, each
  cropped at a place drawn with the seed (zero-padded when shorter) to fixed length;
* testing: every item of the test split, whole, with its ID and metadata.

Every file is resampled to ``sample_rate`` (the model's) when the corpus has another rate;
``wav8k`` is read when a corpus has both ``wav8k`` and ``wav16k`` and the model runs at 8 kHz.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from jaxspeech.data.mixing import AudioCache, rms
from jaxspeech.data.source import (
    SplitListing,
    StreamOptions,
    batch_examples,
    corpus_folder,
    crop,
    long_enough,
    training_stream,
)
from jaxspeech.errors import ConfigError

#: Which of a layout's splits plays each role (train, valid, test), by layout family.
ROLES = {
    "train": ("train-360", "train-100", "tr", "train"),
    "valid": ("dev", "cv", "valid"),
    "test": ("test", "tt", "eval"),
}
_TRAIN_STREAM, _VALID_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class PremixedDataConfig:
    """The data section of a separation task trained on a pre-mixed corpus.

    Attributes:
      root: the data root (None: ``corpus.resolve_data_root`` when the data are read).
      corpus: the corpus folder below the data root (or absolute): e.g. ``Libri2Mix`` or
        ``wsj0-mix/2speakers``; its layout is detected (``jaxspeech data check`` names it).
      mixture: the mixture folder to read (``mix_clean``, ``mix_both``, ...); None: the
        layout's first (``mix_clean`` for LibriMix, ``mix`` for wsj0-mix).
      splits: the corpus's (train, valid, test) splits; None: the layout's (``ROLES``).
      sample_rate: the model's rate; files at other rates are resampled.
      segment_seconds: training crop length.
      valid_size: validation crops (a multiple of the batch size).
      split_seed: seed of the validation items and crops.
      dynamic_mixing: remix the sources of different items on the fly (module docstring).
      level_db_range, gain_db_range: dynamic mixing's first-source level (dBFS) and the
        others' gains relative to it (dB).
      max_peak: dynamic mixing rescales an example whose largest peak exceeds this.
    """

    root: str | None = None
    corpus: str = ""
    mixture: str | None = None
    splits: tuple[str, str, str] | None = None
    sample_rate: int = 8000
    segment_seconds: float = 4.0
    valid_size: int = 32
    split_seed: int = 0
    dynamic_mixing: bool = False
    level_db_range: tuple[float, float] = (-33.0, -25.0)
    gain_db_range: tuple[float, float] = (-5.0, 5.0)
    max_peak: float = 0.9

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.num_samples < 1:
            raise ConfigError(
                "data.sample_rate and data.segment_seconds must give at least one sample, got "
                f"{self.sample_rate} Hz x {self.segment_seconds} s"
            )
        for name in ("level_db_range", "gain_db_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"data.{name}={getattr(self, name)} must be (low, high)")

    @property
    def num_samples(self) -> int:
        return round(self.segment_seconds * self.sample_rate)


def role_splits(corpus, splits: tuple[str, str, str] | None) -> dict[str, str]:
    """``{"train" | "valid" | "test": the corpus's split}``: ``splits`` when given, else the
    first of each role's names (``ROLES``) that the layout has on disk; ConfigError naming
    the splits present when one is missing."""
    present = [s for s in corpus.splits if (corpus.root / s).is_dir()]
    if splits is not None:
        chosen = dict(zip(ROLES, splits, strict=True))
    else:
        chosen = {r: next((n for n in names if n in present), None) for r, names in ROLES.items()}
    missing = [r for r in ROLES if chosen[r] not in present]
    if missing:
        raise ConfigError(
            f"{corpus.name} in {corpus.root}: no {'/'.join(missing)} split; give data.splits as "
            f"(train, valid, test) among the splits present {present}"
        )
    return chosen


def open_mixture_corpus(path, sample_rate: int, mixture: str | None, n_src: int | None = None):
    """The separation corpus at ``path`` (its ``wav<rate>`` folder preferred), reading the
    mixture folder ``mixture``; ConfigError when it is not a separation corpus or has
    another number of sources than ``n_src``."""
    from jaxspeech.data.corpora import open_corpus
    from jaxspeech.data.corpora.mixtures import MixtureCorpus

    corpus = open_corpus(path, sample_rate=sample_rate, mixture=mixture)
    if not isinstance(corpus, MixtureCorpus):
        raise ConfigError(
            f"{path} is {corpus.name}, not a separation corpus (LibriMix, wsj0-mix, WHAM!)"
        )
    sources, _ = corpus.reference_folders()
    if n_src is not None and len(sources) != n_src:
        raise ConfigError(
            f"{corpus.name} mixes {len(sources)} sources, the model separates {n_src}; pick a "
            "corpus or mixture folder with as many"
        )
    return corpus


class _Cropper(grain.transforms.MapWithIndex):
    """grain transform: (stream position, item index) -> ``mixture`` [T], ``sources``
    [n_src, T] (and ``noise`` [T] for a noisy corpus)."""

    def __init__(self, cfg: PremixedDataConfig, items, seed: int):
        self.cfg, self.items, self.seed = cfg, list(items), seed
        self.audio = AudioCache(cfg.sample_rate)
        self.noisy = self.items[0].noise is not None

    def map_with_index(self, index: int, element: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, _TRAIN_STREAM, index))
        if self.cfg.dynamic_mixing:
            return self._remix(rng, element)
        return crop_item(self.items[element], self.audio, self.cfg.num_samples, rng)

    def _remix(self, rng: np.random.Generator, element: int) -> dict[str, np.ndarray]:
        cfg, length, first = self.cfg, self.cfg.num_samples, self.items[element]
        picks = [(first.sources[0], first.speakers[0] if first.speakers else None)]
        while len(picks) < len(first.sources):
            other = self.items[int(rng.integers(len(self.items)))]
            k = int(rng.integers(len(other.sources)))
            speaker = other.speakers[k] if other.speakers else None
            if speaker is None or speaker not in [s for _, s in picks]:
                picks.append((other.sources[k], speaker))
        sources = []
        level = rng.uniform(*cfg.level_db_range)
        for k, (path, _) in enumerate(picks):
            wav = self.audio(path)
            start = int(rng.integers(0, max(len(wav) - length, 0) + 1))
            piece = crop(wav, start, length).astype(np.float64)
            active = rms(piece[: max(min(len(wav) - start, length), 0)])
            target = level + (rng.uniform(*cfg.gain_db_range) if k else 0.0)
            sources.append(piece * (10 ** (target / 20) / active if active > 0 else 0.0))
        sources = np.stack(sources)
        example = {"sources": sources}
        if self.noisy:
            noise = self.audio(first.noise)
            start = int(rng.integers(0, max(len(noise) - length, 0) + 1))
            example["noise"] = crop(noise, start, length).astype(np.float64)
        peak = max(float(np.abs(v).max()) for v in example.values())
        mixture = sources.sum(0) + example.get("noise", 0.0)
        peak = max(peak, float(np.abs(mixture).max()))
        scale = min(1.0, cfg.max_peak / peak) if peak > 0 else 1.0
        out = {k: (v * scale).astype(np.float32) for k, v in example.items()}
        out["mixture"] = out["sources"].sum(0) + out.get("noise", np.float32(0.0))
        return out


def crop_item(item, audio: AudioCache, length: int, rng: np.random.Generator | None) -> dict:
    """``mixture`` [T], ``sources`` [n_src, T] (and ``noise`` [T]) of ``item``: one crop of
    ``length`` samples at a start drawn from ``rng`` (the same in every file; zero-padded
    at the end when shorter), or, with ``rng`` None, the whole files."""
    mixture = audio(item.path)
    if rng is None:
        start, length = 0, len(mixture)
    else:
        start = int(rng.integers(0, max(len(mixture) - length, 0) + 1))
    out = {
        "mixture": crop(mixture, start, length),
        "sources": np.stack([crop(audio(p), start, length) for p in item.sources]),
    }
    if item.noise is not None:
        out["noise"] = crop(audio(item.noise), start, length)
    return out


class PremixedData:
    """A pre-mixed corpus's splits, training stream, validation batches and test items.

    Args:
      cfg: the data section.
      batch_size: the global training batch size.
      n_src: the model's number of sources (must match the corpus's).
    """

    def __init__(self, cfg: PremixedDataConfig, batch_size: int, n_src: int) -> None:
        self.cfg, self.batch_size, self.n_src = cfg, batch_size, n_src
        self.corpus = open_mixture_corpus(
            corpus_folder(cfg, batch_size), cfg.sample_rate, cfg.mixture, n_src
        )
        self.roles = role_splits(self.corpus, cfg.splits)
        self._listed = SplitListing(self.corpus)

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def items(self, role: str) -> list:
        """The corpus's items of the split playing ``role`` (listed once, then kept)."""
        return self._listed(self.roles[role])

    def train_items(self) -> list:
        """The training items at least one crop long; the others are counted and printed."""
        what = f"{self.corpus.name} {self.roles['train']}"
        return long_enough(self.items("train"), self.cfg.segment_seconds, what, "mixtures")

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """The endless training stream of this process: crops (or dynamic mixtures)."""
        maker = _Cropper(self.cfg, self.train_items(), seed)
        options = StreamOptions(
            self.batch_size, seed, process_index, process_count, None, read_options
        )
        return training_stream(len(maker.items), maker, options, "PremixedData")

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        """``valid_size`` crops of validation items (drawn with the split seed) in batches."""
        items, size = self.items("valid"), self.cfg.valid_size
        rng = np.random.default_rng((self.cfg.split_seed, _VALID_STREAM))
        chosen = rng.choice(len(items), size, replace=len(items) < size)
        audio = AudioCache(self.cfg.sample_rate)
        crops = [crop_item(items[int(i)], audio, self.cfg.num_samples, rng) for i in chosen]
        return batch_examples(crops, self.batch_size)

    def test_items(self, split: str = "test") -> list[dict]:
        """Every item of the ``split`` role ("valid" or "test"), whole, resampled: arrays as
        the training examples', ``id`` (the corpus's mixture ID) and ``info`` (speakers,
        the corpus's source and noise SNRs, the mixture file)."""
        if split not in ("valid", "test"):
            raise ConfigError(f"unknown split {split!r}; use 'valid' or 'test'")
        audio = AudioCache(self.cfg.sample_rate, max_bytes=0)
        examples = []
        for item in self.items(split):
            info = {"speakers": list(item.speakers), "path": item.path}
            if item.snrs is not None:
                info["snrs_db"] = list(item.snrs)
            if item.noise_snr is not None:
                info["noise_snr_db"] = item.noise_snr
            examples.append({**crop_item(item, audio, 0, None), "id": item.id, "info": info})
        return examples

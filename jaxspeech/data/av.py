"""Audio-visual mixtures: GRID talking-face clips with their mouth tracks, in noise or beside a
competing talker.

Clips. ``sentence_clips`` holds many sentences of one talker (GRID ``s1``): its clips are
split by sentence. ``talker_clips`` holds clips of other talkers, one talker per clip (GRID
``talkers/``): they are split by talker. A clip is in exactly one split, so test clips are
never trained on; the test split has both unseen sentences of a seen talker and unseen
talkers. With ``corpus`` (a standard corpus in its official layout, read by
``jaxspeech.data.corpora``), GRID's talkers ``s1``–``s34`` are dealt into the splits by
talker, and LRS3's talks of ``pretrain`` and ``trainval`` into train and valid by talk, its
``test`` split testing (:func:`corpus_clips`). Each clip is decoded once (its audio track at
the model's rate with ``jaxspeech.data.video.read_video_audio``, its mouth crops with
``jaxspeech.data.mouths.mouth_track``, cached per video in ``cache_dir``).

Example (``make_av_example``; a pure function of its generator):

1. a crop of ``segment_seconds`` of the target clip's audio (zero-padded when the clip is
   shorter), set to an active RMS level drawn from ``level_db_range`` dBFS;
2. condition "noise" (probability ``1 − talker_prob``): a crop of a real noise at an SNR drawn
   from ``noise_snr_db_range``; condition "talker": the audio of a clip of ANOTHER talker of
   the same split at a target-to-interferer ratio drawn from ``talker_snr_db_range``;
3. mixture, clean and interference scaled together to a peak of at most ``max_peak``;
4. the mouth crop of each STFT frame (centred frames, ``hop`` samples apart): the video frame
   covering the frame's centre (``video.video_frame_per_stft_frame`` on the clip's
   timestamps); the face-present flag is false where no video frame covers the STFT frame
   (a video shorter than its audio) or the track has no face there.

Arrays: ``mixture``, ``clean``, ``noise`` (everything but the target) ``[T]``; ``lips``
``[n_frames, h, w]`` float32 in [0, 1] (zeros without a face); ``face`` ``[n_frames]``
float32 0/1; ``snr_db`` and ``condition`` (index into ``CONDITIONS``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import grain
import numpy as np

from jaxspeech.data.av_clips import (
    ClipRef,
    corpus_clips,
    split_clips,
    video_files,
)
from jaxspeech.data.corpus import data_path
from jaxspeech.data.mixing import AudioCache, noise_crop, noise_gain, rms
from jaxspeech.data.mouths import MouthConfig
from jaxspeech.data.pipeline import fixed_set_seed
from jaxspeech.data.source import (
    StreamOptions,
    batch_examples,
    check_valid_size,
    training_stream,
    with_ids,
)
from jaxspeech.errors import ConfigError

CONDITIONS = ("noise", "talker")
#: Environment variable and default of the mouth-track cache folder.
CACHE_ENV, CACHE_DEFAULT = "JAXSPEECH_CACHE", pathlib.Path("~/.cache/jaxspeech")
_TRAIN_STREAM, _FIXED_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class AVDataConfig:
    """The data section of the audio-visual task (folders relative to the data root).

    Attributes:
      root: the data root (None: ``corpus.resolve_data_root``).
      sentence_clips: videos of one talker, split by sentence.
      talker_clips: videos of other talkers, one talker per file, split by talker.
      corpus: instead of the two above, a GRID or LRS3 folder in its official layout
        (:func:`corpus_clips`).
      noise: folder of real noise recordings.
      sample_rate: the model's rate (Net 1's).
      segment_seconds: training crop length.
      noise_snr_db_range, talker_snr_db_range: SNR of the noise, target-to-interferer ratio.
      talker_prob: share of competing-talker examples in training.
      level_db_range: active RMS level of the target, dBFS.
      max_peak: largest absolute sample after the final rescale.
      split_fractions, split_seed: train/valid/test shares of the sentences and of the talkers.
      valid_size: examples in the validation set (a multiple of the batch size).
      mouth: the mouth crops (``jaxspeech.data.mouths``).
      cache_dir: mouth-track cache (None: ``$JAXSPEECH_CACHE/mouths``, else
        ``~/.cache/jaxspeech/mouths``; entries are keyed by file content and crop settings).
    """

    root: str | None = None
    sentence_clips: str = "grid/s1"
    talker_clips: str = "grid/talkers"
    corpus: str | None = None
    noise: str = "noise"
    sample_rate: int = 16000
    segment_seconds: float = 3.0
    noise_snr_db_range: tuple[float, float] = (-5.0, 20.0)
    talker_snr_db_range: tuple[float, float] = (-5.0, 5.0)
    talker_prob: float = 0.5
    level_db_range: tuple[float, float] = (-33.0, -25.0)
    max_peak: float = 0.9
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    valid_size: int = 16
    mouth: MouthConfig = dataclasses.field(default_factory=MouthConfig)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("noise_snr_db_range", "talker_snr_db_range", "level_db_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ConfigError(f"data.{name}={getattr(self, name)} must be (low, high)")
        if not 0.0 <= self.talker_prob <= 1.0:
            raise ConfigError(f"data.talker_prob={self.talker_prob} must be in [0, 1]")
        if self.sample_rate <= 0 or self.segment_seconds <= 0:
            raise ConfigError("data.sample_rate and data.segment_seconds must be positive")

    @property
    def num_samples(self) -> int:
        return round(self.segment_seconds * self.sample_rate)


class Clip(NamedTuple):
    """A decoded clip: ``audio [S]`` float32 at the model's rate, its mouth track
    (``crops [F, h, w]``, ``timestamps [F]`` s, ``face_present [F]``, ``fps``)."""

    ref: ClipRef
    audio: np.ndarray
    crops: np.ndarray
    timestamps: np.ndarray
    face_present: np.ndarray
    fps: float


def cache_folder(cache_dir: str | None) -> pathlib.Path:
    """The mouth-track cache: ``cache_dir``, else ``$JAXSPEECH_CACHE/mouths``, else
    ``~/.cache/jaxspeech/mouths``."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir).expanduser()
    return pathlib.Path(os.environ.get(CACHE_ENV) or CACHE_DEFAULT).expanduser() / "mouths"


def load_clip(ref: ClipRef, cfg: AVDataConfig) -> Clip:
    """Decodes one clip's audio track and mouth track (cached); needs the ``video`` extra."""
    from jaxspeech.data.mouths import mouth_track
    from jaxspeech.data.video import read_video_audio

    track = mouth_track(ref.path, cfg.mouth, cache_folder(cfg.cache_dir))
    audio = read_video_audio(ref.path, cfg.sample_rate)
    return Clip(ref, np.asarray(audio, np.float32), *track.lip_inputs())


def lip_frames(
    clip_crops: np.ndarray,
    timestamps: np.ndarray,
    face_present: np.ndarray,
    fps: float,
    n_frames: int,
    hop: int,
    sample_rate: int,
    start_seconds: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The mouth crop and face flag of each of ``n_frames`` STFT frames, frame ``t`` centred
    at ``start_seconds + t·hop / sample_rate`` of the video's time line.

    Returns:
      ``(lips [n_frames, h, w] float32, face [n_frames] bool)``; zeros and False where no
      video frame covers the STFT frame or no face was found.
    """
    from jaxspeech.data.video import video_frame_per_stft_frame

    index = np.asarray(
        video_frame_per_stft_frame(
            np.asarray(timestamps, np.float64) - start_seconds,
            1.0 / fps,
            n_frames,
            hop,
            sample_rate,
        )
    )
    covered = index >= 0
    safe = np.where(covered, index, 0)
    face = covered & np.asarray(face_present, bool)[safe]
    lips = np.zeros((n_frames, *clip_crops.shape[1:]), np.float32)
    lips[face] = clip_crops[safe[face]]
    return lips, face


def _crop(wav: np.ndarray, start: int, length: int) -> np.ndarray:
    out = np.zeros(length, np.float64)
    piece = wav[start : start + length]
    out[: len(piece)] = piece
    return out


def make_av_example(
    rng: np.random.Generator,
    cfg: AVDataConfig,
    target: Clip,
    others: Sequence[Clip],
    noises: Sequence[str],
    audio: AudioCache,
    hop: int,
    *,
    condition: str | None = None,
    snr_db: float | None = None,
    seconds: float | None = None,
) -> dict[str, np.ndarray]:
    """One example (recipe in the module docstring); ``condition``, ``snr_db`` and
    ``seconds`` fix what is otherwise drawn (evaluation grids)."""
    length = round((seconds or cfg.segment_seconds) * cfg.sample_rate)
    start = int(rng.integers(0, max(len(target.audio) - length, 0) + 1))
    clean = _crop(target.audio, start, length)
    active = clean[: max(1, min(length, len(target.audio) - start))]
    clean *= 10.0 ** (rng.uniform(*cfg.level_db_range) / 20.0) / max(rms(active), 1e-12)
    if condition is None:
        condition = CONDITIONS[int(rng.random() < cfg.talker_prob)]
    if condition == "noise":
        if not noises:
            raise ConfigError("the noise condition needs data.noise with noise files")
        path = noises[int(rng.integers(len(noises)))]
        snr = float(rng.uniform(*cfg.noise_snr_db_range)) if snr_db is None else float(snr_db)
        interference = noise_crop(rng, audio(path), length, path, 20.0, 5)[0]
    elif condition == "talker":
        pool = [c for c in others if c.ref.talker != target.ref.talker]
        if not pool:
            raise ConfigError(
                f"no clip of another talker than {target.ref.talker!r} in this split for the "
                "competing-talker condition; add talkers or set data.talker_prob=0"
            )
        voice = pool[int(rng.integers(len(pool)))].audio
        snr = float(rng.uniform(*cfg.talker_snr_db_range)) if snr_db is None else float(snr_db)
        interference = _crop(voice, int(rng.integers(0, max(len(voice) - length, 0) + 1)), length)
    else:
        raise ConfigError(f"condition {condition!r}; use one of {CONDITIONS}")
    if rms(interference) > 0:
        interference *= noise_gain(clean, interference, snr)
    peak = max(np.abs(clean + interference).max(), np.abs(clean).max(), np.abs(interference).max())
    scale = min(1.0, cfg.max_peak / peak) if peak > 0 else 1.0
    clean, interference = (
        (clean * scale).astype(np.float32),
        (interference * scale).astype(np.float32),
    )
    lips, face = lip_frames(
        target.crops,
        target.timestamps,
        target.face_present,
        target.fps,
        1 + length // hop,
        hop,
        cfg.sample_rate,
        start / cfg.sample_rate,
    )
    return {
        "mixture": clean + interference,
        "clean": clean,
        "noise": interference,
        "lips": lips,
        "face": face.astype(np.float32),
        "snr_db": np.float32(snr),
        "condition": np.int32(CONDITIONS.index(condition)),
    }


class _ExampleMaker(grain.transforms.MapWithIndex):
    """grain transform: (stream position, clip index) -> example arrays."""

    def __init__(self, cfg, clips, noises, hop, seed):
        self.cfg, self.clips, self.noises, self.hop, self.seed = cfg, clips, noises, hop, seed
        self.audio = AudioCache(cfg.sample_rate)

    def map_with_index(self, index: int, element: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, _TRAIN_STREAM, index))
        target = self.clips[element]
        return make_av_example(rng, self.cfg, target, self.clips, self.noises, self.audio, self.hop)


class AVData:
    """The clip splits (decoded on construction), the noise files, the training stream and
    fixed sets, for STFT frames ``hop`` samples apart.

    Args:
      cfg: the data section.
      batch_size: the global training batch size.
      hop: Net 1's STFT hop in samples.
    """

    def __init__(self, cfg: AVDataConfig, batch_size: int, hop: int) -> None:
        check_valid_size(cfg.valid_size, batch_size)
        from tqdm import tqdm

        from jaxspeech.data.corpus import audio_files

        self.cfg, self.batch_size, self.hop = cfg, batch_size, hop
        if cfg.corpus is None:
            refs = split_clips(
                video_files(data_path(cfg.sentence_clips, cfg.root)),
                video_files(data_path(cfg.talker_clips, cfg.root)),
                cfg.split_fractions,
                cfg.split_seed,
            )
        else:
            refs = corpus_clips(
                data_path(cfg.corpus, cfg.root), cfg.split_fractions, cfg.split_seed
            )
        every = [r for name in refs for r in refs[name]]
        decoded = dict(
            zip(every, map(lambda r: load_clip(r, cfg), tqdm(every, "clips")), strict=True)
        )
        self.splits = {name: [decoded[r] for r in refs[name]] for name in refs}
        self.noises = [os.fspath(p) for p in audio_files(data_path(cfg.noise, cfg.root))]

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """The endless training stream of this process (``source.training_stream``)."""
        clips = self.splits["train"]
        maker = _ExampleMaker(self.cfg, clips, self.noises, self.hop, seed)
        options = StreamOptions(
            self.batch_size, seed, process_index, process_count, None, read_options
        )
        return training_stream(len(clips), maker, options, "AVData.train_dataset")

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def test_items(
        self, split: str, grid: Sequence[tuple[str, float]], size: int, seconds=None
    ) -> list[dict]:
        """``size`` deterministic examples of ``split`` (IDs ``<split>-<index>``, ``info``:
        the target clip's file and talker); item ``i`` has the condition and SNR
        ``grid[i % len(grid)]`` and the target clip ``i % clips``."""
        seed = fixed_set_seed(self.cfg.split_seed, split)
        clips = self.splits[split]
        audio = AudioCache(self.cfg.sample_rate)
        examples = []
        for i in range(size):
            condition, snr = grid[i % len(grid)]
            rng = np.random.default_rng((seed, _FIXED_STREAM, i))
            target = clips[(i // len(grid)) % len(clips)]
            example = make_av_example(
                rng,
                self.cfg,
                target,
                clips,
                self.noises,
                audio,
                self.hop,
                condition=condition,
                snr_db=snr,
                seconds=seconds,
            )
            examples.append({**example, "info": target.ref._asdict()})
        return with_ids(examples, split)

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        """The validation set (conditions alternating, SNRs drawn from the midpoints) in
        global batches."""
        cfg = self.cfg
        grid = [("noise", float(np.mean(cfg.noise_snr_db_range))), ("talker", 0.0)]
        return batch_examples(self.test_items("valid", grid, cfg.valid_size), self.batch_size)


def _with_source(example: dict) -> dict:
    """``example`` (or a batch) with its target ``clean [..., T]`` as the one source
    ``sources [..., 1, T]`` of the enhancement task."""
    return {**example, "sources": np.asarray(example["clean"])[..., None, :]}


class AVSpeechData:
    """The AV corpus's own speech as the audio net's (Net 1's) enhancement data: the mixtures
    of :class:`AVData` with its splits (so Net 1 never hears a valid or test clip), the
    target as the one source ``sources [1, T]``, read through the interface of
    ``jaxspeech.data.pipeline.MixtureData`` that ``jaxspeech.train.tasks.enhancement`` uses.

    Args: as :class:`AVData`.
    """

    def __init__(self, cfg: AVDataConfig, batch_size: int, hop: int) -> None:
        self.av = AVData(cfg, batch_size, hop)
        self.splits, self.sample_rate = self.av.splits, cfg.sample_rate

    def train_dataset(
        self, process_index: int = 0, process_count: int = 1, seed: int = 0, read_options=None
    ):
        """:meth:`AVData.train_dataset` with ``sources [B, 1, T]``."""
        stream = self.av.train_dataset(process_index, process_count, seed, read_options)
        return stream.map(_with_source)

    def valid_batches(self) -> list[dict[str, np.ndarray]]:
        return [_with_source(batch) for batch in self.av.valid_batches()]

    def test_items(
        self, split: str, size: int, snrs: Sequence[float], seconds: float | None = None
    ) -> list[dict]:
        """``size`` fixed examples of ``split`` in noise at ``snrs`` in turn; ``info`` as a
        pair corpus gives it (``snr_db``, ``speaker``, ``noise``, ``path``)."""
        grid = [("noise", float(snr)) for snr in snrs]
        return [
            {
                **_with_source(item),
                "info": {
                    "snr_db": float(item["snr_db"]),
                    "speaker": item["info"]["talker"],
                    "noise": None,
                    "path": item["info"]["path"],
                },
            }
            for item in self.av.test_items(split, grid, size, seconds)
        ]

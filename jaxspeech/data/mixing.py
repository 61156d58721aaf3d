"""On-the-fly mixtures, LibriMix/WHAM style: k distinct speakers, optional real noise and RIRs.

Everything is plain numpy driven by an explicit ``np.random.Generator``, so a mixture is a pure
function of the generator's seed (the grain pipeline seeds one per example index).

Recipe of ``make_mixture`` (``T = segment_seconds * sample_rate`` samples):

1. draw ``n_src`` distinct speakers and one utterance of each; with ``speed_range``, play each
   utterance at a speed drawn from it (resampling: tempo and pitch change together, as in
   SpeechBrain's dynamic mixing), which makes more voices out of few training speakers;
2. crop ``T`` samples at a random position (an utterance shorter than ``T`` is placed at a
   random offset and zero-padded); a crop more than ``silent_crop_db`` below the utterance's
   RMS is re-drawn, up to ``crop_tries`` times, then the crop centred on the loudest sample
   is taken;
3. with probability ``reverb_prob``, convolve each source with a real room impulse response
   (one drawn per source). WHAMR!-style with the *reverberant image as the target*: the
   returned ``sources`` are what each speaker contributes to the microphone, so
   ``mixture == sources.sum(0) + noise`` holds with or without reverberation. The reverberation
   tail before the crop is kept (the crop is convolved with its full history);
4. set the level of each source by its active RMS (over the samples the utterance covers):
   the first source at a level drawn from ``level_db_range`` dBFS, every other one at that
   level plus a relative gain drawn from ``gain_db_range`` dB;
5. add a crop of a real noise (looped if shorter than ``T``); or, with probability
   ``babble_prob``, babble: the sum of ``babble_talkers`` crops of other speakers at equal
   active levels (``babble``); or, with probability ``colored_noise_prob``, Gaussian noise
   with a random spectral envelope (``colored_noise``); with ``noise_tilt_db_range`` tilted
   by a slope drawn from it (``tilt_spectrum``), scaled to an SNR drawn from
   ``noise_snr_db_range``, measured against the speech (the sum of the sources);
6. scale mixture, sources and noise together so that the largest peak of any is at most
   ``max_peak`` (never scaled up), then ``mixture = sources.sum(0) + noise`` in float32.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.signal
import soxr

from jaxspeech.data.corpus import Utterance, load_audio
from jaxspeech.errors import ConfigError, SilentAudioError


def _check_range(name: str, value: tuple[float, float] | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or len(value) != 2 or not value[0] <= value[1]:
        raise ConfigError(f"MixtureConfig.{name} must be a (low, high) pair, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """How mixtures are made (see the module docstring for the recipe).

    The number of speakers is not part of it: it belongs to the model, and the task passes it
    to ``make_mixture``.

    Attributes:
      sample_rate: model rate (Hz); every file is resampled to it.
      segment_seconds: length of every mixture.
      level_db_range: active RMS level of the first source, dBFS (LibriMix: -33..-25).
      gain_db_range: level of every other source relative to the first, dB.
      noise_snr_db_range: speech-to-noise ratio range in dB, or None for no noise.
      reverb_prob: probability that a mixture is reverberant (needs RIR files).
      max_peak: largest absolute sample allowed anywhere after the final rescale.
      silent_crop_db: a crop this many dB below its utterance's RMS counts as silent.
      crop_tries: how many random crops to try before centring on the loudest sample.
      speed_range: (low, high) speed factors for training-time perturbation, or None.
        ``MixtureData`` never applies it to its fixed validation and test sets.
      noise_tilt_db_range: (low, high) spectral slopes in dB per octave drawn for the noise of
        each mixture, or None: training-time augmentation that spreads a few recorded noises
        over other spectral shapes (a low hum becomes a broadband hiss with a positive
        slope); never applied to the fixed sets either.
      babble_prob: probability that a noisy mixture's noise is babble of other speakers of
        the same corpus instead of a noise recording (training-time augmentation for
        enhancement: speech-like, non-stationary noise; never applied to the fixed sets).
      babble_talkers: (low, high) number of babble talkers, both included.
      colored_noise_prob: probability that a noisy mixture's noise is stationary Gaussian
        noise with a random spectral envelope (``colored_noise``; training-time augmentation,
        never applied to the fixed sets). ``babble_prob + colored_noise_prob <= 1``.
      colored_noise_db: the envelope's gain at each octave is drawn from ``±`` this, in dB.
      lone_speaker_prob: probability that a mixture of several speakers holds the first one
        alone, the other sources silent (zeros): training-time, so that a separator learns to
        leave a track silent rather than split one voice; never applied to the fixed sets.
    """

    sample_rate: int = 8000
    segment_seconds: float = 4.0
    level_db_range: tuple[float, float] = (-33.0, -25.0)
    gain_db_range: tuple[float, float] = (-5.0, 5.0)
    noise_snr_db_range: tuple[float, float] | None = None
    reverb_prob: float = 0.0
    max_peak: float = 0.9
    silent_crop_db: float = 20.0
    crop_tries: int = 5
    speed_range: tuple[float, float] | None = None
    noise_tilt_db_range: tuple[float, float] | None = None
    babble_prob: float = 0.0
    babble_talkers: tuple[int, int] = (3, 6)
    colored_noise_prob: float = 0.0
    colored_noise_db: float = 10.0
    lone_speaker_prob: float = 0.0

    def __post_init__(self):
        if self.sample_rate <= 0 or self.num_samples < 1:
            raise ConfigError(
                "MixtureConfig: sample_rate and segment_seconds must give at least one sample, "
                f"got {self.sample_rate} Hz x {self.segment_seconds} s"
            )
        _check_range("level_db_range", self.level_db_range)
        _check_range("gain_db_range", self.gain_db_range)
        _check_range("noise_snr_db_range", self.noise_snr_db_range, optional=True)
        if not 0.0 <= self.reverb_prob <= 1.0:
            raise ConfigError(
                f"MixtureConfig.reverb_prob must be in [0, 1], got {self.reverb_prob}"
            )
        probs = (self.babble_prob, self.colored_noise_prob)
        if min(probs) < 0.0 or sum(probs) > 1.0:
            raise ConfigError(
                "MixtureConfig.babble_prob and colored_noise_prob must be >= 0 with a sum of at "
                f"most 1, got {self.babble_prob} and {self.colored_noise_prob}"
            )
        if not 0.0 <= self.lone_speaker_prob < 1.0:
            raise ConfigError(
                f"MixtureConfig.lone_speaker_prob must be in [0, 1), got {self.lone_speaker_prob}"
            )
        if self.colored_noise_db < 0:
            raise ConfigError(
                f"MixtureConfig.colored_noise_db must be >= 0, got {self.colored_noise_db}"
            )
        low, high = self.babble_talkers
        if not 1 <= low <= high:
            raise ConfigError(
                f"MixtureConfig.babble_talkers must be (low, high) with 1 <= low <= high, got "
                f"{self.babble_talkers}"
            )
        if not 0.0 < self.max_peak <= 1.0:
            raise ConfigError(f"MixtureConfig.max_peak must be in (0, 1], got {self.max_peak}")
        _check_range("speed_range", self.speed_range, optional=True)
        if self.speed_range is not None and self.speed_range[0] <= 0:
            raise ConfigError(f"MixtureConfig.speed_range must be positive, got {self.speed_range}")
        _check_range("noise_tilt_db_range", self.noise_tilt_db_range, optional=True)
        if self.crop_tries < 1:
            raise ConfigError(f"MixtureConfig.crop_tries must be >= 1, got {self.crop_tries}")

    @property
    def num_samples(self) -> int:
        """Samples per mixture, ``T``."""
        return round(self.segment_seconds * self.sample_rate)


class AudioCache:
    """Decoded audio resampled to one rate, kept in memory (least recently used evicted).

    Thread-safe. Pickling (for worker processes) drops the cached arrays, so every process
    fills its own cache.

    Args:
      sample_rate: the rate every file is resampled to (soxr, via ``corpus.load_audio``: audio
        files and GRID clips' audio tracks).
      max_bytes: evict least recently used files past this total size.
    """

    def __init__(self, sample_rate: int, max_bytes: int = 4 << 30):
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        """The mono float32 audio ``[samples]`` of ``path`` at ``sample_rate``."""
        path = os.fspath(path)
        with self._lock:
            wav = self._entries.get(path)
            if wav is not None:
                self._entries.move_to_end(path)
                return wav
        wav = load_audio(path, self.sample_rate)
        wav.setflags(write=False)
        with self._lock:
            if path not in self._entries:
                self._entries[path] = wav
                self._bytes += wav.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                self._bytes -= self._entries.popitem(last=False)[1].nbytes
        return wav

    def __getstate__(self):
        return {"sample_rate": self.sample_rate, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(**state)


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (float64 accumulation; 0 for an empty array)."""
    return math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _window(wav: np.ndarray, start: int, length: int) -> np.ndarray:
    """``wav[start : start + length]`` (float64) with zeros where the range leaves ``wav``."""
    out = np.zeros(length, np.float64)
    lo, hi = max(start, 0), min(start + length, len(wav))
    if hi > lo:
        out[lo - start : hi - start] = wav[lo:hi]
    return out


def draw_start(
    rng: np.random.Generator,
    wav: np.ndarray,
    length: int,
    path: str,
    silent_crop_db: float,
    crop_tries: int,
) -> int:
    """Start (in ``wav`` samples, negative = zero-padding) of a ``length`` crop of ``wav`` that
    is not silent (not ``silent_crop_db`` below the RMS of ``wav``).

    A recording shorter than ``length`` is placed at a random offset. After ``crop_tries``
    silent draws, the crop centred on the loudest sample is used.

    Raises:
      SilentAudioError: ``wav`` (read from ``path``) is all zeros.
    """
    threshold = rms(wav) * 10.0 ** (-silent_crop_db / 20.0)
    if threshold <= 0.0:
        raise SilentAudioError(f"{path}: the recording is all zeros; remove it from the corpus")
    if len(wav) < length:
        return -int(rng.integers(0, length - len(wav) + 1))
    for _ in range(crop_tries):
        start = int(rng.integers(0, len(wav) - length + 1))
        if rms(wav[start : start + length]) >= threshold:
            return start
    return int(np.clip(np.argmax(np.abs(wav)) - length // 2, 0, len(wav) - length))


def crop_image(
    wav: np.ndarray, start: int, length: int, rir: np.ndarray | None = None
) -> np.ndarray:
    """The crop ``wav[start : start + length]`` ``[length]`` (float64, zero-padded outside
    ``wav``), convolved with ``rir`` when given; the reverberation tail of the samples before
    the crop is kept (the crop is convolved with its full history)."""
    if rir is None:
        return _window(wav, start, length)
    history = _window(wav, start - len(rir) + 1, length + len(rir) - 1)
    return scipy.signal.fftconvolve(history, rir.astype(np.float64), mode="valid")


def noise_crop(
    rng: np.random.Generator,
    wav: np.ndarray,
    length: int,
    path: str,
    silent_crop_db: float,
    crop_tries: int,
) -> tuple[np.ndarray, int]:
    """A non-silent ``[length]`` crop of the noise ``wav`` (looped when shorter) and its start
    sample (see ``draw_start``)."""
    period = len(wav)
    if period < length:
        wav = np.tile(wav, -(-length // period) + 1)
    start = draw_start(rng, wav, length, path, silent_crop_db, crop_tries)
    return _window(wav, start, length), start % period


def tilt_spectrum(
    x: np.ndarray, db_per_octave: float, sample_rate: int, pivot_hz: float = 1000.0
) -> np.ndarray:
    """``x [T]`` filtered (circularly, by FFT) with the gain ``db_per_octave · log2(f / pivot)``
    dB at frequency ``f``; frequencies below 1/8 of ``pivot_hz`` get the gain at that floor."""
    freqs = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    octaves = np.log2(np.maximum(freqs, pivot_hz / 8) / pivot_hz)
    gain = 10.0 ** (db_per_octave * octaves / 20.0)
    return np.fft.irfft(np.fft.rfft(x) * gain, n=len(x))


def noise_gain(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """The factor that puts ``noise`` at ``snr_db`` below ``speech`` (energies over the
    arrays)."""
    speech_energy = np.sum(np.square(speech, dtype=np.float64))
    return math.sqrt(
        speech_energy / (np.sum(np.square(noise, dtype=np.float64)) * 10.0 ** (snr_db / 10.0))
    )


def speed_perturbed(
    rng: np.random.Generator,
    wav: np.ndarray,
    speed_range: tuple[float, float] | None,
    sample_rate: int,
) -> np.ndarray:
    """``wav`` played at a speed drawn from ``speed_range`` (resampled: tempo and pitch change
    together), or ``wav`` itself when the range is None (no draw)."""
    if speed_range is None:
        return wav
    speed = rng.uniform(*speed_range)  # x(speed · t): read at speed · rate, resampled
    return soxr.resample(wav, sample_rate * speed, sample_rate, quality="HQ")


def draw_speakers(
    rng: np.random.Generator,
    speakers: Mapping[str, Sequence[Utterance]],
    n_src: int,
    first: Utterance | None,
) -> list[Utterance]:
    """``n_src`` utterances of distinct speakers; ``first`` (when given) is the first one."""
    names = [s for s in speakers if first is None or s != first.speaker]
    n_draw = n_src - (first is not None)
    if len(names) < n_draw:
        raise ConfigError(
            f"make_mixture: {n_src} distinct speakers needed, the corpus has "
            f"{len(names) + (first is not None)}; add speakers or lower n_src"
        )
    chosen = [speakers[names[i]] for i in rng.choice(len(names), n_draw, replace=False)]
    drawn = [utts[int(rng.integers(len(utts)))] for utts in chosen]
    return ([first] if first is not None else []) + drawn


def draw_levels_db(
    rng: np.random.Generator, cfg: MixtureConfig, n_src: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(gains_db, levels_db)`` ``[n_src]`` each: the active RMS level of every source (dBFS),
    the first drawn from ``level_db_range`` and every other that plus a gain drawn from
    ``gain_db_range``, and those gains (0 for the first)."""
    gains_db = np.concatenate([[0.0], rng.uniform(*cfg.gain_db_range, size=n_src - 1)])
    return gains_db, rng.uniform(*cfg.level_db_range) + gains_db


def _source_image(
    rng: np.random.Generator,
    utt: Utterance,
    rir_path: str | None,
    cfg: MixtureConfig,
    audio: AudioCache,
) -> tuple[np.ndarray, int, float]:
    """One source's crop ``[T]`` (reverberant when ``rir_path``), its start and active RMS."""
    wav = speed_perturbed(rng, audio(utt.path), cfg.speed_range, cfg.sample_rate)
    length = cfg.num_samples
    start = draw_start(rng, wav, length, utt.path, cfg.silent_crop_db, cfg.crop_tries)
    image = crop_image(wav, start, length, None if rir_path is None else audio(rir_path))
    active = image[max(0, -start) : min(length, len(wav) - start)]
    level = rms(active)
    if level <= 0.0:  # only a zero impulse response silences a non-silent crop
        raise SilentAudioError(f"{rir_path}: the impulse response is all zeros; remove it")
    return image, start, level


def babble(
    rng: np.random.Generator,
    cfg: MixtureConfig,
    speakers: Mapping[str, Sequence[Utterance]],
    exclude: Sequence[str],
    audio: AudioCache,
) -> tuple[np.ndarray, list[str]]:
    """Babble ``[T]`` (float64): crops of ``babble_talkers`` distinct speakers other than
    ``exclude``, each at unit active RMS, summed; and the files used.

    Raises:
      ConfigError: fewer speakers than the low end of ``babble_talkers``.
    """
    others = {name: utts for name, utts in speakers.items() if name not in exclude}
    low, high = cfg.babble_talkers
    if len(others) < low:
        raise ConfigError(
            f"make_mixture: babble needs at least {low} other speakers, the corpus has "
            f"{len(others)}; add speakers or lower babble_talkers"
        )
    talkers = draw_speakers(rng, others, int(rng.integers(low, min(high, len(others)) + 1)), None)
    crops = [_source_image(rng, utt, None, cfg, audio) for utt in talkers]
    return sum(image / level for image, _, level in crops), [u.path for u in talkers]


def colored_noise(rng: np.random.Generator, length: int, sample_rate: int, db: float) -> np.ndarray:
    """Stationary Gaussian noise ``[length]`` (float64) whose spectral envelope has a gain
    drawn uniformly from ``[-db, db]`` dB at every octave from 62.5 Hz to the Nyquist rate,
    linear in dB between them on a log-frequency axis (flat outside)."""
    nyquist = sample_rate / 2
    anchors = np.log2(62.5 * 2.0 ** np.arange(int(np.log2(nyquist / 62.5)) + 1))
    anchors = np.append(anchors, np.log2(nyquist))
    gains_db = rng.uniform(-db, db, size=len(anchors))
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    envelope = np.interp(np.log2(np.maximum(freqs, 1.0)), anchors, gains_db)
    spectrum = np.fft.rfft(rng.standard_normal(length)) * 10.0 ** (envelope / 20.0)
    return np.fft.irfft(spectrum, n=length)


def _noise_kind(rng: np.random.Generator, cfg: MixtureConfig) -> str:
    """ "babble", "colored" or "recording" for one noisy mixture (no draw when neither
    augmentation is on, so mixtures without them stay as they were)."""
    if cfg.babble_prob == 0 and cfg.colored_noise_prob == 0:
        return "recording"
    u = rng.random()
    if u < cfg.babble_prob:
        return "babble"
    return "colored" if u < cfg.babble_prob + cfg.colored_noise_prob else "recording"


def make_mixture(
    rng: np.random.Generator,
    cfg: MixtureConfig,
    speakers: Mapping[str, Sequence[Utterance]],
    noises: Sequence[str | os.PathLike],
    rirs: Sequence[str | os.PathLike],
    audio: AudioCache,
    *,
    n_src: int,
    first: Utterance | None = None,
    snr_db: float | None = None,
) -> dict:
    """Makes one mixture (recipe in the module docstring).

    Args:
      rng: the only source of randomness.
      cfg: the recipe.
      n_src: number of speakers (1 = speech enhancement, 2 or 3 = separation).
      speakers: ``{speaker: utterances}`` (``corpus.group_by_speaker``).
      noises: noise files; needed when ``cfg.noise_snr_db_range`` is set.
      rirs: room impulse response files; needed when ``cfg.reverb_prob > 0``.
      audio: decoded-audio cache at ``cfg.sample_rate``.
      first: use this utterance as the first source (the others are other speakers).
      snr_db: use this SNR instead of drawing one (evaluation grids); needs noise.

    Returns:
      ``mixture`` [T], ``sources`` [n_src, T], ``noise`` [T] (zeros without noise), all
      float32 with ``mixture == sources.sum(0) + noise``; ``snr_db`` (float32 scalar, +inf
      without noise); ``gains_db`` [n_src] (levels relative to the first source); ``info``:
      a dict of plain Python metadata (speakers, files, crop starts, RIRs, noise file/start).
    """
    if n_src < 1:
        raise ConfigError(f"make_mixture: n_src must be >= 1 (number of speakers), got {n_src}")
    if audio.sample_rate != cfg.sample_rate:
        raise ConfigError(
            f"make_mixture: the audio cache decodes at {audio.sample_rate} Hz but the config "
            f"asks for {cfg.sample_rate} Hz; build AudioCache(cfg.sample_rate)"
        )
    with_noise = cfg.noise_snr_db_range is not None
    if (with_noise or snr_db is not None) and not noises:
        raise ConfigError("make_mixture: noise requested but no noise files given")
    if snr_db is not None and not with_noise:
        raise ConfigError("make_mixture: snr_db given but cfg.noise_snr_db_range is None")
    if cfg.reverb_prob > 0 and not rirs:
        raise ConfigError("make_mixture: reverb_prob > 0 but no RIR files given")

    utts = draw_speakers(rng, speakers, n_src, first)
    reverberant = cfg.reverb_prob > 0 and rng.random() < cfg.reverb_prob
    rir_paths = [
        os.fspath(rirs[int(rng.integers(len(rirs)))]) if reverberant else None for _ in utts
    ]
    images, starts, levels = zip(
        *(_source_image(rng, u, r, cfg, audio) for u, r in zip(utts, rir_paths, strict=True)),
        strict=True,
    )
    gains_db, target_db = draw_levels_db(rng, cfg, n_src)
    sources = np.stack(images) * (10.0 ** (target_db / 20.0) / np.asarray(levels))[:, None]
    if n_src > 1 and cfg.lone_speaker_prob > 0 and rng.random() < cfg.lone_speaker_prob:
        sources[1:] = 0.0

    noise = np.zeros(cfg.num_samples)
    noise_file, noise_start = "", 0
    snr = math.inf
    if with_noise:
        kind = _noise_kind(rng, cfg)
        if kind == "recording":
            noise_file = os.fspath(noises[int(rng.integers(len(noises)))])
        snr = float(snr_db) if snr_db is not None else float(rng.uniform(*cfg.noise_snr_db_range))
        if kind == "babble":
            noise, babble_files = babble(rng, cfg, speakers, [u.speaker for u in utts], audio)
            noise_file = "babble:" + "+".join(babble_files)
        elif kind == "colored":
            noise = colored_noise(rng, cfg.num_samples, cfg.sample_rate, cfg.colored_noise_db)
            noise_file = "colored"
        else:
            noise, noise_start = noise_crop(
                rng,
                audio(noise_file),
                cfg.num_samples,
                noise_file,
                cfg.silent_crop_db,
                cfg.crop_tries,
            )
        if cfg.noise_tilt_db_range is not None:
            noise = tilt_spectrum(noise, rng.uniform(*cfg.noise_tilt_db_range), cfg.sample_rate)
        noise *= noise_gain(sources.sum(axis=0), noise, snr)

    mixture = sources.sum(axis=0) + noise
    peak = max(np.abs(mixture).max(), np.abs(sources).max(), np.abs(noise).max())
    scale = min(1.0, cfg.max_peak / peak)
    sources = (sources * scale).astype(np.float32)
    noise = (noise * scale).astype(np.float32)
    return {
        "mixture": sources.sum(axis=0) + noise,
        "sources": sources,
        "noise": noise,
        "snr_db": np.float32(snr),
        "gains_db": gains_db.astype(np.float32),
        "info": {
            "speakers": [u.speaker for u in utts],
            "labels": [u.label for u in utts],
            "source_files": [u.path for u in utts],
            "source_starts": [int(s) for s in starts],
            "rir_files": [r or "" for r in rir_paths],
            "noise_file": noise_file,
            "noise_start": int(noise_start),
        },
    }

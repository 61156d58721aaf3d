"""Small synthetic corpora and stream helpers shared by the data tests."""

from __future__ import annotations

import pathlib
from collections import Counter
from fractions import Fraction

import jax
import numpy as np
import soundfile as sf


def tone(freq: float, seconds: float, rate: int, phase: float = 0.0) -> np.ndarray:
    """A 0.3-amplitude sine ``[round(seconds · rate)]`` float32."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write_tone_corpus(
    root: pathlib.Path, tones: dict[str, float], seconds, rate: int, noise_samples: dict[str, int]
) -> pathlib.Path:
    """``root/speech/<speaker>/<k>.wav`` (one tone per speaker, one file per duration in
    ``seconds``), ``root/noise/<name>.wav`` (Gaussian noise of the given lengths) and one
    decaying ``root/rir/room.wav``, all at ``rate``; returns ``root``."""
    for speaker, freq in tones.items():
        (root / "speech" / speaker).mkdir(parents=True)
        for k, length in enumerate(seconds):
            sf.write(root / "speech" / speaker / f"{k}.wav", tone(freq, length, rate, k), rate)
    noise_rng = np.random.default_rng(1)
    (root / "noise").mkdir()
    for name, samples in noise_samples.items():
        sf.write(root / "noise" / f"{name}.wav", 0.1 * noise_rng.standard_normal(samples), rate)
    (root / "rir").mkdir()
    decay = np.exp(-np.arange(800) / 120.0) * noise_rng.standard_normal(800)
    decay[0] = 1.0
    sf.write(root / "rir" / "room.wav", (0.5 * decay).astype(np.float32), rate)
    return root


def assert_stratified(utterances, splits: dict, fractions) -> None:
    """Each of ``splits`` (``split_speakers`` of ``utterances``) holds its share of the speakers
    of every (gender, age group) stratum, within one speaker."""
    from jaxspeech.data.corpus import SPLITS, age_group

    def strata(utts):
        speakers = {u.speaker: (u.gender, age_group(u.age)) for u in utts}
        return Counter(speakers.values())

    in_corpus = strata(utterances)
    for name, share in zip(SPLITS, fractions, strict=True):
        in_split = strata(splits[name])
        for stratum, count in in_corpus.items():
            assert abs(in_split[stratum] - share * count) <= 1, (name, stratum)


def take(dataset, n: int, state=None) -> list:
    """The first ``n`` items of a fresh iterator of ``dataset`` (from ``state`` when given)."""
    iterator = iter(dataset)
    if state is not None:
        iterator.set_state(state)
    return [next(iterator) for _ in range(n)]


def batches_equal(a: dict, b: dict) -> bool:
    """Same keys and equal arrays."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def write_video(
    path: pathlib.Path, frames: np.ndarray, pts_ms, audio: np.ndarray | None = None, rate=44100
) -> None:
    """An MPEG-4-coded video (needs PyAV; the container follows the extension, ``.mpg``:
    MPEG programme stream) of ``frames`` ``[F, H, W]`` uint8 gray, frame ``i`` shown at
    ``pts_ms[i]`` milliseconds (any spacing: variable frame rate). Silent, or with ``audio``
    ``[S]`` float32 at ``rate`` as its track in both channels of MP2 stereo, as GRID's clips
    (the encoder pads the track to whole 1152-sample frames)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = frames.shape[1:]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        track = None if audio is None else container.add_stream("mp2", rate=rate, layout="stereo")
        for image, pts in zip(frames, pts_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(np.repeat(image[..., None], 3, axis=2), "rgb24")
            frame.pts, frame.time_base = int(pts), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if track is not None:
            samples = np.stack([audio, audio]).astype(np.float32)  # planar [channels, S]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, 0
            container.mux(track.encode(frame))
            container.mux(track.encode(None))


def random_params(module, *inputs, seed=0, scale=0.3):
    """Gaussian params of ``module``'s shapes for ``module.init(rng, *inputs)``, drawn with
    numpy (``init`` compiles orthogonal QRs and every eager op compiles: slow on CPU)."""
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(x.dtype), shapes)

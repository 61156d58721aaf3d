"""Video decoding with PyAV (``av``, the ``video`` extra) and video-to-STFT frame alignment.

Time zero of a file is the start of its audio track (the video stream's start when it has no
audio), so ``audio[n]`` plays at ``n / sample_rate`` and frame ``i`` appears at
``timestamps[i]`` on the same clock. Timestamps come from each frame's pts and the stream's
time base, so variable-frame-rate video keeps its true timing. A separate audio file that was
taken from the clip's own track (a noisy copy of it) shares this clock.

Importing this module does not need PyAV; reading a file does, and says how to install it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from fractions import Fraction

import numpy as np

from jaxspeech import audio
from jaxspeech.errors import ConfigError, MissingExtraError, ShapeError, VideoFileError

#: How to install the video dependencies, named in every missing-package error.
VIDEO_EXTRA_HINT = 'pip install -e ".[video]"'

#: Seconds within which an STFT frame's centre counts as on a video-frame boundary, so that
#: rounding in computed timestamps (``k / 29.97``) does not move a frame by one.
TIME_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
    """A decoded video file.

    Attributes:
      frames: ``[F, H, W]`` uint8 grayscale frames in presentation order.
      timestamps: ``[F]`` float64 presentation time of each frame in seconds (see the module
        docstring for time zero).
      fps: average frame rate, ``(F - 1) / (timestamps[-1] - timestamps[0])`` (the stream's
        nominal rate for a single frame).
      frame_duration: how long the last frame is shown, in seconds (its own duration from the
        stream, else ``1 / fps``): where the picture ends.
      audio: ``[S]`` float32 mono audio track resampled to ``sample_rate``, or None when no
        rate was asked for.
      sample_rate: the rate of ``audio``, or None.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float
    frame_duration: float
    audio: np.ndarray | None
    sample_rate: int | None


def import_av():
    """The ``av`` module; raises MissingExtraError with the install command without it."""
    try:
        import av
    except ImportError as err:
        raise MissingExtraError(
            f"reading video needs PyAV, which is not installed: {VIDEO_EXTRA_HINT}"
        ) from err
    return av


def read_video(path: str | os.PathLike, *, sample_rate: int | None = None) -> Video:
    """Decodes every frame of ``path`` as grayscale, with its timestamp, and the audio track
    (mono: the mean of its channels, resampled with soxr) when ``sample_rate`` is given.

    Raises:
      VideoFileError: a missing file, one that cannot be decoded, one without a video stream,
        or one without an audio stream when ``sample_rate`` is given.
      MissingExtraError: PyAV is not installed.
    """
    av = import_av()
    path = os.fspath(path)
    with _open(av, path) as container:
        if not container.streams.video:
            raise VideoFileError(
                f"{path}: has no video stream; give a video of the speaker's face "
                "(an audio-only file cannot show the lips)"
            )
        if sample_rate is not None:
            _require_audio_stream(container, path)
        stream_rate = container.streams.video[0].average_rate
        decoded = _decode(av, container, path, video=True, sample_rate=sample_rate)
    frames, timestamps, last_duration, wav = decoded
    if len(timestamps) > 1:
        fps = (len(timestamps) - 1) / float(timestamps[-1] - timestamps[0])
    elif stream_rate:
        fps = float(stream_rate)
    else:
        raise VideoFileError(f"{path}: a single frame and no frame rate; re-encode the video")
    return Video(
        frames=frames,
        timestamps=timestamps,
        fps=fps,
        frame_duration=last_duration or 1.0 / fps,
        audio=wav,
        sample_rate=sample_rate,
    )


def read_video_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """The audio track of the video (or audio) file ``path`` as ``[S]`` float32 mono at
    ``sample_rate`` (the mean of its channels, resampled with soxr), without decoding frames.

    Raises:
      VideoFileError: missing, undecodable, or no audio stream.
      MissingExtraError: PyAV is not installed.
    """
    with _audio_track(path) as (av, container, path):
        return _decode(av, container, path, video=False, sample_rate=sample_rate)[3]


def audio_header(path: str | os.PathLike) -> tuple[int, int]:
    """``(num_samples, sample_rate)`` of the audio track of ``path`` at its own rate, counted
    by decoding the track (an MPEG programme stream's headers give no exact length); raises
    as :func:`read_video_audio`."""
    with _audio_track(path) as (av, container, path):
        stream = container.streams.audio[0]
        try:
            return sum(frame.samples for frame in container.decode(stream)), stream.rate
        except av.FFmpegError as err:
            raise _undecodable(path, err) from err


def video_frame_per_stft_frame(
    timestamps: np.ndarray,
    frame_duration: float | None,
    n_stft_frames: int,
    hop_length: int,
    sample_rate: int,
) -> np.ndarray:
    """Which video frame is showing at each STFT frame.

    Video frame ``i`` is shown from ``timestamps[i]`` until ``timestamps[i + 1]``, the last one
    for ``frame_duration`` seconds (None: the median frame spacing). STFT frame ``j`` is taken
    at its centre time ``j * hop_length / sample_rate`` (the centred STFT of ``jaxspeech.dsp``).
    A centre within :data:`TIME_TOLERANCE` of a boundary counts as past it. At 25 fps and a
    10 ms hop each video frame covers 4 STFT frames.

    Args:
      timestamps: ``[F]`` strictly increasing frame times in seconds, on the audio's clock.
      frame_duration: display time of the last frame in seconds, or None.
      n_stft_frames: T, the number of STFT frames of the audio.
      hop_length, sample_rate: the STFT hop in samples and the audio's rate.

    Returns:
      ``[T]`` int32 video-frame index per STFT frame; -1 where no frame is showing (before the
      first frame, or after the last one ends: a video shorter than its audio).
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.ndim != 1 or timestamps.size == 0:
        raise ShapeError(f"timestamps must be a non-empty [frames] array, got {timestamps.shape}")
    if not np.all(np.isfinite(timestamps)) or np.any(np.diff(timestamps) <= 0):
        raise ShapeError("timestamps must be finite and strictly increasing (one per frame)")
    if hop_length <= 0 or sample_rate <= 0 or n_stft_frames < 0:
        raise ConfigError(
            f"need hop_length > 0, sample_rate > 0, n_stft_frames >= 0; got {hop_length}, "
            f"{sample_rate}, {n_stft_frames}"
        )
    if frame_duration is None:
        if timestamps.size == 1:
            raise ConfigError("a single video frame: pass its frame_duration in seconds")
        frame_duration = float(np.median(np.diff(timestamps)))
    if frame_duration <= 0:
        raise ConfigError(f"frame_duration must be positive seconds, got {frame_duration}")
    centres = np.arange(n_stft_frames) * hop_length / sample_rate + TIME_TOLERANCE
    index = np.searchsorted(timestamps, centres, side="right") - 1
    index[centres >= timestamps[-1] + frame_duration] = -1
    return index.astype(np.int32)


def _open(av, path: str):
    if not os.path.isfile(path):
        raise VideoFileError(f"{path}: no such file; check the path")
    try:
        return av.open(path)
    except av.FFmpegError as err:
        raise _undecodable(path, err) from err


def _undecodable(path: str, err: Exception) -> VideoFileError:
    return VideoFileError(f"{path}: cannot be decoded ({err}); re-encode it as MP4 (H.264) or MPEG")


@contextlib.contextmanager
def _audio_track(path: str | os.PathLike):
    """``(av, open container, path as str)`` of a file checked to have an audio stream."""
    av = import_av()
    path = os.fspath(path)
    with _open(av, path) as container:
        _require_audio_stream(container, path)
        yield av, container, path


def _require_audio_stream(container, path: str) -> None:
    if not container.streams.audio:
        raise VideoFileError(
            f"{path}: has no audio stream; pass its sound as a separate audio file"
        )


def _stream_start(stream) -> Fraction:
    return Fraction(0) if stream.start_time is None else stream.start_time * stream.time_base


def _time_origin(container) -> Fraction:
    """Time zero in stream seconds: the audio track's start, else the video stream's."""
    streams = container.streams.audio or container.streams.video
    return _stream_start(streams[0])


def _decode(av, container, path: str, *, video: bool, sample_rate: int | None):
    """Decodes the first video stream (if ``video``) and the first audio stream (if
    ``sample_rate``) in one pass.

    Returns ``(frames [F, H, W] uint8, timestamps [F] float64 s, last frame's duration in s
    or None, audio [S] float32 mono at sample_rate)``; the parts not asked for are None.
    """
    streams = []
    if video:
        streams.append(container.streams.video[0])
        origin = _time_origin(container)
    if sample_rate is not None:
        audio_stream = container.streams.audio[0]
        streams.append(audio_stream)
        to_float = av.AudioResampler(format="fltp", rate=audio_stream.rate)  # [channels, n]
    frames, timestamps, duration, chunks = [], [], None, []
    try:
        for frame in container.decode(*streams):
            if isinstance(frame, av.AudioFrame):
                chunks.extend(f.to_ndarray().mean(axis=0) for f in to_float.resample(frame))
                continue
            if frame.pts is None:
                raise VideoFileError(
                    f"{path}: frame {len(frames)} has no timestamp; remux the file "
                    "(ffmpeg -i IN -c copy OUT.mp4)"
                )
            frames.append(frame.to_ndarray(format="gray"))
            timestamps.append(float(frame.pts * frame.time_base - origin))
            duration = float(frame.duration * frame.time_base) if frame.duration else None
        if sample_rate is not None:
            chunks.extend(f.to_ndarray().mean(axis=0) for f in to_float.resample(None))
    except av.FFmpegError as err:
        raise _undecodable(path, err) from err
    if video and not frames:
        raise VideoFileError(f"{path}: the video stream has no decodable frames")
    wav = None
    if sample_rate is not None:
        wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        audio.validate(wav, path)
        wav = audio.resample(wav, audio_stream.rate, sample_rate)
    if not video:
        return None, None, None, wav
    return np.stack(frames), np.asarray(timestamps, dtype=np.float64), duration, wav

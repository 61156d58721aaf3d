"""Mouth-region crops of a talking-face video: face detection, gap filling, a box smoothed over
time, fixed-size grayscale crops, cached per video.

The face detector is OpenCV's frontal-face Haar cascade (:data:`HAAR_MODEL`), whose model
ships inside ``opencv-python-headless`` 4.x (the ``video`` extra). On the 51 GRID clips of
``../shared/data/grid`` it finds the face in every frame (``bench/RESULTS.md``). The mouth box
is a square in the lower part of the face box (:class:`MouthConfig` says where).

Per frame: detect faces on a downscaled copy and keep the largest; fill detection gaps of at
most ``max_gap_frames`` (linear between the neighbouring boxes; at the clip's ends, where one
neighbour is missing, the nearest box is held); longer gaps are "no face". The box is then
smoothed by a centred moving average within each run of face frames, so the crop does not
jitter, and the crop is cut out with sub-pixel precision and resized to ``crop_size``.

Importing this module does not need OpenCV or PyAV; computing a track does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import zipfile
from collections.abc import Iterable

import numpy as np
import tqdm

from jaxspeech.data.video import VIDEO_EXTRA_HINT, read_video
from jaxspeech.errors import ConfigError, MissingExtraError, ShapeError, VideoFileError
from jaxspeech.files import atomic_output

#: Face detectors :class:`MouthConfig` accepts.
DETECTORS = ("opencv_haar",)

#: Bumped whenever the crops change for the same file and settings, so old caches are unused.
CACHE_VERSION = 1

# OpenCV cascade search: the scale step between pyramid levels and the overlapping hits a
# face needs; with these no GRID frame has a false second face.
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBOURS = 3
HAAR_MODEL = "haarcascade_frontalface_alt2.xml"


@dataclasses.dataclass(frozen=True)
class MouthConfig:
    """How mouth crops are made; every field is part of the cache key.

    Attributes:
      crop_size: crops are ``crop_size x crop_size`` grayscale pixels.
      detector: one of :data:`DETECTORS`.
      detect_scale: frames are downscaled by this factor for detection (faster; the boxes are
        scaled back).
      min_face_fraction: the smallest face searched, as a fraction of the frame height.
      mouth_centre: the mouth centre below the face box's top, as a fraction of its height.
      mouth_width: the side of the square mouth box, as a fraction of the face box's width.
      smooth_frames: width of the centred moving average over the box (odd; 1: none). It looks
        ``smooth_frames // 2`` frames ahead.
      max_gap_frames: detection gaps up to this many frames are filled; longer ones are no-face.
    """

    crop_size: int = 64
    detector: str = "opencv_haar"
    detect_scale: float = 0.5
    min_face_fraction: float = 0.25
    mouth_centre: float = 0.82
    mouth_width: float = 0.5
    smooth_frames: int = 5
    max_gap_frames: int = 3

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ConfigError(f"mouths.detector={self.detector!r}; choose one of {DETECTORS}")
        if self.crop_size < 1 or self.max_gap_frames < 0:
            raise ConfigError(
                f"mouths.crop_size must be >= 1 and max_gap_frames >= 0, got {self.crop_size} "
                f"and {self.max_gap_frames}"
            )
        if self.smooth_frames < 1 or self.smooth_frames % 2 == 0:
            raise ConfigError(f"mouths.smooth_frames must be odd and >= 1: {self.smooth_frames}")
        for name in ("detect_scale", "min_face_fraction", "mouth_centre", "mouth_width"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"mouths.{name} must be in (0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True, eq=False)
class MouthTrack:
    """The mouth region of every frame of a video.

    Attributes:
      crops: ``[F, crop_size, crop_size]`` float32 grayscale in [0, 1]; zeros where no face.
      boxes: ``[F, 3]`` float64 mouth box ``(centre x, centre y, side)`` in frame pixels; NaN
        where no face.
      face_present: ``[F]`` bool, a face was found in the frame (or the gap was filled).
      timestamps: ``[F]`` float64 seconds, as :func:`jaxspeech.data.video.read_video` gives.
      fps, frame_duration: the video's average frame rate and its last frame's duration (s).
    """

    crops: np.ndarray
    boxes: np.ndarray
    face_present: np.ndarray
    timestamps: np.ndarray
    fps: float
    frame_duration: float

    def lip_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``(crops [F, h, w] float32, timestamps [F] float64, face_present [F] bool, fps)``,
        the arrays the lip net's inputs are made from (``jaxspeech.data.av.lip_frames``)."""
        return (
            np.asarray(self.crops, np.float32),
            np.asarray(self.timestamps, np.float64),
            np.asarray(self.face_present, bool),
            float(self.fps),
        )


TRACK_FIELDS = tuple(field.name for field in dataclasses.fields(MouthTrack))


def mouth_track(
    path: str | os.PathLike,
    config: MouthConfig = MouthConfig(),
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
) -> MouthTrack:
    """The mouth crops of the video ``path``, read from ``cache_dir`` when cached there with the
    same file content and ``config`` (written there otherwise; None: no cache).

    Raises:
      VideoFileError: the file is missing, undecodable or has no video stream.
      MissingExtraError: PyAV or OpenCV is not installed.
    """
    return _track_and_cache_file(path, config, cache_dir, progress)[0]


def cache_mouth_tracks(
    paths: Iterable[str | os.PathLike],
    config: MouthConfig,
    cache_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> list[pathlib.Path]:
    """Fills ``cache_dir`` with the mouth track of every video in ``paths`` (those already
    cached are not decoded again), with a progress bar; returns their cache files in order."""
    paths = list(paths)
    return [
        _track_and_cache_file(path, config, cache_dir, False)[1]
        for path in tqdm.tqdm(paths, desc="mouth crops", unit="video", disable=not progress)
    ]


def cache_file(
    path: str | os.PathLike, config: MouthConfig, cache_dir: str | os.PathLike
) -> pathlib.Path:
    """Where the track of ``path`` with ``config`` is cached: ``cache_dir/<stem>-<key>.npz``,
    the key a hash of the file's bytes, every ``config`` field and :data:`CACHE_VERSION`."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    settings = json.dumps([CACHE_VERSION, dataclasses.asdict(config)], sort_keys=True)
    digest.update(settings.encode())
    return pathlib.Path(cache_dir) / f"{pathlib.Path(path).stem}-{digest.hexdigest()[:24]}.npz"


def fill_detection_gaps(boxes: np.ndarray, max_gap_frames: int) -> np.ndarray:
    """Fills the runs of NaN rows of ``boxes`` ``[F, D]`` no longer than ``max_gap_frames``:
    linearly between the boxes either side, or with the nearest box for a run at the start or
    end; longer runs stay NaN. A sequence without any box stays NaN."""
    boxes = np.array(boxes, dtype=np.float64)
    found = np.flatnonzero(~np.isnan(boxes).any(axis=1))
    if found.size == 0:
        return boxes
    for start, stop in true_runs(np.isnan(boxes).any(axis=1)):
        if stop - start > max_gap_frames:
            continue
        frames = np.arange(start, stop)
        for d in range(boxes.shape[1]):
            boxes[frames, d] = np.interp(frames, found, boxes[found, d])
    return boxes


def smooth_boxes(boxes: np.ndarray, smooth_frames: int) -> np.ndarray:
    """Centred moving average of ``boxes`` ``[F, D]`` over ``smooth_frames`` (odd) frames,
    within each run of non-NaN rows: the window shrinks at a run's ends, never crosses NaN."""
    boxes = np.array(boxes, dtype=np.float64)
    half = smooth_frames // 2
    for start, stop in true_runs(~np.isnan(boxes).any(axis=1)):
        run, n = boxes[start:stop].copy(), stop - start
        total, count = np.zeros_like(run), np.zeros((n, 1))
        for shift in range(-half, half + 1):  # frame i adds frame i + shift when in the run
            low, high = max(0, -shift), min(n, n - shift)
            total[low:high] += run[low + shift : high + shift]
            count[low:high] += 1
        boxes[start:stop] = total / count
    return boxes


def mouth_boxes(face_boxes: np.ndarray, config: MouthConfig) -> np.ndarray:
    """``[F, 3]`` mouth boxes ``(centre x, centre y, side)`` from ``[F, 4]`` face boxes
    ``(x, y, width, height)``; NaN stays NaN."""
    x, y, width, height = np.asarray(face_boxes, dtype=np.float64).T
    return np.stack(
        [x + width / 2, y + config.mouth_centre * height, config.mouth_width * width], axis=1
    )


def crop_mouths(frames: np.ndarray, boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """Cuts the square ``boxes`` ``[F, 3]`` (centre x, centre y, side in pixels) out of
    ``frames`` ``[F, H, W]`` uint8 (bilinear at the sub-pixel centre, edge pixels repeated
    outside the frame) and resizes them (area averaging) to ``[F, crop_size, crop_size]``
    float32 in [0, 1]; zeros where a box is NaN."""
    cv2 = _import_cv2()
    if frames.ndim != 3 or boxes.shape != (len(frames), 3):
        raise ShapeError(
            f"need frames [F, H, W] and boxes [F, 3], got {frames.shape}, {boxes.shape}"
        )
    crops = np.zeros((len(frames), crop_size, crop_size), np.float32)
    for i in np.flatnonzero(~np.isnan(boxes).any(axis=1)):
        centre_x, centre_y, side = boxes[i]
        side = max(round(side), 1)
        patch = cv2.getRectSubPix(frames[i], (side, side), (centre_x - 0.5, centre_y - 0.5))
        interpolation = cv2.INTER_AREA if side >= crop_size else cv2.INTER_LINEAR
        resized = cv2.resize(patch, (crop_size, crop_size), interpolation=interpolation)
        crops[i] = resized.astype(np.float32) / 255.0
    return crops


def detect_faces(frames: np.ndarray, config: MouthConfig, *, progress: bool = False) -> np.ndarray:
    """The largest face of each of ``frames`` ``[F, H, W]`` uint8 as ``[F, 4]`` float64
    ``(x, y, width, height)`` in frame pixels; NaN where none is found."""
    cv2 = _import_cv2()
    cascade = _face_cascade(cv2)
    height, width = frames.shape[1:]
    small = (
        max(round(width * config.detect_scale), 1),
        max(round(height * config.detect_scale), 1),
    )
    min_side = max(round(config.min_face_fraction * small[1]), 1)
    boxes = np.full((len(frames), 4), np.nan)
    for i, frame in enumerate(tqdm.tqdm(frames, desc="faces", unit="frame", disable=not progress)):
        found = cascade.detectMultiScale(
            cv2.resize(frame, small, interpolation=cv2.INTER_AREA),
            scaleFactor=HAAR_SCALE_FACTOR,
            minNeighbors=HAAR_MIN_NEIGHBOURS,
            minSize=(min_side, min_side),
        )
        if len(found):
            largest = found[np.argmax(found[:, 2] * found[:, 3])]
            boxes[i] = largest / config.detect_scale
    return boxes


def _track_and_cache_file(
    path: str | os.PathLike,
    config: MouthConfig,
    cache_dir: str | os.PathLike | None,
    progress: bool,
) -> tuple[MouthTrack, pathlib.Path | None]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoFileError(f"{path}: no such file; check the path")
    stored = None if cache_dir is None else cache_file(path, config, cache_dir)
    if stored is not None and stored.is_file():
        try:
            with np.load(stored) as cached:
                return MouthTrack(**{name: cached[name][()] for name in TRACK_FIELDS}), stored
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
            pass  # an unreadable cache file is recomputed and replaced
    video = read_video(path)
    face_boxes = fill_detection_gaps(
        detect_faces(video.frames, config, progress=progress), config.max_gap_frames
    )
    boxes = mouth_boxes(smooth_boxes(face_boxes, config.smooth_frames), config)
    track = MouthTrack(
        crops=crop_mouths(video.frames, boxes, config.crop_size),
        boxes=boxes,
        face_present=~np.isnan(boxes).any(axis=1),
        timestamps=video.timestamps,
        fps=video.fps,
        frame_duration=video.frame_duration,
    )
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(stored) as temporary:
            np.savez_compressed(temporary, **{name: getattr(track, name) for name in TRACK_FIELDS})
    return track, stored


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of every run of True in the 1-D ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _face_cascade(cv2):
    """OpenCV's frontal-face cascade; OpenCV 5 wheels have neither the class nor the model."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    model = os.path.join(folder or "", HAAR_MODEL)
    if not hasattr(cv2, "CascadeClassifier") or folder is None or not os.path.isfile(model):
        raise MissingExtraError(
            f"OpenCV {cv2.__version__} has no Haar face cascade ({HAAR_MODEL}); install "
            f"opencv-python-headless 4.x: {VIDEO_EXTRA_HINT}"
        )
    return cv2.CascadeClassifier(model)


def _import_cv2():
    try:
        import cv2
    except ImportError as err:
        raise MissingExtraError(
            f"mouth crops need OpenCV, which is not installed: {VIDEO_EXTRA_HINT}"
        ) from err
    return cv2

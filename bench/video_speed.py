"""Video decoding and face/mouth extraction speed, and face detection rate, on the GRID clips.

Usage: python bench/video_speed.py [--data ../shared/data] [--clips 51] [--detect-scale 0.5]

Decodes every clip of `grid/s1` and `grid/talkers` (`jaxspeech.data.video.read_video`), runs
each face detector on every frame (OpenCV's Haar cascade as `jaxspeech.data.mouths` uses it;
dlib's HOG detector too where `dlib` is installed, as a comparison), then the whole mouth
track (decode, detect, fill, smooth, crop; no cache). Prints frames per second by wall time
and by this process's CPU time (the CPU figure does not count other jobs on a shared
machine), and the share of frames with a face found before gap filling.
"""

import argparse
import dataclasses
import time

import numpy as np

from jaxspeech.data.corpus import resolve_data_root
from jaxspeech.data.mouths import MouthConfig, detect_faces, mouth_track
from jaxspeech.data.video import read_video


def timed(fn):
    """``(fn(), wall seconds, CPU seconds)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def dlib_hog_hits(frames: np.ndarray, detect_scale: float) -> int | None:
    """Frames where dlib's HOG face detector finds a face (on frames downscaled by
    ``detect_scale``), or None without dlib."""
    try:
        import cv2
        import dlib
    except ImportError:
        return None
    detector = dlib.get_frontal_face_detector()
    height, width = frames.shape[1:]
    size = (round(width * detect_scale), round(height * detect_scale))
    return sum(
        len(detector(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), 0)) > 0
        for frame in frames
    )


def report(
    data: str | None = None, clips: int | None = None, detect_scale=MouthConfig.detect_scale
) -> list[str]:
    """The rates of the module docstring as lines, on the first ``clips`` GRID clips."""
    root = resolve_data_root(data) / "grid"
    paths = sorted(root.glob("s1/*.mpg")) + sorted(root.glob("talkers/*.mpg"))
    clips = paths[:clips]
    lines = []
    config = dataclasses.replace(MouthConfig(), detect_scale=detect_scale)

    videos, decode_wall, decode_cpu = timed(lambda: [read_video(clip).frames for clip in clips])
    frames = sum(len(video) for video in videos)
    lines.append(
        f"{len(clips)} clips, {frames} frames of {videos[0].shape[2]}x{videos[0].shape[1]}"
    )
    lines.append(f"decode: {frames / decode_wall:.0f} frames/s wall, {frames / decode_cpu:.0f} CPU")

    boxes, wall, cpu = timed(lambda: [detect_faces(video, config) for video in videos])
    found = sum(int((~np.isnan(b[:, 0])).sum()) for b in boxes)
    lines.append(
        f"opencv_haar (scale {config.detect_scale}): rate {found / frames:.4f}, "
        f"{frames / wall:.0f} frames/s wall, {frames / cpu:.0f} CPU"
    )
    hits, wall, cpu = timed(lambda: [dlib_hog_hits(video, config.detect_scale) for video in videos])
    if hits[0] is None:
        lines.append("dlib_hog: not measured (pip install dlib-bin to compare)")
    else:
        lines.append(
            f"dlib_hog (scale {config.detect_scale}): rate {sum(hits) / frames:.4f}, "
            f"{frames / wall:.0f} frames/s wall, {frames / cpu:.0f} CPU"
        )

    tracks, wall, cpu = timed(lambda: [mouth_track(clip, config) for clip in clips])
    present = sum(int(track.face_present.sum()) for track in tracks)
    lines.append(
        f"mouth track (decode + detect + crop {config.crop_size}x{config.crop_size}): "
        f"{frames / wall:.0f} frames/s wall, {frames / cpu:.0f} CPU; "
        f"face present after gap filling {present / frames:.4f}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="data root (default: ../shared/data)")
    parser.add_argument("--clips", type=int, default=None, help="at most this many clips")
    parser.add_argument("--detect-scale", type=float, default=MouthConfig.detect_scale)
    args = parser.parse_args()
    print("\n".join(report(args.data, args.clips, args.detect_scale)))


if __name__ == "__main__":
    main()

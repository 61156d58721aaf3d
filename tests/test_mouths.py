"""Mouth tracks: gap filling and smoothing on synthetic detection sequences, crops against
array slicing, a real GRID clip, a video without a face, and the per-video cache."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from synthetic import write_video

from jaxspeech.data import mouths
from jaxspeech.data.mouths import (
    MouthConfig,
    cache_file,
    cache_mouth_tracks,
    crop_mouths,
    fill_detection_gaps,
    mouth_boxes,
    mouth_track,
    smooth_boxes,
)
from jaxspeech.errors import ConfigError, MissingExtraError

VIDEO_REASON = 'needs the video extra: pip install -e ".[video]"'
NAN = np.nan


def test_short_gaps_are_interpolated_long_ones_stay_no_face():
    ramp = np.stack([np.arange(20.0), 2 * np.arange(20.0) + 5], axis=1)  # [F=20, 2]
    boxes = ramp.copy()
    missing = [0, 1, 5, 8, 9, 10, 13, 14, 15, 16, 18, 19]
    boxes[missing] = NAN
    filled = fill_detection_gaps(boxes, max_gap_frames=3)
    expected = ramp.copy()
    expected[[0, 1]] = ramp[2]  # start of the clip: the first box is held
    expected[13:17] = NAN  # four missing frames: longer than the limit
    expected[[18, 19]] = ramp[17]  # end of the clip: the last box is held
    np.testing.assert_array_equal(filled, expected)  # 5 and 8-10 lie on the ramp
    assert np.isnan(boxes[5, 0])  # the input is not changed
    np.testing.assert_array_equal(fill_detection_gaps(boxes, 0), boxes)
    assert np.isnan(fill_detection_gaps(np.full((4, 2), NAN), 3)).all()


def test_smoothing_is_a_moving_average_within_face_runs(rng):
    boxes = rng.normal(size=(30, 3))
    boxes[[10, 11, 25]] = NAN
    smoothed = smooth_boxes(boxes, 5)
    for i in range(30):
        if np.isnan(boxes[i, 0]):
            assert np.isnan(smoothed[i]).all()
            continue
        run_start = max(j for j in [-1, 11, 25] if j < i) + 1
        run_stop = min(j for j in [10, 25, 30] if j > i)
        window = boxes[max(i - 2, run_start) : min(i + 3, run_stop)]
        np.testing.assert_allclose(smoothed[i], window.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(smooth_boxes(boxes, 1), boxes)


def test_mouth_box_sits_in_the_lower_face():
    config = MouthConfig(mouth_centre=0.8, mouth_width=0.5)
    boxes = mouth_boxes(np.array([[100.0, 50.0, 80.0, 90.0], [NAN] * 4]), config)
    np.testing.assert_array_equal(boxes[0], [140.0, 50.0 + 72.0, 40.0])
    assert np.isnan(boxes[1]).all()


def test_crops_equal_array_slices():
    pytest.importorskip("cv2", reason=VIDEO_REASON)
    frames = np.random.default_rng(3).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    boxes = np.array([[20.0, 15.0, 8.0], [NAN, NAN, NAN], [3.0, 36.0, 16.0]])
    crops = crop_mouths(frames, boxes, 8)
    assert crops.shape == (3, 8, 8) and crops.dtype == np.float32
    np.testing.assert_array_equal(crops[0], frames[0, 11:19, 16:24] / np.float32(255))
    np.testing.assert_array_equal(crops[1], 0)
    # Side 16 into 8 pixels: the mean of 2x2 blocks; outside the frame the edge repeats.
    padded = np.pad(frames[2].astype(np.float64), 8, mode="edge")[8 + 28 : 8 + 44, 8 - 5 : 8 + 11]
    blocks = padded.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(crops[2] * 255, blocks, atol=0.51)  # rounded to uint8


def test_config_is_checked():
    with pytest.raises(ConfigError, match="detector"):
        MouthConfig(detector="magic")
    with pytest.raises(ConfigError, match="smooth_frames"):
        MouthConfig(smooth_frames=4)
    with pytest.raises(ConfigError, match="mouth_width"):
        MouthConfig(mouth_width=0.0)


def test_grid_clip_mouth_track(shared_data, tmp_path):
    pytest.importorskip("av", reason=VIDEO_REASON)
    pytest.importorskip("cv2", reason=VIDEO_REASON)
    track = mouth_track(shared_data / "grid/s1/bbaf2n.mpg", MouthConfig(), tmp_path)
    assert track.crops.shape == (75, 64, 64) and track.crops.dtype == np.float32
    assert track.face_present.all() and 0 <= track.crops.min() < track.crops.max() <= 1
    np.testing.assert_allclose(track.timestamps, np.arange(75) / 25, atol=1e-12)
    # The mouth of frame 40, read off the picture by eye: centre (154, 213), 70 px wide.
    np.testing.assert_allclose(track.boxes[40], [154, 213, 70], atol=10)
    # Smoothed: the box moves by under 2 px between frames.
    assert np.abs(np.diff(track.boxes, axis=0)).max() < 2.0


@pytest.fixture
def faceless_video(tmp_path):
    pytest.importorskip("av", reason=VIDEO_REASON)
    pytest.importorskip("cv2", reason=VIDEO_REASON)
    path = tmp_path / "wall.mp4"
    frames = np.random.default_rng(0).integers(100, 140, (6, 48, 64), dtype=np.uint8)
    write_video(path, frames, 40 * np.arange(6))
    return path


def test_video_without_a_face_gives_zero_crops(faceless_video):
    track = mouth_track(faceless_video, MouthConfig(crop_size=16))
    assert track.crops.shape == (6, 16, 16)
    assert not track.face_present.any() and not track.crops.any()
    assert np.isnan(track.boxes).all() and track.fps == pytest.approx(25.0)


def test_cache_is_reused_and_keyed_by_content_and_settings(faceless_video, tmp_path, monkeypatch):
    config = MouthConfig(crop_size=16)
    cache = tmp_path / "cache"
    first = mouth_track(faceless_video, config, cache)
    (stored,) = cache.iterdir()
    assert stored == cache_file(faceless_video, config, cache)

    def no_decoding(path):
        raise AssertionError(f"{path} decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(mouths, "read_video", no_decoding)
        again = mouth_track(faceless_video, config, cache)
    for name in mouths.TRACK_FIELDS:
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    other = MouthConfig(crop_size=16, max_gap_frames=5)
    assert cache_file(faceless_video, other, cache) != stored
    assert mouth_track(faceless_video, other, cache).crops.shape == (6, 16, 16)
    assert len(list(cache.iterdir())) == 2
    copy = tmp_path / "copy" / faceless_video.name
    copy.parent.mkdir()
    copy.write_bytes(faceless_video.read_bytes() + b"\0")  # new content, same name
    assert cache_file(copy, config, cache) != stored
    stored.write_bytes(b"truncated")  # a broken cache file is recomputed and replaced
    np.testing.assert_array_equal(mouth_track(faceless_video, config, cache).crops, first.crops)
    assert cache_mouth_tracks([faceless_video], config, cache, progress=False) == [stored]
    assert len(list(cache.iterdir())) == 2  # no temporary file left behind


def test_missing_opencv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[video\]"'):
        crop_mouths(np.zeros((1, 4, 4), np.uint8), np.zeros((1, 3)), 2)

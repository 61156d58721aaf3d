"""Video decoding (PyAV) against OpenCV's own decoder and soundfile, its errors, and the
alignment of video frames to STFT frames against exact rational arithmetic."""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from synthetic import write_video

from jaxspeech import audio
from jaxspeech.data.video import read_video, read_video_audio, video_frame_per_stft_frame
from jaxspeech.errors import ConfigError, MissingExtraError, ShapeError, VideoFileError

VIDEO_REASON = 'needs the video extra: pip install -e ".[video]"'
GRID_CLIP = "grid/s1/bbaf2n.mpg"  # "bin blue at f two now", 75 frames at 25 fps


@pytest.fixture(scope="module")
def grid_clip(shared_data):
    pytest.importorskip("av", reason=VIDEO_REASON)
    return shared_data / GRID_CLIP


@pytest.fixture(scope="module")
def grid_video(grid_clip):
    return read_video(grid_clip, sample_rate=16000)


def test_grid_frames_and_timestamps_match_opencv(grid_clip, grid_video):
    cv2 = pytest.importorskip("cv2", reason=VIDEO_REASON)
    capture = cv2.VideoCapture(str(grid_clip))
    frames, times = [], []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2GRAY))
        times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    video = grid_video
    assert video.frames.shape == (75, 288, 360) and video.frames.dtype == np.uint8
    np.testing.assert_allclose(video.timestamps, np.arange(75) / 25, atol=1e-12)
    np.testing.assert_allclose(video.timestamps, times, atol=1e-6)
    assert video.fps == pytest.approx(25.0) and video.frame_duration == pytest.approx(0.04)
    # OpenCV goes through BGR to gray, PyAV scales the luma plane: levels differ by a few.
    theirs = np.stack(frames).astype(np.float64)
    assert np.abs(video.frames - theirs).mean() < 3.0
    assert np.corrcoef(video.frames.ravel(), theirs.ravel())[0, 1] > 0.99


def test_grid_audio_is_the_clip_track_on_the_video_clock(grid_clip, grid_video):
    av = pytest.importorskip("av", reason=VIDEO_REASON)
    wav = grid_video.audio
    assert wav.dtype == np.float32 and grid_video.sample_rate == 16000
    assert wav.shape == (round(131328 * 16000 / 44100),)  # 2.98 s of MP2 at 44.1 kHz
    np.testing.assert_array_equal(read_video_audio(grid_clip, 16000), wav)
    # FFmpeg's own downmix and resampler agree with the mean of channels + soxr.
    with av.open(str(grid_clip)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        frames += resampler.resample(None)
    reference = np.concatenate([f.to_ndarray()[0] for f in frames])
    n = min(reference.size, wav.size) - 200
    assert abs(reference.size - wav.size) < 100
    assert np.corrcoef(reference[100:n], wav[100:n])[0, 1] > 0.99

    # The word alignment (in 1/1000 video frames): silence until 23750, speech 23750-53000.
    def rms(start, stop):
        return np.sqrt(np.mean(wav[int(start / 25e3 * 16000) : int(stop / 25e3 * 16000)] ** 2))

    assert rms(24000, 52000) > 10 * rms(0, 20000)


def test_audio_of_an_audio_file_equals_soundfile_read(tmp_path, rng):
    pytest.importorskip("av", reason=VIDEO_REASON)
    path = tmp_path / "stereo.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (4410, 2)), 44100, subtype="PCM_16")
    expected, _ = audio.load(path, sample_rate=16000)
    np.testing.assert_allclose(read_video_audio(path, 16000), expected, atol=1e-6)
    with pytest.raises(VideoFileError, match=r"stereo\.wav: has no video stream"):
        read_video(path)


def test_variable_frame_rate_timestamps_are_read_from_pts(tmp_path):
    pytest.importorskip("av", reason=VIDEO_REASON)
    path = tmp_path / "vfr.mp4"
    write_video(
        path,
        20 * np.arange(5, dtype=np.uint8)[:, None, None].repeat(32, 1).repeat(32, 2),
        [0, 40, 100, 130, 200],
    )
    video = read_video(path)
    assert video.frames.shape == (5, 32, 32) and video.audio is None
    np.testing.assert_allclose(video.timestamps, [0, 0.04, 0.1, 0.13, 0.2], atol=1e-9)
    np.testing.assert_allclose(video.frames.mean(axis=(1, 2)), 20 * np.arange(5), atol=3)
    assert video.fps == pytest.approx(4 / 0.2)
    with pytest.raises(VideoFileError, match=r"vfr\.mp4: has no audio stream"):
        read_video(path, sample_rate=16000)
    with pytest.raises(VideoFileError, match=r"vfr\.mp4: has no audio stream"):
        read_video_audio(path, 16000)


def test_undecodable_and_missing_files(tmp_path):
    pytest.importorskip("av", reason=VIDEO_REASON)
    text = tmp_path / "notes.mpg"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoFileError, match=r"notes\.mpg: cannot be decoded"):
        read_video(text)
    with pytest.raises(VideoFileError, match=r"absent\.mpg: no such file"):
        read_video(tmp_path / "absent.mpg")


def test_missing_pyav_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[video\]"'):
        read_video(tmp_path / "clip.mpg")


def test_25_fps_video_covers_4_stft_frames_of_10_ms():
    index = video_frame_per_stft_frame(np.arange(75) / 25, None, 310, 160, 16000)
    assert index.dtype == np.int32
    np.testing.assert_array_equal(index[:300], np.repeat(np.arange(75), 4))
    np.testing.assert_array_equal(index[300:], -1)  # audio longer than the video


def exact_alignment(timestamps, end, n_frames, hop, sample_rate):
    """The video frame showing at each STFT centre, in exact rationals, one frame at a time."""
    out = []
    for j in range(n_frames):
        centre = Fraction(j * hop, sample_rate)
        showing = [i for i, t in enumerate(timestamps) if t <= centre]
        out.append(showing[-1] if showing and centre < end else -1)
    return out


def test_ntsc_video_with_16_ms_hop_matches_exact_arithmetic():
    exact = [Fraction(1001 * k, 30000) for k in range(90)]  # 29.97 fps for 3 s
    duration = Fraction(1001, 30000)
    index = video_frame_per_stft_frame(
        np.array([float(t) for t in exact]), float(duration), 200, 256, 16000
    )
    np.testing.assert_array_equal(
        index, exact_alignment(exact, exact[-1] + duration, 200, 256, 16000)
    )
    assert set(np.bincount(index[index >= 0])) == {2, 3}  # 33.4 ms frames over 16 ms hops


def test_variable_frame_rate_alignment():
    times = [0.03, 0.05, 0.12, 0.13, 0.2]  # starts after the audio; uneven spacing
    index = video_frame_per_stft_frame(np.array(times), 0.04, 26, 160, 16000)
    expected = exact_alignment([Fraction(str(t)) for t in times], Fraction("0.24"), 26, 160, 16000)
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(index[:5], [-1, -1, -1, 0, 0])
    assert index[24] == -1  # 0.24 s: the last frame has ended
    # Without a duration the last frame lasts the median spacing (0.045 s): until 0.245 s.
    median_duration = video_frame_per_stft_frame(np.array(times), None, 26, 160, 16000)
    np.testing.assert_array_equal(median_duration[24:], [4, -1])


def test_alignment_rejects_bad_timestamps():
    with pytest.raises(ShapeError, match="strictly increasing"):
        video_frame_per_stft_frame(np.array([0.0, 0.04, 0.04]), None, 10, 160, 16000)
    with pytest.raises(ConfigError, match="frame_duration"):
        video_frame_per_stft_frame(np.array([0.0]), None, 10, 160, 16000)
    with pytest.raises(ConfigError, match="hop_length"):
        video_frame_per_stft_frame(np.array([0.0, 0.04]), None, 10, 0, 16000)

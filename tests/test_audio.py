"""Audio I/O: round trips through soundfile, resampling against a pure tone, every bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from jaxspeech import audio
from jaxspeech.errors import (
    AudioError,
    AudioFileError,
    ChannelError,
    EmptyAudioError,
    JaxspeechError,
    NonFiniteAudioError,
)


def _tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_round_trip_formats(tmp_path, ext):
    wav = _tone(440.0, 16000, 0.5)
    path = tmp_path / f"tone.{ext}"
    audio.save(path, wav, 16000)
    loaded, sr = audio.load(path)
    assert sr == 16000 and loaded.dtype == np.float32
    tol = 0.05 if ext == "ogg" else 1e-4  # Vorbis is lossy; PCM16 quantises to 3e-5
    # Vorbis may pad a few samples; compare the common part.
    n = min(len(wav), len(loaded))
    assert abs(len(loaded) - len(wav)) <= (2048 if ext == "ogg" else 0)
    assert np.sqrt(np.mean((loaded[:n] - wav[:n]) ** 2)) < tol


def test_downmix_and_multichannel(tmp_path):
    left, right = _tone(300.0, 8000, 0.25), _tone(500.0, 8000, 0.25, amp=0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    mono, _ = audio.load(path)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    both, _ = audio.load(path, mono=False)
    assert both.shape == (2, len(left))
    np.testing.assert_allclose(both[1], right, atol=1e-7)
    with pytest.raises(ChannelError, match="mono=True"):
        audio.require_mono(both, str(path))
    np.testing.assert_array_equal(audio.require_mono(both[:1]), left)


def test_resample_preserves_tone(tmp_path):
    sr_in, sr_out, freq = 16000, 8000, 440.0
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(freq, sr_in, 1.0), sr_in, subtype="FLOAT")
    wav, sr = audio.load(path, sample_rate=sr_out)
    assert sr == sr_out and len(wav) == sr_out
    mid = wav[1000:-1000]  # away from the filter's edge transients
    expected = _tone(freq, sr_out, 1.0)[1000:-1000]
    np.testing.assert_allclose(mid, expected, atol=2e-3)
    # Multichannel resampling keeps channels independent.
    stereo = np.stack([_tone(freq, sr_in, 1.0), _tone(2 * freq, sr_in, 1.0)])
    out = audio.resample(stereo, sr_in, sr_out)
    assert out.shape == (2, sr_out)
    np.testing.assert_allclose(out[0], audio.resample(stereo[0], sr_in, sr_out), atol=1e-6)


def test_real_flac(shared_data):
    path = next(iter(sorted((shared_data / "librispeech" / "test-other" / "1688").glob("*.flac"))))
    wav, sr = audio.load(path)
    assert sr == 16000 and wav.ndim == 1 and len(wav) > 16000
    assert 0.001 < np.sqrt(np.mean(wav**2)) < 0.5


def test_missing_file(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        audio.load(tmp_path / "absent.wav")


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioFileError, match=r"garbage\.wav.*cannot read"):
        audio.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 8000)
    with pytest.raises(EmptyAudioError, match=r"empty\.wav"):
        audio.load(path)


def test_non_finite_samples(tmp_path):
    wav = _tone(200.0, 8000, 0.1)
    wav[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, wav, 8000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match=r"nan\.wav: 1 NaN/Inf"):
        audio.load(path)
    with pytest.raises(NonFiniteAudioError):
        audio.save(tmp_path / "out.wav", wav, 8000)


def test_all_zero_loads(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(800, np.float32), 8000)
    wav, _ = audio.load(path)
    assert wav.shape == (800,) and not wav.any()


def test_errors_share_base_class():
    assert issubclass(NonFiniteAudioError, AudioError) and issubclass(AudioError, ValueError)


def test_save_renames_a_complete_file_into_place(tmp_path):
    """Saving over a file writes a new file and renames it (a new inode), not in place."""
    path = tmp_path / "out" / "tone.WAV"  # the folder is created; any letter case
    audio.save(path, _tone(200.0, 8000, 0.1), 8000)
    inode = os.stat(path).st_ino
    audio.save(path, _tone(300.0, 8000, 0.2), 8000)
    assert os.stat(path).st_ino != inode and sf.info(path).frames == 1600
    assert sorted(p.name for p in path.parent.iterdir()) == ["tone.WAV"]


#: Saves argv[1] under a 20 kB file-size limit: libsndfile fails midway, as on a full disk.
SAVE_UNDER_SIZE_LIMIT = """
import resource, signal, sys
import numpy as np
from jaxspeech import audio
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
audio.save(sys.argv[1], np.full(100_000, 0.25, np.float32), 8000)
"""


def test_a_write_that_fails_midway_keeps_the_earlier_file(tmp_path):
    path = tmp_path / "take.wav"
    audio.save(path, _tone(200.0, 8000, 0.1), 8000)
    earlier = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", SAVE_UNDER_SIZE_LIMIT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode != 0
    assert f"JaxspeechError: could not write {path}: System error (libsndfile)" in result.stderr
    assert path.read_bytes() == earlier
    assert [p.name for p in tmp_path.iterdir()] == ["take.wav"]  # no temporary file left


@pytest.mark.parametrize("name, found", [("out", "no extension"), ("out.mp3", "'.mp3'")])
def test_save_needs_a_supported_extension(tmp_path, name, found):
    with pytest.raises(AudioFileError, match=f"{found}; .* .wav, .flac, .ogg: name the output"):
        audio.save(tmp_path / name, _tone(200.0, 8000, 0.1), 8000)
    assert list(tmp_path.iterdir()) == []


def test_save_where_a_file_blocks_the_folder(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(JaxspeechError, match=r"could not write .*taken/x\.wav"):
        audio.save(tmp_path / "taken" / "x.wav", _tone(200.0, 8000, 0.1), 8000)

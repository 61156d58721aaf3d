"""What training shows: validation and best-step lines, TensorBoard event files (read back from
their records), log-spectrogram images, and the provenance in config.json."""

from __future__ import annotations

import importlib.util
import io
import json
import pathlib
import struct
import subprocess
import sys
import wave

import numpy as np
import pytest
import toy_task
from test_trainer import toy_config

from jaxspeech.train import config as config_lib
from jaxspeech.train.logging import BestValidation, MetricsLog, log_spectrogram_image
from jaxspeech.train.loop import run
from jaxspeech.train.task import Capabilities

WAVE_RATE = 8000


class ExamplesTask(toy_task.Task):
    """The toy task with the ``examples`` capability: a 440 Hz tone."""

    capabilities = Capabilities(examples=True)

    def examples(self, params, model_state):
        del params, model_state
        t = np.arange(WAVE_RATE // 4) / WAVE_RATE
        return [("valid0/tone", 0.5 * np.sin(2 * np.pi * 440 * t), WAVE_RATE)]


def read_events(workdir: pathlib.Path) -> list:
    """Every Event of the TFRecord files ``events.out.tfevents.*`` in ``workdir``: records are
    ``uint64 length, uint32 crc, data, uint32 crc``."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            events.append(Event.FromString(data[offset + 12 : offset + 12 + length]))
            offset += 12 + length + 4
    return events


def summaries(events) -> dict[str, list]:
    """``{tag: [(step, value)]}`` of the summary values."""
    out: dict[str, list] = {}
    for event in events:
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value))
    return out


def test_best_validation_by_direction_and_from_earlier_records():
    best = BestValidation("mse", "min", [{"step": 2, "loss": 1.0}, {"step": 3, "valid_mse": 0.5}])
    assert best.update(6, 0.7) == "step 6: valid mse 0.7 (best mse 0.5 at step 3)"
    assert best.update(9, float("nan")) == "step 9: valid mse nan (best mse 0.5 at step 3)"
    assert best.update(12, 0.25).endswith("(best mse 0.25 at step 12)")
    assert best.summary() == "training done: best mse 0.25 at step 12"
    up = BestValidation("si_snr_i", "max")
    assert up.summary() == "training done: no finite valid si_snr_i yet"
    up.update(1, 2.0)
    up.update(2, 2.0)  # a tie keeps the earlier step, as the best checkpoint does
    up.update(3, 1.0)
    assert (up.step, up.value) == (1, 2.0)


def test_log_spectrogram_image_matches_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    wav = (np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    image = log_spectrogram_image(wav, 8000)
    magnitude = np.abs(librosa.stft(wav, n_fft=256, hop_length=64, window="hann", center=False))
    db = librosa.amplitude_to_db(magnitude, ref=np.max, amin=1e-10, top_db=80.0)
    np.testing.assert_allclose(image, ((db + 80) / 80)[::-1], atol=2e-4)
    # the tone's row (1 kHz: bin 32 of 129) is the brightest, counted from the bottom
    assert np.argmax(image.mean(1)) == image.shape[0] - 1 - 32


def test_training_prints_validations_and_writes_tensorboard_events(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    config = toy_config(steps=6, eval_every=3)
    config = config_lib.dataclasses.replace(config, task="test_train_logging:ExamplesTask")
    run(config, tmp_path)
    out = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = {r["step"]: r["valid_mse"] for r in records if "valid_mse" in r}
    best_step = min(valid, key=valid.get)
    lines = [line for line in out if line.startswith("step ")]
    assert lines == [
        f"step {step}: valid mse {value:.4g} (best mse {min(list(valid.values())[: i + 1]):.4g} "
        f"at step {min(list(valid)[: i + 1], key=valid.get)})"
        for i, (step, value) in enumerate(valid.items())
    ]
    assert out[-1] == f"training done: best mse {valid[best_step]:.4g} at step {best_step}"

    tags = summaries(read_events(tmp_path))
    assert [(s, pytest.approx(v.simple_value)) for s, v in tags["valid/mse"]] == list(valid.items())
    assert [s for s, _ in tags["train/loss"]] == [r["step"] for r in records]
    np.testing.assert_allclose(
        [v.simple_value for _, v in tags["train/loss"]], [r["loss"] for r in records], rtol=1e-6
    )
    assert [s for s, _ in tags["valid0/tone"]] == [3, 3, 6, 6]  # audio and image per validation
    audio = next(v.audio for _, v in tags["valid0/tone"] if v.HasField("audio"))
    assert (audio.sample_rate, audio.length_frames) == (WAVE_RATE, WAVE_RATE // 4)
    with wave.open(io.BytesIO(audio.encoded_audio_string)) as clip:
        samples = np.frombuffer(clip.readframes(clip.getnframes()), np.int16) / 32767
    t = np.arange(WAVE_RATE // 4) / WAVE_RATE
    np.testing.assert_allclose(samples, 0.5 * np.sin(2 * np.pi * 440 * t), atol=1e-4)
    image = next(v.image for _, v in tags["valid0/tone"] if v.HasField("image"))
    assert (image.height, image.width) == log_spectrogram_image(samples, WAVE_RATE).shape


def test_without_pillow_the_examples_are_audio_only_and_it_says_so(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboardX")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else find_spec(name, *a)
    )
    config = toy_config(steps=3, eval_every=3)
    run(config_lib.dataclasses.replace(config, task="test_train_logging:ExamplesTask"), tmp_path)
    assert "Pillow is not installed" in capsys.readouterr().err
    tags = summaries(read_events(tmp_path))
    assert [v.HasField("audio") for _, v in tags["valid0/tone"]] == [True]


def test_resumed_run_purges_the_events_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboardX")
    log = MetricsLog(tmp_path, enabled=True)
    log.drop_after(4)
    log.write({"step": 6, "loss": 1.0})
    log.close()
    events = read_events(tmp_path)
    assert any(e.session_log.status == e.session_log.START and e.step == 5 for e in events)


def test_training_works_without_tensorboardx(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX raises
    config = config_lib.dataclasses.replace(
        toy_config(steps=3, eval_every=3), task="test_train_logging:ExamplesTask"
    )
    run(config, tmp_path)
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    assert "training done: best mse" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [2, 3]


def test_config_json_names_the_version_and_the_commit(tmp_path):
    import jaxspeech

    text = config_lib.to_json(toy_config())
    tree = json.loads(text)
    assert tree["jaxspeech_version"] == jaxspeech.__version__
    checkout = pathlib.Path(jaxspeech.__file__).resolve().parents[1]
    assert tree["git_commit"] == config_lib.git_commit(checkout)
    # a config.json written before these keys existed reads the same
    del tree["jaxspeech_version"], tree["git_commit"]
    assert config_lib.from_json(json.dumps(tree)) == toy_config()


def test_git_commit_of_a_checkout(tmp_path):
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    assert config_lib.git_commit(tmp_path) is None  # not a git checkout
    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    commit = git("rev-parse", "HEAD")
    assert config_lib.git_commit(tmp_path) == commit
    (tmp_path / "untracked.txt").write_text("x")
    assert config_lib.git_commit(tmp_path) == commit
    (tmp_path / "a.txt").write_text("2")
    assert config_lib.git_commit(tmp_path) == f"{commit}+dirty"
    (tmp_path / "sub").mkdir()
    assert config_lib.git_commit(tmp_path / "sub") is None  # inside a checkout, not its top


def test_separation_examples_are_validation_mixtures_and_their_sources(shared_data):
    import jax
    from test_cli import RECIPE, TRAIN_OVERRIDES

    from jaxspeech.train import stages
    from jaxspeech.train.tasks import make_task
    from jaxspeech.train.tasks.separation import EXAMPLES

    config = stages.apply_overrides(
        stages.load_recipe(f"{RECIPE}:smoke"), [*TRAIN_OVERRIDES, f"data.root={shared_data}"]
    )
    task = make_task(config, {})
    params, model_state = task.init_model(jax.random.PRNGKey(0))
    examples = task.examples(params, model_state)
    assert [name for name, _, _ in examples] == [
        f"valid{i}/{part}" for i in range(EXAMPLES) for part in ("mixture", "source1", "source2")
    ]
    assert {rate for _, _, rate in examples} == {8000}
    mixtures = np.concatenate([b["mixture"] for b in task.data.valid_batches()])[:EXAMPLES]
    sources = np.asarray(task.separate(params, mixtures))
    for i in range(EXAMPLES):
        np.testing.assert_array_equal(examples[3 * i][1], mixtures[i])
        for k in range(2):
            np.testing.assert_allclose(examples[3 * i + 1 + k][1], sources[i, k], atol=1e-6)

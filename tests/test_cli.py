"""The `jaxspeech` command line, end to end on briefly trained separation and enhancement
workdirs."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

import jaxspeech
from jaxspeech import audio, cli, infer
from jaxspeech.commands.enhance import OUTPUT_PEAK
from jaxspeech.errors import AudioFileError
from jaxspeech.inference.runs import checkpoint_ranking, read_config, stage_workdir

#: A tiny Conv-TasNet: 16 filters, one repeat of two blocks.
TINY_TASNET = (
    "model.n_filters=16",
    "model.tcn.bottleneck_channels=8",
    "model.tcn.hidden_channels=16",
    "model.tcn.skip_channels=8",
    "model.tcn.blocks=2",
    "model.tcn.repeats=1",
)
#: A 2-step run of the smoke recipe with that tiny model, so the fixture is quick.
TRAIN_OVERRIDES = (
    "train.steps=2",
    "train.checkpoint_every=2",
    "train.eval_every=2",
    "train.batch_size=8",
    "data.valid_size=8",
    "data.mixture.segment_seconds=0.25",
    *TINY_TASNET,
)
RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs/separation/convtasnet.py"
ENHANCE_RECIPE = RECIPE.parents[1] / "enhancement/distill.py"
#: The distill recipe's student stage (causal LSTM), 2 steps on 0.25 s crops, 8 hidden units.
ENHANCE_OVERRIDES = (
    "train.steps=2",
    "train.checkpoint_every=2",
    "train.eval_every=2",
    "train.batch_size=8",
    "data.valid_size=8",
    "data.mixture.segment_seconds=0.25",
    "model.features.stats_batches=1",
    "model.estimator.hidden=8",
    "model.teacher=None",  # the student stage alone, trained without its teacher
)
#: Trains one stage of a recipe: argv = recipe, stage index, workdir, overrides.
TRAIN_STAGE = """
import sys
from jaxspeech.train import config, loop, stages
stage = stages.load_recipe(sys.argv[1]).stages[int(sys.argv[2])].config
loop.run(config.apply_overrides(stage, sys.argv[4:]), sys.argv[3])
"""


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, shared_data) -> pathlib.Path:
    from jaxspeech.train import loop, stages

    del shared_data  # the recipe reads the recordings; skip without them
    recipe = stages.apply_overrides(stages.load_recipe(f"{RECIPE}:smoke"), list(TRAIN_OVERRIDES))
    path = tmp_path_factory.mktemp("separation_run")
    loop.run(recipe, path)
    return path


def load_trained_model(workdir: str, checkpoint: str):
    """``(task, params, model_state, sample_rate)`` restored through the trainer's side, an
    independent reference for what the commands compute through ``jaxspeech.load``."""
    from jaxspeech.train.restore import restore_run

    run = restore_run(workdir, checkpoint, devices=jax.devices()[:1])
    return run.task, run.params, run.model_state, run.task.config.data.mixture.sample_rate


@pytest.fixture(scope="session")
def trained(workdir):
    """`(task, params, sample_rate)` of the best checkpoint."""
    task, params, _, rate = load_trained_model(str(workdir), "best")
    return task, params, rate


@pytest.fixture(scope="session")
def enhance_workdir(tmp_path_factory, shared_data) -> pathlib.Path:
    """A distill-recipe workdir (``stages.json``: teacher, student, baseline) in which only
    the student stage is trained, without a teacher. In a subprocess on one device, as
    ``train.py`` runs by default."""
    path = tmp_path_factory.mktemp("enhancement_run")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAXSPEECH_DATA"] = str(shared_data)
    subprocess.run(
        [
            *(sys.executable, "-c", TRAIN_STAGE, f"{ENHANCE_RECIPE}:smoke", "1"),
            *(path / "student", *ENHANCE_OVERRIDES),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    (path / "stages.json").write_text(json.dumps({"stages": ["teacher", "student", "baseline"]}))
    return path


@pytest.fixture(scope="session")
def enhancer(enhance_workdir):
    """`(task, params, model_state, sample_rate)` of the student's best checkpoint."""
    return load_trained_model(str(enhance_workdir / "student"), "best")


def limit_peak(wav: np.ndarray) -> np.ndarray:
    peak = np.abs(wav).max()
    return wav * min(1.0, OUTPUT_PEAK / peak)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected_sources(trained, mixture, chunk_seconds=4.0, overlap_seconds=1.0):
    task, params, rate = trained
    sources = infer.separate_long(
        task.separate,
        params,
        mixture,
        chunk=round(chunk_seconds * rate),
        overlap=round(overlap_seconds * rate),
    )
    return np.asarray(infer.rescale_to_mixture(sources, mixture))


def read_outputs(paths: list[str], rate: int) -> np.ndarray:
    outputs = []
    for path in paths:
        wav, file_rate = sf.read(path, dtype="float32")
        assert file_rate == rate and sf.info(path).subtype == "PCM_16"
        outputs.append(wav)
    return np.stack(outputs)


def test_separate_short_file_at_the_model_rate(shared_data, trained, workdir, tmp_path, capsys):
    """An 8 kHz digit shorter than a 4 s chunk: one model call, written as 16-bit WAVs."""
    source = shared_data / "fsdd/recordings/0_george_0.wav"
    status, out, err = run_cli(
        capsys, "separate", source, "--workdir", workdir, "-o", tmp_path / "out",
        "--chunk-seconds", "4",
    )  # fmt: skip
    assert status == 0, err
    assert err == ""  # mono at the model's rate: nothing converted, nothing said
    paths = out.splitlines()
    assert paths == [str(tmp_path / "out" / f"0_george_0_s{i}.wav") for i in (1, 2)]
    task, params, rate = trained
    mixture, _ = audio.load(source, sample_rate=rate)
    written = read_outputs(paths, rate)
    whole = task.separate(params, mixture[None])[0]
    np.testing.assert_allclose(written, infer.rescale_to_mixture(whole, mixture), atol=1.5 / 2**15)
    assert np.abs(written).max() <= 0.99 + 1 / 2**15


def test_separate_long_resampled_stereo_file(shared_data, trained, workdir, tmp_path, capsys):
    """A 16 kHz stereo file, longer than several chunks: downmixed, resampled, chunked."""
    left, file_rate = audio.load(shared_data / "arctic/cmu_arctic_us_aew_a0001.wav")
    right = np.roll(left, 800) * 0.5
    stereo = tmp_path / "stereo mix.wav"
    sf.write(stereo, np.stack([left, right], axis=1), file_rate)
    status, out, err = run_cli(
        capsys,
        "separate",
        stereo,
        "--workdir",
        workdir,
        "--checkpoint",
        "2",
        "-o",
        tmp_path,
        "--chunk-seconds",
        "0.5",
        "--overlap-seconds",
        "0.125",
    )
    assert status == 0, err
    rate = trained[2]
    assert err == f"{stereo}: {file_rate} Hz resampled to {rate} Hz; 2 channels downmixed to mono\n"
    mixture, _ = audio.load(stereo, sample_rate=rate)  # the downmix, resampled
    np.testing.assert_allclose(
        mixture, audio.resample((left + right) / 2, file_rate, rate), atol=1e-4
    )
    assert mixture.size > 4 * rate // 2  # several chunks
    written = read_outputs(out.splitlines(), rate)
    assert written.shape == (2, mixture.size)
    np.testing.assert_allclose(
        written, expected_sources(trained, mixture, 0.5, 0.125), atol=1.5 / 2**15
    )


def assert_one_line_error(status: int, out: str, err: str, command: str, message: str) -> None:
    """Bad input: exit status 2, nothing on stdout, one error line naming ``message``."""
    assert status == 2 and out == ""
    assert err.startswith(f"jaxspeech {command}: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "make_input, extra, message",
    [
        (lambda d: d / "missing.wav", (), "missing.wav: no such file"),
        (lambda d: _write(d / "notes.wav", b"not audio"), (), "cannot read audio"),
        (lambda d: _write_wav(d / "empty.wav", np.zeros(0)), (), "no samples"),
        (lambda d: _write_wav(d / "nan.wav", np.array([0.1, np.nan])), (), "NaN/Inf"),
        (lambda d: _write_wav(d / "ok.wav", np.ones(99) * 0.1), ("--checkpoint", "7"), "no chec"),
        (lambda d: _write_wav(d / "ok.wav", np.ones(99) * 0.1), ("--checkpoint", "x"), "use best"),
        (
            lambda d: _write_wav(d / "ok.wav", np.ones(99) * 0.1),
            ("--overlap-seconds", "20"),
            "at most half of --chunk-seconds",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(workdir, tmp_path, capsys, make_input, extra, message):
    path = make_input(tmp_path)
    status, out, err = run_cli(
        capsys, "separate", path, "--workdir", workdir, "-o", tmp_path / "out", *extra
    )
    assert_one_line_error(status, out, err, "separate", message)
    assert not (tmp_path / "out").exists()


def test_missing_workdir_is_reported(tmp_path, capsys):
    path = _write_wav(tmp_path / "ok.wav", np.ones(99) * 0.1)
    status, _, err = run_cli(capsys, "separate", path, "--workdir", tmp_path / "nope", "-o", "x")
    assert status == 2 and "config.json not found" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["separate", "mix.wav"])  # no --workdir, no -o
    assert exit_info.value.code == 2
    assert "--workdir" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [
            *(sys.executable, "-m", "jaxspeech.cli", "separate", tmp_path / "gone.flac"),
            *("--workdir", tmp_path, "-o", tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"jaxspeech separate: error: {tmp_path}/gone.flac: " + (
        "no such file; check the path"
    )


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.write_bytes(data)
    return path


def _write_wav(path: pathlib.Path, samples: np.ndarray) -> pathlib.Path:
    sf.write(path, np.asarray(samples, np.float32), 8000, subtype="FLOAT")
    return path


def test_enhance_long_file_in_chunks(shared_data, enhancer, enhance_workdir, tmp_path, capsys):
    """A 16 kHz ARCTIC sentence in 1 s chunks, from the default stage (the student)."""
    source = shared_data / "arctic/cmu_arctic_us_aew_a0001.wav"
    output = tmp_path / "clean.wav"
    status, out, err = run_cli(
        capsys, "enhance", source, "--workdir", enhance_workdir, "-o", output,
        "--chunk-seconds", "1", "--overlap-seconds", "0.25",
    )  # fmt: skip
    assert status == 0, err
    assert out.splitlines() == [str(output)]
    task, params, model_state, rate = enhancer
    noisy, _ = audio.load(source)
    assert noisy.size > 2 * rate  # several chunks
    written = read_outputs([output], rate)[0]
    chunked = infer.separate_long(
        task.enhance_chunks, (params, model_state), noisy, chunk=rate, overlap=rate // 4
    )[0]
    np.testing.assert_allclose(written, limit_peak(chunked), atol=1.5 / 2**15)
    # chunking changes little: close to the whole file enhanced in one call
    whole = np.asarray(jax.jit(task.enhance)(params, model_state, noisy[None]))[0]
    residual = np.sum((chunked - whole) ** 2) / np.sum(whole**2)
    assert residual < 1e-2
    assert np.abs(whole - noisy).max() > 1e-3  # the mask does something


def test_enhance_resampled_stereo_file(shared_data, enhancer, enhance_workdir, tmp_path, capsys):
    """An 8 kHz FSDD digit made stereo: downmixed, resampled to 16 kHz, one model call."""
    digit, file_rate = audio.load(shared_data / "fsdd/recordings/3_jackson_5.wav")
    stereo = np.stack([digit, 0.5 * np.roll(digit, 40)])
    path = tmp_path / "digit.wav"
    sf.write(path, stereo.T, file_rate)
    output = tmp_path / "out" / "digit.flac"
    status, _, err = run_cli(
        capsys, "enhance", path, "--workdir", enhance_workdir, "--stage", "student", "-o", output,
        "--chunk-seconds", "4",
    )  # fmt: skip
    assert status == 0, err
    task, params, model_state, rate = enhancer
    assert file_rate == 8000 and rate == 16000
    written, written_rate = sf.read(output, dtype="float32")
    assert written_rate == rate and written.size == 2 * digit.size
    stereo, _ = audio.load(path, mono=False)  # as written (16-bit)
    prepared = task.prepare_waveform(stereo, file_rate)
    expected = np.asarray(jax.jit(task.enhance)(params, model_state, prepared[None]))[0]
    np.testing.assert_allclose(written, limit_peak(expected), atol=1.5 / 2**15)


def test_enhance_silence_gives_silence(enhance_workdir, tmp_path, capsys):
    path = _write_wav(tmp_path / "quiet.wav", np.zeros(4000))
    status, _, err = run_cli(
        capsys, "enhance", path, "--workdir", enhance_workdir / "student", "-o", tmp_path / "o.wav"
    )
    assert status == 0, err
    np.testing.assert_array_equal(sf.read(tmp_path / "o.wav")[0], 0.0)


def test_enhance_default_stage_is_the_last_without_a_student(enhance_workdir, tmp_path):
    other = tmp_path / "recipe"
    other.mkdir()
    (other / "final").symlink_to(enhance_workdir / "student")
    (other / "stages.json").write_text(json.dumps({"stages": ["first", "final"]}))
    assert stage_workdir(str(other), None) == other / "final"
    assert stage_workdir(str(enhance_workdir), None) == enhance_workdir / "student"


@pytest.mark.parametrize(
    "make_input, extra, message",
    [
        (lambda d: d / "missing.wav", (), "missing.wav: no such file"),
        (lambda d: _write_wav(d / "empty.wav", np.zeros(0)), (), "no samples"),
        (lambda d: _write_wav(d / "nan.wav", np.array([0.1, np.inf])), (), "NaN/Inf"),
        (lambda d: _write_wav(d / "short.wav", np.ones(99) * 0.1), (), "short.wav: 198 samples"),
        (lambda d: _write_wav(d / "ok.wav", np.ones(999)), ("--stage", "nope"), "use one of"),
        (lambda d: _write_wav(d / "ok.wav", np.ones(999)), ("--stage", "teacher"), "not been"),
        (lambda d: _write_wav(d / "ok.wav", np.ones(999)), ("--chunk-seconds", "0.01"), "half"),
    ],
)
def test_enhance_bad_input_is_one_line_and_exit_2(
    enhance_workdir, tmp_path, capsys, make_input, extra, message
):
    path = make_input(tmp_path)
    status, out, err = run_cli(
        capsys, "enhance", path, "--workdir", enhance_workdir, "-o", tmp_path / "o.wav", *extra
    )
    assert_one_line_error(status, out, err, "enhance", message)
    assert not (tmp_path / "o.wav").exists()


def test_enhance_needs_an_enhancement_run(workdir, enhance_workdir, tmp_path, capsys):
    path = _write_wav(tmp_path / "ok.wav", np.ones(999) * 0.1)
    status, _, err = run_cli(capsys, "enhance", path, "--workdir", workdir, "-o", tmp_path / "o")
    assert status == 2 and "is a 'separation' run" in err
    single = enhance_workdir / "student"
    status, _, err = run_cli(
        capsys, "enhance", path, "--workdir", single, "--stage", "student", "-o", tmp_path / "o"
    )
    assert status == 2 and "is a single run" in err


def test_quiet_keeps_the_conversion_to_itself(enhance_workdir, tmp_path, capsys):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.zeros((4000, 2), np.float32), 8000)
    argv = ("enhance", path, "--workdir", enhance_workdir, "-o", tmp_path / "o.wav", "--overwrite")
    status, out, err = run_cli(capsys, *argv)
    assert status == 0 and out == f"{tmp_path / 'o.wav'}\n"
    assert err == f"{path}: 8000 Hz resampled to 16000 Hz; 2 channels downmixed to mono\n"
    status, out, err = run_cli(capsys, *argv, "--quiet")
    assert status == 0 and out == f"{tmp_path / 'o.wav'}\n" and err == ""


def test_no_command_writes_over_its_input(workdir, enhance_workdir, tmp_path, capsys):
    """Not by name, nor through another spelling or a link, nor with --overwrite."""
    victim = _write_wav(tmp_path / "victim.wav", np.ones(999) * 0.1)
    recording = victim.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.wav").symlink_to(victim)
    for output, extra in [
        (victim, ()),
        (victim, ("--overwrite",)),
        (tmp_path / "sub" / ".." / "victim.wav", ("--overwrite",)),
        (tmp_path / "link.wav", ("--overwrite",)),
    ]:
        status, out, err = run_cli(
            capsys, "enhance", victim, "--workdir", enhance_workdir, "-o", output, *extra
        )
        assert_one_line_error(status, out, err, "enhance", f"{output} is the input {victim}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "victim_s1.wav").symlink_to(victim)
    status, out, err = run_cli(
        capsys, "separate", victim, "--workdir", workdir, "-o", tmp_path / "out", "--overwrite"
    )
    assert_one_line_error(status, out, err, "separate", "victim_s1.wav is the input")
    assert victim.read_bytes() == recording


def test_existing_outputs_are_refused_before_the_model_is_loaded(
    workdir, enhance_workdir, tmp_path, capsys
):
    """With a checkpoint that does not exist: the refusal comes first, so nothing was loaded."""
    mix = _write_wav(tmp_path / "mix.wav", np.ones(999) * 0.1)
    earlier = _write_wav(tmp_path / "earlier.wav", np.ones(99) * 0.2)
    (tmp_path / "out").mkdir()
    second = _write_wav(tmp_path / "out" / "mix_s2.wav", np.ones(99) * 0.3)
    kept = earlier.read_bytes(), second.read_bytes()
    model = ("--checkpoint", "7")
    status, out, err = run_cli(
        capsys, "enhance", mix, "--workdir", enhance_workdir, "-o", earlier, *model
    )
    assert_one_line_error(status, out, err, "enhance", f"{earlier} exists; pass --overwrite")
    status, out, err = run_cli(
        capsys, "separate", mix, "--workdir", workdir, "-o", tmp_path / "out", *model
    )
    assert_one_line_error(status, out, err, "separate", f"{second} exists; pass --overwrite")
    status, out, err = run_cli(
        capsys, "separate", mix, "--workdir", workdir, "-o", earlier, "--overwrite", *model
    )
    assert_one_line_error(status, out, err, "separate", f"{earlier} is a file, not a folder")
    assert (earlier.read_bytes(), second.read_bytes()) == kept
    # with --overwrite the same commands get as far as the checkpoint
    status, out, err = run_cli(
        capsys, "enhance", mix, "--workdir", enhance_workdir, "-o", earlier, "--overwrite", *model
    )
    assert_one_line_error(status, out, err, "enhance", "no checkpoint")


def test_overwrite_replaces_earlier_outputs(workdir, enhance_workdir, tmp_path, capsys):
    tone = _write_wav(tmp_path / "tone.wav", 0.1 * np.sin(np.arange(4000) * 0.3))
    earlier = _write_wav(tmp_path / "o.wav", np.ones(99) * 0.2)
    status, _, err = run_cli(
        capsys, "enhance", tone, "--workdir", enhance_workdir, "-o", earlier, "--overwrite"
    )
    assert status == 0, err
    assert sf.info(earlier).frames == 8000 and sf.info(earlier).samplerate == 16000
    (tmp_path / "out").mkdir()
    first = _write_wav(tmp_path / "out" / "tone_s1.wav", np.ones(99) * 0.3)
    status, out, err = run_cli(
        capsys, "separate", tone, "--workdir", workdir, "-o", tmp_path / "out", "--overwrite"
    )
    assert status == 0, err
    assert out.splitlines() == [str(first), str(tmp_path / "out" / "tone_s2.wav")]
    assert sf.info(first).frames == 4000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tone_s1.wav", "tone_s2.wav"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("out", "out: no extension; audio files are written as .wav, .flac, .ogg"),
        ("out.mp3", "out.mp3: extension '.mp3'; audio files are written as .wav, .flac, .ogg"),
        ("taken.wav/out.wav", "taken.wav is a file, not a folder; choose another output folder"),
        ("taken.wav/sub/out.wav", "taken.wav is a file; choose another output path"),
        ("folder.wav", "folder.wav is a folder; give the output a file name"),
    ],
)
def test_enhance_output_path_is_checked_before_the_model_is_loaded(
    enhance_workdir, tmp_path, capsys, name, message
):
    noisy = _write_wav(tmp_path / "taken.wav", np.ones(999) * 0.1)
    (tmp_path / "folder.wav").mkdir()
    status, out, err = run_cli(
        capsys, "enhance", noisy, "--workdir", enhance_workdir, "-o", tmp_path / name,
        "--checkpoint", "7",
    )  # fmt: skip
    assert_one_line_error(status, out, err, "enhance", message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.wav", "taken.wav"]


def test_separate_output_folder_behind_a_file(workdir, tmp_path, capsys):
    mix = _write_wav(tmp_path / "mix.wav", np.ones(999) * 0.1)
    status, out, err = run_cli(
        capsys, "separate", mix, "--workdir", workdir, "-o", tmp_path / "mix.wav" / "out"
    )
    assert_one_line_error(status, out, err, "separate", f"{mix} is a file; choose another")


def test_a_workdir_of_the_other_task_names_its_command(workdir, enhance_workdir, tmp_path, capsys):
    path = _write_wav(tmp_path / "ok.wav", np.ones(999) * 0.1)
    status, out, err = run_cli(
        capsys, "separate", path, "--workdir", enhance_workdir, "-o", tmp_path / "out"
    )
    assert_one_line_error(
        status, out, err, "separate",
        f"{enhance_workdir / 'student'} is an 'enhancement' run (`jaxspeech enhance` runs it); "
        "`jaxspeech separate` needs a 'separation' run",
    )  # fmt: skip
    status, out, err = run_cli(
        capsys, "enhance", path, "--workdir", workdir, "-o", tmp_path / "o.wav"
    )
    assert_one_line_error(
        status, out, err, "enhance",
        f"{workdir} is a 'separation' run (`jaxspeech separate` runs it); "
        "`jaxspeech enhance` needs an 'enhancement' run",
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.wav"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"jaxspeech {jaxspeech.__version__}\n"


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(AudioFileError, match=r"gone\.flac: no such file"):
        cli.main(["separate", str(tmp_path / "gone.flac"), "--workdir", str(tmp_path), "-o",
                  str(tmp_path), "--debug"])  # fmt: skip


def test_every_option_has_help():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(commands.choices) == [
        "data",
        "embed",
        "enhance",
        "export",
        "match",
        "separate",
        "verify",
    ]
    for command in [parser, *commands.choices.values()]:
        for action in command._actions:
            assert action.help, f"{command.prog} {action.option_strings or action.dest}"
    assert "best, latest or a step number" in commands.choices["separate"].format_help()


# --- audio-visual workdirs: `jaxspeech enhance` with a video, and the gate stage's table ---

AV_RECIPE = RECIPE.parents[1] / "av/lipgate.py"
#: Trains every stage of a multi-stage recipe: argv = recipe, workdir, overrides.
TRAIN_RECIPE = """
import sys
from jaxspeech.train import stages
stages.run(stages.apply_overrides(stages.load_recipe(sys.argv[1]), sys.argv[3:]), sys.argv[2])
"""
VIDEO_REASON = 'needs the video extra: pip install -e ".[video]"'
#: The GRID clip enhanced by the tests (one of the training clips: only the wiring is tested).
AV_CLIP = "grid/s1/bbaf2n.mpg"


def av_overrides(root: pathlib.Path, cache: pathlib.Path) -> list[str]:
    """The smoke AV recipe at one step a stage on 0.5 s crops of the GRID clips under ``root``
    (16 × 16 mouths, detection at a quarter of the frame size, cached in ``cache``): Net 1
    on their speech, the lip net and gate; the gate's table on 4 one-second examples (two
    clips, so the mismatched-video row has another clip's video)."""
    overrides = [
        *("train.steps=1", "audio.train.batch_size=2", "audio.model.features.stats_batches=1"),
        "audio.model.estimator.hidden=8",
    ]
    for stage in ("audio", "lips", "gate"):
        overrides += [
            f"{stage}.{override}"
            for override in (
                *(f"data.root={root}", f"data.cache_dir={cache}", "data.segment_seconds=0.5"),
                *("data.valid_size=2", "data.mouth.crop_size=16", "data.mouth.detect_scale=0.25"),
            )
        ]
    for stage in ("lips", "gate"):
        overrides += [
            f"{stage}.{override}"
            for override in (
                *("train.batch_size=2", "model.lip_net.channels=(4,8)"),
                *("model.lip_net.embedding=8", "model.lip_net.hidden=8", "model.gate_net.hidden=8"),
                *("eval.noise_snrs_db=(0.0,)", "eval.talker_snrs_db=(0.0,)", "eval.size=4"),
                *("eval.batch_size=2", "eval.seconds=1.0"),
            )
        ]
    return overrides


@pytest.fixture(scope="module")
def av_workdir(tmp_path_factory, shared_data) -> pathlib.Path:
    """The three stages of ``configs/av/lipgate.py:smoke`` (audio, lips, gate), one step each,
    on three s1 sentences, three other talkers and one noise (links into the shared data), in
    a subprocess on one device."""
    pytest.importorskip("av", reason=VIDEO_REASON)
    pytest.importorskip("cv2", reason=VIDEO_REASON)
    root = tmp_path_factory.mktemp("av_data")
    for folder, count in (("grid/s1", 3), ("grid/talkers", 3), ("noise", 1)):
        (root / folder).mkdir(parents=True)
        sources = sorted(p for p in (shared_data / folder).iterdir() if p.suffix != ".align")
        for source in sources[:count]:
            (root / folder / source.name).symlink_to(source)
    path = tmp_path_factory.mktemp("av_run")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # one device; XLA's backend optimisations off: they take more CPU than these 3 steps
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    env["JAXSPEECH_DATA"] = str(shared_data)
    overrides = av_overrides(root, path.parent / f"{path.name}_mouths")
    subprocess.run(
        [sys.executable, "-c", TRAIN_RECIPE, f"{AV_RECIPE}:smoke", path, *overrides],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    return path


@pytest.fixture(scope="module")
def av_files(av_workdir, shared_data, tmp_path_factory) -> dict[str, pathlib.Path]:
    """The GRID clip, its sound track as a float WAV at 16 kHz, and what `jaxspeech enhance`
    wrote for them: ``video`` (the track with ``--video``, and ``--plot`` where matplotlib is
    installed), ``own_track`` (the clip alone), ``no_video`` (the AV workdir without a video)
    and ``audio_stage`` (the audio stage's run itself)."""
    from jaxspeech.data.video import read_video_audio

    folder = tmp_path_factory.mktemp("av_enhance")
    clip = shared_data / AV_CLIP
    track = folder / "track.wav"
    sf.write(track, read_video_audio(clip, 16000), 16000, subtype="FLOAT")
    files = {"clip": clip, "track": track}
    plot = ("--plot", folder / "picture.png") if _has_matplotlib() else ()
    runs = {
        "video": (track, "--video", clip, "--workdir", av_workdir, *plot),
        "own_track": (clip, "--workdir", av_workdir),
        "no_video": (track, "--workdir", av_workdir),
        "audio_stage": (track, "--workdir", av_workdir / "audio"),
    }
    for name, argv in runs.items():
        files[name] = folder / f"{name}.wav"
        assert cli.main([str(a) for a in ("enhance", *argv, "-o", files[name], "--quiet")]) == 0
    if plot:
        files["plot"] = plot[1]
    return files


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_enhance_with_video_runs_the_av_system(av_workdir, av_files):
    """NOISY.wav --video CLIP: the causal AV system (offline reference) on the wav with the
    clip's mouths; it differs from Net 1, which an AV workdir runs without a video."""
    from jaxspeech import avfile, stream

    written, rate = sf.read(av_files["video"], dtype="float32")
    track, _ = sf.read(av_files["track"], dtype="float32")
    assert rate == 16000 and written.shape == track.shape
    assert sf.info(av_files["video"]).subtype == "PCM_16"
    model = jaxspeech.load(av_workdir)
    n_frames = stream.causal_frames(model.n_fft, model.hop, track.size)
    lips, face = avfile.frame_inputs(
        model, str(av_files["clip"]), n_frames, model.hop - model.n_fft // 2
    )
    assert face.mean() > 0.9  # the talker's face is found in the GRID clip
    expected = jax.jit(lambda x: stream.enhance_causal_av(model, x, lips, face))(track)
    np.testing.assert_allclose(written, limit_peak(np.asarray(expected)), atol=1.5 / 2**15)
    audio_only, _ = sf.read(av_files["no_video"], dtype="float32")
    assert np.abs(written - audio_only).max() > 1e-3  # the video acts


def test_enhance_a_video_uses_its_own_sound_track(av_files):
    """CLIP alone: its track (decoded at the model's rate) with its own mouths, so the same as
    the track given as a WAV beside --video CLIP."""
    own, _ = sf.read(av_files["own_track"], dtype="int16")
    beside, _ = sf.read(av_files["video"], dtype="int16")
    np.testing.assert_array_equal(own, beside)


def test_a_face_lost_half_way_is_said_and_the_audio_net_goes_on(
    av_workdir, av_files, tmp_path, capsys
):
    """The GRID clip with its second half blanked: the command names the frames without a
    face, and there the output is the causal audio net's alone; before, the video acts."""
    from synthetic import write_video

    from jaxspeech import avfile, stream
    from jaxspeech.data.video import read_video

    clip = read_video(av_files["clip"])
    frames, half = clip.frames.copy(), len(clip.frames) // 2
    frames[half:] = 0
    video = tmp_path / "face_lost.mp4"
    write_video(video, frames, np.round(clip.timestamps * 1000))
    output = tmp_path / "out.wav"
    argv = (av_files["track"], "--video", video, "--workdir", av_workdir, "-o", output)
    status, _, err = run_cli(capsys, "enhance", *argv)
    assert status == 0, err
    assert f"{video}: no face in video frames {half}–{len(frames) - 1} (" in err
    model = jaxspeech.load(av_workdir)
    track = avfile.video_track(model, str(video))
    assert track.face_present[:half].mean() > 0.9 and not track.face_present[half:].any()
    noisy, _ = sf.read(av_files["track"], dtype="float32")
    n_frames = stream.causal_frames(model.n_fft, model.hop, noisy.size)
    lips, face = avfile.frame_inputs(model, str(video), n_frames, model.hop - model.n_fft // 2)
    both = np.asarray(jax.jit(lambda x: stream.enhance_causal_av(model, x, lips, face))(noisy))
    alone = np.asarray(jax.jit(lambda x: stream.enhance_causal(model.audio_model, x))(noisy))
    written, _ = sf.read(output, dtype="float32")
    np.testing.assert_allclose(written, limit_peak(both), atol=1.5 / 2**15)
    lost = round((track.timestamps[half] + 0.1) * model.sample_rate)  # frames reach 16 ms
    np.testing.assert_allclose(both[lost:], alone[lost:], atol=1e-5)
    assert np.abs(both[: lost // 2] - alone[: lost // 2]).max() > 1e-3  # the face acted


def test_load_av_as_the_cli_does(av_workdir, av_files):
    """The gate stage with its frozen nets; with the video it writes ``enhance(track,
    video)``, without one Net 1's ``enhance(track)``."""
    model = jaxspeech.load(av_workdir)
    assert model.system == "av" and model.workdir == av_workdir / "gate"
    track, _ = sf.read(av_files["track"], dtype="float32")
    for name, video in (("video", av_files["clip"]), ("no_video", None)):
        written, _ = sf.read(av_files[name], dtype="float32")
        expected = model.enhance(track, video=video)
        np.testing.assert_allclose(written, limit_peak(expected), atol=1.5 / 2**15)


def test_av_workdir_without_a_video_is_net1(av_files):
    without, _ = sf.read(av_files["no_video"], dtype="int16")
    net1, _ = sf.read(av_files["audio_stage"], dtype="int16")
    np.testing.assert_array_equal(without, net1)
    assert np.abs(without).max() > 0


def test_enhance_with_video_draws_the_picture(av_files):
    if "plot" not in av_files:
        pytest.skip("--plot needs matplotlib: pip install -e '.[plot]'")
    data = av_files["plot"].read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


@pytest.mark.parametrize("taken", ["output", "plot"])
def test_av_outputs_are_not_overwritten(av_workdir, av_files, tmp_path, capsys, taken):
    output, plot = tmp_path / "out.wav", tmp_path / "out.png"
    (output if taken == "output" else plot).write_bytes(b"earlier")
    status, out, err = run_cli(
        capsys, "enhance", av_files["track"], "--video", av_files["clip"],
        "--workdir", av_workdir, "-o", output, "--plot", plot,
    )  # fmt: skip
    assert_one_line_error(status, out, err, "enhance", "exists; pass --overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"out.{'wav' if taken == 'output' else 'png'}"
    ]
    assert next(tmp_path.iterdir()).read_bytes() == b"earlier"


@pytest.mark.parametrize(
    "make_video, as_input, message",
    [
        (lambda d: _write_wav(d / "voice.wav", np.ones(999) * 0.1), False, "has no video stream"),
        (lambda d: _write(d / "broken.mpg", b"not a video"), False, "cannot be decoded"),
        (lambda d: _write(d / "broken.mpg", b"not a video"), True, "cannot be decoded"),
        (lambda d: _silent_video(d / "silent.mp4"), True, "has no audio stream"),
    ],
    ids=["audio-only video", "unreadable video", "unreadable input", "silent input"],
)
def test_bad_videos_are_one_line_errors(
    av_workdir, av_files, tmp_path, capsys, make_video, as_input, message
):
    video = make_video(tmp_path)
    inputs = (video,) if as_input else (av_files["track"], "--video", video)
    status, out, err = run_cli(
        capsys, "enhance", *inputs, "--workdir", av_workdir, "-o", tmp_path / "out.wav"
    )
    assert_one_line_error(status, out, err, "enhance", f"{video}: {message}")
    assert not (tmp_path / "out.wav").exists()


def _silent_video(path: pathlib.Path) -> pathlib.Path:
    from synthetic import write_video

    write_video(path, np.zeros((3, 32, 32), np.uint8), [0, 40, 80])
    return path


def test_gate_stage_table_compares_the_systems_per_condition(av_workdir):
    """``evaluate`` of the gate stage: every system in every condition, from the same clips,
    and the blanked video exactly audio-only."""
    from jaxspeech.train import restore

    evaluation, markdown, _ = restore.evaluate(av_workdir / "gate", "test")
    rows = evaluation.table
    written = json.loads((av_workdir / "gate/eval/test.json").read_text())
    assert len(written) == len(rows) and "audio-visual" in markdown
    systems = [
        *("noisy", "audio-only (Net 1)", "audio-visual", "AV, oracle bands"),
        *("AV, oracle bands, gate open", "AV, other clip's video", "AV, video blanked"),
        "oracle IRM",
    ]
    table = {(row["system"], row["condition"], row["SNR (dB)"]): row for row in rows}
    groups = {(condition, snr) for _, condition, snr in table}
    assert {condition for condition, _ in groups} == {"all", "noise", "talker"}
    overall = table[("audio-visual", "all", "all")]
    clips = [item for item in evaluation.items if item["system"] == "audio-visual"]
    assert [item["item"] for item in clips] == list(range(overall["clips"]))
    assert np.mean([item["PESQ"] for item in clips]) == pytest.approx(overall["PESQ"])
    assert set(table) == {(s, *group) for s in systems for group in groups}
    for group in groups:
        blanked, alone = table[("AV, video blanked", *group)], table[("audio-only (Net 1)", *group)]
        assert blanked["= audio-only"] is True
        for metric in ("PESQ", "STOI", "SI-SDR", "SI-SDRi"):
            assert blanked[metric] == alone[metric]
        assert table[("audio-visual", *group)]["face share"] > 0.9
        assert len({table[(s, *group)]["clips"] for s in systems}) == 1


# --- jaxspeech.load: the same models as the commands ------------------------------------------


def test_load_separates_as_the_cli_does(shared_data, workdir, tmp_path, capsys):
    """A Conv-TasNet's default chunk is 30 s (recordings up to that length in one call),
    overlapping by the receptive field (L/2)·(1 + R·(P−1)·(2^X − 1)) = 8·(1 + 1·2·3) = 56
    samples; the command writes ``separate``'s output."""
    model = jaxspeech.load(workdir)
    assert (model.system, model.sample_rate, model.n_src) == ("separation", 8000, 2)
    assert (model.chunk, model.overlap) == (240000, 56)
    source = shared_data / "fsdd/recordings/0_george_0.wav"
    assert run_cli(capsys, "separate", source, "--workdir", workdir, "-o", tmp_path)[0] == 0
    written = read_outputs(sorted(map(str, tmp_path.glob("*.wav"))), 8000)
    mixture, _ = audio.load(source)
    sources = model.separate(mixture)
    assert sources.shape == (2, mixture.size)
    np.testing.assert_allclose(written, limit_peak(sources), atol=1.5 / 2**15)
    batched = model.separate(np.stack([mixture, 0.5 * mixture]))
    np.testing.assert_allclose(batched[0], sources, atol=1e-5)
    np.testing.assert_allclose(batched[1], 0.5 * sources, atol=1e-5)


def test_evaluate_long_mixtures_separates_as_the_cli_does(workdir, enhance_workdir):
    """``evaluate.py --long-mixtures 4``: four mixtures of two held-out speakers and one file
    of one, each separated by ``jaxspeech.load(workdir).separate`` (the first file's
    SI-SNRi recomputed here by hand from the same mixture), in tables of their own."""
    import evaluate
    from jaxspeech.data.pipeline import MixtureData, fixed_set_seed
    from jaxspeech.errors import ConfigError
    from jaxspeech.evaluation import long_mixtures

    evaluate.main(["--workdir", str(workdir), "--long-mixtures", "4"])
    eval_dir = workdir / "eval"
    [table] = json.loads((eval_dir / "test-long-mixtures.json").read_text())
    items = json.loads((eval_dir / "test-long-mixtures_items.json").read_text())
    assert [item["item"] for item in items] == ["mix0", "mix1", "mix2", "mix3", "one0"]
    assert {k: table[k] for k in ("split", "mixtures", "one-speaker files")} == {
        "split": "test",
        "mixtures": 4,
        "one-speaker files": 1,
    }
    assert table == {**table, **long_mixtures.summary(items)}
    model = jaxspeech.load(workdir)
    assert all(item["seconds"] > 2 * 0.25 for item in items)  # two training crops
    config = model.config.data
    [first, _] = long_mixtures.long_mixtures(
        MixtureData(config, 8, 2).splits["test"],
        config.mixture,
        n_src=2,
        count=1,
        seed=fixed_set_seed(config.split_seed, "test"),
        min_samples=2 * config.mixture.num_samples,
    )
    est, refs = model.separate(first["mixture"]).astype(np.float64), first["sources"]

    def si_snr(x, ref):
        x, ref = x - x.mean(), ref - ref.mean()
        target = np.dot(x, ref) / np.dot(ref, ref) * ref
        return 10 * np.log10(np.sum(target**2) / np.sum((x - target) ** 2))

    best = max(
        np.mean([si_snr(est[k], refs[j]) for j, k in enumerate(p)]) for p in ((0, 1), (1, 0))
    )
    baseline = np.mean([si_snr(first["mixture"].astype(np.float64), ref) for ref in refs])
    assert items[0]["SI-SNRi (dB)"] == pytest.approx(best - baseline, abs=0.01)
    for argv, message in [
        (["--long-mixtures", "0"], "positive number"),
        (["--long-mixtures", "--corpus", str(workdir)], "leave out --corpus"),
        (["--long-mixtures", "4"], "test-long-mixtures.md holds an earlier evaluation"),
    ]:
        with pytest.raises(ConfigError, match=message):
            evaluate.main(["--workdir", str(workdir), *argv])
    with pytest.raises(ConfigError, match="'enhancement' run; it measures separation runs"):
        evaluate.main(["--workdir", str(enhance_workdir), "--long-mixtures"])


def test_best_of_a_workdir_that_does_not_record_its_ranking(workdir, tmp_path):
    """The trainer records how it ranks checkpoints; a workdir written before that loads
    its best checkpoint by the ranking its system had then."""
    recorded = json.loads((workdir / "config.json").read_text())
    assert recorded["checkpoint_ranking"] == {"metric": "si_snr_i", "mode": "max"}
    older = shutil.copytree(workdir, tmp_path / "older")
    del recorded["checkpoint_ranking"]
    (older / "config.json").write_text(json.dumps(recorded))
    config = read_config(older)
    assert checkpoint_ranking(older, config) == ("si_snr_i", "max")
    assert jaxspeech.load(older).step == jaxspeech.load(workdir).step


def test_load_enhances_as_the_cli_does(shared_data, enhancer, enhance_workdir, tmp_path, capsys):
    """The default stage (the student), the default chunking (the 0.25 s crop, half of it
    overlapping: an LSTM's receptive field is unbounded), and its stream."""
    model = jaxspeech.load(enhance_workdir)
    assert model.workdir == enhance_workdir / "student" and model.system == "enhancement"
    assert (model.chunk, model.overlap) == (4000, 2000)
    source = shared_data / "arctic/cmu_arctic_us_aew_a0001.wav"
    output = tmp_path / "clean.wav"
    assert run_cli(capsys, "enhance", source, "--workdir", enhance_workdir, "-o", output)[0] == 0
    written, _ = sf.read(output, dtype="float32")
    noisy, _ = audio.load(source, sample_rate=16000)
    enhanced = model.enhance(noisy)
    np.testing.assert_allclose(written, limit_peak(enhanced), atol=1.5 / 2**15)
    task, params, model_state, _ = enhancer  # the trainer's side: the same chunked model
    chunked = infer.separate_long(
        task.enhance_chunks, (params, model_state), noisy, chunk=4000, overlap=2000
    )
    np.testing.assert_allclose(enhanced, chunked[0], atol=1e-6)
    short = noisy[:3000]
    assert model.enhance(np.stack([short, short])).shape == (2, 3000)
    stream = model.stream()
    assert (stream.hop, stream.delay) == (256, 256)


def test_float_input_above_full_scale_is_said(enhance_workdir, tmp_path, capsys):
    loud = _write_wav(tmp_path / "loud.wav", 3.0 * np.sin(np.arange(8000) * 0.05))
    output = tmp_path / "out.wav"
    status, _, err = run_cli(capsys, "enhance", loud, "--workdir", enhance_workdir, "-o", output)
    assert status == 0, err
    assert f"{loud}: float samples reach 3, above full scale (1.0); the output is scaled by" in err
    written, _ = sf.read(output, dtype="float32")
    assert 0.98 < np.abs(written).max() <= 0.99 + 1 / 2**15
    status, _, err = run_cli(
        capsys, "enhance", loud, "--workdir", enhance_workdir, "-o", output, "--overwrite",
        "--quiet",
    )  # fmt: skip
    assert status == 0 and err == ""


@pytest.fixture(scope="module")
def speaker_workdir(tmp_path_factory):
    """A tiny speaker run (2 steps on one device) on synthetic tones, and its corpus."""
    import jax
    from synthetic import write_tone_corpus
    from test_speaker import RATE, TONES, _task_config

    from jaxspeech.train.loop import run

    corpus = write_tone_corpus(
        tmp_path_factory.mktemp("tones"), TONES, (0.6, 0.9, 1.2, 0.7), RATE, {"hum": 20000}
    )
    path = tmp_path_factory.mktemp("speaker_run")
    run(_task_config(corpus), path, devices=jax.devices()[:1])
    return path, corpus


def test_readme_use_from_python_runs(shared_data, workdir, enhance_workdir, speaker_workdir):
    """The README's "Use from Python" example, on the tiny workdirs and real recordings."""
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use from Python", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    speaker_dir, corpus = speaker_workdir
    for name, path in {
        "workdirs/tasnet": workdir,
        "workdirs/distill": enhance_workdir,
        "workdirs/speaker": speaker_dir,
        "mixture.wav": shared_data / "fsdd/recordings/0_george_0.wav",
        "noisy.wav": shared_data / "arctic/cmu_arctic_us_aew_a0001.wav",
        "a.wav": corpus / "speech/s0/0.wav",
        "b.wav": corpus / "speech/s1/0.wav",
    }.items():
        assert f'"{name}"' in example
        example = example.replace(f'"{name}"', repr(str(path)))
    scope = {}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["sources"].shape == (2, scope["mixture"].size)
    assert scope["enhanced"].shape == scope["noisy"].shape
    a, b = scope["a"], scope["b"]
    expected = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
    assert scope["speaker"].score(a, b) == pytest.approx(expected, rel=1e-5)

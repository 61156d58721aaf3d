"""The `jaxspeech` command line, end to end on briefly trained separation and enhancement
workdirs."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import jaxspeech
from jaxspeech import audio, cli, infer
from jaxspeech.errors import AudioFileError

#: A 2-step run of the smoke recipe with an even smaller model, so the fixture is quick.
TRAIN_OVERRIDES = (
    "train.steps=2",
    "train.checkpoint_every=2",
    "train.eval_every=2",
    "train.batch_size=8",
    "data.valid_size=8",
    "data.mixture.segment_seconds=0.25",
    "model.n_filters=16",
    "model.tcn.bottleneck_channels=8",
    "model.tcn.hidden_channels=16",
    "model.tcn.skip_channels=8",
    "model.tcn.blocks=2",
    "model.tcn.repeats=1",
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
    from jaxspeech.train import config, loop

    del shared_data  # the recipe reads the recordings; skip without them
    recipe = config.apply_overrides(config.load_recipe(f"{RECIPE}:smoke"), list(TRAIN_OVERRIDES))
    path = tmp_path_factory.mktemp("separation_run")
    loop.run(recipe, path)
    return path


@pytest.fixture(scope="session")
def trained(workdir):
    """`(task, params, sample_rate)` of the best checkpoint."""
    task, params, _, rate = cli.load_trained_model(str(workdir), "best")
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
    return cli.load_trained_model(str(enhance_workdir / "student"), "best")


def limit_peak(wav: np.ndarray) -> np.ndarray:
    peak = np.abs(wav).max()
    return wav * min(1.0, cli.OUTPUT_PEAK / peak)


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
    """An 8 kHz digit shorter than a chunk: one model call, written as 16-bit WAVs."""
    source = shared_data / "fsdd/recordings/0_george_0.wav"
    status, out, err = run_cli(
        capsys, "separate", source, "--workdir", workdir, "-o", tmp_path / "out"
    )
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
            ("--overlap-seconds", "3"),
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
    whole = task.enhance_waveform(params, model_state, noisy, rate)
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
        capsys, "enhance", path, "--workdir", enhance_workdir, "--stage", "student", "-o", output
    )
    assert status == 0, err
    task, params, model_state, rate = enhancer
    assert file_rate == 8000 and rate == 16000
    written, written_rate = sf.read(output, dtype="float32")
    assert written_rate == rate and written.size == 2 * digit.size
    stereo, _ = audio.load(path, mono=False)  # as written (16-bit)
    expected = task.enhance_waveform(params, model_state, stereo, file_rate)
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
    assert cli.stage_workdir(str(other), None) == other / "final"
    assert cli.stage_workdir(str(enhance_workdir), None) == enhance_workdir / "student"


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
    assert sorted(commands.choices) == ["embed", "enhance", "separate", "verify"]
    for command in [parser, *commands.choices.values()]:
        for action in command._actions:
            assert action.help, f"{command.prog} {action.option_strings or action.dest}"
    assert "best, latest or a step number" in commands.choices["separate"].format_help()

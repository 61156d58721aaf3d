"""What a user meets at the command line before training: help texts, the recipe listing, the
keys of a recipe, malformed overrides, and recipes that build without data or optional
packages."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from jaxspeech import cli
from jaxspeech.errors import ConfigError, run_command
from jaxspeech.train import config as config_lib
from jaxspeech.train import stages

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").glob("*/*.py"))
#: reStructuredText that must not reach a help text.
MARKUP = re.compile(r"``|:(func|mod|class|data|meth):`")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script, evaluate_script = _script("train"), _script("evaluate")


def help_text(parse, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_train_help_lists_every_recipe_with_its_variants(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = help_text(train_script.parse_args, ["--help"], capsys)
    assert not MARKUP.search(text), MARKUP.search(text)
    assert "Running the same command again resumes from the latest checkpoint" in text
    for path in RECIPES:
        module = config_lib.recipe_module(path)
        variants = ", ".join(v or '""' for v in module.VARIANTS)
        shown = str(path.relative_to(REPO)) if pathlib.Path.cwd() == REPO else str(path)
        assert f"  {shown}\n" in text and f"variants: {variants}\n" in text, path


def test_train_help_of_a_recipe_lists_its_keys_with_types_and_values(capsys):
    spec = f"{REPO}/configs/separation/convtasnet.py:smoke"
    text = help_text(train_script.parse_args, ["--config", spec, "--help"], capsys)
    recipe = stages.load_recipe(spec)
    for key, kind, value in config_lib.config_keys(recipe):
        assert f"\n  {key}: {kind} = {value!r}\n" in text
    assert "\n  train.steps: int = 2000\n" in text
    assert "\n  data.mixture.speed_range: tuple[float, float] | None = (0.8, 1.2)\n" in text
    assert "\n  model.tcn.norm: str | None = None\n" in text


def test_train_help_of_a_multistage_recipe_lists_each_stage(capsys):
    spec = f"{REPO}/configs/enhancement/distill.py:smoke"
    text = help_text(train_script.parse_args, ["--config", spec, "--help"], capsys)
    assert "stages teacher, student, baseline" in text
    student = text.split("keys of stage 'student'")[1].split("keys of stage")[0]
    assert student.startswith(
        " (--config.student.KEY=VALUE sets this stage alone; it reads teacher"
    )
    assert "\n  model.teacher: str | None = 'teacher'\n" in student
    assert "\n  model.estimator.hidden: int = 32\n" in student


def test_evaluate_and_jaxspeech_help_are_plain_and_complete(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = help_text(evaluate_script.build_parser().parse_args, ["--help"], capsys)
    assert not MARKUP.search(text)
    assert "WORKDIR/eval/<split>.md, .csv and .json" in text and "--trials" in text
    text = help_text(cli.build_parser().parse_args, ["--help"], capsys)
    assert not MARKUP.search(text)
    for command in ("separate", "enhance", "match", "embed", "verify"):
        assert f"  jaxspeech {command} " in text
        sub = help_text(cli.build_parser().parse_args, [command, "--help"], capsys)
        assert not MARKUP.search(sub) and "`" not in sub, command
        assert sub.rstrip().endswith("message"), command  # ends with --debug's help, uncut


def test_unknown_variant_names_the_variants():
    with pytest.raises(
        ConfigError, match=r"no variant 'tiny'; its variants: '', 'causal', 'smoke'"
    ):
        stages.load_recipe(f"{REPO}/configs/separation/convtasnet.py:tiny")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=(1,", r"train\.batch_size='\(1,' is not an int$"),
        ("train.batch_size=abc", r"train\.batch_size='abc' is not an int$"),
        ("data.speech=(a,b", r"data\.speech='\(a,b' is not a tuple\[str, \.\.\.\]: unbalanced"),
        ("data.speech=a,,b", r"data\.speech='a,,b' is not a tuple\[str, \.\.\.\]: an empty item"),
        (
            "data.split_fractions=(0.8,0.2)",
            r"'\(0\.8,0\.2\)' is not a tuple\[float, float, float\]: it has 2 items, not 3$",
        ),
        (
            "data.split_fractions=0.8,x,0.1",
            r"'0\.8,x,0\.1' is not a tuple\[float, float, float\]: 'x' is not a float$",
        ),
        (
            "data.mixture.speed_range=((0.9,1.1)",
            r"speed_range='\(\(0\.9,1\.1\)' is not a tuple\[float, float\] \| None$",
        ),
    ],
)
def test_malformed_overrides_are_refused(override, message):
    recipe = stages.load_recipe(f"{REPO}/configs/separation/convtasnet.py:smoke")
    with pytest.raises(ConfigError, match=message):
        stages.apply_overrides(recipe, [override])


def test_train_refuses_a_malformed_override_in_one_line(tmp_path, capsys):
    argv = [
        *("--config", f"{REPO}/configs/separation/convtasnet.py:smoke"),
        *("--workdir", str(tmp_path / "run"), "--config.train.batch_size=(1,"),
    ]
    assert run_command("train.py", train_script.main, argv) == 2
    assert capsys.readouterr().err == ("train.py: error: train.batch_size='(1,' is not an int\n")
    assert not (tmp_path / "run").exists()


def test_overrides_of_a_multistage_recipe_reach_the_stages_with_the_key():
    recipe = stages.load_recipe(f"{REPO}/configs/speaker/resnet_kd.py:smoke")
    changed = stages.apply_overrides(recipe, ["model.num_speakers=174", "train.steps=5"])
    assert [getattr(s.config.model, "num_speakers", None) for s in changed.stages] == [
        None,
        None,
        174,
        174,
    ]
    assert {s.config.train.steps for s in changed.stages} == {5}
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.num_speakerz'"):
        stages.apply_overrides(recipe, ["model.num_speakerz=174"])


#: Builds every variant of every recipe with PyAV and OpenCV unimportable, recording the
#: files and folders it opens or lists; prints them and each recipe's config as JSON.
BUILD_RECIPES = """
import json, sys, warnings
sys.modules["av"] = sys.modules["cv2"] = None
touched = []
sys.addaudithook(
    lambda event, args: touched.append(str(args[0]))
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], str)
    else None
)
from jaxspeech.train import config, stages
warnings.simplefilter("error")
built = {}
for path in sys.argv[1:]:
    for variant in config.recipe_info(path)[1]:
        built[f"{path}:{variant}"] = config.to_json(stages.load_recipe(f"{path}:{variant}"))
print(json.dumps({"touched": touched, "built": built}))
"""


def test_recipes_build_without_data_or_optional_packages(tmp_path):
    """No recipe reads the data folder, imports PyAV or OpenCV, or warns when it is built;
    the speaker recipe is the same without PyAV (GRID s1 included, 175 training speakers)."""
    env = {**os.environ, "JAXSPEECH_DATA": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", BUILD_RECIPES, *map(str, RECIPES)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(result.stdout.splitlines()[-1])
    assert not [p for p in report["touched"] if str(tmp_path) in p or "shared/data" in p]
    assert len(report["built"]) == sum(len(config_lib.recipe_module(p).VARIANTS) for p in RECIPES)
    student = stages.load_recipe(f"{REPO}/configs/speaker/resnet_kd.py:smoke").stages[2].config
    assert student.data.speech[-1] == "grid/s1" and student.model.num_speakers == 175
    for name, config_json in report["built"].items():  # the same as with PyAV and OpenCV
        recipe = stages.load_recipe(name)
        assert config_json == config_lib.to_json(recipe), name
        for config in [s.config for s in recipe.stages] if hasattr(recipe, "stages") else [recipe]:
            data = config.data  # folders below the data root, chosen when the data is read
            assert data.root is None, name
            folders = [*getattr(data, "speech", ()), getattr(data, "noise", None)]
            assert all(not pathlib.Path(f).is_absolute() for f in folders if f), name


def test_every_option_of_train_and_evaluate_has_help():
    for parser in (train_script.build_parser(), evaluate_script.build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, action.option_strings

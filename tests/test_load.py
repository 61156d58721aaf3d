"""``jaxspeech.load`` without a trained workdir: what the package imports, and the errors."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import types

import pytest

import jaxspeech
from jaxspeech import infer
from jaxspeech.errors import JaxspeechError

PACKAGE = pathlib.Path(jaxspeech.__file__).parent


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_commands_never_import_the_trainer():
    """Inference never builds a training setup: the commands load through jaxspeech.load."""
    for path in [*sorted((PACKAGE / "commands").glob("*.py")), PACKAGE / "cli.py"]:
        trainer = {m for m in _imported_modules(path) if m.startswith("jaxspeech.train")}
        assert not trainer, f"{path.name} imports {trainer}"


def test_rankings_before_recording_are_those_of_the_tasks():
    """The rankings assumed for workdirs that do not record theirs are the tasks'."""
    from jaxspeech.inference.runs import RANKINGS_BEFORE_RECORDING
    from jaxspeech.train.tasks import get_task_class

    for system, ranking in RANKINGS_BEFORE_RECORDING.items():
        task, _, net = system.partition(":")
        config = types.SimpleNamespace(model=types.SimpleNamespace(net=net))
        assert get_task_class(task).checkpoint_ranking(config) == ranking, system


def test_import_jaxspeech_stays_light():
    code = "import sys, jaxspeech; print('jax' in sys.modules, callable(jaxspeech.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_a_folder_without_a_run_is_one_clear_error(tmp_path):
    with pytest.raises(JaxspeechError, match=r"config\.json not found"):
        jaxspeech.load(tmp_path)


@pytest.mark.parametrize(
    "crop, field, expected",
    [(32000, 12240, (32000, 12240)), (2000, 1500, (3000, 1500)), (4000, None, (4000, 2000))],
)
def test_default_chunking(crop, field, expected):
    assert infer.default_chunking(crop, field) == expected

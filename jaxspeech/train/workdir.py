"""A workdir belongs to one run: what may change when a run is resumed, and what may not.

``train.py`` on an existing workdir resumes it. Before anything is written, the requested
config is compared with the workdir's ``config.json``; they may differ only in
:data:`RESUMABLE_KEYS` (how long to train, how often to log, validate and checkpoint, how many
checkpoints to keep, where the data root is, and the ``eval`` section, which only
``evaluate.py`` reads). Anything else would train a different run on top of this one's
checkpoints, so it is refused with the differing keys, unless the caller continues on purpose.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from jaxspeech import workdir as names
from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import config as config_lib
from jaxspeech.train.config import Config

RESUMABLE_KEYS = (
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "data.root",
    "eval",
)
CONTINUE_FLAG = "--continue-with-changes"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: tree}


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in RESUMABLE_KEYS)


def read_config(workdir: str | pathlib.Path) -> Config:
    """The config of the run in ``workdir`` (its ``config.json``): the one reader of it. One-line
    errors naming the file when there is none, or it is damaged or of another format version."""
    path = pathlib.Path(workdir) / names.CONFIG
    if not path.is_file():
        raise JaxspeechError(f"{path} not found; is {workdir} a training workdir?")
    names.read_json(path)
    try:
        return config_lib.from_json(path.read_text())
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def check_resumable(workdir: pathlib.Path, config_json: str, allow_changes: bool) -> None:
    """Raises ConfigError when ``workdir/config.json`` holds another run than ``config_json``
    (see the module docstring); nothing when the workdir is new."""
    if names.is_multi_stage(workdir):
        raise ConfigError(
            f"{workdir} holds a multi-stage recipe; train this single run in another --workdir"
        )
    if not names.is_run(workdir):
        return
    read_config(workdir)
    old, new = names.read_json(workdir / names.CONFIG)["config"], json.loads(config_json)["config"]
    if old.get("task") != new.get("task"):
        raise ConfigError(
            f"{workdir} holds a {old.get('task')!r} run, not a {new.get('task')!r} one; "
            "train this recipe in another --workdir"
        )
    old_keys, new_keys = _flatten(old), _flatten(new)
    changed = sorted(
        key
        for key in set(old_keys) | set(new_keys)
        if old_keys.get(key) != new_keys.get(key) and not _resumable(key)
    )
    if changed and not allow_changes:
        shown = ", ".join(f"{k} ({old_keys.get(k)!r} -> {new_keys.get(k)!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(
            f"{workdir} holds a run with other settings: {shown}{more}. Start a new run in "
            f"another --workdir, or pass {CONTINUE_FLAG} to continue this one with the new "
            "settings on purpose"
        )


def check_stages(workdir: pathlib.Path, stages: list[str]) -> None:
    """Raises ConfigError when ``workdir`` holds a single run, or other stages than ``stages``."""
    if names.is_run(workdir):
        raise ConfigError(
            f"{workdir} holds a single run; train this multi-stage recipe in another --workdir"
        )
    if names.is_multi_stage(workdir):
        old = names.read_json(workdir / names.STAGES).get("stages")
        if old != stages:
            raise ConfigError(
                f"{workdir} holds a recipe with the stages {old}, not {stages}; train this "
                "recipe in another --workdir"
            )

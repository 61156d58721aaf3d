"""Every file name inside a workdir, in one place.

A single run's workdir holds::

    config.json          the resolved config (jaxspeech.train.config.to_json) and how the
                         trainer ranks its checkpoints ("best")
    frozen.json          the earlier stages it read: relative workdir and checkpoint step
    checkpoints/         Orbax checkpoints (jaxspeech.train.checkpoint); checkpoints/deleted/
                         holds the ones the keep policy dropped until the next save or the end
    metrics.jsonl        one JSON record per logged step
    eval/<table>.{md,csv,json}          the evaluation table (<table>: split or trial list)
    eval/<table>_items.{md,csv,json}    one row per test item: its ID, metadata, every score
    eval/<table>_groups.{md,csv,json}   the scores' means by the groups the items support
    eval/<table>-paired.{md,csv,json}   paired comparisons (multi-stage recipes)
    eval/<split>-long-mixtures{,_items}.{md,csv,json}   a separation run on long real mixtures
    trials/<split>.txt   the trial list a verification run scored
    verification.json    the verification threshold chosen on the validation trials, and the
                         checkpoint step it was chosen for

A multi-stage recipe's workdir holds ``stages.json`` (its stage names and comparisons), one
single-run workdir per stage, and ``eval/`` with the stages' tables concatenated.

Nothing here imports the trainer, so inference code may use it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from jaxspeech.errors import JaxspeechError

CONFIG = "config.json"
FROZEN = "frozen.json"
STAGES = "stages.json"
CHECKPOINTS = "checkpoints"
DELETED_CHECKPOINTS = "deleted"
METRICS = "metrics.jsonl"
EVAL = "eval"
TRIALS = "trials"
VERIFICATION = "verification.json"

ITEMS_SUFFIX, GROUPS_SUFFIX, PAIRED_SUFFIX = "_items", "_groups", "-paired"
#: The key of ``config.json`` that records ``{"metric", "mode"}``, the validation metric by
#: which the trainer ranks the run's checkpoints and whether "min" or "max" is best.
RANKING = "checkpoint_ranking"


def is_run(workdir: str | pathlib.Path) -> bool:
    """Whether ``workdir`` holds a single training run (its ``config.json``)."""
    return (pathlib.Path(workdir) / CONFIG).is_file()


def is_multi_stage(workdir: str | pathlib.Path) -> bool:
    """Whether ``workdir`` holds a multi-stage recipe (its ``stages.json``)."""
    return (pathlib.Path(workdir) / STAGES).is_file()


def table_name(split: str, trials: str | None = None) -> str:
    """The name of an evaluation's tables in ``eval/``: the split, or the trial list's stem."""
    return split if trials is None else pathlib.Path(trials).stem


def long_mixtures_table(split: str) -> str:
    """The name of the long-mixture evaluation's tables in ``eval/`` (``evaluate.py
    --long-mixtures``), apart from the split's own table."""
    return f"{split}-long-mixtures"


def eval_stem(workdir: str | pathlib.Path, table: str, suffix: str = "") -> pathlib.Path:
    """``workdir/eval/<table><suffix>``, the stem of one table's ``.md``, ``.csv``, ``.json``
    (``suffix``: "", :data:`ITEMS_SUFFIX`, :data:`GROUPS_SUFFIX` or :data:`PAIRED_SUFFIX`)."""
    return pathlib.Path(workdir) / EVAL / f"{table}{suffix}"


def earlier_tables(workdir: str | pathlib.Path, table: str) -> list[pathlib.Path]:
    """The ``.md`` files of an earlier evaluation's tables named ``table`` (with their items,
    groups and paired tables) in ``workdir/eval`` and, for a multi-stage recipe, in each
    stage's ``eval/``."""
    workdir = pathlib.Path(workdir)
    folders = [workdir, *(workdir / stage for stage in stage_names(workdir) or ())]
    suffixes = ("", ITEMS_SUFFIX, GROUPS_SUFFIX, PAIRED_SUFFIX)
    markdowns = [eval_stem(f, table, s).with_suffix(".md") for f in folders for s in suffixes]
    return [path for path in markdowns if path.is_file()]


def trials_path(workdir: str | pathlib.Path, split: str) -> pathlib.Path:
    """``workdir/trials/<split>.txt``, the trial list a verification run wrote for ``split``."""
    return pathlib.Path(workdir) / TRIALS / f"{split}.txt"


def read_json(path: pathlib.Path) -> Any:
    """The JSON in ``path``; a one-line JaxspeechError naming it when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JaxspeechError(
            f"{path} is damaged (not JSON: {err}); restore it from a copy, or start a new run "
            "in another --workdir"
        ) from err


def stage_names(workdir: str | pathlib.Path) -> list[str] | None:
    """The stages of a multi-stage workdir (from its ``stages.json``), or None for a single
    run."""
    if not is_multi_stage(workdir):
        return None
    return read_json(pathlib.Path(workdir) / STAGES)["stages"]


def with_ranking(config_json: str, metric: str, mode: str) -> str:
    """``config_json`` (``jaxspeech.train.config.to_json``) with the checkpoint ranking
    ``{"metric", "mode"}`` recorded under :data:`RANKING`."""
    return json.dumps(
        {**json.loads(config_json), RANKING: {"metric": metric, "mode": mode}}, indent=2
    )


def recorded_ranking(workdir: str | pathlib.Path) -> tuple[str, str] | None:
    """``(validation metric, "min" or "max")`` by which the trainer ranked the checkpoints of
    the run in ``workdir`` ("best"), as its ``config.json`` records it; None for a run
    written before runs recorded it."""
    entry = read_json(pathlib.Path(workdir) / CONFIG).get(RANKING)
    return None if entry is None else (entry["metric"], entry["mode"])

"""Multi-stage recipes: training runs in order, later ones reading earlier ones' frozen params.

A recipe's ``get_config(variant)`` may return a :class:`MultiStage` instead of a single
:class:`~jaxspeech.train.config.Config`. Stage ``name`` trains in ``WORKDIR/<name>`` with the
ordinary loop (so every stage resumes, evaluates and is inspected like a single run). A stage
declares the earlier stages it ``reads``; before it starts, the machinery restores each of
them (params and model state of its ``read_checkpoint``, with ``restore.restore_run``) and
hands them to the stage's task as ``frozen={name: TrainedRun}``: the student of a distillation
recipe gets its teacher this way, and no task loads a checkpoint itself. Which checkpoint of
which stage was read is recorded in ``WORKDIR/<name>/frozen.json``, so ``WORKDIR/<name>`` is
evaluable on its own. A stage may be of either task kind (gradient descent or estimation, e.g.
EM); see ``jaxspeech.train.task``.

``WORKDIR/stages.json`` lists the stages; :func:`evaluate` concatenates their tables (a
``stage`` column first) into ``WORKDIR/eval/<split>.{md,csv,json}``.

Overrides ``section.key=value`` apply to every stage; ``<stage>.section.key=value`` to one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax

from jaxspeech import files
from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import config as config_lib
from jaxspeech.train import restore
from jaxspeech.train.tasks import get_task_class
from jaxspeech.train.workdir import check_stages

STAGES_FILE = "stages.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training run of a multi-stage recipe.

    Attributes:
      name: the stage's sub-folder of the recipe's workdir (letters, digits, ``_``, ``-``).
      config: its complete config.
      reads: names of earlier stages whose frozen params and model state this stage's task
        receives.
      read_checkpoint: which checkpoint of each read stage: "best", "latest" or a step.
    """

    name: str
    config: config_lib.Config
    reads: tuple[str, ...] = ()
    read_checkpoint: str = "best"


@dataclasses.dataclass(frozen=True)
class MultiStage:
    """Stages trained in the given order."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("MultiStage has no stages")
        seen: list[str] = []
        for stage in self.stages:
            if not stage.name.replace("_", "").replace("-", "").isalnum():
                raise ConfigError(
                    f"stage name {stage.name!r} must be letters, digits, '_' or '-' "
                    "(it names a folder)"
                )
            if stage.name in seen:
                raise ConfigError(f"two stages are named {stage.name!r}; names must be unique")
            for source in stage.reads:
                if source not in seen:
                    raise ConfigError(
                        f"stage {stage.name!r} reads {source!r}, which is not an earlier "
                        f"stage (earlier: {seen or 'none'})"
                    )
            seen.append(stage.name)

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]


Recipe = config_lib.Config | MultiStage


def load_recipe(spec: str) -> Recipe:
    """Loads ``"configs/x/y.py[:variant]"``: a single-run Config or a MultiStage."""
    recipe = config_lib.call_get_config(spec)
    if not isinstance(recipe, Recipe):
        raise ConfigError(
            f"{spec}: get_config returned {type(recipe).__name__}, not Config or MultiStage"
        )
    return recipe


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """``"a.b=v"`` for every stage (or the single config); ``"<stage>.a.b=v"`` for one stage."""
    if isinstance(recipe, config_lib.Config):
        return config_lib.apply_overrides(recipe, overrides)
    stages = list(recipe.stages)
    for override in overrides:
        head, _, rest = override.partition(".")
        targets = [recipe.names.index(head)] if head in recipe.names else range(len(stages))
        text = rest if head in recipe.names else override
        for index in targets:
            config = config_lib.apply_overrides(stages[index].config, [text])
            stages[index] = dataclasses.replace(stages[index], config=config)
    return MultiStage(tuple(stages))


def run(recipe: Recipe, workdir: str | pathlib.Path, allow_changes: bool = False) -> None:
    """Trains a single config in ``workdir``, or every stage in ``workdir/<stage>`` in order
    (each resumes from its latest checkpoint, so a finished stage is not trained again), each
    with the frozen stages it reads. ``allow_changes``: see ``loop.run``."""
    from jaxspeech.train import loop  # after jax.distributed initialisation (see train.py)

    if isinstance(recipe, config_lib.Config):
        loop.run(recipe, workdir, allow_changes=allow_changes)
        return
    workdir = pathlib.Path(workdir).absolute()
    check_stages(workdir, recipe.names)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        files.write_text(workdir / STAGES_FILE, json.dumps({"stages": recipe.names}, indent=2))
    for stage in recipe.stages:
        frozen = {
            name: restore.restore_run(workdir / name, stage.read_checkpoint) for name in stage.reads
        }
        print(f"stage {stage.name}: training in {workdir / stage.name}", flush=True)
        loop.run(stage.config, workdir / stage.name, frozen=frozen, allow_changes=allow_changes)


def stage_names(workdir: str | pathlib.Path) -> list[str] | None:
    """The stages of a multi-stage workdir, or None for a single run."""
    path = pathlib.Path(workdir) / STAGES_FILE
    return json.loads(path.read_text())["stages"] if path.is_file() else None


def evaluate(
    workdir: str | pathlib.Path,
    split: str = "test",
    checkpoint: str = "best",
    trials: str | None = None,
):
    """``restore.evaluate`` of a single run, or of every stage with its rows concatenated (a
    ``stage`` column first) and written to ``workdir/eval/<split>.{md,csv,json}``. With a trial
    list ``trials``, only the stages whose task scores trial lists are evaluated, on it
    (``workdir/eval/<list name>.*``).

    Returns ``(rows, markdown)``.
    """
    from jaxspeech.train.logging import write_table

    names = stage_names(workdir)
    if names is None:
        return restore.evaluate(workdir, split, checkpoint, trials)
    workdir = pathlib.Path(workdir).absolute()
    rows = []
    for name in names:
        if not (workdir / name / "config.json").is_file():
            raise JaxspeechError(
                f"stage {name!r} has not been trained in {workdir / name}; run train.py with "
                "the same --workdir to finish the recipe"
            )
        if trials is not None and not restore.scores_trials(
            get_task_class(restore.read_config(workdir / name).task)
        ):
            continue
        stage_rows, _ = restore.evaluate(workdir / name, split, checkpoint, trials)
        rows.extend({"stage": name, **row} for row in stage_rows)
    if not rows:
        raise ConfigError(f"--trials: no stage of {workdir} scores trial lists ({names})")
    table = split if trials is None else pathlib.Path(trials).stem
    markdown = write_table(rows, workdir / "eval" / table) if jax.process_index() == 0 else ""
    return rows, markdown

"""Multi-stage recipes: training runs in order, later ones reading earlier ones' checkpoints.

A recipe's ``get_config(variant)`` may return a :class:`MultiStage` instead of a single
:class:`~jaxspeech.train.config.Config`. Stage ``name`` trains in ``WORKDIR/<name>`` with the
ordinary loop (so every stage resumes, evaluates and is inspected like a single run), and
before it starts each ``(config key, earlier stage)`` pair of its ``links`` sets that key
to the earlier stage's workdir: e.g. ``("model.teacher_workdir", "teacher")`` lets the
student's task restore the frozen teacher with ``loop.restore_run``. The resolved path is
part of the stage's ``config.json``, so ``WORKDIR/<name>`` is evaluable on its own.

``WORKDIR/stages.json`` lists the stages; :func:`evaluate` concatenates their tables (a
``stage`` column first) into ``WORKDIR/eval/<split>.{md,csv,json}``.

Overrides ``section.key=value`` apply to every stage; ``<stage>.section.key=value`` to one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax

from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.train import config as config_lib

STAGES_FILE = "stages.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training run of a multi-stage recipe.

    Attributes:
      name: the stage's sub-folder of the recipe's workdir (letters, digits, ``_``, ``-``).
      config: its complete config.
      links: ``(dotted config key, earlier stage name)`` pairs; the key is set to that
        stage's workdir (a ``str`` field of the config) before this stage runs.
    """

    name: str
    config: config_lib.Config
    links: tuple[tuple[str, str], ...] = ()


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
            for key, source in stage.links:
                if source not in seen:
                    raise ConfigError(
                        f"stage {stage.name!r} links {key} to {source!r}, which is not an "
                        f"earlier stage (earlier: {seen or 'none'})"
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


def resolved_stages(
    recipe: MultiStage, workdir: str | pathlib.Path
) -> list[tuple[str, config_lib.Config, pathlib.Path]]:
    """``(name, config with its links set, stage workdir)`` for every stage, in order."""
    workdir = pathlib.Path(workdir).absolute()
    out = []
    for stage in recipe.stages:
        links = [f"{key}={workdir / source}" for key, source in stage.links]
        out.append(
            (stage.name, config_lib.apply_overrides(stage.config, links), workdir / stage.name)
        )
    return out


def run(recipe: Recipe, workdir: str | pathlib.Path) -> None:
    """Trains a single config in ``workdir``, or every stage in ``workdir/<stage>`` in order
    (each resumes from its latest checkpoint, so a finished stage is not trained again)."""
    from jaxspeech.train import loop  # after jax.distributed initialisation (see train.py)

    if isinstance(recipe, config_lib.Config):
        loop.run(recipe, workdir)
        return
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (workdir / STAGES_FILE).write_text(json.dumps({"stages": recipe.names}, indent=2))
    for name, config, stage_dir in resolved_stages(recipe, workdir):
        print(f"stage {name}: training in {stage_dir}", flush=True)
        loop.run(config, stage_dir)


def stage_names(workdir: str | pathlib.Path) -> list[str] | None:
    """The stages of a multi-stage workdir, or None for a single run."""
    path = pathlib.Path(workdir) / STAGES_FILE
    return json.loads(path.read_text())["stages"] if path.is_file() else None


def evaluate(workdir: str | pathlib.Path, split: str = "test", checkpoint: str = "best"):
    """``loop.evaluate`` of a single run, or of every stage with its rows concatenated (a
    ``stage`` column first) and written to ``workdir/eval/<split>.{md,csv,json}``.

    Returns ``(rows, markdown)``.
    """
    from jaxspeech.train import loop
    from jaxspeech.train.logging import write_table

    names = stage_names(workdir)
    if names is None:
        return loop.evaluate(workdir, split, checkpoint)
    workdir = pathlib.Path(workdir).absolute()
    rows = []
    for name in names:
        if not (workdir / name / "config.json").is_file():
            raise JaxspeechError(
                f"stage {name!r} has not been trained in {workdir / name}; run train.py with "
                "the same --workdir to finish the recipe"
            )
        stage_rows, _ = loop.evaluate(workdir / name, split, checkpoint)
        rows.extend({"stage": name, **row} for row in stage_rows)
    markdown = write_table(rows, workdir / "eval" / split) if jax.process_index() == 0 else ""
    return rows, markdown

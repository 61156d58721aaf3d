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

``WORKDIR/stages.json`` lists the stages; :func:`evaluate` concatenates their tables, item
rows and group means (a ``stage`` column first) into ``WORKDIR/eval/<split>{,_items,_groups}``
``.{md,csv,json}``. A recipe may also declare :class:`Comparison` s (one system against
another, each trained with several seeds); they are recorded in ``stages.json`` and
:func:`evaluate` writes them, paired by test item, to ``WORKDIR/eval/<split>-paired.*``.

Overrides ``section.key=value`` apply to every stage that has the key;
``<stage>.section.key=value`` to one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping

import jax
import numpy as np

from jaxspeech import files
from jaxspeech import workdir as names
from jaxspeech.errors import ConfigError, JaxspeechError
from jaxspeech.evaluation import Evaluation, write_evaluation, write_table
from jaxspeech.train import config as config_lib
from jaxspeech.train import restore
from jaxspeech.train.tasks import get_task_class
from jaxspeech.train.workdir import check_stages, read_config


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
class Comparison:
    """System A (stages ``a``, one per training seed) against system B (stages ``b``), scored
    per test item by the stages' tasks (``Evaluation.scores``) and compared paired by
    item (:func:`jaxspeech.metrics.paired.paired_difference`)."""

    name: str
    a: tuple[str, ...]
    b: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class MultiStage:
    """Stages trained in the given order, and the comparisons ``evaluate`` reports."""

    stages: tuple[Stage, ...]
    comparisons: tuple[Comparison, ...] = ()

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
        for comparison in self.comparisons:
            unknown = [name for name in comparison.a + comparison.b if name not in seen]
            if unknown or not comparison.a or not comparison.b:
                raise ConfigError(
                    f"comparison {comparison.name!r} needs stages on both sides, all of them in "
                    f"the recipe ({seen}); unknown: {unknown}"
                )

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]


Recipe = config_lib.Config | MultiStage


def load_recipe(spec: str) -> Recipe:
    """Loads ``"configs/x/y.py[:variant]"``: a single-run Config or a MultiStage, from the
    file's ``get_config(variant)``; a variant must be one of the file's ``VARIANTS``."""
    path, _, variant = spec.partition(":")
    module = config_lib.recipe_module(path)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"recipe {path} defines no get_config(variant: str = '')")
    variants = getattr(module, "VARIANTS", None)
    if variants is not None and variant not in variants:
        raise ConfigError(
            f"{path} has no variant {variant!r}; its variants: "
            f"{', '.join(repr(v) for v in variants)} (--config FILE:VARIANT)"
        )
    recipe = module.get_config(variant) if variant else module.get_config()
    if not isinstance(recipe, Recipe):
        raise ConfigError(
            f"{spec}: get_config returned {type(recipe).__name__}, not Config or MultiStage"
        )
    return recipe


def apply_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    """``"a.b=v"`` for every stage that has the key ``a.b`` (an error when none has it), or
    for the single config; ``"<stage>.a.b=v"`` for one stage."""
    if isinstance(recipe, config_lib.Config):
        return config_lib.apply_overrides(recipe, overrides)
    stages = list(recipe.stages)
    for override in overrides:
        head, _, rest = override.partition(".")
        if head in recipe.names:
            targets, text = [recipe.names.index(head)], rest
        else:
            dotted, text = override.partition("=")[0], override
            having = [i for i, s in enumerate(stages) if config_lib.has_key(s.config, dotted)]
            targets = having or range(len(stages))  # none: the error lists the valid keys
        for index in targets:
            config = config_lib.apply_overrides(stages[index].config, [text])
            stages[index] = dataclasses.replace(stages[index], config=config)
    return dataclasses.replace(recipe, stages=tuple(stages))


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
        listing = {"stages": recipe.names}
        if recipe.comparisons:
            listing["comparisons"] = [dataclasses.asdict(c) for c in recipe.comparisons]
        files.write_text(workdir / names.STAGES, json.dumps(listing, indent=2))
    for stage in recipe.stages:
        frozen = {
            name: restore.restore_run(workdir / name, stage.read_checkpoint) for name in stage.reads
        }
        print(f"stage {stage.name}: training in {workdir / stage.name}", flush=True)
        loop.run(stage.config, workdir / stage.name, frozen=frozen, allow_changes=allow_changes)


def _listing(workdir: str | pathlib.Path) -> dict | None:
    """The workdir's ``stages.json``, or None for a single run."""
    return (
        names.read_json(pathlib.Path(workdir) / names.STAGES)
        if names.is_multi_stage(workdir)
        else None
    )


def comparisons(workdir: str | pathlib.Path) -> list[Comparison]:
    """The comparisons recorded in a multi-stage workdir's ``stages.json`` (none for a run)."""
    listed = (_listing(workdir) or {}).get("comparisons", [])
    return [Comparison(c["name"], tuple(c["a"]), tuple(c["b"])) for c in listed]


def paired_rows(
    comparison: Comparison, scores: Mapping[str, Mapping[str, np.ndarray] | None]
) -> list[dict]:
    """One row per metric of ``comparison``: A's and B's means, the paired difference with its
    95 % interval and each side's range of per-seed means, from each stage's per-item
    ``scores[stage]`` (``{metric: [items]}``)."""
    from jaxspeech.metrics.paired import paired_difference

    unscored = [n for n in (*comparison.a, *comparison.b) if scores[n] is None]
    if unscored:
        raise ConfigError(
            f"comparison {comparison.name!r}: the stages {unscored} give no per-item scores, "
            "so they cannot be compared paired"
        )
    a, b = [scores[n] for n in comparison.a], [scores[n] for n in comparison.b]
    rows = []
    for metric in a[0]:
        result = paired_difference(
            np.stack([s[metric] for s in a]), np.stack([s[metric] for s in b])
        )
        rows.append(
            {
                "comparison": comparison.name,
                "metric": metric,
                "seeds (A, B)": f"{len(a)}, {len(b)}",
                **result,
            }
        )
    return rows


def evaluate(
    workdir: str | pathlib.Path,
    split: str = "test",
    checkpoint: str = "best",
    trials: str | None = None,
    corpus: str | None = None,
) -> tuple[Evaluation, str, list[pathlib.Path]]:
    """``restore.evaluate`` of a single run, or of every stage, each written to its own
    ``eval/`` and concatenated (a ``stage`` column first) into ``workdir/eval/<split>*``. With
    a trial list ``trials``, only the stages whose task scores trial lists are evaluated, on
    it (``workdir/eval/<list name>*``). With ``corpus``, on that corpus's test split
    (``workdir/eval/<corpus name>-<split>*``; ``restore.table_name``).

    Returns ``(evaluation, the table's Markdown, the stems written)``.
    """
    stages = names.stage_names(workdir)
    if stages is None:
        return restore.evaluate(workdir, split, checkpoint, trials, corpus)
    workdir = pathlib.Path(workdir).absolute()
    wanted = [] if trials is not None else comparisons(workdir)
    table = restore.table_name(workdir, split, trials, corpus)
    evaluations, scores = {}, {}
    for name in stages:
        if not names.is_run(workdir / name):
            raise JaxspeechError(
                f"stage {name!r} has not been trained in {workdir / name}; run train.py with "
                "the same --workdir to finish the recipe"
            )
        task_class = get_task_class(read_config(workdir / name).task)
        if trials is not None and not task_class.capabilities.scores_trials:
            continue
        run = restore.restore_run(workdir / name, checkpoint, corpus=corpus)
        evaluations[name] = restore.evaluate_run(run, split, trials)
        scores[name] = evaluations[name].scores
        if jax.process_index() == 0:
            write_evaluation(evaluations[name], workdir / name, table)
    if not evaluations:
        raise ConfigError(f"--trials: no stage of {workdir} scores trial lists ({stages})")
    joined = Evaluation(
        table=[{"stage": n, **row} for n, e in evaluations.items() for row in e.table],
        items=[{"stage": n, **row} for n, e in evaluations.items() for row in e.items],
        groups=tuple(dict.fromkeys(g for e in evaluations.values() for g in e.groups)),
    )
    if jax.process_index() != 0:
        return joined, "", []
    markdown, written = write_evaluation(joined, workdir, table)
    paired = [row for c in wanted for row in paired_rows(c, scores)]
    if paired:
        stem = names.eval_stem(workdir, table, names.PAIRED_SUFFIX)
        markdown += "\n" + write_table(paired, stem)
        written.append(stem)
    return joined, markdown, written

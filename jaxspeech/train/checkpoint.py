"""Complete checkpoints with orbax: train state, grain iterator state and the config.

Layout: ``WORKDIR/checkpoints/<step>/{model,train,data,config}``: ``model`` holds what running
the model needs (``params`` and ``model_state``, e.g. batch-norm or feature-normalisation
statistics), ``train`` the rest of the train state (step, optimiser state, RNG, ...), so that
evaluation and inference restore ``model`` alone, without building an optimiser. The last
``keep`` checkpoints are kept, plus the best one by the task's validation metric. A dropped
checkpoint is first renamed into ``checkpoints/deleted/`` (one atomic rename, so a run killed
while dropping one never leaves a half-deleted step that is still listed) and removed for
good at the next save or when the checkpointer closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import shutil
import sys
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policy

from jaxspeech import workdir as names
from jaxspeech.errors import JaxspeechError


class UnreadableCheckpointError(JaxspeechError):
    """A checkpoint that is damaged or does not fit the run restoring it."""


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct`` (with sharding) for every array of ``tree``: a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


MODEL_FIELDS = ("params", "model_state")


def _split(state: Any) -> tuple[dict, dict]:
    """A train state (a dataclass with ``params`` and ``model_state``) as ``(model, train)``
    dicts of its fields."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    model = {name: fields.pop(name) for name in MODEL_FIELDS}
    return model, fields


class Checkpointer:
    """Saves and restores ``(state, data iterator, config)`` under ``directory``."""

    def __init__(
        self, directory: str | pathlib.Path, *, keep: int, valid_metric: str, valid_mode: str
    ) -> None:
        if valid_mode not in ("min", "max"):
            raise JaxspeechError(f"task.valid_mode={valid_mode!r}; it must be 'min' or 'max'")
        metric = lambda metrics: metrics[valid_metric]
        options = ocp.CheckpointManagerOptions(
            best_fn=metric,
            best_mode=valid_mode,
            preservation_policy=policy.AnyPreservationPolicy(
                [
                    policy.LatestN(n=keep),
                    policy.BestN(
                        get_metric_fn=metric,
                        reverse=valid_mode == "min",
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            create=True,
            todelete_subdir=names.DELETED_CHECKPOINTS,
        )
        self.directory = pathlib.Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("model", "train", "data", "config")
        )

    @classmethod
    def for_run(cls, workdir: pathlib.Path, config: Any, task: Any) -> Checkpointer:
        """The checkpointer of the run in ``workdir`` (``workdir/checkpoints``)."""
        return cls(
            workdir / names.CHECKPOINTS,
            keep=config.train.keep_checkpoints,
            valid_metric=task.valid_metric,
            valid_mode=task.valid_mode,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def resolve(self, which: str) -> int:
        """``"latest"``, ``"best"`` or a step number → an existing step."""
        steps = self.manager.all_steps()
        if which == "latest":
            step = self.manager.latest_step()
        elif which == "best":
            step = self.manager.best_step()
        elif which.isdigit():
            step = int(which) if int(which) in steps else None
        else:
            raise JaxspeechError(f"checkpoint={which!r}; use best, latest or a step number")
        if step is None:
            raise JaxspeechError(
                f"no checkpoint {which!r} in {self.directory} (steps there: {sorted(steps)})"
            )
        return step

    def save(
        self,
        step: int,
        state: Any,
        data_iterator: Any,
        config_json: str,
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Saves asynchronously (orbax writes to a temporary folder and renames it when the
        save is complete, so a killed save leaves no readable half checkpoint); ``metrics``
        (validation) rank the checkpoint for "best". A failed write (a full disk) raises a
        JaxspeechError here or at the next save or ``close``; earlier checkpoints stay."""
        model, train = _split(state)
        with self._writing(step):
            # the previous save's background thread may still be renaming a dropped checkpoint
            # into deleted/: empty it only once that is done (manager.save would wait anyway)
            self.manager.wait_until_finished()
            self._empty_deleted()
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    model=ocp.args.StandardSave(model),
                    train=ocp.args.StandardSave(train),
                    data=grain.checkpoint.CheckpointSave(data_iterator),
                    config=ocp.args.JsonSave(json.loads(config_json)),
                ),
                metrics=metrics,
            )

    @contextlib.contextmanager
    def _writing(self, step: int):
        try:
            yield
        except OSError as err:
            raise JaxspeechError(
                f"could not write checkpoint {step} in {self.directory}: {err}; the earlier "
                f"checkpoints are intact (latest: {self.manager.latest_step()}); free disk space "
                "and rerun the same command to resume"
            ) from err

    def restore(self, step: int, state: Any, data_iterator: Any | None = None) -> Any:
        """Restores the state (with ``state``'s shapes and shardings, which may be abstract) and,
        when given, the iterator in place; returns the restored state."""
        model, train = _split(state)
        items = {
            "model": ocp.args.StandardRestore(abstract_like(model)),
            "train": ocp.args.StandardRestore(abstract_like(train)),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        with self._reading(step):
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return state.replace(**restored.model, **restored.train)

    def restore_latest_readable(self, state: Any, data_iterator: Any) -> tuple[Any, int | None]:
        """``(restored state, step)`` of the newest checkpoint that can be read, or
        ``(state, None)`` when there is no checkpoint; an unreadable newer one is reported in
        one line and skipped (kept on disk for inspection). When checkpoints exist but none can
        be read, the newest one's error is raised: training afresh would write over them."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            try:
                return self.restore(step, state, data_iterator), step
            except UnreadableCheckpointError as err:
                if step == steps[-1]:
                    raise UnreadableCheckpointError(
                        f"none of the checkpoints {sorted(steps)} in {self.directory} can be "
                        f"read into this run (the oldest: {err}); start a new run in another "
                        "--workdir"
                    ) from err
                print(f"warning: {err}; trying the one before", file=sys.stderr, flush=True)
        return state, None

    def restore_model(self, step: int, model: dict) -> dict:
        """``{"params", "model_state"}`` of checkpoint ``step`` with the shapes and shardings of
        ``model`` (which may be abstract); nothing else of the checkpoint is read."""
        items = {"model": ocp.args.StandardRestore(abstract_like(model))}
        with self._reading(step):
            return self.manager.restore(step, args=ocp.args.Composite(**items)).model

    @contextlib.contextmanager
    def _reading(self, step: int):
        try:
            yield
        except (OSError, ValueError, KeyError, TypeError) as err:
            detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise UnreadableCheckpointError(
                f"checkpoint {self.directory / str(step)} cannot be read into this run "
                f"({type(err).__name__}: {detail}); it is damaged, or was written by another "
                "model or version of jaxspeech"
            ) from err

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        """Closes; when an error is already on its way out, a second one from finishing the
        pending saves is dropped (the first is the one to report)."""
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(JaxspeechError):
            self.close()

    def close(self) -> None:
        """Waits for pending saves, releases the manager and removes the dropped checkpoints."""
        with self._writing(self.manager.latest_step()):
            self.manager.wait_until_finished()
        self.manager.close()
        self._empty_deleted()

    def _empty_deleted(self) -> None:
        """Removes ``checkpoints/deleted/`` for good (process 0)."""
        if jax.process_index() == 0:
            shutil.rmtree(self.directory / names.DELETED_CHECKPOINTS, ignore_errors=True)

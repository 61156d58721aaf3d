"""The contract between the generic trainer (``train/loop.py``) and a task (``train/tasks/*``).

A task is built from a resolved config and the frozen runs of the earlier stages it reads
(``Task(config, frozen)``) and supplies everything that is specific to one kind of model; the
loop owns jit, sharding, optimisers, checkpoints, logging. A task never loads a checkpoint
itself: the stage machinery (``train/stages.py``, ``train/restore.py``) hands it
:class:`TrainedRun` objects.

Two kinds of task (``Task.kind``):

* ``"gradient"`` (the default when a task has no ``kind``): trained by gradient descent on
  ``loss_fn`` with the optimiser of the config;
* ``"estimation"``: not gradient descent (EM for a GMM, k-means, feature statistics). One
  step reads ``batches_per_step`` batches; per batch the task's ``statistics`` are computed
  per replica and summed over the ``data`` axis and over the batches, then ``update`` turns
  the sums into new params (an M-step). Checkpoints, resume, validation, the progress bar and
  the metrics log are the gradient kind's.

Batches are dicts of arrays whose leading axis is the batch. The loop shards that axis over
the ``data`` mesh axis, so ``loss_fn`` sees one replica's slice and must reduce over it with a
plain mean (the loop averages across replicas with ``lax.pmean``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import jax

from jaxspeech.errors import ConfigError

PyTree = Any
Batch = Mapping[str, jax.Array]
GRADIENT, ESTIMATION = "gradient", "estimation"


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A finished (or running) training run restored for use: its task and the params and
    model state of one checkpoint. Earlier stages reach later ones' tasks in this form, frozen:
    their params never enter an optimiser.

    Attributes:
      workdir: the run's folder (``config.json``, ``checkpoints/``).
      task: its task, built from its ``config.json``.
      params, model_state: the checkpoint's (replicated over the devices).
      step: the checkpoint's step.
    """

    workdir: pathlib.Path
    task: Any
    params: PyTree
    model_state: PyTree
    step: int


def frozen_run(frozen: Mapping[str, TrainedRun], name: str, needed_by: str) -> TrainedRun:
    """``frozen[name]``, or a ConfigError saying that stage ``needed_by`` must read it."""
    if name not in frozen:
        raise ConfigError(
            f"{needed_by} needs the frozen stage {name!r}, but it reads "
            f"{sorted(frozen) or 'no stage'}; add {name!r} to the stage's reads in the recipe"
        )
    return frozen[name]


def refuse_frozen(frozen: Mapping[str, TrainedRun], task_name: str) -> None:
    """ConfigError when a task that reads no earlier stage is given some."""
    if frozen:
        raise ConfigError(
            f"task {task_name!r} reads no earlier stage, but the recipe gives it "
            f"{sorted(frozen)}; remove them from the stage's reads"
        )


class Task(Protocol):
    """What a task module's ``Task`` class provides (gradient kind)."""

    #: name of the validation metric used to pick the best checkpoint, and its direction.
    valid_metric: str
    valid_mode: str  # "min" or "max"

    def __init__(self, config: Any, frozen: Mapping[str, TrainedRun] = ...) -> None: ...

    def init_model(self, rng: jax.Array) -> tuple[PyTree, PyTree]:
        """Returns ``(params, model_state)``; ``model_state`` is ``{}`` without batch norm.
        Pure and cheap (it also gives the shapes to restore checkpoints into): anything
        estimated from data belongs in ``prepare_model_state``."""

    def loss_fn(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree]]:
        """Per-replica training loss: ``(scalar loss, (metrics, new_model_state))``.

        Runs inside ``shard_map`` over the ``data`` axis: batch-norm layers must use
        ``axis_name="data"``. ``metrics`` are scalars (means over the replica's batch).
        """

    def eval_fn(self, params: PyTree, model_state: PyTree, batch: Batch) -> dict[str, jax.Array]:
        """Per-replica validation metrics (scalars, means over the replica's batch)."""

    def train_dataset(self, process_index: int, process_count: int, seed: int) -> Iterable:
        """This process's share of the training batches: a ``grain`` ``IterDataset`` of dicts
        of numpy arrays with leading axis ``train.batch_size // process_count``. Its iterator
        state is saved in checkpoints."""

    def valid_batches(self) -> list[dict]:
        """The fixed held-out validation set as a list of global batches (numpy dicts)."""

    def evaluate(self, params: PyTree, model_state: PyTree, split: str) -> list[dict]:
        """Rows of the task's metric table for ``split`` (each row a dict: column -> value).
        Reads the split's data only now (building a task reads no data)."""

    # Optional:
    # def prepare_model_state(self, model_state) -> model_state
    #     Called once, before step 1 of a new run (never on resume or restore): model state
    #     estimated from training data (e.g. feature-normalisation statistics), then saved in
    #     every checkpoint.
    # scores_trials = True
    #     ``evaluate(params, model_state, split, workdir=None, trials=None)`` also takes the
    #     run's workdir (for the trial lists and thresholds it writes there) and a trial-list
    #     file to score instead of the split's (``evaluate.py --trials``; speaker verification).
    # def examples(self, params, model_state) -> list[tuple[str, np.ndarray, int]]
    #     A few fixed validation examples as ``(name, waveform [S], sample_rate)`` (inputs and
    #     outputs), logged to TensorBoard with their spectrograms at each validation when
    #     tensorboardX is installed. ``params`` and ``model_state`` are on the host.


class EstimationTask(Protocol):
    """What an estimation-kind task provides besides ``init_model``, ``eval_fn``,
    ``train_dataset``, ``valid_batches``, ``evaluate``, ``valid_metric`` and ``valid_mode``
    (as :class:`Task`; no ``loss_fn``)."""

    kind: str  # ESTIMATION
    #: batches whose statistics one step sums before its update.
    batches_per_step: int

    def statistics(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
    ) -> PyTree:
        """Per-replica sufficient statistics of the replica's slice of ``batch`` (sums, not
        means: the loop adds them over replicas and batches)."""

    def update(
        self, params: PyTree, model_state: PyTree, statistics: PyTree
    ) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
        """``(params, model_state, metrics)`` from the summed statistics of one step."""


def task_kind(task: Any) -> str:
    """``GRADIENT`` or ``ESTIMATION``; ConfigError for anything else."""
    kind = getattr(task, "kind", GRADIENT)
    if kind not in (GRADIENT, ESTIMATION):
        raise ConfigError(
            f"{type(task).__name__}.kind={kind!r}; use {GRADIENT!r} or {ESTIMATION!r}"
        )
    return kind

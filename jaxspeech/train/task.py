"""The contract between the generic trainer (``train/loop.py``) and a task (``train/tasks/*``).

A task is built from a resolved config and the frozen runs of the earlier stages it reads
(``Task(config, frozen)``) and supplies everything that is specific to one kind of model; the
loop owns jit, sharding, optimisers, checkpoints, logging. A task never loads a checkpoint
itself: the stage machinery (``train/stages.py``, ``train/restore.py``) hands it
:class:`TrainedRun` objects.

Every task subclasses :class:`Task`; what only some tasks do is declared in their
:class:`Capabilities`, never found out by looking for attributes:

* ``estimation``: the task is not trained by gradient descent on ``loss_fn`` but estimated
  (EM for a GMM, k-means, feature statistics). One step reads ``batches_per_step`` batches;
  per batch the task's ``statistics`` are computed per replica and summed over the ``data``
  axis and over the batches, then ``update`` turns the sums into new params (an M-step).
  Checkpoints, resume, validation, the progress bar and the metrics log are as for gradient
  descent.
* ``scores_trials``: ``evaluate`` also takes the run's ``workdir`` (for the trial lists and
  thresholds it writes there), the checkpoint ``step`` evaluated (recorded with the
  threshold) and a trial-list file to score instead of the split's (``evaluate.py
  --trials``; speaker verification).
* ``examples``: ``examples`` gives a few fixed validation inputs and outputs, logged to
  TensorBoard with their spectrograms at each validation when tensorboardX is installed.

Batches are dicts of arrays whose leading axis is the batch. The loop shards that axis over
the ``data`` mesh axis, so ``loss_fn`` sees one replica's slice and must reduce over it with a
plain mean (the loop averages across replicas with ``lax.pmean``).
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import jax
import numpy as np

from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation

PyTree = Any
Batch = Mapping[str, jax.Array]


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


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a task does besides the members every task has (see the module docstring)."""

    estimation: bool = False
    scores_trials: bool = False
    examples: bool = False


class Task(abc.ABC):
    """The members every task has; subclasses override the abstract ones and, for an
    estimation task, ``statistics``, ``update`` and ``batches_per_step``."""

    capabilities: ClassVar[Capabilities] = Capabilities()
    #: name of the validation metric used to pick the best checkpoint, and its direction.
    valid_metric: str
    valid_mode: str  # "min" or "max"
    #: estimation tasks: batches whose statistics one step sums before its update.
    batches_per_step: int = 1

    def __init__(self, config: Any, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        self.config = config

    @classmethod
    def checkpoint_ranking(cls, config: Any) -> tuple[str, str]:
        """``(validation metric, "min" or "max")`` by which checkpoints of a run with
        ``config`` are ranked ("best"), known without building the task."""
        return cls.valid_metric, cls.valid_mode

    @abc.abstractmethod
    def init_model(self, rng: jax.Array) -> tuple[PyTree, PyTree]:
        """Returns ``(params, model_state)``; ``model_state`` is ``{}`` without batch norm.
        Pure and cheap (it also gives the shapes to restore checkpoints into): anything
        estimated from data belongs in ``prepare_model_state``."""

    def prepare_model_state(self, model_state: PyTree) -> PyTree:
        """Called once, before step 1 of a new run (never on resume or restore): model state
        estimated from training data (e.g. feature-normalisation statistics), then saved in
        every checkpoint. By default the state as ``init_model`` made it."""
        return model_state

    def loss_fn(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], PyTree]]:
        """Per-replica training loss: ``(scalar loss, (metrics, new_model_state))``.

        Runs inside ``shard_map`` over the ``data`` axis: batch-norm layers must use
        ``axis_name="data"``. ``metrics`` are scalars (means over the replica's batch).
        Gradient tasks only."""
        raise NotImplementedError(f"{type(self).__name__} is an estimation task: no loss_fn")

    def statistics(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
    ) -> PyTree:
        """Per-replica sufficient statistics of the replica's slice of ``batch`` (sums, not
        means: the loop adds them over replicas and batches). Estimation tasks only."""
        raise NotImplementedError(f"{type(self).__name__} is a gradient task: no statistics")

    def update(
        self, params: PyTree, model_state: PyTree, statistics: PyTree
    ) -> tuple[PyTree, PyTree, dict[str, jax.Array]]:
        """``(params, model_state, metrics)`` from the summed statistics of one step.
        Estimation tasks only."""
        raise NotImplementedError(f"{type(self).__name__} is a gradient task: no update")

    @abc.abstractmethod
    def eval_fn(self, params: PyTree, model_state: PyTree, batch: Batch) -> dict[str, jax.Array]:
        """Per-replica validation metrics (scalars, means over the replica's batch)."""

    @abc.abstractmethod
    def train_dataset(self, process_index: int, process_count: int, seed: int) -> Iterable:
        """This process's share of the training batches: a ``grain`` ``IterDataset`` of dicts
        of numpy arrays with leading axis ``train.batch_size // process_count``. Its iterator
        state is saved in checkpoints."""

    @abc.abstractmethod
    def valid_batches(self) -> list[dict]:
        """The fixed held-out validation set as a list of global batches (numpy dicts)."""

    def examples(self, params: PyTree, model_state: PyTree) -> list[tuple[str, np.ndarray, int]]:
        """A few fixed validation examples as ``(name, waveform [S], sample_rate)`` (inputs and
        outputs); ``params`` and ``model_state`` are on the host. With
        ``capabilities.examples`` only."""
        raise NotImplementedError(f"{type(self).__name__} logs no examples")

    @abc.abstractmethod
    def evaluate(self, params: PyTree, model_state: PyTree, split: str) -> Evaluation:
        """The task's metric table for ``split``, one row per test item and, where the task
        compares systems paired by item, this model's per-item scores
        (:class:`jaxspeech.evaluation.Evaluation`). Reads the split's data only now (building
        a task reads no data). With ``capabilities.scores_trials`` it also takes
        ``workdir=None, trials=None, step=None``."""

"""The contract between the generic trainer (``train/loop.py``) and a task (``train/tasks/*``).

A task is built from a resolved config (``Task(config)``) and supplies everything that is
specific to one kind of model; the loop owns jit, sharding, optimisers, checkpoints, logging.

Batches are dicts of arrays whose leading axis is the batch. The loop shards that axis over
the ``data`` mesh axis, so ``loss_fn`` sees one replica's slice and must reduce over it with a
plain mean (the loop averages across replicas with ``lax.pmean``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import jax

PyTree = Any
Batch = Mapping[str, jax.Array]


class Task(Protocol):
    """What a task module's ``Task`` class provides."""

    #: name of the validation metric used to pick the best checkpoint, and its direction.
    valid_metric: str
    valid_mode: str  # "min" or "max"

    def __init__(self, config: Any) -> None: ...

    def init_model(self, rng: jax.Array) -> tuple[PyTree, PyTree]:
        """Returns ``(params, model_state)``; ``model_state`` is ``{}`` without batch norm."""

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
        """Rows of the task's metric table for ``split`` (each row a dict: column -> value)."""

"""A tiny regression task (MLP with batch norm) to test the generic trainer.

Targets are ``sin(x @ w)`` for Gaussian ``x``; example ``i`` of the training stream is drawn
from ``default_rng([seed, i])``. Global batch ``k`` holds stream examples ``k·B … k·B+B-1``
and process ``p`` of ``n`` supplies rows ``p·B/n … (p+1)·B/n-1`` of it, so any number of
processes sees the same global batches. ``data.nan_batches`` poisons global batches with NaN.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.train.config import Config

FEATURES = 4
VALID_SEED, TEST_SEED = 10**6, 10**7


@dataclasses.dataclass(frozen=True)
class ToyModelConfig:
    hidden: int = 8


@dataclasses.dataclass(frozen=True)
class ToyDataConfig:
    root: str = ""
    nan_batches: tuple[int, ...] = ()
    valid_batches: int = 2
    test_examples: int = 32


@dataclasses.dataclass(frozen=True)
class ToyConfig(Config):
    """The toy task's recipe: its model and data sections."""

    task: str = "toy_task:Task"
    model: ToyModelConfig = ToyModelConfig()
    data: ToyDataConfig = ToyDataConfig()


class MLP(nn.Module):
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """``x: [batch, FEATURES] -> [batch]``."""
        x = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype)(x)  # BN follows
        x = nn.BatchNorm(use_running_average=not train, axis_name="data" if train else None)(x)
        return nn.Dense(1, dtype=self.dtype)(nn.relu(x))[:, 0].astype(jnp.float32)


def examples(seed: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    w = np.random.default_rng(1234).normal(size=FEATURES)
    x = np.stack([np.random.default_rng([seed, int(i)]).normal(size=FEATURES) for i in indices])
    return {"x": x.astype(np.float32), "y": np.sin(x @ w).astype(np.float32)}


class Task:
    valid_metric = "mse"
    valid_mode = "min"

    def __init__(self, config) -> None:
        """Follows ``config.train.dtype`` (bfloat16 compute, float32 params and loss)."""
        self.config = config
        self.model = MLP(config.model.hidden, dtype=config.train.dtype)

    def init_model(self, rng):
        variables = self.model.init(rng, jnp.zeros((2, FEATURES)), train=False)
        return variables["params"], {"batch_stats": variables["batch_stats"]}

    def loss_fn(self, params, model_state, batch, rng):
        del rng
        pred, updates = self.model.apply(
            {"params": params, **model_state}, batch["x"], train=True, mutable=["batch_stats"]
        )
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, ({"mae": jnp.mean(jnp.abs(pred - batch["y"]))}, updates)

    def eval_fn(self, params, model_state, batch):
        pred = self.model.apply({"params": params, **model_state}, batch["x"], train=False)
        return {"mse": jnp.mean((pred - batch["y"]) ** 2)}

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        batch_size = self.config.train.batch_size
        local = batch_size // process_count
        nan_batches = set(self.config.data.nan_batches)

        def make_batch(k: int, indices: np.ndarray) -> dict[str, np.ndarray]:
            batch = examples(seed, indices[process_index * local : (process_index + 1) * local])
            if k in nan_batches:
                batch["x"][0, 0] = np.nan
            return batch

        stream = grain.MapDataset.range(1 << 30).batch(batch_size)
        return stream.map_with_index(make_batch).to_iter_dataset()

    def valid_batches(self):
        batch_size = self.config.train.batch_size
        count = self.config.data.valid_batches
        return [
            examples(VALID_SEED, np.arange(k * batch_size, (k + 1) * batch_size))
            for k in range(count)
        ]

    def evaluate(self, params, model_state, split):
        seed = {"test": TEST_SEED, "valid": VALID_SEED}[split]
        batch = examples(seed, np.arange(self.config.data.test_examples))
        mse = float(jax.jit(self.eval_fn)(params, model_state, batch)["mse"])
        return [{"split": split, "examples": self.config.data.test_examples, "mse": mse}]

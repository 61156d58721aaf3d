"""Tiny tasks to test the generic trainer and the stage machinery.

``Task``: a regression (MLP with batch norm). Targets are ``sin(x @ w)`` for Gaussian ``x``;
example ``i`` of the training stream is drawn from ``default_rng([seed, i])``. Global batch
``k`` holds stream examples ``k·B … k·B+B-1`` and process ``p`` of ``n`` supplies rows
``p·B/n … (p+1)·B/n-1`` of it, so any number of processes sees the same global batches.
``data.nan_batches`` poisons global batches with NaN. With ``model.normalizer`` naming a frozen
``StatisticsTask`` stage, inputs are standardised by its mean and variance.

``StatisticsTask``: an estimation-kind task on the same stream (scaled and shifted by
``SHIFT``/``SCALE``): the running mean and variance of ``x`` over every batch seen.
"""

from __future__ import annotations

import dataclasses
import time

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.evaluation import Evaluation, item_rows
from jaxspeech.train import task as base
from jaxspeech.train.config import Config

FEATURES = 4
VALID_SEED, TEST_SEED = 10**6, 10**7


SHIFT, SCALE = 3.0, 2.0


@dataclasses.dataclass(frozen=True)
class ToyModelConfig:
    hidden: int = 8
    normalizer: str | None = None


@dataclasses.dataclass(frozen=True)
class ToyStatisticsConfig:
    batches_per_step: int = 2


@dataclasses.dataclass(frozen=True)
class ToyDataConfig:
    root: str = ""
    nan_batches: tuple[int, ...] = ()
    valid_batches: int = 2
    test_examples: int = 32
    delay_seconds: float = 0.0  # per training batch: a slow run to interrupt


@dataclasses.dataclass(frozen=True)
class ToyConfig(Config):
    """The toy task's recipe: its model and data sections."""

    task: str = "toy_task:Task"
    model: ToyModelConfig = ToyModelConfig()
    data: ToyDataConfig = ToyDataConfig()


@dataclasses.dataclass(frozen=True)
class StatisticsConfig(Config):
    """The statistics task's recipe."""

    task: str = "toy_task:StatisticsTask"
    model: ToyStatisticsConfig = ToyStatisticsConfig()
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


def train_stream(config, process_index: int, process_count: int, seed: int, transform=None):
    """The training batches of this process (see the module docstring)."""
    batch_size = config.train.batch_size
    local = batch_size // process_count
    nan_batches = set(config.data.nan_batches)

    def make_batch(k: int, indices: np.ndarray) -> dict[str, np.ndarray]:
        batch = examples(seed, indices[process_index * local : (process_index + 1) * local])
        if k in nan_batches:
            batch["x"][0, 0] = np.nan
        time.sleep(config.data.delay_seconds)
        return transform(batch) if transform else batch

    stream = grain.MapDataset.range(1 << 30).batch(batch_size)
    return stream.map_with_index(make_batch).to_iter_dataset()


class Task(base.Task):
    valid_metric = "mse"
    valid_mode = "min"

    def __init__(self, config, frozen=None) -> None:
        """Follows ``config.train.dtype`` (bfloat16 compute, float32 params and loss)."""
        self.config = config
        self.model = MLP(config.model.hidden, dtype=config.train.dtype)
        self.normalizer = None
        if config.model.normalizer is not None:
            stats = (frozen or {})[config.model.normalizer]
            self.normalizer = jax.device_get(stats.params)

    def inputs(self, x):
        """``x`` standardised by the frozen statistics, if any."""
        if self.normalizer is None:
            return x
        return (x - self.normalizer["mean"]) / jnp.sqrt(self.normalizer["var"])

    def init_model(self, rng):
        variables = self.model.init(rng, jnp.zeros((2, FEATURES)), train=False)
        return variables["params"], {"batch_stats": variables["batch_stats"]}

    def loss_fn(self, params, model_state, batch, rng):
        del rng
        pred, updates = self.model.apply(
            {"params": params, **model_state},
            self.inputs(batch["x"]),
            train=True,
            mutable=["batch_stats"],
        )
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, ({"mae": jnp.mean(jnp.abs(pred - batch["y"]))}, updates)

    def eval_fn(self, params, model_state, batch):
        x = self.inputs(batch["x"])
        pred = self.model.apply({"params": params, **model_state}, x, train=False)
        return {"mse": jnp.mean((pred - batch["y"]) ** 2)}

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return train_stream(self.config, process_index, process_count, seed)

    def valid_batches(self):
        batch_size = self.config.train.batch_size
        count = self.config.data.valid_batches
        return [
            examples(VALID_SEED, np.arange(k * batch_size, (k + 1) * batch_size))
            for k in range(count)
        ]

    def evaluate(self, params, model_state, split):
        """The table row, one item per test example and each example's squared error
        ``[examples]`` (for paired comparisons)."""
        seed = {"test": TEST_SEED, "valid": VALID_SEED}[split]
        batch = examples(seed, np.arange(self.config.data.test_examples))
        mse = float(jax.jit(self.eval_fn)(params, model_state, batch)["mse"])
        pred = self.model.apply({"params": params, **model_state}, batch["x"], train=False)
        error = np.square(np.asarray(pred) - batch["y"])
        row = {"split": split, "examples": self.config.data.test_examples, "mse": mse}
        scores = {"squared_error": error.reshape(len(error), -1).mean(axis=1)}
        metadata = [
            {"half": "first" if i < len(error) // 2 else "second"} for i in range(len(error))
        ]
        return Evaluation([row], item_rows("mlp", scores, metadata), ("half",), scores)


def shifted(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"x": SHIFT + SCALE * batch["x"]}


class StatisticsTask(base.Task):
    """Running mean and variance of ``x`` (an estimation-kind task)."""

    capabilities = base.Capabilities(estimation=True)
    valid_metric = "mean_error"
    valid_mode = "min"

    def __init__(self, config, frozen=None) -> None:
        assert not frozen
        self.config = config
        self.batches_per_step = config.model.batches_per_step

    def init_model(self, rng):
        del rng
        zeros = jnp.zeros(FEATURES)
        params = {"mean": zeros, "var": jnp.ones(FEATURES)}
        return params, {"count": jnp.zeros(()), "sum": zeros, "sum_squares": zeros}

    def statistics(self, params, model_state, batch, rng):
        del params, model_state, rng
        x = batch["x"]
        count = jnp.asarray(x.shape[0], jnp.float32)
        return {"count": count, "sum": x.sum(0), "sum_squares": jnp.square(x).sum(0)}

    def update(self, params, model_state, statistics):
        del params
        state = jax.tree.map(jnp.add, model_state, statistics)
        mean = state["sum"] / state["count"]
        var = state["sum_squares"] / state["count"] - jnp.square(mean)
        return {"mean": mean, "var": var}, state, {"examples": state["count"]}

    def eval_fn(self, params, model_state, batch):
        del model_state
        return {"mean_error": jnp.abs(params["mean"] - batch["x"].mean(0)).max()}

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return train_stream(self.config, process_index, process_count, seed, shifted)

    def valid_batches(self):
        return [shifted(examples(VALID_SEED, np.arange(64)))]

    def evaluate(self, params, model_state, split):
        del split
        return Evaluation(
            [{"examples": float(model_state["count"]), "mean": float(params["mean"][0])}]
        )

"""GMM-UBM task (estimation kind): a diagonal GMM trained by EM on the voiced MFCC frames of
the training speakers' utterances, grown by mixture splitting.

Every step is one EM iteration: the E-step statistics (``models.ivector.gmm_statistics``) of
``em.batches_per_step`` batches of training crops (``data.UtteranceData``; VAD-masked, padded
frames ignored), summed over the ``data`` axis and the batches, then the M-step. The GMM
starts as one Gaussian; after every ``model.iterations_per_split`` iterations the components
double (heaviest first) until ``model.components``, so ``train.steps`` should be at least
``model.growth_iterations`` plus a few iterations at full size. Batches are ``audio`` [b, S]
float32 with optional ``lengths`` [b] int32 samples (default: the whole row).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.data.utterances import UtteranceData, UtteranceDataConfig
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation
from jaxspeech.models import ivector
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import Capabilities, TrainedRun, refuse_frozen


@dataclasses.dataclass(frozen=True)
class EMConfig:
    """Estimation steps: ``batches_per_step`` training batches per EM iteration (about one
    pass over the training utterances is usual)."""

    batches_per_step: int = 4

    def __post_init__(self) -> None:
        if self.batches_per_step < 1:
            raise ConfigError(f"em.batches_per_step={self.batches_per_step} must be >= 1")


@dataclasses.dataclass(frozen=True)
class UBMTaskConfig(Config):
    """A UBM recipe: the GMM (with its front end), the utterances and the EM steps."""

    task: str = "ubm"
    model: ivector.UBMConfig = dataclasses.field(default_factory=ivector.UBMConfig)
    data: UtteranceDataConfig = dataclasses.field(default_factory=UtteranceDataConfig)
    em: EMConfig = dataclasses.field(default_factory=EMConfig)


def batch_lengths(batch: Mapping[str, jax.Array]) -> jax.Array:
    """``batch["lengths"]``, or every row's full length ``[b]``."""
    audio = batch["audio"]
    if "lengths" in batch:
        return batch["lengths"]
    return jnp.full(audio.shape[:1], audio.shape[1], jnp.int32)


def eval_batches(data: UtteranceData, split: str, batch_size: int, seconds: float) -> list[dict]:
    """The clean utterances of ``split`` cut to at most ``seconds`` and zero-padded: batches of
    ``audio`` [batch_size, S], ``lengths`` [batch_size] and ``speaker`` [batch_size] (split
    labels) and ``valid`` [batch_size]: the last batch is filled up by repeating the first
    utterances, and ``valid`` is False on those repeats."""
    examples = data.test_items(split)
    limit = round(seconds * data.cfg.sample_rate)
    count = -(-len(examples) // batch_size) * batch_size
    rows = [examples[i % len(examples)] for i in range(count)]
    lengths = np.array([min(len(r["audio"]), limit) for r in rows], np.int32)
    audio = np.zeros((count, int(lengths.max())), np.float32)
    for i, row in enumerate(rows):
        audio[i, : lengths[i]] = row["audio"][: lengths[i]]
    speaker = np.array([r["speaker"] for r in rows], np.int32)
    valid = np.arange(count) < len(examples)
    return [
        {
            "audio": audio[i : i + batch_size],
            "lengths": lengths[i : i + batch_size],
            "speaker": speaker[i : i + batch_size],
            "valid": valid[i : i + batch_size],
        }
        for i in range(0, count, batch_size)
    ]


class Task(base.Task):
    """Diagonal GMM-UBM by EM with mixture splitting (module docstring)."""

    capabilities = Capabilities(estimation=True)
    valid_metric = "log_likelihood"
    valid_mode = "max"

    def __init__(self, config: UBMTaskConfig, frozen: Mapping[str, TrainedRun] | None = None):
        refuse_frozen(frozen or {}, "ubm")
        self.config = config
        self.batches_per_step = config.em.batches_per_step
        self.ubm = config.model

    @functools.cached_property
    def data(self) -> UtteranceData:
        """The corpus splits and streams, read on first use."""
        return UtteranceData(self.config.data, self.config.train.batch_size)

    def features(self, params, batch) -> tuple[jax.Array, jax.Array]:
        """``(features [b, T, D], voiced [b, T])`` of a batch."""
        del params
        rate = self.config.data.sample_rate
        return ivector.frontend(self.ubm.frontend, batch["audio"], batch_lengths(batch), rate)

    def init_model(self, rng: jax.Array):
        del rng
        gmm = ivector.single_gaussian(self.ubm.components, self.ubm.frontend.feature_dim)
        return gmm, {"iteration": jnp.zeros((), jnp.int32)}

    def statistics(self, params, model_state, batch, rng):
        del model_state, rng
        features, voiced = self.features(params, batch)
        return ivector.gmm_statistics(params, features, voiced)

    def update(self, params, model_state, statistics):
        cfg = self.ubm
        gmm = ivector.gmm_update(params, statistics, cfg.variance_floor, cfg.min_count)
        iteration = model_state["iteration"] + 1
        split = iteration % cfg.iterations_per_split == 0
        grown = ivector.split_components(gmm, cfg.split_perturbation)
        gmm = jax.tree.map(lambda a, b: jnp.where(split, a, b), grown, gmm)
        metrics = {
            "log_likelihood": statistics["log_likelihood"] / statistics["frames"],
            "voiced_frames": statistics["frames"],
            "components": (gmm["weights"] > 0).sum().astype(jnp.float32),
        }
        return gmm, {"iteration": iteration}, metrics

    def eval_fn(self, params, model_state, batch):
        """Mean log-likelihood per voiced frame of the replica's batch."""
        stats = self.statistics(params, model_state, batch, None)
        return {"log_likelihood": stats["log_likelihood"] / jnp.maximum(stats["frames"], 1.0)}

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def _eval_seconds(self) -> float:
        return self.config.data.eval_seconds or self.config.data.crop_seconds

    def valid_batches(self) -> list[dict]:
        batches = eval_batches(
            self.data, "valid", self.config.train.batch_size, self._eval_seconds()
        )
        return [{"audio": b["audio"], "lengths": b["lengths"]} for b in batches]

    def evaluate(self, params, model_state, split: str) -> Evaluation:
        """One row: the split's utterances, voiced frames and log-likelihood per frame; items:
        each utterance's (numbered in the split's order), with its speaker label."""
        del model_state

        def per_utterance(rows):
            features, voiced = self.features(params, rows)
            return jax.vmap(lambda f, v: ivector.gmm_statistics(params, f[None], v[None]))(
                features, voiced
            )

        per_utterance = jax.jit(per_utterance)
        batches = eval_batches(self.data, split, self.config.train.batch_size, self._eval_seconds())
        log_likelihood, frames, speakers = [], [], []
        for batch in batches:
            stats = per_utterance({k: batch[k] for k in ("audio", "lengths")})
            keep = batch["valid"]
            log_likelihood.append(np.asarray(stats["log_likelihood"], np.float64)[keep])
            frames.append(np.asarray(stats["frames"], np.float64)[keep])
            speakers.append(batch["speaker"][keep])
        log_likelihood, frames = np.concatenate(log_likelihood), np.concatenate(frames)
        system = f"GMM-UBM ({int((np.asarray(params['weights']) > 0).sum())} components)"
        table = [
            {
                "system": system,
                "utterances": len(frames),
                "voiced frames": int(frames.sum()),
                "log-likelihood per frame": log_likelihood.sum() / max(frames.sum(), 1.0),
            }
        ]
        items = [
            {"system": system, "item": i, "speaker": int(speaker), "voiced frames": int(count)}
            | {"log-likelihood per frame": float(total / max(count, 1.0))}
            for i, (speaker, count, total) in enumerate(
                zip(np.concatenate(speakers), frames, log_likelihood, strict=True)
            )
        ]
        return Evaluation(table, items)

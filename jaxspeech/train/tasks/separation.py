"""Speech separation task: Conv-TasNet (negative SI-SNR under utterance-level PIT) or deep
clustering (low-rank affinity loss, k-means at inference), chosen by the model config.

Mixtures are made on the fly from speaker-disjoint splits of the speech folders
``data.speech`` below the data root (``jaxspeech.data``); validation and test sets are fixed
mixture sets drawn from the valid and test speakers. ``evaluate`` reports SI-SNR(i) and
SDR(i) for the model, the unprocessed mixture and an oracle ideal-ratio mask, overall and per
input-SNR bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import dsp, masks, metrics
from jaxspeech.data.pipeline import MixtureData, MixtureDataConfig, batch_examples
from jaxspeech.inference.separation import (
    ConvTasNetSeparator,
    DeepClusteringSeparator,
    build_separator,
)
from jaxspeech.losses import pairwise_neg_si_snr, pit, reorder, si_snr
from jaxspeech.models.dpcl import (
    DeepClusteringConfig,
    dpcl_loss,
    dpcl_targets,
    silence_weights,
)
from jaxspeech.models.tasnet import ConvTasNetConfig
from jaxspeech.train.config import Config
from jaxspeech.train.task import TrainedRun, refuse_frozen


@dataclasses.dataclass(frozen=True)
class SeparationEvalConfig:
    """The fixed test set and the evaluation table.

    Attributes:
      size: mixtures in the test set.
      batch_size: mixtures separated at once.
      snr_edges_db: edges of the input SI-SNR buckets of the table (dB).
      oracle_window_ms: STFT window of the oracle IRM (hop = window / 4).
    """

    size: int = 64
    batch_size: int = 8
    snr_edges_db: tuple[float, ...] = (-5.0, 0.0, 5.0)
    oracle_window_ms: float = 32.0


@dataclasses.dataclass(frozen=True)
class SeparationConfig(Config):
    """A separation recipe: the model (which also sets the number of sources), the mixtures
    and the test table."""

    task: str = "separation"
    model: ConvTasNetConfig | DeepClusteringConfig = dataclasses.field(
        default_factory=ConvTasNetConfig
    )
    data: MixtureDataConfig = dataclasses.field(default_factory=MixtureDataConfig)
    eval: SeparationEvalConfig = SeparationEvalConfig()


def oracle_irm(mixture: jax.Array, sources: jax.Array, n_fft: int) -> jax.Array:
    """Separation by the ideal ratio mask of each source against everything else.

    Args:
      mixture: ``[..., T]``; sources: ``[..., S, T]``; n_fft: STFT window (hop n_fft / 4).

    Returns:
      ``[..., S, T]`` estimates: ISTFT(IRM(source, mixture − source) × mixture STFT).
    """
    hop = n_fft // 4
    spec = functools.partial(dsp.stft, n_fft=n_fft, hop_length=hop)
    mix_stft = spec(mixture)[..., None, :, :]
    mask = masks.irm(jnp.abs(spec(sources)), jnp.abs(spec(mixture[..., None, :] - sources)))
    return dsp.istft(masks.apply_mask(mix_stft, mask), n_fft, hop, length=mixture.shape[-1])


class _ConvTasNet(ConvTasNetSeparator):
    """Conv-TasNet trained end to end with negative SI-SNR under utterance-level PIT."""

    def loss(self, params, batch, rng) -> tuple[jax.Array, dict[str, jax.Array]]:
        del rng  # deterministic model
        metrics_ = _pit_metrics(self.separate(params, batch["mixture"]), batch)
        return -metrics_["si_snr"], metrics_


class _DeepClustering(DeepClusteringSeparator):
    """Deep clustering trained with the low-rank affinity loss; k-means separates."""

    def loss(self, params, batch, rng) -> tuple[jax.Array, dict[str, jax.Array]]:
        mixture = self._stft(batch["mixture"])
        embeddings = self.model.apply(
            {"params": params}, self.features(mixture), train=True, rngs={"dropout": rng}
        )
        targets = dpcl_targets(dsp.magnitude(self._stft(batch["sources"])))
        weights = silence_weights(dsp.magnitude(mixture), self.config.silence_db)
        loss = dpcl_loss(embeddings, targets, weights).mean()
        return loss, {"affinity_loss": loss}


def _pit_metrics(est: jax.Array, batch) -> dict[str, jax.Array]:
    """Batch means of the PIT SI-SNR of ``est`` ``[B, S, T]`` and of its improvement."""
    loss, _ = pit(pairwise_neg_si_snr, est, batch["sources"])
    baseline = si_snr(_as_estimates(batch["mixture"], batch["sources"]), batch["sources"])
    return {"si_snr": -loss.mean(), "si_snr_i": (-loss - baseline.mean(-1)).mean()}


class Task:
    """Speech separation with Conv-TasNet or deep clustering, chosen by the model config."""

    valid_metric = "si_snr_i"
    valid_mode = "max"

    def __init__(self, config, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        refuse_frozen(frozen or {}, "separation")
        self.config = config
        self.mixture = config.data.mixture
        kinds = {ConvTasNetConfig: _ConvTasNet, DeepClusteringConfig: _DeepClustering}
        self.separator = build_separator(
            config.model, self.mixture.sample_rate, config.train.dtype, kinds
        )

    @functools.cached_property
    def data(self) -> MixtureData:
        """The corpus splits and mixture sets, read on first use."""
        config = self.config
        return MixtureData(config.data, config.train.batch_size, config.model.n_src)

    def init_model(self, rng: jax.Array):
        mixture = jnp.zeros((1, self.mixture.num_samples), jnp.float32)
        return self.separator.init(rng, mixture), {}

    def separate(self, params, mixture: jax.Array) -> jax.Array:
        """Estimated sources ``[B, n_src, T]`` of ``mixture`` ``[B, T]`` (in arbitrary order)."""
        return self.separator.separate(params, mixture)

    def loss_fn(self, params, model_state, batch, rng):
        loss, metrics_ = self.separator.loss(params, batch, rng)
        return loss, (metrics_, model_state)

    def eval_fn(self, params, model_state, batch):
        return _pit_metrics(self.separate(params, batch["mixture"]), batch)

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def valid_batches(self) -> list[dict]:
        return self.data.valid_batches()

    def evaluate(self, params, model_state, split: str) -> list[dict]:
        """Table rows: system × input SI-SNR bucket, with SI-SNR(i) and SDR(i) in dB.

        Every separated source is one unit; its bucket is the SI-SNR of the unprocessed
        mixture with respect to that source. Estimates are aligned to the references by PIT.
        """
        del model_state
        cfg = self.config.eval
        n_fft = round(cfg.oracle_window_ms * self.mixture.sample_rate / 1000)
        model_name = self.separator.name
        systems = {"mixture": [], model_name: [], "oracle IRM": []}
        sources, mixtures = [], []
        model_fn = jax.jit(self.separate)
        oracle_fn = jax.jit(functools.partial(oracle_irm, n_fft=n_fft))
        examples = self.data.fixed_set(split, cfg.size)
        for batch in batch_examples(examples, cfg.batch_size):
            mix, refs = batch["mixture"], batch["sources"]
            est = model_fn(params, mix)
            _, perm = pit(pairwise_neg_si_snr, est, refs)
            systems[model_name].append(np.asarray(reorder(est, perm)))
            systems["oracle IRM"].append(np.asarray(oracle_fn(mix, refs)))
            systems["mixture"].append(_as_estimates(mix, refs))
            sources.append(refs)
            mixtures.append(mix)
        refs, mix = np.concatenate(sources), np.concatenate(mixtures)
        # One unit per (mixture, source): its input SI-SNR decides its bucket.
        input_snr = np.asarray(si_snr(_as_estimates(mix, refs), refs)).ravel()
        buckets = _buckets(input_snr, cfg.snr_edges_db)
        rows = []
        for name, parts in systems.items():
            est = np.concatenate(parts)
            scores = {
                "SI-SNR": np.asarray(si_snr(est, refs)).ravel(),
                "SI-SNRi": np.asarray(metrics.si_snr_improvement(est, refs, mix)).ravel(),
                "SDR": metrics.sdr(est, refs).ravel(),
                "SDRi": metrics.sdr_improvement(est, refs, mix).ravel(),
            }
            for label, member in buckets:
                row = {"system": name, "input SI-SNR (dB)": label, "sources": int(member.sum())}
                for key, values in scores.items():
                    row[f"{key} mean"] = float(values[member].mean())
                    row[f"{key} median"] = float(np.median(values[member]))
                rows.append(row)
        return rows


def _as_estimates(mixture, sources):
    """The mixture ``[B, T]`` repeated as every source's estimate ``[B, S, T]``."""
    return jnp.broadcast_to(mixture[:, None, :], sources.shape)


def _buckets(values: np.ndarray, edges: tuple[float, ...]) -> list[tuple[str, np.ndarray]]:
    """``("all", everything)`` then one non-empty bucket per interval between ``edges``."""
    bounds = [-np.inf, *edges, np.inf]
    out = [("all", np.ones(values.shape, bool))]
    for low, high in itertools.pairwise(bounds):
        member = (values >= low) & (values < high)
        if member.any():
            out.append((f"[{low:g}, {high:g})", member))
    return out

"""Speech separation task: Conv-TasNet (negative SI-SNR under utterance-level PIT) or deep
clustering (low-rank affinity loss, k-means at inference), chosen by the model config.

The data are mixtures made on the fly from speaker-disjoint splits of the speech folders
``data.speech`` below the data root (``MixtureDataConfig``; validation and test sets are fixed
mixture sets drawn from the valid and test speakers), or a pre-mixed corpus (LibriMix,
wsj0-2mix, WHAM!: ``PremixedDataConfig``; tested on every whole mixture of its test split,
batched by length). ``evaluate`` reports SI-SNR(i), SDR(i), SIR and SAR for the model, the
unprocessed mixture and an oracle ideal-ratio mask, overall and per input-SNR bucket; its
items are the separated sources (the mixture's ID, the source, its speaker, the input SI-SNR
band, and the mixture's gender pair and age groups where the corpus says).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import dsp, masks
from jaxspeech.data.pipeline import MixtureData, MixtureDataConfig
from jaxspeech.data.premixed import PremixedData, PremixedDataConfig
from jaxspeech.data.source import length_batches
from jaxspeech.evaluation import Evaluation, item_rows
from jaxspeech.evaluation.groups import band_labels, bands, talker_metadata
from jaxspeech.evaluation.scores import separation_scores
from jaxspeech.inference.separation import (
    ConvTasNetSeparator,
    DeepClusteringSeparator,
    build_separator,
)
from jaxspeech.losses import pairwise_neg_si_snr, pairwise_separation_loss, pit, reorder, si_snr
from jaxspeech.models.dpcl import (
    DeepClusteringConfig,
    dpcl_loss,
    dpcl_targets,
    silence_weights,
)
from jaxspeech.models.tasnet import ConvTasNetConfig
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import TrainedRun, refuse_frozen

#: Validation mixtures that ``Task.examples`` separates for TensorBoard.
EXAMPLES = 2


@dataclasses.dataclass(frozen=True)
class SeparationEvalConfig:
    """The fixed test set and the evaluation table.

    Attributes:
      size: mixtures in the test set made on the fly (a pre-mixed corpus's test split is
        evaluated whole).
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
    data: MixtureDataConfig | PremixedDataConfig = dataclasses.field(
        default_factory=MixtureDataConfig
    )
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
    """Batch means of the PIT SI-SNR of ``est`` ``[B, S, T]`` and of its improvement. A
    silent source (``data.mixture.lone_speaker_prob``) scores its track's level instead
    (``losses.pairwise_separation_loss``), and its mixture has no improvement to count."""
    sources = batch["sources"]
    pairwise_loss = functools.partial(pairwise_separation_loss, mixture=batch["mixture"])
    loss, _ = pit(pairwise_loss, est, sources)
    baseline = si_snr(_as_estimates(batch["mixture"], sources), sources).mean(-1)
    counted = jnp.all(jnp.any(sources != 0, axis=-1), axis=-1)
    improvement = jnp.where(counted, -loss - baseline, 0.0).sum() / jnp.maximum(counted.sum(), 1)
    return {"si_snr": -loss.mean(), "si_snr_i": improvement}


class Task(base.Task):
    """Speech separation with Conv-TasNet or deep clustering, chosen by the model config."""

    capabilities = base.Capabilities(examples=True)
    valid_metric = "si_snr_i"
    valid_mode = "max"

    def __init__(self, config, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        refuse_frozen(frozen or {}, "separation")
        self.config = config
        self.sample_rate = config.data.sample_rate
        kinds = {ConvTasNetConfig: _ConvTasNet, DeepClusteringConfig: _DeepClustering}
        self.separator = build_separator(config.model, self.sample_rate, config.train.dtype, kinds)

    @functools.cached_property
    def data(self) -> MixtureData | PremixedData:
        """The corpus splits and mixture sets, read on first use."""
        config = self.config
        source = PremixedData if isinstance(config.data, PremixedDataConfig) else MixtureData
        return source(config.data, config.train.batch_size, config.model.n_src)

    def init_model(self, rng: jax.Array):
        mixture = jnp.zeros((1, self.config.data.num_samples), jnp.float32)
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

    @functools.cached_property
    def _examples_input(self) -> tuple[np.ndarray, Callable]:
        """The mixtures ``[EXAMPLES, T]`` that :meth:`examples` separates, and the jitted model."""
        mixtures = np.concatenate([b["mixture"] for b in self.data.valid_batches()])
        return mixtures[:EXAMPLES], jax.jit(self.separate)

    def examples(self, params, model_state) -> list[tuple[str, np.ndarray, int]]:
        """The first validation mixtures and their separated sources, for TensorBoard."""
        del model_state
        mixtures, separate = self._examples_input
        estimates = np.asarray(separate(params, mixtures))
        rate = self.data.sample_rate
        out = []
        for i, (mixture, sources) in enumerate(zip(mixtures, estimates, strict=True)):
            out.append((f"valid{i}/mixture", mixture, rate))
            out += [(f"valid{i}/source{k + 1}", s, rate) for k, s in enumerate(sources)]
        return out

    def evaluate(self, params, model_state, split: str) -> Evaluation:
        """Table rows: system × input SI-SNR bucket, with SI-SNR(i), SDR(i), SIR and SAR in dB.

        Every separated source is one unit (an item: its mixture's ID and its source index);
        its bucket is the SI-SNR of the unprocessed mixture with respect to that
        source. Estimates are aligned to the references by PIT. ``scores``: this model's per
        unit, for paired comparisons.
        """
        del model_state
        cfg = self.config.eval
        n_fft = round(cfg.oracle_window_ms * self.sample_rate / 1000)
        model_name = self.separator.name
        systems = {"mixture": [], model_name: [], "oracle IRM": []}
        model_fn = jax.jit(self.separate)
        oracle_fn = jax.jit(functools.partial(oracle_irm, n_fft=n_fft))
        if isinstance(self.data, PremixedData):
            examples = self.data.test_items(split)
        else:
            examples = self.data.test_items(split, cfg.size)
        for batch in length_batches(examples, cfg.batch_size):
            mix, refs = batch["mixture"], batch["sources"]
            est = model_fn(params, mix)
            _, perm = pit(pairwise_neg_si_snr, est, refs)
            estimates = {
                model_name: reorder(est, perm),
                "oracle IRM": oracle_fn(mix, refs),
                "mixture": _as_estimates(mix, refs),
            }
            for name, estimate in estimates.items():
                systems[name].append(separation_scores(np.asarray(estimate), refs, mix))
        # One unit per (mixture, source), mixture-major: its input SI-SNR decides its bucket.
        per_system = {
            name: {k: np.concatenate([p[k] for p in parts]).ravel() for k in parts[0]}
            for name, parts in systems.items()
        }
        input_snr = per_system["mixture"]["SI-SNR"]
        buckets = bands(input_snr, cfg.snr_edges_db)
        metadata, groups = self._unit_metadata(
            examples, split, band_labels(input_snr, cfg.snr_edges_db)
        )
        rows, items = [], []
        for name, scores in per_system.items():
            items += item_rows(name, scores, metadata)
            for label, member in buckets:
                row = {"system": name, "input SI-SNR (dB)": label, "sources": int(member.sum())}
                for key, values in scores.items():
                    row[f"{key} mean"] = float(values[member].mean())
                    row[f"{key} median"] = float(np.median(values[member]))
                rows.append(row)
        return Evaluation(rows, items, ("input SI-SNR (dB)", *groups), per_system[model_name])

    def _unit_metadata(
        self, examples: list[dict], split: str, input_bands: list[str]
    ) -> tuple[list[dict], tuple[str, ...]]:
        """``(units, groups)``: per separated source (mixture-major, as ``ravel`` of
        ``[mixtures, sources]``) its mixture's ID, the source index, speaker (and file), the
        input SI-SNR band and, where the corpus says, the mixture's gender pair and age groups;
        ``groups`` names those breakdown columns."""
        if isinstance(self.data, MixtureData):
            per_mixture, groups = talker_metadata(examples, self.data.splits[split])
        else:
            per_mixture, groups = [{}] * len(examples), ()
        units = []
        for example, meta in zip(examples, per_mixture, strict=True):
            info = example["info"]
            for source, speaker in enumerate(info["speakers"]):
                unit = {"id": example["id"], "source": source, "speaker": speaker}
                if "source_files" in info:
                    unit["file"] = pathlib.Path(info["source_files"][source]).name
                unit["input SI-SNR (dB)"] = input_bands[len(units)]
                units.append({**unit, **{g: meta[g] for g in groups}})
        return units, groups


def _as_estimates(mixture, sources):
    """The mixture ``[B, T]`` repeated as every source's estimate ``[B, S, T]``."""
    return jnp.broadcast_to(mixture[:, None, :], sources.shape)

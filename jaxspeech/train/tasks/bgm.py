"""Speech <-> background-music matching: fit of a music track to a spoken recording.

Every file becomes the descriptors ``[segments, features]`` of its centred clip
(``model.clip_seconds``; shorter files repeated to fill it; ``jaxspeech.dsp.descriptors``),
computed once per file. They are standardised by a mean and std per feature over the
training files' segments, estimated before the first step (``prepare_model_state``) and kept
in the model state with the descriptor layout's fingerprint, so a checkpoint refuses
descriptors of other families or settings. ``jaxspeech.models.bgm.BGMatcher`` scores a pair;
the loss is binary cross-entropy against the graded label in [0, 1].

The pairs come from ``data.csv`` (``jaxspeech.data.pairs``) or, with ``data.demonstration``,
from the demonstration labelling of ``jaxspeech.data.bgm``. ``evaluate`` scores every test
recording against every test track (AUC over the labelled pairs, positives above
``eval.positive_above``; recall@k and MRR of each recording's ranking, its relevant tracks
being its positives) for the model and two systems that need no training: random order and
the cosine of the standardised fused feature vectors (descriptors averaged over segments).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxspeech import dsp
from jaxspeech.data.bgm import BGMDataConfig, demonstration_pairs
from jaxspeech.data.pairs import PairData
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation
from jaxspeech.inference.bgm import MusicMatching
from jaxspeech.losses import binary_cross_entropy
from jaxspeech.metrics.ranking import ranking_metrics, roc_auc
from jaxspeech.models.bgm import BGMConfig
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import TrainedRun, refuse_frozen


@dataclasses.dataclass(frozen=True)
class BGMEvalConfig:
    """The test table: labels above ``positive_above`` are positives (AUC) and the relevant
    tracks of a recording (ranking); ``ks`` of recall@k; ``random_draws`` of random order
    averaged; ``batch_size`` files embedded at once."""

    positive_above: float = 0.5
    ks: tuple[int, ...] = (1, 5, 10)
    random_draws: int = 100
    batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class BGMTaskConfig(Config):
    """A matching recipe: the model (with its descriptors), the pairs, the test table."""

    task: str = "bgm"
    model: BGMConfig = dataclasses.field(default_factory=BGMConfig)
    data: BGMDataConfig = dataclasses.field(default_factory=BGMDataConfig)
    eval: BGMEvalConfig = BGMEvalConfig()


class Task(MusicMatching, base.Task):
    """Background-music matching (see the module docstring); the model is its
    :class:`~jaxspeech.inference.bgm.MusicMatching`."""

    valid_metric = "bce"
    valid_mode = "min"

    def __init__(self, config, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        refuse_frozen(frozen or {}, "bgm")
        self.config = config
        features = config.model.features
        if config.data.sample_rate != features.sample_rate:
            raise ConfigError(
                f"data.sample_rate={config.data.sample_rate} differs from "
                f"model.features.sample_rate={features.sample_rate}; set both to one rate"
            )
        super().__init__(config.model, config.train.dtype)

    # --- model --------------------------------------------------------------------------

    @functools.cached_property
    def data(self) -> PairData:
        """The pairs, their splits and sources (descriptors per file), read on first use."""
        cfg = self.config.data
        pairs = None
        if cfg.demonstration is not None:
            pairs = demonstration_pairs(cfg.root, cfg.demonstration)
        batch_size = self.config.train.batch_size
        return PairData(cfg, batch_size, features=self.clip_descriptors, pairs=pairs)

    def init_model(self, rng: jax.Array):
        x = jnp.zeros((1, self.num_segments, len(self.names)), jnp.float32)
        params = self.model.init(rng, x, x)["params"]
        state = {
            "feature_mean": jnp.zeros(len(self.names), jnp.float32),
            "feature_std": jnp.ones(len(self.names), jnp.float32),
            "layout": jnp.asarray([self.fingerprint], jnp.uint32),
        }
        return params, state

    def _all_descriptors(self, split: str) -> dict[str, np.ndarray]:
        """``{path: descriptors}`` of every file of ``split``, with a progress bar."""
        source = self.data.source(split)
        paths = source.files()
        return {p: source.file_item(p) for p in tqdm(paths, desc=f"descriptors ({split})")}

    def prepare_model_state(self, model_state):
        """The per-feature mean and std over every segment of the training files."""
        stacked = np.concatenate(list(self._all_descriptors("train").values()))
        mean, std = dsp.mean_var_stats(stacked)
        return {**model_state, "feature_mean": mean, "feature_std": std}

    def logits(self, params, model_state, batch) -> jax.Array:
        first = self.normalize(batch["first"], model_state)
        return self.model.apply(
            {"params": params}, first, self.normalize(batch["second"], model_state)
        )

    def _metrics(self, params, model_state, batch) -> dict[str, jax.Array]:
        logits = self.logits(params, model_state, batch)
        bce = binary_cross_entropy(logits, batch["label"]).mean()
        return {"bce": bce, "mae": jnp.abs(jax.nn.sigmoid(logits) - batch["label"]).mean()}

    def loss_fn(self, params, model_state, batch, rng):
        del rng  # deterministic model
        metrics = self._metrics(params, model_state, batch)
        return metrics["bce"], (metrics, model_state)

    def eval_fn(self, params, model_state, batch):
        return self._metrics(params, model_state, batch)

    # --- data streams -------------------------------------------------------------------

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def valid_batches(self) -> list[dict]:
        return self.data.valid_batches()

    # --- evaluation ---------------------------------------------------------------------

    def _embed_all(self, params, model_state, descriptors: list[np.ndarray]) -> np.ndarray:
        embed = jax.jit(self.embed)
        size = self.config.eval.batch_size
        return np.concatenate(
            [
                np.asarray(embed(params, model_state, np.stack(descriptors[i : i + size])))
                for i in range(0, len(descriptors), size)
            ]
        )

    def evaluate(self, params, model_state, split: str) -> Evaluation:
        """Rows (model, random order, cosine of fused features): pairs, recordings, tracks,
        AUC, recall@k and MRR on ``split``; items: the model's and the cosine's score of every
        labelled (recording, track) pair."""
        self.check_layout(model_state)
        cfg = self.config.eval
        pairs = self.data.splits[split]
        descriptors = self._all_descriptors(split)
        speech = sorted({p.first for p in pairs})
        music = sorted({p.second for p in pairs})
        labels = np.full((len(speech), len(music)), np.nan)
        row, col = {p: i for i, p in enumerate(speech)}, {p: j for j, p in enumerate(music)}
        for p in pairs:
            labels[row[p.first], col[p.second]] = p.label
        known = ~np.isnan(labels)
        positive = known & (np.nan_to_num(labels) > cfg.positive_above)

        speech_emb = self._embed_all(params, model_state, [descriptors[p] for p in speech])
        music_emb = self._embed_all(params, model_state, [descriptors[p] for p in music])
        rank = jax.jit(jax.vmap(self.rank, in_axes=(None, 0, None)))
        model_scores = np.asarray(rank(params, speech_emb, music_emb))

        def fused(paths):
            stacked = np.stack([descriptors[p] for p in paths])
            vectors = np.asarray(self.normalize(stacked, model_state)).mean(1)
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

        cosine = fused(speech) @ fused(music).T
        rng = np.random.default_rng(self.config.data.split_seed)
        random_draws = [rng.random(labels.shape) for _ in range(cfg.random_draws)]
        systems = {
            "model": [model_scores],
            "random order": random_draws,
            "cosine of fused features": [cosine],
        }
        rows = []
        for name, draws in systems.items():
            found = [
                {
                    "AUC": roc_auc(s[known], positive[known]),
                    **ranking_metrics(np.where(known, s, -np.inf), positive, cfg.ks),
                }
                for s in draws
            ]
            means = {k: float(np.mean([f[k] for f in found])) for k in found[0] if k != "rows"}
            rows.append(
                {
                    "system": name,
                    "pairs": int(known.sum()),
                    "recordings": found[0]["rows"],
                    "tracks": len(music),
                    **means,
                }
            )
        items = [
            {"system": name, "item": k, "speech": os.path.basename(speech[i])}
            | {"music": os.path.basename(music[j]), "label": f"{labels[i, j]:g}"}
            | {"relevant": "yes" if positive[i, j] else "no", "score": float(draws[0][i, j])}
            for name, draws in systems.items()
            if name != "random order"
            for k, (i, j) in enumerate(zip(*np.nonzero(known), strict=True))
        ]
        return Evaluation(rows, items, ("relevant",))

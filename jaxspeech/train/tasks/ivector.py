"""i-vector task (estimation kind): total-variability matrix by EM on the Baum-Welch statistics
of a frozen UBM stage, then the back end fitted on the training i-vectors.

Steps (``model.em_iterations = E``; ``train.steps`` must be ``E + 2``), each over
``em.batches_per_step`` batches of training crops with their speaker labels:

1. steps ``1 … E``: EM for ``T`` with minimum-divergence re-estimation
   (``models.ivector.tv_statistics`` / ``tv_update``);
2. step ``E + 1``: centring and whitening from the mean and covariance of the i-vectors;
3. step ``E + 2``: the PLDA back end (``models.plda``, optional LDA) from the per-speaker sums
   of the whitened, length-normalised i-vectors.

The UBM (``params["ubm"]``), ``T``, the whitening and the PLDA are all in the checkpoint, so a
restored workdir embeds and scores with no corpus.

Interface for later stages (a distillation student reads this stage frozen):

* ``task.embed(params, model_state, waveforms [B, S] float32 at data.sample_rate, lengths [B]
  int32 samples) -> [B, ivector_dim] float32``: centred, whitened, length-normalised
  i-vectors; jit-able; samples past ``lengths`` are ignored (an utterance embeds the same
  alone and in a padded batch). Utterances must be longer than half an FFT frame (256
  samples at 16 kHz) and should hold voiced speech.
* ``task.score(params, model_state, enrol [N, D], test [N, D]) -> [N]``: PLDA
  log-likelihood ratios of embedded pairs (cosine scoring is ``sum(enrol * test, -1)``).
* ``task.ivector_dim`` (= ``config.model.rank``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.data.utterances import UtteranceData, UtteranceDataConfig
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation
from jaxspeech.evaluation.verification import P_TARGETS, error_rates
from jaxspeech.models import ivector, plda
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import Capabilities, TrainedRun, frozen_run
from jaxspeech.train.tasks.ubm import EMConfig, batch_lengths, eval_batches


@dataclasses.dataclass(frozen=True)
class IVectorConfig:
    """The i-vector extractor and its back end.

    Attributes:
      ubm: the name of the frozen UBM stage this stage reads.
      rank: i-vector dimension ``R``.
      em_iterations: EM iterations for ``T``.
      minimum_divergence: re-estimate so that the i-vectors are N(0, I) after each M-step.
      init_scale: ``T``'s random start, in units of the UBM's standard deviations.
      lda_dim: LDA dimension in front of the PLDA (None: PLDA on all ``R`` dimensions).
      plda_iterations: EM iterations of the PLDA.
    """

    ubm: str = "ubm"
    rank: int = 100
    em_iterations: int = 5
    minimum_divergence: bool = True
    init_scale: float = 0.1
    lda_dim: int | None = None
    plda_iterations: int = 10

    def __post_init__(self) -> None:
        if self.rank < 1 or self.em_iterations < 1:
            raise ConfigError("IVectorConfig: rank and em_iterations must be >= 1")
        if self.lda_dim is not None and not 1 <= self.lda_dim <= self.rank:
            raise ConfigError(f"IVectorConfig.lda_dim={self.lda_dim} must be in [1, rank]")


@dataclasses.dataclass(frozen=True)
class IVectorEvalConfig:
    """Evaluation: all pairs of the split's utterances (cut to ``seconds``) are trials."""

    seconds: float = 10.0
    p_targets: tuple[float, ...] = P_TARGETS


@dataclasses.dataclass(frozen=True)
class IVectorTaskConfig(Config):
    """An i-vector recipe stage (reads the UBM stage ``model.ubm``)."""

    task: str = "ivector"
    model: IVectorConfig = IVectorConfig()
    data: UtteranceDataConfig = dataclasses.field(default_factory=UtteranceDataConfig)
    em: EMConfig = dataclasses.field(default_factory=EMConfig)
    eval: IVectorEvalConfig = IVectorEvalConfig()


class Task(base.Task):
    """Total variability, whitening and PLDA (module docstring)."""

    capabilities = Capabilities(estimation=True)
    valid_metric = "log_likelihood"
    valid_mode = "max"

    def __init__(self, config: IVectorTaskConfig, frozen: Mapping[str, TrainedRun] | None = None):
        cfg = config.model
        ubm_run = frozen_run(frozen or {}, cfg.ubm, f"model.ubm={cfg.ubm!r}")
        ubm_config = ubm_run.task.config
        if ubm_config.data.sample_rate != config.data.sample_rate:
            raise ConfigError(
                f"the UBM stage {cfg.ubm!r} runs at {ubm_config.data.sample_rate} Hz but "
                f"data.sample_rate={config.data.sample_rate}; use the UBM's rate"
            )
        if config.train.steps != cfg.em_iterations + 2:
            raise ConfigError(
                f"train.steps={config.train.steps}: the i-vector stage takes "
                f"model.em_iterations + 2 = {cfg.em_iterations + 2} steps (EM, whitening, PLDA)"
            )
        self.config = config
        self.frontend = ubm_config.model.frontend
        self.ubm = jax.device_get(ubm_run.params)
        self.batches_per_step = config.em.batches_per_step
        self.ivector_dim = cfg.rank

    @functools.cached_property
    def data(self) -> UtteranceData:
        """The corpus splits and streams, read on first use."""
        return UtteranceData(self.config.data, self.config.train.batch_size)

    def init_model(self, rng: jax.Array):
        cfg = self.config.model
        rank, plda_dim = cfg.rank, cfg.lda_dim or cfg.rank
        eye = jnp.eye(plda_dim)
        params = {
            "ubm": jax.tree.map(jnp.asarray, self.ubm),
            "tv": ivector.init_total_variability(rng, self.ubm, rank, cfg.init_scale),
            "backend": {"mean": jnp.zeros(rank), "whitening": jnp.eye(rank)},
            "plda": {
                "projection": jnp.eye(rank, plda_dim),
                "mean": jnp.zeros(plda_dim),
                "between": eye,
                "within": eye,
            }
            | plda.scoring_terms(eye, eye),
        }
        return params, {"iteration": jnp.zeros((), jnp.int32)}

    def _ivectors(self, params, waveforms, lengths):
        """Raw i-vectors ``[B, R]`` and the Baum-Welch statistics of a padded batch."""
        rate = self.config.data.sample_rate
        features, voiced = ivector.frontend(self.frontend, waveforms, lengths, rate)
        stats = ivector.baum_welch(params["ubm"], features, voiced)
        return ivector.extract(params["tv"], params["ubm"]["variances"], stats), stats

    def embed(self, params, model_state, waveforms, lengths) -> jax.Array:
        """Whitened, length-normalised i-vectors ``[B, R]`` (module docstring)."""
        del model_state
        raw, _ = self._ivectors(params, waveforms, lengths)
        return ivector.normalised_ivectors(params["backend"], raw)

    def score(self, params, model_state, enrol: jax.Array, test: jax.Array) -> jax.Array:
        """PLDA log-likelihood ratios ``[N]`` of embedded pairs ``[N, R]``."""
        del model_state
        return plda.score(params["plda"], enrol, test)

    def statistics(self, params, model_state, batch, rng):
        del model_state, rng
        raw, stats = self._ivectors(params, batch["audio"], batch_lengths(batch))
        normalised = ivector.normalised_ivectors(params["backend"], raw)
        return {
            "tv": ivector.tv_statistics(params["tv"], params["ubm"]["variances"], stats),
            "whitening": {"sum": raw.sum(0), "outer": raw.T @ raw},
            "plda": plda.speaker_statistics(normalised, batch["speaker"], self.data.num_speakers),
        }

    def update(self, params, model_state, statistics):
        cfg = self.config.model
        iteration = model_state["iteration"]
        tv_stats = statistics["tv"]
        tv = ivector.tv_update(params["tv"], tv_stats, cfg.minimum_divergence)
        mean, whitening = ivector.whitening(
            statistics["whitening"]["sum"],
            statistics["whitening"]["outer"],
            tv_stats["utterances"],
        )
        fitted = plda.fit(statistics["plda"], cfg.plda_iterations, cfg.lda_dim)
        choose = lambda condition, new, old: jax.tree.map(
            lambda a, b: jnp.where(condition, a, b), new, old
        )
        new_params = {
            "ubm": params["ubm"],
            "tv": choose(iteration < cfg.em_iterations, tv, params["tv"]),
            "backend": choose(
                iteration == cfg.em_iterations,
                {"mean": mean, "whitening": whitening},
                params["backend"],
            ),
            "plda": choose(iteration == cfg.em_iterations + 1, fitted, params["plda"]),
        }
        step_metrics = {"log_likelihood": tv_stats["log_likelihood"] / tv_stats["utterances"]}
        return new_params, {"iteration": iteration + 1}, step_metrics

    def eval_fn(self, params, model_state, batch):
        """Mean marginal log-likelihood of the replica's utterances under ``T``."""
        del model_state
        _, stats = self._ivectors(params, batch["audio"], batch_lengths(batch))
        tv_stats = ivector.tv_statistics(params["tv"], params["ubm"]["variances"], stats)
        return {"log_likelihood": tv_stats["log_likelihood"] / tv_stats["utterances"]}

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def valid_batches(self) -> list[dict]:
        batches = eval_batches(
            self.data, "valid", self.config.train.batch_size, self.config.eval.seconds
        )
        return [{"audio": b["audio"], "lengths": b["lengths"]} for b in batches]

    def evaluate(self, params, model_state, split: str) -> Evaluation:
        """EER (%) and minDCF of cosine and PLDA scoring over all pairs of the split's
        utterances (same speaker: target trial); items: each system's score of each pair
        (utterances numbered in the split's order)."""
        embed = jax.jit(self.embed)
        batches = eval_batches(
            self.data, split, self.config.train.batch_size, self.config.eval.seconds
        )
        vectors, speakers = [], []
        for batch in batches:
            vectors.append(np.asarray(embed(params, model_state, batch["audio"], batch["lengths"])))
            speakers.append(batch["speaker"])
        keep = np.concatenate([b["valid"] for b in batches])
        vectors, speakers = np.concatenate(vectors)[keep], np.concatenate(speakers)[keep]
        pairs = np.array(list(itertools.combinations(range(len(vectors)), 2)))
        enrol, test = vectors[pairs[:, 0]], vectors[pairs[:, 1]]
        labels = speakers[pairs[:, 0]] == speakers[pairs[:, 1]]
        systems = {
            "i-vector + cosine": np.sum(enrol * test, -1),
            "i-vector + PLDA": np.asarray(jax.jit(self.score)(params, model_state, enrol, test)),
        }
        rows, items = [], []
        for name, scores in systems.items():
            items += [
                {"system": name, "item": k, "label": int(label), "enrol": int(a), "test": int(b)}
                | {"score": float(score)}
                for k, (label, (a, b), score) in enumerate(zip(labels, pairs, scores, strict=True))
            ]
            rows.append(
                {
                    "system": name,
                    "trials": len(labels),
                    "target trials": int(labels.sum()),
                    **error_rates(scores, labels, self.config.eval.p_targets),
                }
            )
        return Evaluation(rows, items, ("label",))

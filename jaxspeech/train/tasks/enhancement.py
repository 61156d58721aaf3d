"""Speech enhancement by time-frequency masking, optionally distilled from a frozen teacher.

Input: noisy speech, made on the fly (one speaker + real noise at an SNR drawn from a range,
optionally reverberant; ``jaxspeech.data.MixtureDataConfig`` with one source), the pairs of
a noisy/clean corpus (VoiceBank-DEMAND, DNS Challenge:
``jaxspeech.data.noisy_pairs.NoisyPairDataConfig``), or an audio-visual corpus's mixtures
(``jaxspeech.data.av.AVDataConfig``, the audio net of ``configs/av/lipgate.py``). Features:
the log-magnitude STFT, normalised by a mean and std per frequency estimated on
``features.stats_batches`` training batches before the first step (``prepare_model_state``)
and kept in the model state, so checkpoints carry them and restoring a run never reads
training data. The mask estimator (:mod:`jaxspeech.models.masknet`, LSTM or TCN) predicts
one sigmoid value per bin and is trained towards the ideal mask ``m_r`` (IRM with exponent
``irm_beta`` by default, or
IBM) by mask MSE, each bin weighted by the noisy bin's energy ``|Y|²`` (``bin_weights``): the
loss is then the error of the enhanced spectrum, ``‖(m − m_r)·Y‖² / ‖Y‖²``. With every bin
alike, the many quiet bins (where the mask changes nothing audible) outweigh the few loud ones
that make the output, and the trained masks distort clean speech. Enhanced speech is
``ISTFT(mask · noisy STFT)`` with the noisy phase, at the input length.

Distillation: when ``model.teacher`` names an earlier stage of this task that the stage reads
(``jaxspeech.train.stages``), the stage machinery hands over its restored params (frozen;
they never enter the optimiser) and the loss is ``losses.mask_distillation(m_s, m_t, m_r)``.
``configs/enhancement/distill.py`` chains the teacher, distilled-student and plain-student
stages.

``evaluate`` scores the test set (PESQ, STOI, SI-SDR, SI-SDRi, per SNR and overall) for the
model and, with ``eval.references``, the noisy input and the oracle mask: made mixtures on an
SNR grid, or every pair of a corpus's test split whole (batched by length), per band of the
SNR the corpus mixed at. Its items are the test utterances with their IDs (SNR, speaker,
gender and age group, noise, where the corpus says).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import dsp, masks
from jaxspeech.data.av import AVDataConfig, AVSpeechData
from jaxspeech.data.noisy_pairs import NoisyPairData, NoisyPairDataConfig
from jaxspeech.data.pipeline import MixtureData, MixtureDataConfig
from jaxspeech.data.source import length_batches
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation, item_rows
from jaxspeech.evaluation.groups import UNKNOWN, band_labels, bands, snr_groups, talker_metadata
from jaxspeech.evaluation.scores import quality_scores
from jaxspeech.inference.enhancement import MaskEnhancer
from jaxspeech.losses import mask_distillation, mask_mse, si_snr
from jaxspeech.models.masknet import (
    LSTMMaskNetConfig,
    TCNMaskNetConfig,
    macs_per_frame,
    param_count,
)
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import TrainedRun, frozen_run, refuse_frozen

#: Seed offset of the feature-statistics stream from the training stream's.
_STATS_SEED_OFFSET = 7919
TARGETS = ("irm", "ibm")
#: How the mask loss weighs the time-frequency bins (``EnhancementModelConfig.bin_weights``).
BIN_WEIGHTS = ("uniform", "energy")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """STFT (window and hop in ms, window name) and the feature normalisation: the log floor
    and how many training batches estimate the per-frequency mean and std."""

    window_ms: float = 32.0
    hop_ms: float = 16.0
    window: str = "hann"
    log_floor: float = 1e-8
    stats_batches: int = 16


@dataclasses.dataclass(frozen=True)
class EnhancementModelConfig:
    """Estimator, features, training target and (for distillation) the frozen teacher.

    Attributes:
      estimator: the mask net, an LSTM or a TCN (``jaxspeech.models.masknet``).
      target: "irm" ((S²/(S²+N²))^irm_beta) or "ibm" (local SNR above ibm_lc_db).
      teacher: the earlier stage (an enhancement run the stage reads) whose masks the student
        distils, or None to train on the ideal mask alone.
      distill_ideal_weight: with a teacher, the fixed weight ``a`` of the ideal mask in the
        distillation loss, or None for the per-bin rule (``losses.mask_distillation``).
      bin_weights: how the mask loss weighs the bins: "energy" by the noisy bin's energy
        ``|Y|²`` (the mask error in the enhanced spectrum, ``Σ|Y|²(m − m_r)²``, which is what
        the output's SI-SDR sees), or "uniform" (every bin alike, silent ones included).
    """

    estimator: LSTMMaskNetConfig | TCNMaskNetConfig = dataclasses.field(
        default_factory=LSTMMaskNetConfig
    )
    features: FeatureConfig = FeatureConfig()
    target: str = "irm"
    irm_beta: float = 0.5
    ibm_lc_db: float = 0.0
    teacher: str | None = None
    distill_ideal_weight: float | None = None
    bin_weights: str = "energy"


@dataclasses.dataclass(frozen=True)
class EnhancementEvalConfig:
    """The test table: made mixtures: ``size`` utterances of ``segment_seconds`` at the SNRs
    ``snrs_db`` in turn; a pair corpus: its test split whole, in rows per band between
    ``snr_edges_db``; enhanced ``batch_size`` utterances of one length at a time; ``system``
    labels this model's rows;
    ``references`` adds the noisy input and the oracle mask; ``rtf_repeats`` timed CPU runs
    on one test utterance."""

    system: str = "model"
    snrs_db: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    size: int = 60
    segment_seconds: float = 4.0
    snr_edges_db: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0)
    batch_size: int = 6
    references: bool = True
    rtf_repeats: int = 3


@dataclasses.dataclass(frozen=True)
class EnhancementConfig(Config):
    """An enhancement recipe: the model, the noisy speech (mixtures of one source, or a pair
    corpus) and the test table."""

    task: str = "enhancement"
    model: EnhancementModelConfig = EnhancementModelConfig()
    data: MixtureDataConfig | NoisyPairDataConfig | AVDataConfig = dataclasses.field(
        default_factory=MixtureDataConfig
    )
    eval: EnhancementEvalConfig = EnhancementEvalConfig()


class Task(MaskEnhancer, base.Task):
    """Mask-based enhancement (see the module docstring); the model is its
    :class:`~jaxspeech.inference.enhancement.MaskEnhancer`."""

    valid_metric = "si_sdr"
    valid_mode = "max"

    def __init__(self, config, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        self.config = config
        data, model = config.data, config.model
        if isinstance(data, MixtureDataConfig) and data.mixture.noise_snr_db_range is None:
            raise ConfigError(
                "enhancement needs data.mixture.noise_snr_db_range (noisy speech); set it"
            )
        if model.target not in TARGETS:
            raise ConfigError(f"model.target={model.target!r}; use one of {TARGETS}")
        weight = model.distill_ideal_weight
        if weight is not None and not 0.0 <= weight <= 1.0:
            raise ConfigError(f"model.distill_ideal_weight={weight}; use a value in [0, 1] or None")
        if model.bin_weights not in BIN_WEIGHTS:
            raise ConfigError(f"model.bin_weights={model.bin_weights!r}; use one of {BIN_WEIGHTS}")
        super().__init__(model, data.sample_rate, config.train.dtype)
        self.teacher = self._teacher(frozen or {})

    @functools.cached_property
    def data(self) -> MixtureData | NoisyPairData | AVSpeechData:
        """The corpus splits and mixture sets (or pairs, or the audio of an audio-visual
        corpus's mixtures), read on first use."""
        data, batch_size = self.config.data, self.config.train.batch_size
        if isinstance(data, NoisyPairDataConfig):
            return NoisyPairData(data, batch_size)
        if isinstance(data, AVDataConfig):
            return AVSpeechData(data, batch_size, self.hop)
        return MixtureData(data, batch_size, n_src=1)

    # --- numerics (pure jnp) ---------------------------------------------------------------

    def ideal_mask(self, clean: jax.Array, noise: jax.Array) -> jax.Array:
        """The training target ``m_r [..., frames, n_freqs]`` from clean speech and noise."""
        cfg = self.config.model
        clean_mag, noise_mag = jnp.abs(self.spectrum(clean)), jnp.abs(self.spectrum(noise))
        if cfg.target == "ibm":
            return masks.ibm(clean_mag, noise_mag, cfg.ibm_lc_db)
        return masks.irm(clean_mag, noise_mag, cfg.irm_beta)

    # --- the Task protocol -----------------------------------------------------------------

    def init_model(self, rng: jax.Array):
        frames = 1 + self.config.data.num_samples // self.hop
        features = jnp.zeros((1, frames, self.n_freqs), jnp.float32)
        params = self.model.init(rng, features)["params"]
        # Identity normalisation until prepare_model_state estimates it from the data.
        shape = (self.n_freqs,)
        return params, {"feature_mean": jnp.zeros(shape), "feature_std": jnp.ones(shape)}

    def prepare_model_state(self, model_state) -> dict:
        """The model state with the feature statistics of the training data (see
        ``feature_stats``); called once before the first training step."""
        mean, std = self.feature_stats
        return {**model_state, "feature_mean": mean, "feature_std": std}

    @functools.cached_property
    def feature_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-frequency mean and std ``[n_freqs]`` of the log-magnitude features of
        ``features.stats_batches`` batches of noisy training speech (host, cached)."""
        batches = self.data.train_dataset(seed=self.config.train.seed + _STATS_SEED_OFFSET)
        floor = self.config.model.features.log_floor
        log_mag = jax.jit(lambda wav: dsp.log_magnitude(self.spectrum(wav), floor))
        stats = dsp.running_stats_init(self.n_freqs)
        for _, batch in zip(range(self.config.model.features.stats_batches), batches, strict=False):
            stats = dsp.running_stats_update(stats, np.asarray(log_mag(batch["mixture"])))
        return dsp.running_stats_finalize(stats)

    def _teacher(self, frozen: Mapping[str, TrainedRun]):
        """``(teacher task, params, model_state)`` of the frozen stage ``model.teacher`` (host
        arrays; closed over by the jitted loss, so they are frozen), or None without one."""
        name = self.config.model.teacher
        if name is None:
            refuse_frozen(frozen, "enhancement without a teacher")
            return None
        teacher = frozen_run(frozen, name, f"model.teacher={name!r}")
        task = teacher.task
        if (task.n_fft, task.hop, task.sample_rate) != (self.n_fft, self.hop, self.sample_rate):
            raise ConfigError(
                f"the teacher in {teacher.workdir} uses a {task.n_fft}-point STFT with hop "
                f"{task.hop} at {task.sample_rate} Hz; the student must use the same"
            )
        return task, jax.device_get(teacher.params), jax.device_get(teacher.model_state)

    def bin_weights(self, spec: jax.Array) -> jax.Array | None:
        """The mask loss's bin weights ``[..., frames, n_freqs]`` for a noisy STFT (None:
        uniform); see ``EnhancementModelConfig.bin_weights``."""
        if self.config.model.bin_weights == "uniform":
            return None
        return jnp.square(jnp.abs(spec))

    def _mask_metrics(self, params, model_state, batch):
        noisy, clean = batch["mixture"], batch["sources"][:, 0]
        m_r = self.ideal_mask(clean, batch["noise"])
        m_s, spec = self.mask(params, model_state, noisy)
        weights = self.bin_weights(spec)
        return m_s, m_r, spec, {"mask_mse": mask_mse(m_s, m_r, weights).mean()}

    def loss_fn(self, params, model_state, batch, rng):
        del rng  # deterministic model
        m_s, m_r, spec, metrics_ = self._mask_metrics(params, model_state, batch)
        if self.teacher is None:
            return metrics_["mask_mse"], (metrics_, model_state)
        teacher, teacher_params, teacher_state = self.teacher
        m_t, _ = teacher.mask(teacher_params, teacher_state, batch["mixture"])
        weights = self.bin_weights(spec)
        ideal_weight = self.config.model.distill_ideal_weight
        loss = mask_distillation(m_s, jax.lax.stop_gradient(m_t), m_r, weights, ideal_weight)
        loss = loss.mean()
        metrics_["teacher_mask_mse"] = mask_mse(m_t, m_r, weights).mean()
        return loss, (metrics_, model_state)

    def eval_fn(self, params, model_state, batch):
        m_s, _, spec, metrics_ = self._mask_metrics(params, model_state, batch)
        enhanced = self.resynthesise(spec, m_s, batch["mixture"].shape[-1])
        metrics_["si_sdr"] = si_snr(enhanced, batch["sources"][:, 0]).mean()
        return metrics_

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def valid_batches(self) -> list[dict]:
        return self.data.valid_batches()

    def evaluate(self, params, model_state, split: str) -> Evaluation:
        """Table: system × input SNR ("all" first; made mixtures: each SNR of the grid; a pair
        corpus: bands between ``eval.snr_edges_db``, "?" where the corpus gives no SNR), with
        PESQ, STOI, SI-SDR, SI-SDRi means, params, model MACs per second of audio (analytic,
        ``macs_per_frame``) and the CPU real-time factor (batch of one test utterance, after
        compilation). Items: every system's scores per test utterance, with its ID;
        ``scores``: this model's, in a fixed order (the same for every run of the recipe's
        data config), for paired comparisons."""
        cfg = self.config.eval
        examples = self._test_examples(split)
        scores = self._test_scores(params, model_state, examples)
        metadata, groups, snr_rows = self._test_metadata(examples, split)
        costs = self.costs(params, model_state, examples[0]["mixture"])
        rows, items = [], []
        for name, system_scores in scores.items():
            cost = costs if name == cfg.system else dict.fromkeys(costs)
            for label, member in snr_rows:
                row = {"system": name, "SNR (dB)": label, "utterances": int(member.sum())}
                row.update({k: float(v[member].mean()) for k, v in system_scores.items()})
                rows.append({**row, **cost})
            items += item_rows(name, system_scores, metadata)
        return Evaluation(rows, items, ("SNR (dB)", *groups), scores[cfg.system])

    def _test_examples(self, split: str) -> list[dict]:
        """The ``split`` set: a pair corpus's pairs whole, or the fixed made mixtures."""
        cfg = self.config.eval
        if isinstance(self.data, NoisyPairData):
            return self.data.test_items(split)
        return self.data.test_items(split, cfg.size, cfg.snrs_db, cfg.segment_seconds)

    def _test_scores(self, params, model_state, examples) -> dict[str, dict[str, np.ndarray]]:
        """``{system: {metric: [utterances]}}`` (``quality_scores``) for this model and, with
        ``eval.references``, the noisy input and the oracle mask, in the order of
        ``examples`` (batched by length)."""
        cfg = self.config.eval
        enhance = jax.jit(self.enhance)
        oracle = jax.jit(
            lambda noisy, clean, noise: self.resynthesise(
                self.spectrum(noisy), self.ideal_mask(clean, noise), noisy.shape[-1]
            )
        )
        oracle_name = f"oracle {self.config.model.target.upper()}"
        systems = {"noisy": [], oracle_name: []} if cfg.references else {}
        systems[cfg.system] = []
        for batch in length_batches(examples, cfg.batch_size):
            noisy, clean = batch["mixture"], batch["sources"][:, 0]
            outputs = {cfg.system: enhance(params, model_state, noisy)}
            if cfg.references:
                outputs["noisy"] = noisy
                outputs[oracle_name] = oracle(noisy, clean, batch["noise"])
            for name, output in outputs.items():
                scores = quality_scores(np.asarray(output), clean, noisy, self.sample_rate)
                systems[name].append(scores)
        return {
            name: {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
            for name, parts in systems.items()
        }

    def _test_metadata(self, examples, split: str):
        """``(metadata, groups, snr_rows)``: per example its ``id``, ``SNR (dB)`` label and
        talker (made mixtures: speakers, gender and age groups; pairs: speaker, noise, file);
        the breakdown columns present besides the SNR; the table's ``(SNR label, members)``."""
        if isinstance(self.data, MixtureData):
            snrs = np.array([example["snr_db"] for example in examples])
            labels = [f"{snr:g}" for snr in snrs]
            talkers, groups = talker_metadata(examples, self.data.splits[split])
            snr_rows = snr_groups(snrs)
        else:
            infos = [example["info"] for example in examples]
            snrs = np.array([np.nan if i["snr_db"] is None else i["snr_db"] for i in infos])
            known, edges = ~np.isnan(snrs), self.config.eval.snr_edges_db
            labels = np.full(len(snrs), UNKNOWN, object)
            labels[known] = band_labels(snrs[known], edges)
            snr_rows = bands(snrs, edges) + ([(UNKNOWN, ~known)] if not known.all() else [])
            talkers = [
                {key: i[key] or UNKNOWN for key in ("speaker", "noise")}
                | {"file": os.path.basename(i["path"])}
                for i in infos
            ]
            groups = ("noise",) if any(i["noise"] for i in infos) else ()
        metadata = [
            {"id": example["id"], "SNR (dB)": label, **talker}
            for example, label, talker in zip(examples, labels, talkers, strict=True)
        ]
        return metadata, groups, snr_rows

    def costs(self, params, model_state, utterance: np.ndarray) -> dict:
        """Params, model MMAC per second of audio and CPU real-time factor on ``utterance``."""
        frames_per_second = self.sample_rate / self.hop
        cpu = jax.devices("cpu")[0]
        on_cpu = jax.device_put((params, model_state, utterance[None]), cpu)
        enhance = jax.jit(self.enhance)
        enhance(*on_cpu).block_until_ready()  # compile
        start = time.perf_counter()
        for _ in range(self.config.eval.rtf_repeats):
            enhance(*on_cpu).block_until_ready()
        elapsed = (time.perf_counter() - start) / self.config.eval.rtf_repeats
        return {
            "params": param_count(params),
            "MMAC/s": macs_per_frame(params) * frames_per_second / 1e6,
            "RTF (CPU)": elapsed / (utterance.shape[-1] / self.sample_rate),
        }

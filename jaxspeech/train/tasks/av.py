"""Audio-visual enhancement: the lip net (Net 2) and the gate (Net 3) over a frozen audio net.

One task, two nets (``model.net``):

* ``"lips"``: :class:`jaxspeech.models.av.LipNet` on the mouth crop of each STFT frame,
  trained by binary cross-entropy towards the clean speech's band activity
  (``masks.band_activity`` over ``model.band_range_db``; ``model.n_bands`` contiguous bands),
  frames without a face left out of the loss;
* ``"gate"``: :func:`jaxspeech.models.av.build_gate_net` over Net 1's mask and the lip band
  mask; the output mask ``av_mask`` is trained towards Net 1's ideal mask (the IRM of the
  clean speech against everything else) by mask MSE with Net 1's bin weights (the noisy
  energy, as Net 1 was trained), Nets 1 and 2 frozen.

Net 1 is an enhancement run (``jaxspeech.train.tasks.enhancement``) that the stage reads
(``model.audio_stage``); its STFT, features and mask are used as they are. The gate stage
also reads the lips stage (``model.lips_stage``). ``configs/av/lipgate.py`` chains audio →
lips → gate. Data: :mod:`jaxspeech.data.av` (GRID clips in noise or beside another talker).

The gate's ``evaluate`` writes the table of the recipe: noisy input, audio-only (Net 1),
audio-visual, AV with oracle bands (the lip band mask replaced by the clean speech's band
IBM: a perfect lip net), the same with the gate open (g = 1: the ceiling of the band mask
whatever the gate learned), AV with another clip's video (mismatched: the gate
should fall back to audio only), AV with the video blanked (no face anywhere: equal to
audio-only) and the oracle IRM, with PESQ (wb), STOI, SI-SDR and SI-SDRi per condition and
SNR.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import masks
from jaxspeech.data.av import CONDITIONS, AVData, AVDataConfig
from jaxspeech.data.source import batch_examples
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation import Evaluation, item_rows
from jaxspeech.evaluation.groups import snr_groups
from jaxspeech.evaluation.scores import quality_scores
from jaxspeech.inference.av import AVMasking
from jaxspeech.losses import binary_cross_entropy, mask_mse, si_snr
from jaxspeech.models.av import (
    GateNetConfig,
    LipNet,
    LipNetConfig,
    build_gate_net,
)
from jaxspeech.models.masknet import param_count
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import TrainedRun, frozen_run
from jaxspeech.train.tasks import enhancement

NETS = ("lips", "gate")
#: The validation metric (and its direction) ranking each net's checkpoints.
VALID_METRICS = {"lips": ("band_bce", "min"), "gate": ("si_sdr", "max")}


@dataclasses.dataclass(frozen=True)
class AVModelConfig:
    """Which net this stage trains and the stages it builds on.

    Attributes:
      net: "lips" (Net 2) or "gate" (Net 3).
      audio_stage: the enhancement stage of Net 1 (read by both nets).
      lips_stage: the lips stage (read by the gate).
      n_bands: M, the lip net's bands (contiguous, ``masks.band_of_bin``).
      band_range_db: the band activity target maps band levels from this many dB below the
        clip's loudest frame up to it onto 0…1 (``masks.band_activity``).
      lip_net, gate_net: the nets' sizes.
    """

    net: str = "lips"
    audio_stage: str = "audio"
    lips_stage: str = "lips"
    n_bands: int = 16
    band_range_db: float = 40.0
    lip_net: LipNetConfig = dataclasses.field(default_factory=LipNetConfig)
    gate_net: GateNetConfig = dataclasses.field(default_factory=GateNetConfig)


@dataclasses.dataclass(frozen=True)
class AVEvalConfig:
    """The test table: ``size`` examples of ``seconds``, the conditions and SNRs of
    ``noise_snrs_db`` (noise) and ``talker_snrs_db`` (competing talker) in turn."""

    noise_snrs_db: tuple[float, ...] = (-5.0, 0.0, 5.0, 10.0, 15.0, 20.0)
    talker_snrs_db: tuple[float, ...] = (-5.0, 0.0, 5.0)
    size: int = 72
    seconds: float = 3.0
    batch_size: int = 8

    @property
    def grid(self) -> list[tuple[str, float]]:
        return [("noise", s) for s in self.noise_snrs_db] + [
            ("talker", s) for s in self.talker_snrs_db
        ]


@dataclasses.dataclass(frozen=True)
class AVConfig(Config):
    """An audio-visual stage: the net, the AV mixtures and the test table."""

    task: str = "av"
    model: AVModelConfig = dataclasses.field(default_factory=AVModelConfig)
    data: AVDataConfig = dataclasses.field(default_factory=AVDataConfig)
    eval: AVEvalConfig = dataclasses.field(default_factory=AVEvalConfig)


def _host(run: TrainedRun):
    return jax.device_get(run.params), jax.device_get(run.model_state)


class Task(AVMasking, base.Task):
    """Lip net or gate over a frozen audio net (see the module docstring)."""

    @classmethod
    def checkpoint_ranking(cls, config) -> tuple[str, str]:
        """The validation metric and its direction of the stage's net."""
        return VALID_METRICS[config.model.net]

    def __init__(self, config, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        self.config = config
        model, frozen = config.model, dict(frozen or {})
        if model.net not in NETS:
            raise ConfigError(f"model.net={model.net!r}; use one of {NETS}")
        needed = (model.audio_stage,) + ((model.lips_stage,) if model.net == "gate" else ())
        extra = sorted(set(frozen) - set(needed))
        if extra:
            raise ConfigError(f"the {model.net} net reads only {needed}; remove {extra}")
        audio = frozen_run(frozen, model.audio_stage, f"the {model.net} net")
        self.audio, self.audio_variables = audio.task, _host(audio)
        if not isinstance(self.audio, enhancement.Task):
            raise ConfigError(f"{audio.workdir} is not an enhancement run; Net 1 must be one")
        self.sample_rate, self.hop = self.audio.sample_rate, self.audio.hop
        self.n_fft, self.n_freqs = self.audio.n_fft, self.audio.n_freqs
        if config.data.sample_rate != self.sample_rate:
            raise ConfigError(
                f"data.sample_rate={config.data.sample_rate} but Net 1 runs at "
                f"{self.sample_rate} Hz; set data.sample_rate={self.sample_rate}"
            )
        if not 1 <= model.n_bands <= self.n_freqs:
            raise ConfigError(f"model.n_bands={model.n_bands} must be in [1, {self.n_freqs}]")
        self.n_bands = model.n_bands
        dtype = config.train.dtype
        self.lip_net = LipNet(model.n_bands, model.lip_net, dtype)
        self.gate_net = build_gate_net(model.gate_net, model.n_bands, dtype)
        self.lips_params = None
        if model.net == "gate":
            lips = frozen_run(frozen, model.lips_stage, "the gate")
            if (lips.task.n_bands, lips.task.hop) != (self.n_bands, self.hop):
                raise ConfigError(
                    f"the lips stage in {lips.workdir} has {lips.task.n_bands} bands and hop "
                    f"{lips.task.hop}; the gate needs {self.n_bands} and {self.hop}"
                )
            self.lip_net = lips.task.lip_net
            self.lips_params = jax.device_get(lips.params)
        self.valid_metric, self.valid_mode = self.checkpoint_ranking(config)

    @functools.cached_property
    def data(self) -> AVData:
        return AVData(self.config.data, self.config.train.batch_size, self.hop)

    # --- numerics (pure jnp) ---------------------------------------------------------------

    def band_target(self, clean: jax.Array) -> jax.Array:
        """The band activity ``[B, frames, M]`` of clean speech ``[B, samples]``."""
        spec = self.audio.spectrum(clean)
        return masks.band_activity(spec, self.n_bands, self.config.model.band_range_db)

    def enhance_with_oracle_bands(self, params, noisy, clean, face) -> jax.Array:
        """Enhanced ``[B, samples]`` of ``noisy [B, samples]`` with the band IBM of
        ``clean`` as the lip band mask (a perfect lip net); ``params`` None opens the gate
        (the ceiling of the band mask itself, whatever the gate learned)."""
        spec = self.audio.spectrum(noisy)
        bands = self.band_target(clean)
        mask = self.masks_from_bands(params, spec, bands, face)["mask"]
        return self.audio.resynthesise(spec, mask, noisy.shape[-1])

    # --- the Task protocol -----------------------------------------------------------------

    def init_model(self, rng: jax.Array):
        frames = 1 + self.config.data.num_samples // self.hop
        lips = jnp.zeros((1, frames, *self.crop_shape), jnp.float32)
        face = jnp.ones((1, frames), bool)
        if self.config.model.net == "lips":
            return self.lip_net.init(rng, lips, face)["params"], {}
        inputs = jnp.zeros((1, frames, 3 * self.n_bands), jnp.float32)
        return self.gate_net.init(rng, inputs)["params"], {}

    def _lips_metrics(self, params, batch):
        target = self.band_target(batch["clean"])
        logits = self.lip_net.apply({"params": params}, batch["lips"], batch["face"])
        weight = jnp.broadcast_to(batch["face"][..., None], target.shape)
        total = jnp.maximum(weight.sum(), 1.0)
        bce = (binary_cross_entropy(logits, target) * weight).sum() / total
        correct = ((logits > 0) == (target > 0.5)) * weight
        return bce, {"band_bce": bce, "band_accuracy": correct.sum() / total}

    def _gate_metrics(self, params, batch):
        noisy, clean = batch["mixture"], batch["clean"]
        spec = self.audio.spectrum(noisy)
        outputs = self.masks_from_spectrum(params, spec, batch["lips"], batch["face"])
        target = self.audio.ideal_mask(clean, noisy - clean)
        weights = self.audio.bin_weights(spec)
        loss = mask_mse(outputs["mask"], target, weights).mean()
        metrics = {
            "mask_mse": loss,
            "audio_mask_mse": mask_mse(outputs["audio"], target, weights).mean(),
            "gate_mean": outputs["gate"].mean(),
        }
        return loss, metrics, outputs["mask"], spec

    def loss_fn(self, params, model_state, batch, rng):
        del rng  # deterministic nets
        if self.config.model.net == "lips":
            loss, metrics = self._lips_metrics(params, batch)
        else:
            loss, metrics, _, _ = self._gate_metrics(params, batch)
        return loss, (metrics, model_state)

    def eval_fn(self, params, model_state, batch):
        if self.config.model.net == "lips":
            return self._lips_metrics(params, batch)[1]
        _, metrics, mask, spec = self._gate_metrics(params, batch)
        enhanced = self.audio.resynthesise(spec, mask, batch["mixture"].shape[-1])
        metrics["si_sdr"] = si_snr(enhanced, batch["clean"]).mean()
        return metrics

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def valid_batches(self) -> list[dict]:
        return self.data.valid_batches()

    def evaluate(self, params, model_state, split: str) -> Evaluation:
        """The lips net: band accuracy, precision, recall and F1 on frames with a face (items:
        each clip's accuracy); the gate: the system table of the module docstring (items: each
        system's quality scores per clip, with its condition and SNR)."""
        cfg = self.config.eval
        if cfg.size % cfg.batch_size:
            raise ConfigError(f"eval.size={cfg.size} must be a multiple of eval.batch_size")
        examples = self.data.test_items(split, cfg.grid, cfg.size, cfg.seconds)
        if self.config.model.net == "lips":
            return self._evaluate_lips(params, batch_examples(examples, cfg.batch_size))
        examples = with_other_video(examples, len(cfg.grid))
        return self._evaluate_gate(params, batch_examples(examples, cfg.batch_size))

    def _evaluate_lips(self, params, batches) -> Evaluation:
        predict = jax.jit(lambda b: (self.lip_mask(params, b["lips"], b["face"]) > 0.5,
                                     self.band_target(b["clean"]) > 0.5))  # fmt: skip
        counts = np.zeros((2, 2))  # [predicted, target]
        clip_accuracy, metadata = [], []
        for batch in batches:
            predicted, target = map(np.asarray, predict(batch))
            face = batch["face"][..., None].astype(bool) & np.ones_like(target)
            for p in (0, 1):
                for t in (0, 1):
                    counts[p, t] += np.sum(face & (predicted == p) & (target == t))
            right = np.sum(face & (predicted == target), axis=(1, 2))
            clip_accuracy.extend(right / np.maximum(face.sum(axis=(1, 2)), 1))
            metadata += _clip_metadata(batch)
        true_pos, total = counts[1, 1], counts.sum()
        precision = true_pos / max(counts[1].sum(), 1)
        recall = true_pos / max(counts[:, 1].sum(), 1)
        table = [
            {
                "system": "lip net",
                "face frames × bands": int(total),
                "active share": counts[:, 1].sum() / max(total, 1),
                "accuracy": (counts[0, 0] + true_pos) / max(total, 1),
                "precision": precision,
                "recall": recall,
                "F1": 2 * precision * recall / max(precision + recall, 1e-12),
                "params": param_count(params),
            }
        ]
        items = item_rows("lip net", {"accuracy": np.asarray(clip_accuracy)}, metadata)
        return Evaluation(table, items, ("condition", "SNR (dB)"))

    def _evaluate_gate(self, params, batches) -> Evaluation:
        audio_params, audio_state = self.audio_variables
        systems = {
            "audio-only (Net 1)": jax.jit(
                lambda b: self.audio.enhance(audio_params, audio_state, b["mixture"])
            ),
            "audio-visual": jax.jit(
                lambda b: self.enhance_frames(params, b["mixture"], b["lips"], b["face"])
            ),
            "AV, oracle bands": jax.jit(
                lambda b: self.enhance_with_oracle_bands(
                    params, b["mixture"], b["clean"], b["face"]
                )
            ),
            "AV, oracle bands, gate open": jax.jit(
                lambda b: self.enhance_with_oracle_bands(None, b["mixture"], b["clean"], b["face"])
            ),
            "AV, other clip's video": jax.jit(
                lambda b: self.enhance_frames(
                    params, b["mixture"], b["other_lips"], b["other_face"]
                )
            ),
            "AV, video blanked": jax.jit(
                lambda b: self.enhance_frames(
                    params, b["mixture"], jnp.zeros_like(b["lips"]), jnp.zeros_like(b["face"])
                )
            ),
            "oracle IRM": jax.jit(
                lambda b: self.audio.resynthesise(
                    self.audio.spectrum(b["mixture"]),
                    self.audio.ideal_mask(b["clean"], b["mixture"] - b["clean"]),
                    b["mixture"].shape[-1],
                )
            ),
        }
        outputs = {"noisy": [b["mixture"] for b in batches]}
        for name, run in systems.items():
            outputs[name] = [np.asarray(run(b)) for b in batches]
        joined = {name: np.concatenate(parts) for name, parts in outputs.items()}
        blank_equal = np.array_equal(joined["AV, video blanked"], joined["audio-only (Net 1)"])
        clean, noisy = (np.concatenate([b[k] for b in batches]) for k in ("clean", "mixture"))
        snrs, condition = (np.concatenate([b[k] for b in batches]) for k in ("snr_db", "condition"))
        face = {
            key: np.concatenate([b[key].mean(axis=-1) for b in batches])
            for key in ("face", "other_face")
        }
        metadata = [meta for batch in batches for meta in _clip_metadata(batch)]
        rows, items = [], []
        for name, estimate in joined.items():
            scores = quality_scores(estimate, clean, noisy, self.sample_rate)
            items += item_rows(name, scores, metadata)
            for cond_label, in_condition in [("all", np.ones(len(clean), bool))] + [
                (c, condition == i) for i, c in enumerate(CONDITIONS)
            ]:
                groups = snr_groups(snrs[in_condition]) if cond_label != "all" else [("all", None)]
                for snr_label, member in groups:
                    chosen = np.flatnonzero(in_condition)
                    chosen = chosen if member is None else chosen[member]
                    row = {
                        "system": name,
                        "condition": cond_label,
                        "SNR (dB)": snr_label,
                        "clips": len(chosen),
                        **{k: float(v[chosen].mean()) for k, v in scores.items()},
                        "face share": _face_share(name, face, chosen),
                        "= audio-only": blank_equal if name == "AV, video blanked" else None,
                    }
                    rows.append(row)
        return Evaluation(rows, items, ("condition", "SNR (dB)"))


def _face_share(system: str, face: dict[str, np.ndarray], chosen: np.ndarray) -> float:
    """The share of frames with a face in the video that ``system`` sees."""
    if system == "AV, video blanked":
        return 0.0
    return float(
        face["other_face" if system == "AV, other clip's video" else "face"][chosen].mean()
    )


def with_other_video(examples: list[dict], shift: int) -> list[dict]:
    """``examples`` each with the mouth track (``other_lips``, ``other_face``) of the first
    example ``shift`` or more places on (cyclically) whose clip (``info["path"]``) is
    another: the mismatched-video test, where the gate must fall back to audio only."""
    paths = [example["info"]["path"] for example in examples]
    if len(set(paths)) < 2:
        raise ConfigError("the mismatched-video test needs test examples of two clips or more")
    out = []
    for i, example in enumerate(examples):
        j = next(
            (i + k) % len(examples)
            for k in range(shift, shift + len(examples))
            if paths[(i + k) % len(examples)] != paths[i]
        )
        out.append(
            {**example, "other_lips": examples[j]["lips"], "other_face": examples[j]["face"]}
        )
    return out


def _clip_metadata(batch: dict) -> list[dict]:
    """Each test clip's condition and SNR (dB) in a batch of ``AVData.fixed_set``."""
    return [
        {"condition": CONDITIONS[int(c)], "SNR (dB)": f"{float(snr):g}"}
        for c, snr in zip(batch["condition"], batch["snr_db"], strict=True)
    ]

"""Speaker verification: a ResNet with attentive statistics pooling trained with AAM-softmax,
optionally distilled from a frozen i-vector stage.

Training: 2 s augmented crops of the training speakers (``jaxspeech.data.UtteranceData``:
speed, real noise, real reverberation) -> :class:`jaxspeech.models.speaker.SpeakerNet` ->
AAM-softmax over the training speakers (scale 32, margin 0.2 reached by a linear warm-up). With
``model.teacher`` naming a frozen i-vector stage the stage reads, the loss is
``AAM + distill_weight · MSE(P · embedding, i-vector)``, ``P`` a learned linear projection to
the i-vector size and the i-vector the teacher's ``embed`` of the same crop (whitened,
length-normalised); ``distill_weight = 0`` is the plain student.

A frozen i-vector stage offers ``embed(params, model_state, waveforms [B, S], lengths [B]) ->
[B, D]``, ``score(params, model_state, enrol [N, D], test [N, D]) -> [N]`` (PLDA) and
``ivector_dim``; this task offers the same ``embed``.

Evaluation: trial lists in the VoxCeleb format (``1 a.wav b.wav``, paths below the data root)
are made deterministically from up to ``eval.utterances_per_speaker`` utterances of each
speaker of a split (every pair) and written to ``WORKDIR/trials/<split>.txt``; any other list
is scored with ``evaluate.py --trials FILE``. Rows: EER (%) and minDCF (p_target 0.01 and 0.05) for
cosine scoring and adaptive s-norm (AS-norm, the cohort being the mean embeddings of the
training speakers), and with ``eval.references`` the frozen i-vector teacher with cosine and
PLDA scoring on the same trials. The EER threshold of the cosine scores on the validation
trials is written to ``WORKDIR/verification.json`` for ``jaxspeech verify``.

Validation during training (``eval_fn``): the gap between the mean cosine of same-speaker and
different-speaker pairs within fixed batches of validation crops (higher is better).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import sys
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import files
from jaxspeech import workdir as names
from jaxspeech.data.corpus import data_path, resolve_data_root
from jaxspeech.data.mixing import AudioCache, crop_image, draw_start
from jaxspeech.data.utterances import (
    EVAL_SPLITS,
    UtteranceData,
    UtteranceDataConfig,
    official_trials,
)
from jaxspeech.errors import AudioFileError, ConfigError
from jaxspeech.evaluation import Evaluation
from jaxspeech.evaluation.verification import (
    P_TARGETS,
    cosine_scores,
    embed_waveforms,
    error_rates,
    missing_files,
    pair_trials,
    read_trials,
    trial_items,
    unit,
    write_trials,
)
from jaxspeech.inference.speaker import MIN_SECONDS, SpeakerEmbedder
from jaxspeech.losses import aam_softmax
from jaxspeech.metrics.verification import adaptive_snorm, eer
from jaxspeech.models.speaker import RESNET34, SpeakerNetConfig, features
from jaxspeech.train import task as base
from jaxspeech.train.config import Config
from jaxspeech.train.task import Capabilities, TrainedRun, frozen_run, refuse_frozen
from jaxspeech.train.tasks import ivector


@dataclasses.dataclass(frozen=True)
class SpeakerModelConfig:
    """The student and its training objective.

    Attributes:
      net: the ResNet-ASP network.
      num_speakers: classes of the AAM-softmax: the number of training speakers of the data
        section (checked when the data are read; the error says the right number).
      aam_scale, aam_margin: AAM-softmax scale ``s`` and final margin ``m`` (radians).
      margin_warmup: ``(start, end)`` steps: margin 0 before ``start``, rising linearly to
        ``aam_margin`` at ``end``.
      teacher: the frozen i-vector stage to distil from, or None.
      distill_weight: ``λ`` of ``AAM + λ · MSE``; needs a teacher when positive.
    """

    net: SpeakerNetConfig = RESNET34
    num_speakers: int = 0
    aam_scale: float = 32.0
    aam_margin: float = 0.2
    margin_warmup: tuple[int, int] = (0, 0)
    teacher: str | None = None
    distill_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class SpeakerEvalConfig:
    """The verification table.

    Attributes:
      system: the label of this model's rows.
      utterances_per_speaker: utterances per speaker of a split in its trial list.
      max_seconds: evaluation utterances are cut to their first ``max_seconds``.
      batch_size: utterances per embedding call (padded to ``bucket_seconds`` multiples).
      bucket_seconds: padded lengths are multiples of this (few compiled shapes).
      cohort_utterances_per_speaker: training utterances per cohort speaker (AS-norm).
      asnorm_top_k: cohort scores per side in AS-norm.
      p_targets: the priors of the minDCF columns.
      references: add the frozen teacher's rows (i-vector with cosine and PLDA scoring).
      valid_per_speaker: crops per validation speaker in the fixed validation batches.
    """

    system: str = "ResNet-ASP"
    utterances_per_speaker: int = 6
    max_seconds: float = 10.0
    batch_size: int = 16
    bucket_seconds: float = 1.0
    cohort_utterances_per_speaker: int = 3
    asnorm_top_k: int = 100
    p_targets: tuple[float, ...] = P_TARGETS
    references: bool = False
    valid_per_speaker: int = 2


@dataclasses.dataclass(frozen=True)
class SpeakerConfig(Config):
    """A speaker-verification recipe: the student, the labelled utterances and the table."""

    task: str = "speaker"
    model: SpeakerModelConfig = SpeakerModelConfig()
    data: UtteranceDataConfig = dataclasses.field(default_factory=UtteranceDataConfig)
    eval: SpeakerEvalConfig = SpeakerEvalConfig()


def margin_at(step: jax.Array, margin: float, warmup: tuple[int, int]) -> jax.Array:
    """The AAM margin at ``step``: 0 before ``warmup[0]``, linear to ``margin`` at
    ``warmup[1]``, then ``margin``."""
    start, end = warmup
    progress = (jnp.asarray(step, jnp.float32) - start) / max(end - start, 1)
    return margin * jnp.clip(progress, 0.0, 1.0) if end > 0 else jnp.float32(margin)


def distillation_mse(projected: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error over the last axis, ``[..., D] -> [...]`` (float32)."""
    diff = projected.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(jnp.square(diff), axis=-1)


class Task(SpeakerEmbedder, base.Task):
    """Speaker verification (see the module docstring); the model is its
    :class:`~jaxspeech.inference.speaker.SpeakerEmbedder`."""

    valid_metric = "cosine_gap"
    valid_mode = "max"
    #: ``evaluate`` takes ``workdir`` and ``trials`` (``jaxspeech.train.restore.evaluate``).
    capabilities = Capabilities(scores_trials=True)

    def __init__(self, config, frozen: Mapping[str, TrainedRun] | None = None) -> None:
        self.config = config
        model = config.model
        if model.num_speakers < 2:
            raise ConfigError(
                f"model.num_speakers={model.num_speakers}; set it to the number of training "
                "speakers (at least 2; a wrong number is reported when the data are read)"
            )
        if model.distill_weight < 0:
            raise ConfigError(f"model.distill_weight={model.distill_weight} must be >= 0")
        if model.distill_weight > 0 and model.teacher is None:
            raise ConfigError(
                f"model.distill_weight={model.distill_weight} needs model.teacher, the frozen "
                "i-vector stage to distil from; set it or set model.distill_weight=0"
            )
        super().__init__(model, config.data.sample_rate, config.train.dtype)
        self.teacher = self._teacher(frozen or {})

    def _teacher(self, frozen: Mapping[str, TrainedRun]) -> TrainedRun | None:
        """The frozen i-vector stage ``model.teacher`` with host params, or None."""
        name = self.config.model.teacher
        if name is None:
            refuse_frozen(frozen, "speaker without a teacher")
            return None
        run = frozen_run(frozen, name, f"model.teacher={name!r}")
        if not isinstance(run.task, ivector.Task):
            raise ConfigError(
                f"model.teacher={name!r}: the stage in {run.workdir} is a "
                f"{run.task.config.task!r} run; name an i-vector stage"
            )
        return dataclasses.replace(
            run, params=jax.device_get(run.params), model_state=jax.device_get(run.model_state)
        )

    @functools.cached_property
    def data(self) -> UtteranceData:
        """The corpus splits, label map and training stream, read on first use."""
        data = UtteranceData(self.config.data, self.config.train.batch_size)
        if data.num_speakers != self.config.model.num_speakers:
            raise ConfigError(
                f"the data section has {data.num_speakers} training speakers but "
                f"model.num_speakers={self.config.model.num_speakers}; set "
                f"model.num_speakers={data.num_speakers}"
            )
        return data

    # --- numerics (pure jnp) ---------------------------------------------------------------

    def init_model(self, rng: jax.Array):
        net_key, head_key, projection_key = jax.random.split(rng, 3)
        model = self.config.model
        wav = jnp.zeros((1, self.sample_rate), jnp.float32)
        feats, mask = features(wav, jnp.full((1,), wav.shape[1]), model.net, self.sample_rate)
        variables = self.net.init(net_key, feats, mask, train=False)
        dim = model.net.embed_dim
        params = {
            "net": variables["params"],
            # class centres, as WeSpeaker's ArcMarginProduct: Xavier-uniform
            "classifier": jax.nn.initializers.xavier_uniform()(head_key, (dim, model.num_speakers)),
        }
        if self.teacher is not None:
            shape = (dim, self.teacher.task.ivector_dim)
            params["projection"] = {
                "kernel": jax.nn.initializers.lecun_normal()(projection_key, shape),
                "bias": jnp.zeros(shape[1:]),
            }
        model_state = {"batch_stats": variables["batch_stats"], "step": jnp.zeros((), jnp.int32)}
        return params, model_state

    def loss_fn(self, params, model_state, batch, rng):
        del rng  # deterministic model
        model = self.config.model
        wav = batch["audio"]
        lengths = jnp.full(wav.shape[:1], wav.shape[1], jnp.int32)
        emb, updates = self.apply(params, model_state, wav, lengths, train=True)
        margin = margin_at(model_state["step"], model.aam_margin, model.margin_warmup)
        aam = aam_softmax(emb, params["classifier"], batch["speaker"], margin, model.aam_scale)
        metrics = {"aam": aam.mean(), "margin": margin}
        loss = metrics["aam"]
        if self.teacher is not None:
            teacher = self.teacher
            targets = teacher.task.embed(teacher.params, teacher.model_state, wav, lengths)
            projection = params["projection"]
            projected = emb @ projection["kernel"] + projection["bias"]
            metrics["distill_mse"] = distillation_mse(
                projected, jax.lax.stop_gradient(targets)
            ).mean()
            loss = loss + model.distill_weight * metrics["distill_mse"]
        new_state = {"batch_stats": updates["batch_stats"], "step": model_state["step"] + 1}
        return loss, (metrics, new_state)

    def eval_fn(self, params, model_state, batch):
        emb = self.embed(params, model_state, batch["audio"], batch["lengths"])
        unit = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        cosine = unit @ unit.T
        labels = batch["speaker"]
        off_diagonal = ~jnp.eye(labels.shape[0], dtype=bool)
        same = (labels[:, None] == labels[None, :]) & off_diagonal
        different = (labels[:, None] != labels[None, :]) & off_diagonal

        def mean_over(where):
            return jnp.sum(jnp.where(where, cosine, 0.0)) / jnp.maximum(where.sum(), 1)

        return {"cosine_gap": mean_over(same) - mean_over(different)}

    # --- data ------------------------------------------------------------------------------

    def train_dataset(self, process_index: int, process_count: int, seed: int):
        return self.data.train_dataset(process_index, process_count, seed)

    def valid_batches(self) -> list[dict]:
        """Fixed crops (the training length) of ``eval.valid_per_speaker`` utterances of each
        validation speaker, speaker by speaker, in whole global batches (the rest is left
        out)."""
        cfg, batch_size = self.config, self.config.train.batch_size
        length = cfg.data.num_samples
        chosen = self.eval_utterances("valid", cfg.eval.valid_per_speaker)
        cache = AudioCache(self.sample_rate)
        examples = []
        for index, (utt, label) in enumerate(chosen):
            wav = cache(utt.path)
            rng = np.random.default_rng((cfg.data.split_seed, EVAL_SPLITS["valid"], index))
            start = max(
                draw_start(rng, wav, length, utt.path, cfg.data.silent_crop_db, 1), 0
            )  # a short utterance starts at 0, its length says where it ends
            crop = crop_image(wav, start, length).astype(np.float32)
            examples.append((crop, min(len(wav) - start, length), label))
        count = len(examples) // batch_size * batch_size
        if count == 0:
            raise ConfigError(
                f"{len(examples)} validation crops do not fill one batch of "
                f"train.batch_size={batch_size}; raise eval.valid_per_speaker or the valid share"
            )
        return [
            {
                "audio": np.stack([e[0] for e in examples[i : i + batch_size]]),
                "lengths": np.asarray([e[1] for e in examples[i : i + batch_size]], np.int32),
                "speaker": np.asarray([e[2] for e in examples[i : i + batch_size]], np.int32),
            }
            for i in range(0, count, batch_size)
        ]

    def eval_utterances(self, split: str, per_speaker: int):
        """``[(utterance, speaker label)]``: up to ``per_speaker`` utterances of at least
        ``MIN_SECONDS`` of each speaker of ``split`` (drawn with the split seed), speaker by
        speaker in sorted order."""
        if split not in (*EVAL_SPLITS, "train"):
            raise ConfigError(f"unknown split {split!r}; use train, valid or test")
        by_speaker: dict[str, list] = {}
        for utt in self.data.splits[split]:
            if utt.seconds >= MIN_SECONDS:
                by_speaker.setdefault(utt.speaker, []).append(utt)
        stream = {"train": 0, **EVAL_SPLITS}[split]
        chosen = []
        for label, speaker in enumerate(sorted(by_speaker)):
            utts = by_speaker[speaker]
            rng = np.random.default_rng((self.config.data.split_seed, stream, label))
            picks = sorted(rng.permutation(len(utts))[:per_speaker])
            chosen.extend((utts[i], label) for i in picks)
        return chosen

    # --- evaluation ------------------------------------------------------------------------

    def embed_files(self, params, model_state, paths: Sequence[str], embed=None, desc=None):
        """Embeddings ``[N, D]`` of audio files (cut to ``eval.max_seconds``) with ``embed``
        (default: this model's; a frozen stage's ``embed`` with its params bound works too)."""
        cfg = self.config.eval
        cache = AudioCache(self.sample_rate)
        limit = round(cfg.max_seconds * self.sample_rate)
        waveforms = [cache(path)[:limit] for path in paths]
        if embed is None:
            embed = functools.partial(self.embed, params, model_state)
        bucket = round(cfg.bucket_seconds * self.sample_rate)
        return embed_waveforms(jax.jit(embed), waveforms, cfg.batch_size, bucket, desc)

    def evaluate(
        self, params, model_state, split: str, workdir=None, trials=None, step=None
    ) -> Evaluation:
        """The verification table for ``split``'s trials (or the list ``trials``; with
        ``data.corpus``, the test split's are its official list, e.g. VoxCeleb1-O's
        ``veri_test2``), see the module docstring; items: every system's score of every
        trial. With ``workdir``, the trial list is written to ``workdir/trials/<split or
        list>.txt`` and the validation threshold, with the checkpoint ``step`` it was chosen
        for, to ``workdir/verification.json``."""
        root = resolve_data_root(self.config.data.root)
        corpus = self.config.data.corpus
        if trials is None and split == "test" and corpus is not None:
            name, listed = official_trials(data_path(corpus, root))
            if workdir is not None:
                write_trials(names.trials_path(workdir, name), listed)
        elif trials is None:
            chosen = self.eval_utterances(split, self.config.eval.utterances_per_speaker)
            paths = [utt.path for utt, _ in chosen]
            pairs = pair_trials([label for _, label in chosen])
            listed = [(label, paths[i], paths[j]) for label, i, j in pairs]
            if workdir is not None:
                relative = [
                    (label, _relative(a, root), _relative(b, root)) for label, a, b in listed
                ]
                write_trials(names.trials_path(workdir, split), relative)
            name = split
        else:
            listed = [
                (label, str(data_path(a, root)), str(data_path(b, root)))
                for label, a, b in read_trials(trials)
            ]
            name = pathlib.Path(trials).name
        evaluation = self._score_systems(params, model_state, listed, name)
        if workdir is not None:
            self._write_threshold(params, model_state, pathlib.Path(workdir), step)
        return evaluation

    def _score_systems(self, params, model_state, listed, name: str) -> Evaluation:
        """Every system's row and per-trial items on the trials ``listed``; a trial that
        names a missing file is counted (``missing trials``), named in its items and left
        out of the rates."""
        missing = missing_files(listed)
        absent = set(missing)
        scored = np.asarray([a not in absent and b not in absent for _, a, b in listed])
        if not scored.any():
            raise AudioFileError(
                f"{name}: every trial names a missing file ({len(missing)} missing, first "
                f"{missing[0]}); check the trial list's paths and the data root"
            )
        if missing:
            print(
                f"warning: {len(listed) - int(scored.sum())} of the {len(listed)} trials of "
                f"{name} name {len(missing)} missing files (first: {missing[0]}); they are "
                "counted in 'missing trials', named in the items and not scored",
                file=sys.stderr,
                flush=True,
            )
        present = [trial for trial, ok in zip(listed, scored, strict=True) if ok]
        paths = sorted({p for _, a, b in present for p in (a, b)})
        index = {path: i for i, path in enumerate(paths)}
        labels = np.asarray([label for label, _, _ in present])
        left = np.asarray([index[a] for _, a, _ in present])
        right = np.asarray([index[b] for _, _, b in present])
        emb = self.embed_files(params, model_state, paths, desc=f"embedding {name}")
        cohort = self.cohort(params, model_state)
        rows, items = [], []

        def row(system: str, scoring: str, scores: np.ndarray) -> dict:
            every = np.full(len(listed), np.nan)
            every[scored] = scores
            items.extend(trial_items(f"{system} + {scoring}", listed, every, missing))
            return {
                "system": f"{system} + {scoring}",
                "trial list": name,
                "trials": len(listed),
                "missing trials": len(listed) - int(scored.sum()),
                "target trials": int(labels.sum()),
                **error_rates(scores, labels, self.config.eval.p_targets),
            }

        raw = cosine_scores(emb[left], emb[right])
        cohort_scores = unit(emb) @ unit(cohort).T
        normed = adaptive_snorm(
            raw, cohort_scores[left], cohort_scores[right], self.config.eval.asnorm_top_k
        )
        rows += [
            row(self.config.eval.system, "cosine", raw),
            row(self.config.eval.system, "AS-norm", normed),
        ]
        if self.config.eval.references and self.teacher is not None:
            teacher = self.teacher
            embed = functools.partial(teacher.task.embed, teacher.params, teacher.model_state)
            vectors = self.embed_files(None, None, paths, embed, desc=f"i-vectors {name}")
            plda = teacher.task.score(
                teacher.params, teacher.model_state, vectors[left], vectors[right]
            )
            rows += [
                row("i-vector", "cosine", cosine_scores(vectors[left], vectors[right])),
                row("i-vector", "PLDA", np.asarray(plda, np.float64)),
            ]
        # a missing trial's NaN score would make its label group's mean NaN
        return Evaluation(rows, items, () if missing else ("label",))

    def cohort(self, params, model_state) -> np.ndarray:
        """Mean unit-length embeddings ``[n_train_speakers, D]`` of the training speakers
        (``eval.cohort_utterances_per_speaker`` utterances each), the AS-norm cohort."""
        chosen = self.eval_utterances("train", self.config.eval.cohort_utterances_per_speaker)
        emb = unit(
            self.embed_files(params, model_state, [u.path for u, _ in chosen], desc="cohort")
        )
        labels = np.asarray([label for _, label in chosen])
        return np.stack([emb[labels == k].mean(0) for k in np.unique(labels)])

    def _write_threshold(self, params, model_state, workdir: pathlib.Path, step) -> None:
        """The EER threshold of cosine scores on the validation trials, and the checkpoint
        ``step`` of ``params``, in ``workdir/verification.json``."""
        chosen = self.eval_utterances("valid", self.config.eval.utterances_per_speaker)
        emb = self.embed_files(params, model_state, [u.path for u, _ in chosen], desc="valid")
        pairs = np.asarray(pair_trials([label for _, label in chosen]))
        scores = cosine_scores(emb[pairs[:, 1]], emb[pairs[:, 2]])
        rate, threshold = eer(scores, pairs[:, 0])
        record = {
            "threshold": threshold,
            "valid_eer": rate,
            "min_seconds": MIN_SECONDS,
            "checkpoint_step": step,
        }
        files.write_text(workdir / names.VERIFICATION, json.dumps(record, indent=2) + "\n")

    # --- files -----------------------------------------------------------------------------


def _relative(path: str, root: pathlib.Path) -> str:
    """``path`` relative to the data root when below it, else absolute."""
    try:
        return str(pathlib.Path(path).absolute().relative_to(root))
    except ValueError:
        return str(pathlib.Path(path).absolute())

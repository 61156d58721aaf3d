"""Speaker embeddings: the embedder shared by training and inference
(:class:`SpeakerEmbedder`, recordings of any length :func:`embed_waveforms`), and the loaded
model (:class:`Speaker`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from jaxspeech import audio
from jaxspeech.errors import TooShortError
from jaxspeech.inference.model import LoadedModel, waveform_rows
from jaxspeech.models.speaker import SpeakerNet, features

#: Recordings shorter than this are not embedded (refused by the CLI, left out of trials).
MIN_SECONDS = 0.5
#: The decision threshold of ``jaxspeech verify``, written into the workdir by evaluation.
VERIFICATION_FILE = "verification.json"


def cosine_scores(enrol: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Row-wise cosine ``[N]`` of ``enrol [N, D]`` and ``test [N, D]``."""
    enrol, test = unit_rows(enrol), unit_rows(test)
    return np.sum(enrol * test, axis=-1)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x [..., D]`` scaled to unit length along the last axis (float64)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embed_waveforms(
    embed: Callable[[np.ndarray, np.ndarray], jax.Array],
    waveforms: Sequence[np.ndarray],
    batch_size: int,
    bucket: int,
    desc: str | None = None,
    max_batch_samples: int | None = None,
) -> np.ndarray:
    """Embeddings ``[N, D]`` float32 of recordings of any lengths, in their order.

    Recordings are sorted by length and embedded ``batch_size`` at a time by ``embed(wav [B,
    S], lengths [B])``, zero-padded to a multiple of ``bucket`` samples (a short last batch is
    filled with copies of its first recording), so few shapes are compiled. With
    ``max_batch_samples``, batches of long recordings hold fewer rows (at least one) so that
    ``rows · padded length`` stays within it. ``desc``: show a progress bar with this label.
    """
    order = [int(i) for i in np.argsort([len(w) for w in waveforms], kind="stable")]
    out: list[np.ndarray | None] = [None] * len(waveforms)
    bar = tqdm(total=len(order), desc=desc, unit="utt", disable=desc is None, leave=False)
    while order:
        width = -(-len(waveforms[order[min(batch_size, len(order)) - 1]]) // bucket) * bucket
        rows = batch_size
        if max_batch_samples is not None and rows * width > max_batch_samples:
            rows = max(1, max_batch_samples // width)
            width = -(-len(waveforms[order[min(rows, len(order)) - 1]]) // bucket) * bucket
        members, order = order[:rows], order[rows:]
        chosen = [*members, *[members[0]] * (rows - len(members))]
        lengths = np.asarray([len(waveforms[i]) for i in chosen], np.int32)
        batch = np.zeros((rows, width), np.float32)
        for row, index in enumerate(chosen):
            batch[row, : lengths[row]] = waveforms[index]
        vectors = np.asarray(embed(batch, lengths), np.float32)
        for row, index in enumerate(members):
            out[index] = vectors[row]
        bar.update(len(members))
    bar.close()
    return np.stack(out)


def prepare_recording(wav: np.ndarray, sample_rate: int, model_rate: int, source="audio"):
    """One recording (``[samples]`` or ``[channels, samples]``, any rate) as a model's input
    ``[samples']`` float32, mono (channel mean) at ``model_rate``.

    Raises ``EmptyAudioError`` / ``NonFiniteAudioError`` (``audio.validate``) and
    ``TooShortError`` under ``MIN_SECONDS``, naming ``source``.
    """
    wav = audio.validate(np.asarray(wav, np.float32), source)
    if wav.ndim == 2:
        wav = wav.mean(axis=0)
    wav = audio.resample(audio.require_mono(wav, source), sample_rate, model_rate)
    if wav.shape[-1] < round(MIN_SECONDS * model_rate):
        raise TooShortError(
            f"{source}: {wav.shape[-1] / model_rate:.2f} s of audio; speaker embeddings need "
            f"at least {MIN_SECONDS} s; pass a longer recording"
        )
    return wav


class SpeakerEmbedder:
    """The ResNet speaker net on filter-bank features of padded waveforms, built from the
    model config (``SpeakerModelConfig``) alone; the speaker task is one.

    Attributes: sample_rate; net: :class:`jaxspeech.models.speaker.SpeakerNet`, features
    ``[B, frames, mels]`` and frame mask ``[B, frames]`` -> embeddings ``[B, D]``.
    """

    def __init__(self, model_config, sample_rate: int, dtype=np.float32) -> None:
        self.sample_rate = sample_rate
        self.net_config = model_config.net
        self.net = SpeakerNet(model_config.net, dtype)

    def apply(self, params, model_state, wav, lengths, train: bool):
        """``(embeddings [B, D], new batch stats or None)`` of ``wav [B, S]`` whose first
        ``lengths [B]`` samples are the recordings."""
        feats, mask = features(wav, lengths, self.net_config, self.sample_rate)
        variables = {"params": params["net"], "batch_stats": model_state["batch_stats"]}
        if not train:
            return self.net.apply(variables, feats, mask, train=False), None
        return self.net.apply(variables, feats, mask, train=True, mutable=["batch_stats"])

    def embed(self, params, model_state, wav: jax.Array, lengths: jax.Array) -> jax.Array:
        """Embeddings ``[B, embed_dim]`` of ``wav [B, S]`` whose first ``lengths [B]`` samples
        are the recordings (the rest is padding and is ignored)."""
        return self.apply(params, model_state, wav, lengths, train=False)[0]

    def prepare_waveform(self, wav: np.ndarray, sample_rate: int, source="audio") -> np.ndarray:
        """``prepare_recording`` at this model's rate."""
        return prepare_recording(wav, sample_rate, self.sample_rate, source)


class Speaker(LoadedModel):
    """A trained speaker-embedding run (``configs/speaker/*``), loaded by
    :func:`jaxspeech.load`.

    ``embed(wave)`` maps recordings ``[..., T]`` at ``sample_rate`` (at least
    ``MIN_SECONDS``) to embeddings ``[..., D]``; ``embed_recordings`` embeds a list of
    recordings of any lengths, batched by length; ``score(a, b)`` is the cosine of
    embeddings ``[..., D]``, compared with ``threshold`` by ``jaxspeech verify``.

    Attributes (besides :class:`LoadedModel`'s):
      core: the :class:`SpeakerEmbedder`. module: the speaker net, features
        ``[B, frames, mels]`` and mask ``[B, frames]`` -> ``[B, D]``. variables:
        ``{"params", "batch_stats"}`` for ``module.apply(..., train=False)``.
      threshold: the same-speaker threshold chosen on the validation trials by evaluate.py
        (``verification.json``), or None before the run is evaluated.
    """

    system = "speaker"

    def __init__(self, workdir, config, step, params, model_state) -> None:
        super().__init__(workdir, config, step, config.data.sample_rate)
        self.core = SpeakerEmbedder(config.model, self.sample_rate, config.train.dtype)
        self.module = self.core.net
        self.variables = {"params": params["net"], "batch_stats": model_state["batch_stats"]}
        self._model = ({"net": params["net"]}, {"batch_stats": model_state["batch_stats"]})
        self._embed = jax.jit(lambda wav, lengths: self.core.embed(*self._model, wav, lengths))
        record = workdir / VERIFICATION_FILE
        self.threshold = (
            float(json.loads(record.read_text())["threshold"]) if record.is_file() else None
        )

    def embed(self, wave) -> np.ndarray:
        """Embeddings ``[..., D]`` float32 of recordings ``wave [..., T]``."""
        rows, lead = waveform_rows(wave)
        lengths = np.full(rows.shape[0], rows.shape[-1], np.int32)
        return np.asarray(self._embed(rows, lengths), np.float32).reshape(*lead, -1)

    def embed_recordings(self, waves: Sequence[np.ndarray], batch_size: int = 8, desc=None):
        """Embeddings ``[N, D]`` of ``N`` recordings ``[T_i]`` of any lengths
        (``embed_waveforms``: bucketed by ``eval.bucket_seconds``, at most ``batch_size ·
        eval.max_seconds`` samples a batch); ``desc``: label of a progress bar."""
        bucket = round(self.config.eval.bucket_seconds * self.sample_rate)
        budget = batch_size * round(self.config.eval.max_seconds * self.sample_rate)
        return embed_waveforms(self._embed, waves, batch_size, bucket, desc, budget)

    @staticmethod
    def score(a, b) -> np.ndarray:
        """Cosine ``[...]`` of embeddings ``a [..., D]`` and ``b [..., D]``."""
        return cosine_scores(a, b)

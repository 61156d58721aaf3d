"""Speaker embeddings: the embedder shared by training and inference
(:class:`SpeakerEmbedder`), and the loaded model (:class:`Speaker`; recordings of any length
through ``jaxspeech.evaluation.verification.embed_waveforms``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import numpy as np

from jaxspeech import audio
from jaxspeech import workdir as names
from jaxspeech.errors import TooShortError
from jaxspeech.evaluation.verification import cosine_scores, embed_waveforms
from jaxspeech.inference.model import LoadedModel, waveform_rows
from jaxspeech.models.speaker import SpeakerNet, features

#: Recordings shorter than this are not embedded (refused by the CLI, left out of trials).
MIN_SECONDS = 0.5


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
      threshold_step: the checkpoint step the threshold was chosen for (None when not
        recorded); a threshold chosen for another checkpoint than ``step`` fits it less well.
    """

    system = "speaker"

    def __init__(self, workdir, config, step, params, model_state) -> None:
        super().__init__(workdir, config, step, config.data.sample_rate)
        self.core = SpeakerEmbedder(config.model, self.sample_rate, config.train.dtype)
        self.module = self.core.net
        self.variables = {"params": params["net"], "batch_stats": model_state["batch_stats"]}
        self._model = ({"net": params["net"]}, {"batch_stats": model_state["batch_stats"]})
        self._embed = jax.jit(lambda wav, lengths: self.core.embed(*self._model, wav, lengths))
        path = workdir / names.VERIFICATION
        record = json.loads(path.read_text()) if path.is_file() else {}
        self.threshold = float(record["threshold"]) if record else None
        self.threshold_step = record.get("checkpoint_step")

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

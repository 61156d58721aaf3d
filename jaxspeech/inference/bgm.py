"""Speech <-> background-music matching: the matcher shared by training and inference
(:class:`MusicMatching`), and the loaded model (:class:`MusicMatcher`)."""

from __future__ import annotations

import jax
import numpy as np

from jaxspeech import audio, dsp
from jaxspeech.data.bgm import fixed_clip
from jaxspeech.dsp.descriptors import describe_fn, feature_names, layout_fingerprint
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.inference.model import LoadedModel, waveform_rows
from jaxspeech.models.bgm import BGMatcher, rank_library


class MusicMatching:
    """Descriptors of a recording's centred clip and the two-tower matcher over them, built
    from the model config (``BGMConfig``) alone; the bgm task is one.

    Attributes: config (the model config), names (descriptor names ``[features]``),
    fingerprint (of the descriptor layout), num_segments, model (:class:`BGMatcher`).
    """

    def __init__(self, model_config, dtype=np.float32) -> None:
        features = model_config.features
        self.model_config = model_config
        self.names = feature_names(features)
        self.fingerprint = layout_fingerprint(features)
        self.num_segments = features.num_segments(model_config.num_samples)
        self.model = BGMatcher(model_config, dtype)
        self._describe = describe_fn(features)

    # --- descriptors --------------------------------------------------------------------

    def clip_descriptors(self, wav: np.ndarray, source: str = "audio") -> np.ndarray:
        """Descriptors ``[segments, features]`` of a whole recording ``[samples]`` at the
        model's rate (its centred clip)."""
        clip = fixed_clip(wav, self.model_config.num_samples, source)
        return np.asarray(self._describe(clip))

    def file_descriptors(self, path: str) -> np.ndarray:
        """Descriptors of an audio file (any rate and channels); AudioError when unreadable."""
        wav, _ = audio.load(path, self.model_config.features.sample_rate)
        return self.clip_descriptors(wav, path)

    def check_layout(self, model_state) -> None:
        """ConfigError when the checkpoint's descriptors are not this config's."""
        trained = int(np.asarray(model_state["layout"]).ravel()[0])
        if trained != self.fingerprint:
            raise ConfigError(
                f"this model was trained on other descriptors (layout {trained:08x}, the config "
                f"gives {self.fingerprint:08x}: families or settings changed); score it with "
                "the model.features it was trained with"
            )

    def check_descriptors(self, descriptors) -> None:
        """ShapeError unless ``descriptors`` is ``[..., segments, len(self.names)]``."""
        shape = np.shape(descriptors)
        if len(shape) < 2 or shape[-1] != len(self.names):
            raise ShapeError(
                f"descriptors have shape {shape}; this model reads [..., segments, "
                f"{len(self.names)}] ({', '.join(self.model_config.features.families)})"
            )

    def normalize(self, descriptors: jax.Array, model_state) -> jax.Array:
        return dsp.normalize(descriptors, model_state["feature_mean"], model_state["feature_std"])

    def embed(self, params, model_state, descriptors: jax.Array) -> jax.Array:
        """Deep features ``[..., embedding_dim]`` of descriptors ``[..., segments, features]``."""
        return self.model.apply(
            {"params": params}, self.normalize(descriptors, model_state), method=BGMatcher.embed
        )

    def rank(self, params, audio_embedding: jax.Array, music_embeddings: jax.Array):
        """Fit scores ``[N]`` of one recording ``[D]`` against N tracks ``[N, D]``."""
        return rank_library(self.model, params, audio_embedding, music_embeddings)


class MusicMatcher(LoadedModel):
    """A trained background-music matcher (``configs/bgm/*``), loaded by
    :func:`jaxspeech.load`.

    ``embed(wave)`` maps recordings (speech or music) ``[..., T]`` at ``sample_rate`` to deep
    features ``[..., D]`` (descriptors of each one's centred clip through the shared tower);
    ``rank(speech, library)`` scores one recording's features ``[D]`` against tracks'
    ``[N, D]`` (higher: a better fit), ``score(speech, music)`` one pair.

    Attributes (besides :class:`LoadedModel`'s):
      core: the :class:`MusicMatching` (descriptors). module: :class:`BGMatcher`, descriptors
        ``[B, segments, features]`` of both sides -> fit logits ``[B]``. variables:
        ``{"params": ...}`` for ``module.apply``. model_state: the descriptor statistics
        ``feature_mean``, ``feature_std`` ``[features]`` and the ``layout`` fingerprint.
    """

    system = "bgm"

    def __init__(self, workdir, config, step, params, model_state) -> None:
        super().__init__(workdir, config, step, config.model.features.sample_rate)
        self.core = MusicMatching(config.model, config.train.dtype)
        self.core.check_layout(model_state)
        self.module, self.variables, self.model_state = (
            self.core.model,
            {"params": params},
            model_state,
        )
        self._embed = jax.jit(lambda descriptors: self.core.embed(params, model_state, descriptors))
        self._rank = jax.jit(lambda speech, library: self.core.rank(params, speech, library))

    def embed(self, wave) -> np.ndarray:
        """Deep features ``[..., D]`` float32 of recordings ``wave [..., T]``."""
        rows, lead = waveform_rows(wave)
        descriptors = np.stack([self.core.clip_descriptors(row) for row in rows])
        return np.asarray(self._embed(descriptors), np.float32).reshape(*lead, -1)

    def embed_file(self, path: str) -> np.ndarray:
        """Deep features ``[D]`` of an audio file at any rate; AudioError when unreadable."""
        return np.asarray(self._embed(self.core.file_descriptors(path)[None]), np.float32)[0]

    def rank(self, speech, library) -> np.ndarray:
        """Fit scores ``[N]`` of a recording's features ``speech [D]`` with the tracks'
        ``library [N, D]``."""
        return np.asarray(self._rank(jax.numpy.asarray(speech), jax.numpy.asarray(library)))

    def score(self, speech, music) -> float:
        """Fit score of a recording's features ``speech [D]`` with one track's ``music [D]``."""
        return float(self.rank(speech, np.asarray(music)[None])[0])

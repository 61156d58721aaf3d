"""Speech <-> background-music fit: a shared convolutional tower and a dense head.

Each clip arrives as normalised descriptors ``[segments, features]``
(``jaxspeech.dsp.descriptors``). One tower (same weights for the speech and the music side)
runs 1-D convolutions over the segments, averages over them and projects to a deep feature
``[embedding_dim]``. The two deep features are concatenated, passed through dense layers
(ReLU) and one output unit whose sigmoid is the predicted fit in [0, 1].

The first dense layer acts on ``[audio; music]``, so it is ``audio @ W_a + music @ W_m + b``
with ``W = [W_a; W_m]``: ranking a library caches every track's ``music @ W_m`` (or its deep
feature) and scores N tracks with one ``[N, D] x [D, H]`` product (:func:`project_music`,
:func:`fit_logits_from_projections`) instead of N forward passes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxspeech.dsp.descriptors import DescriptorConfig
from jaxspeech.errors import ConfigError, ShapeError


@dataclasses.dataclass(frozen=True)
class BGMConfig:
    """The matcher and the descriptors it reads.

    Attributes:
      features: the descriptor families and settings (recorded with the model).
      clip_seconds: each file's centred clip (shorter files are repeated to fill it).
      channels: output channels of each tower convolution (over segments).
      kernel_size: convolution width in segments.
      embedding_dim: the deep feature of one clip.
      hidden: widths of the dense layers after the concatenation (the first is split).
    """

    features: DescriptorConfig = dataclasses.field(default_factory=DescriptorConfig)
    clip_seconds: float = 12.0
    channels: tuple[int, ...] = (64, 64)
    kernel_size: int = 3
    embedding_dim: int = 64
    hidden: tuple[int, ...] = (64,)

    def __post_init__(self):
        if not self.hidden or min(self.hidden) < 1 or min(self.channels, default=1) < 1:
            raise ConfigError("model.hidden needs at least one layer; widths must be >= 1")
        if self.embedding_dim < 1 or self.kernel_size < 1:
            raise ConfigError("model.embedding_dim and model.kernel_size must be >= 1")
        if self.features.num_segments(self.num_samples) < 1:
            raise ConfigError(
                f"model.clip_seconds={self.clip_seconds} is shorter than one segment "
                f"({self.features.segment_seconds} s); lengthen the clip"
            )

    @property
    def num_samples(self) -> int:
        """Samples of a clip at the descriptors' rate."""
        return round(self.clip_seconds * self.features.sample_rate)


class Tower(nn.Module):
    """``[..., segments, features] -> [..., embedding_dim]``: convolutions over segments
    (ReLU, same padding), the mean over segments, a dense projection."""

    config: BGMConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.config.channels:
            x = nn.relu(nn.Conv(width, (self.config.kernel_size,), dtype=self.dtype)(x))
        return nn.Dense(self.config.embedding_dim, dtype=self.dtype)(x.mean(-2))


class BGMatcher(nn.Module):
    """Fit logits ``[...]`` of speech and music descriptors, each ``[..., segments, features]``
    (their segment counts may differ)."""

    config: BGMConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.tower = Tower(self.config, self.dtype)
        self.fuse = nn.Dense(self.config.hidden[0], dtype=self.dtype)
        self.layers = [nn.Dense(w, dtype=self.dtype) for w in self.config.hidden[1:]]
        self.out = nn.Dense(1, dtype=self.dtype)

    def embed(self, descriptors: jax.Array) -> jax.Array:
        """The tower's deep feature ``[..., embedding_dim]``."""
        return self.tower(descriptors)

    def head(self, fused: jax.Array) -> jax.Array:
        """Logits ``[...]`` from the first dense layer's pre-activation ``[..., hidden[0]]``."""
        x = nn.relu(fused)
        for layer in self.layers:
            x = nn.relu(layer(x))
        return self.out(x)[..., 0].astype(jnp.float32)

    def __call__(self, speech: jax.Array, music: jax.Array) -> jax.Array:
        both = jnp.concatenate([self.embed(speech), self.embed(music)], axis=-1)
        return self.head(self.fuse(both))


def _fuse_kernel(params) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(W_a, W_m, b)``: the audio and music halves of the first dense layer and its bias."""
    kernel = params["fuse"]["kernel"]
    half = kernel.shape[0] // 2
    return kernel[:half], kernel[half:], params["fuse"]["bias"]


def project_audio(params, embedding: jax.Array) -> jax.Array:
    """``embedding @ W_a + b``: ``[..., D] -> [..., hidden[0]]``."""
    w_audio, _, bias = _fuse_kernel(params)
    return embedding @ w_audio + bias


def project_music(params, embedding: jax.Array) -> jax.Array:
    """``embedding @ W_m``: ``[..., D] -> [..., hidden[0]]``."""
    _, w_music, _ = _fuse_kernel(params)
    if embedding.shape[-1] != w_music.shape[0]:
        raise ShapeError(
            f"music deep features have {embedding.shape[-1]} values; this model's tower gives "
            f"{w_music.shape[0]}: recompute them with this model"
        )
    return embedding @ w_music


def fit_logits_from_projections(
    model: BGMatcher, params, audio_projection: jax.Array, music_projections: jax.Array
) -> jax.Array:
    """Logits ``[N]`` of one recording's ``project_audio`` ``[H]`` against N tracks'
    ``project_music`` ``[N, H]`` (the rest of the head runs on ``[N, H]``)."""
    fused = music_projections + audio_projection
    return model.apply({"params": params}, fused, method=BGMatcher.head)


def rank_library(
    model: BGMatcher, params, audio_embedding: jax.Array, music_embeddings: jax.Array
) -> jax.Array:
    """Fit scores in [0, 1] ``[N]`` of one recording's deep feature ``[D]`` against N
    tracks' deep features ``[N, D]``: one ``[N, D] x [D, H]`` product and the head."""
    projections = project_music(params, music_embeddings)
    audio = project_audio(params, audio_embedding)
    return jax.nn.sigmoid(fit_logits_from_projections(model, params, audio, projections))

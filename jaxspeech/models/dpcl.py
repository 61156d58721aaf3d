"""Deep clustering (Hershey et al., 2016; Isik et al., 2016): a BLSTM embeds every
time-frequency bin of the mixture; the affinity loss ``‖VVᵀ − YYᵀ‖²`` pulls bins dominated by
the same source together; at inference k-means on the embeddings gives binary masks.

The BLSTM layers are ``jaxspeech.models.rnn.BLSTM``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech import losses
from jaxspeech.dsp import istft, log_magnitude, magnitude, stft
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.masks import apply_mask
from jaxspeech.models.kmeans import kmeans
from jaxspeech.models.rnn import BLSTM

ACTIVATIONS = ("tanh", None)


@dataclasses.dataclass(frozen=True)
class DeepClusteringConfig:
    """Deep clustering: BLSTM embeddings of every T-F bin, k-means into binary masks. Defaults
    follow the papers (4 × 300, D = 40).

    Attributes:
      n_src: number of sources (k-means clusters).
      embedding_dim, hidden, layers: D, BLSTM units per direction, BLSTM layers.
      dropout_rate: dropout after each BLSTM layer in training.
      activation: of the embedding layer, "tanh" or None.
      window_ms, hop_ms: STFT of the features and of the masks.
      silence_db: bins this far below the utterance maximum are weighted out of the loss and
        of the k-means centroids.
      kmeans_iters: Lloyd iterations at inference.
    """

    n_src: int = 2
    embedding_dim: int = 40
    hidden: int = 300
    layers: int = 4
    dropout_rate: float = 0.0
    activation: str | None = "tanh"
    window_ms: float = 32.0
    hop_ms: float = 8.0
    silence_db: float = -40.0
    kmeans_iters: int = 20


class DeepClustering(nn.Module):
    """Deep-clustering embedding network: features ``[..., T, F]`` -> ``V`` ``[..., T, F, D]``.

    ``config.layers`` BLSTM layers of ``config.hidden`` units per direction (dropout
    ``config.dropout_rate`` after each when ``train``), a dense layer to ``F·D``,
    ``config.activation``, and unit L2 normalisation of each bin's ``D``-dimensional embedding
    (in float32). The input is the log-magnitude mixture STFT, normalised by the caller.
    ``dtype`` is the compute dtype of the matmuls (e.g. bfloat16); params stay float32.
    Dropout needs a ``"dropout"`` rng when ``train`` and ``dropout_rate > 0``.
    """

    config: DeepClusteringConfig = DeepClusteringConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
        config = self.config
        if config.activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation={config.activation!r} is unknown; use one of {ACTIVATIONS}"
            )
        features = jnp.asarray(features)
        if features.ndim < 2 or not jnp.issubdtype(features.dtype, jnp.floating):
            raise ShapeError(
                f"features have shape {features.shape} and dtype {features.dtype}; expected real "
                "[..., frames, freqs], e.g. the normalised log_magnitude of the mixture STFT"
            )
        lead, (frames, n_freqs) = features.shape[:-2], features.shape[-2:]
        x = features.reshape(-1, frames, n_freqs).astype(self.dtype)
        for index in range(config.layers):
            x = BLSTM(config.hidden, dtype=self.dtype, name=f"blstm_{index}")(x)
            if config.dropout_rate > 0:
                x = nn.Dropout(config.dropout_rate)(x, deterministic=not train)
        dim = config.embedding_dim
        embedding = nn.Dense(n_freqs * dim, dtype=self.dtype, name="embedding")(x)
        embedding = embedding.astype(jnp.float32)
        if config.activation == "tanh":
            embedding = jnp.tanh(embedding)
        embedding = embedding.reshape(*lead, frames, n_freqs, dim)
        norm = jnp.linalg.norm(embedding, axis=-1, keepdims=True)
        return embedding / jnp.maximum(norm, 1e-12)


def dpcl_targets(source_mags: jax.Array) -> jax.Array:
    """One-hot dominant-source targets: ``[..., S, T, F]`` -> ``Y`` ``[..., T, F, S]`` float32.

    ``Y[..., t, f, s] = 1`` for the source with the largest magnitude in bin ``(t, f)`` (the
    first on ties). Complex STFTs are accepted (their modulus is used).
    """
    if jnp.ndim(source_mags) < 3:
        raise ShapeError(
            f"source_mags has shape {jnp.shape(source_mags)}; expected [..., sources, T, F]"
        )
    energy = jnp.abs(jnp.asarray(source_mags)).astype(jnp.float32)
    dominant = jnp.argmax(energy, axis=-3)  # [..., T, F]
    return jax.nn.one_hot(dominant, energy.shape[-3], dtype=jnp.float32)


def silence_weights(mix_mag: jax.Array, threshold_db: float = -40.0) -> jax.Array:
    """Bin weights ``[..., T, F]`` float32: 1 where ``|X|`` is within ``-threshold_db`` dB of
    the utterance's loudest bin (``20·log10(|X| / max|X|) > threshold_db``), else 0.

    Compared in the power domain, so an all-zero utterance gets all zeros (no log of 0).
    Complex STFTs are accepted.
    """
    if jnp.ndim(mix_mag) < 2:
        raise ShapeError(f"mix_mag has shape {jnp.shape(mix_mag)}; expected [..., T, F]")
    if threshold_db > 0:
        raise ConfigError(f"threshold_db={threshold_db} must be ≤ 0 (dB below the maximum)")
    power = jnp.square(jnp.abs(jnp.asarray(mix_mag)).astype(jnp.float32))
    peak = jnp.max(power, axis=(-2, -1), keepdims=True)
    return (power > peak * 10.0 ** (threshold_db / 10.0)).astype(jnp.float32)


def dpcl_loss(V: jax.Array, Y: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Deep-clustering loss per utterance, ``[...]`` float32.

    ``V`` ``[..., T, F, D]`` embeddings, ``Y`` ``[..., T, F, S]`` targets (``dpcl_targets``),
    ``weights`` optional ``[..., T, F]`` (``silence_weights``). The T·F bins are flattened and
    passed to ``losses.deep_clustering`` (low-rank form, normalised by ``(Σ w)²``).
    """
    if jnp.ndim(V) < 3 or jnp.shape(V)[:-1] != jnp.shape(Y)[:-1]:
        raise ShapeError(
            f"V {jnp.shape(V)} and Y {jnp.shape(Y)} must be [..., T, F, D] and [..., T, F, S] "
            "over the same bins"
        )
    if weights is not None and jnp.shape(weights) != jnp.shape(V)[:-1]:
        raise ShapeError(f"weights {jnp.shape(weights)} must be [..., T, F] = {jnp.shape(V)[:-1]}")
    lead = jnp.shape(V)[:-3]
    flat_weights = None if weights is None else jnp.reshape(weights, (*lead, -1))
    return losses.deep_clustering(
        jnp.reshape(V, (*lead, -1, jnp.shape(V)[-1])),
        jnp.reshape(Y, (*lead, -1, jnp.shape(Y)[-1])),
        flat_weights,
    )


def separate_dpcl(
    model_apply: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    mixture: jax.Array,
    n_src: int,
    n_fft: int,
    hop: int,
    *,
    window: str | np.ndarray = "hann",
    features: Callable[[jax.Array], jax.Array] = log_magnitude,
    threshold_db: float = -40.0,
    kmeans_iters: int = 20,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Separate ``mixture`` ``[..., samples]`` into ``[..., n_src, samples]`` float32.

    STFT → ``features(stft)`` → ``V = model_apply(params, features)`` ``[..., T, F, D]`` →
    k-means (``n_src`` clusters, ``kmeans_iters`` Lloyd steps) on the bins within
    ``-threshold_db`` dB of the loudest (the others are assigned but do not move centroids) →
    one binary mask per cluster → masked mixture STFT (mixture phase) → ISTFT to the input
    length. Source order is that of the clusters (arbitrary). For a Flax model pass
    ``model.apply`` and ``{"params": params}``, and a ``features`` function that applies the
    training-time normalisation. Jit it with ``model_apply``, ``features``, ``n_src``,
    ``n_fft``, ``hop``, ``window`` and ``kmeans_iters`` static.
    """
    if not isinstance(n_src, int) or n_src < 1:
        raise ConfigError(f"n_src={n_src!r} must be a positive int (the number of sources)")
    spectrum = stft(mixture, n_fft, hop, window=window)  # [..., T, F]
    lead, (frames, n_freqs) = spectrum.shape[:-2], spectrum.shape[-2:]
    embeddings = model_apply(params, features(spectrum))
    if embeddings.shape[:-1] != spectrum.shape:
        raise ShapeError(
            f"model_apply returned {embeddings.shape}; expected [..., T, F, D] over the mixture "
            f"STFT bins {spectrum.shape}"
        )
    weights = silence_weights(magnitude(spectrum), threshold_db)
    rng = jax.random.key(0) if rng is None else rng
    assignments, _ = kmeans(
        embeddings.reshape(*lead, frames * n_freqs, embeddings.shape[-1]),
        n_src,
        kmeans_iters,
        rng,
        weights.reshape(*lead, frames * n_freqs),
    )
    masks = jax.nn.one_hot(assignments, n_src, axis=-2, dtype=jnp.float32)  # [..., S, T·F]
    masks = masks.reshape(*lead, n_src, frames, n_freqs)
    sources = apply_mask(spectrum, masks, source_axis=-3)
    return istft(sources, n_fft, hop, window=window, length=jnp.shape(mixture)[-1])

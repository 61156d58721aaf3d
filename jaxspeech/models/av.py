"""Audio-visual enhancement nets: the lip net (Net 2), the gate (Net 3) and the output mask.

Net 1 is an enhancement task's mask estimator (``jaxspeech.models.masknet``), frozen; it
gives the ideal-ratio-mask estimate ``irm [..., T, F]`` from the noisy audio.

* :class:`LipNet` (Net 2): a mouth crop per STFT frame ``lips [..., T, h, w]`` in [0, 1]
  → a small 2-D CNN per frame (3×3 convolutions of stride 2, ReLU) and a dense embedding →
  a temporal model (LSTM layers: unidirectional when ``causal``, else bidirectional) → one
  logit per frequency band ``[..., T, M]``. Its sigmoid estimates how much speech each band
  carries (``jaxspeech.masks.band_activity``). Frames without a face have their embedding
  zeroed.
* :class:`GateNet` (Net 3): an LSTM mask net (``LSTMMaskNet``, reused) over the per-band
  means of Net 1's mask, the lip band mask and their product → a gate ``g [..., T, 1]`` per
  frame, or ``[..., T, M]`` per band with ``per_band``.
* :func:`av_mask`: ``g·(B⊙IRM) + (1−g)·IRM`` where ``B`` is the lip band mask spread over
  its bins; where the face-present flag is false the result IS Net 1's mask (selected, not
  computed, so it is equal bit for bit), and the effective gate there is 0.

Causal variants (``causal=True``) carry their LSTM states across calls (``with_carry``), so
feeding frames one at a time gives the offline output (``jaxspeech.stream``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech import masks
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.models.masknet import LSTMMaskNet, LSTMMaskNetConfig
from jaxspeech.models.rnn import BLSTM, LSTM, LSTMState


@dataclasses.dataclass(frozen=True)
class LipNetConfig:
    """The lip net: ``channels`` of its 3×3 stride-2 convolutions, the per-frame
    ``embedding`` size, ``layers`` temporal LSTM layers of ``hidden`` units (per direction)
    and whether the temporal model is ``causal`` (unidirectional)."""

    channels: tuple[int, ...] = (16, 32, 64)
    embedding: int = 128
    hidden: int = 128
    layers: int = 1
    causal: bool = True


@dataclasses.dataclass(frozen=True)
class GateNetConfig:
    """The gate: ``layers`` LSTM layers of ``hidden`` units, ``causal`` (unidirectional) or
    not, one gate per frame or, with ``per_band``, one per band and frame."""

    hidden: int = 64
    layers: int = 1
    causal: bool = True
    per_band: bool = False


class LipNet(nn.Module):
    """Mouth crops ``[..., T, h, w]`` and face flags ``[..., T]`` → band logits
    ``[..., T, n_bands]`` float32 (see the module docstring)."""

    n_bands: int
    config: LipNetConfig = LipNetConfig()
    dtype: Any = jnp.float32

    def setup(self) -> None:
        cfg = self.config
        if not cfg.channels or min(cfg.channels) < 1 or cfg.layers < 1 or cfg.hidden < 1:
            raise ConfigError(
                f"LipNet: channels={cfg.channels}, layers={cfg.layers}, hidden={cfg.hidden}; "
                "use at least one convolution and positive sizes"
            )
        self.convs = [
            nn.Conv(c, (3, 3), strides=(2, 2), dtype=self.dtype, name=f"conv_{i}")
            for i, c in enumerate(cfg.channels)
        ]
        self.project = nn.Dense(cfg.embedding, dtype=self.dtype, name="embed")
        layer = LSTM if cfg.causal else BLSTM
        self.temporal = [
            layer(cfg.hidden, dtype=self.dtype, name=f"temporal_{i}") for i in range(cfg.layers)
        ]
        self.head = nn.Dense(self.n_bands, dtype=self.dtype, name="bands")

    def embed(self, lips: jax.Array, face: jax.Array) -> jax.Array:
        """Per-frame embeddings ``[..., T, embedding]`` of ``lips [..., T, h, w]``; zero where
        ``face [..., T]`` is false."""
        if lips.ndim < 3:
            raise ShapeError(f"LipNet: lips have shape {lips.shape}; expected [..., T, h, w]")
        lead = lips.shape[:-2]
        x = (lips.reshape(-1, *lips.shape[-2:], 1) - 0.5).astype(self.dtype)
        for conv in self.convs:
            x = nn.relu(conv(x))
        x = nn.relu(self.project(x.reshape(x.shape[0], -1))).astype(jnp.float32)
        return jnp.where(face.reshape(-1, 1), x, 0.0).reshape(*lead, -1)

    def __call__(self, lips: jax.Array, face: jax.Array) -> jax.Array:
        x = self.embed(lips, face)
        for layer in self.temporal:
            x = layer(x)[0] if self.config.causal else layer(x)
        return self.head(x).astype(jnp.float32)

    def with_carry(self, lips, face, carry: tuple[LSTMState, ...] | None = None):
        """Causal run from ``carry`` (one ``(c, h)`` per layer; None: zeros); returns
        ``(logits [..., T, n_bands], new carry)``."""
        if not self.config.causal:
            raise ConfigError("a non-causal LipNet has no causal state; use it offline")
        x = self.embed(lips, face)
        carry = (None,) * self.config.layers if carry is None else carry
        new_carry = []
        for layer, state in zip(self.temporal, carry, strict=True):
            x, state = layer(x, state)
            new_carry.append(state)
        return self.head(x).astype(jnp.float32), tuple(new_carry)


def gate_inputs(audio_mask: jax.Array, lip_mask: jax.Array) -> jax.Array:
    """The gate's input ``[..., T, 3·M]``: Net 1's mask averaged per band
    (``masks.band_average``), the lip band mask ``[..., T, M]`` and their product."""
    audio_bands = masks.band_average(audio_mask, lip_mask.shape[-1])
    return jnp.concatenate([audio_bands, lip_mask, audio_bands * lip_mask], axis=-1)


def build_gate_net(config: GateNetConfig, n_bands: int, dtype=jnp.float32) -> LSTMMaskNet:
    """The gate as an LSTM mask net with one output (per frame) or ``n_bands`` (per band)."""
    lstm = LSTMMaskNetConfig(config.hidden, config.layers, bidirectional=not config.causal)
    return LSTMMaskNet(n_bands if config.per_band else 1, lstm, dtype, name="gate")


def av_mask(
    audio_mask: jax.Array, lip_mask: jax.Array, gate: jax.Array, face: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The audio-visual output mask and the effective gate.

    Args:
      audio_mask: Net 1's mask ``[..., T, F]``.
      lip_mask: the lip band mask ``[..., T, M]`` in [0, 1].
      gate: ``[..., T, 1]`` or ``[..., T, M]`` in [0, 1].
      face: ``[..., T]`` face-present flags (bool or 0/1).

    Returns:
      ``(mask [..., T, F], g [..., T, 1 or M])``: ``g·(B⊙IRM) + (1−g)·IRM`` where a face is
      present and exactly ``audio_mask`` elsewhere; ``g`` is 0 where there is no face.
    """
    n_freqs = audio_mask.shape[-1]
    present = jnp.asarray(face).astype(bool)[..., None]
    spread = lambda x: x if x.shape[-1] == 1 else masks.expand_bands(x, n_freqs)
    lip_bins, gate_bins = masks.expand_bands(lip_mask, n_freqs), spread(gate)
    mixed = gate_bins * (lip_bins * audio_mask) + (1.0 - gate_bins) * audio_mask
    return jnp.where(present, mixed, audio_mask), jnp.where(present, gate, 0.0)

"""Speaker-embedding network: log-mel fbank -> ResNet (BasicBlocks) -> attentive statistics
pooling -> embedding, as WeSpeaker's ``ResNet34`` with ``ASTP`` pooling.

Input is a batch of waveforms ``[B, S]`` with their lengths ``[B]`` (samples); everything
after the last valid sample is padding and never changes an embedding:

* features: 80-dim log-mel fbank (``dsp.fbank``), mean-normalised per utterance over its
  valid frames; a frame is valid when its whole FFT window lies inside the utterance
  (``valid_frames``), and padded frames are set to zero;
* every convolution pads explicitly by one on both sides (as PyTorch), so a stride-2 layer maps
  frame ``t`` to ``t // 2`` whatever the padded length, and activations of padded frames are
  zeroed after every non-linearity, so valid frames never see them;
* attentive statistics pooling (attention-weighted mean and standard deviation over time, one
  attention weight per channel and frame) gives padded frames zero weight.

So an utterance's embedding is the same alone and inside a padded batch of longer ones (up to
float rounding). Batch norm normalises with batch statistics in training, synchronised across
replicas over the ``data`` mesh axis, and with running averages otherwise.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxspeech import dsp
from jaxspeech.errors import ConfigError

#: Floor of the pooled variance before its square root (WeSpeaker's clamp).
_STD_FLOOR = 1e-7


@dataclasses.dataclass(frozen=True)
class SpeakerNetConfig:
    """The network: fbank front end, ResNet stages and pooling.

    Attributes:
      blocks: BasicBlocks per stage; (3, 4, 6, 3) is ResNet34.
      width: channels of the first stage; stage ``k`` has ``width · 2^k`` (32 as WeSpeaker).
      embed_dim: embedding size.
      attention_dim: bottleneck of the pooling's attention.
      n_mels, frame_length_ms, frame_shift_ms: the fbank (``dsp.fbank``).
    """

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 32
    embed_dim: int = 256
    attention_dim: int = 128
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0

    def __post_init__(self):
        if not self.blocks or min(self.blocks) < 1 or self.width < 1 or self.embed_dim < 1:
            raise ConfigError(
                f"SpeakerNetConfig: blocks={self.blocks} need at least one stage of >= 1 "
                f"block, width={self.width} and embed_dim={self.embed_dim} must be >= 1"
            )
        if self.n_mels % 2 ** (len(self.blocks) - 1):
            raise ConfigError(
                f"SpeakerNetConfig: n_mels={self.n_mels} must be divisible by "
                f"2^{len(self.blocks) - 1} (one halving per stage after the first)"
            )


#: WeSpeaker's ResNet34 (about 6.6 M parameters with a 256-dim embedding, 7.3 M with ASP).
RESNET34 = SpeakerNetConfig()
#: A thin ResNet34 for CPU recipes: a quarter of the channels.
RESNET34_THIN = SpeakerNetConfig(width=8)


def fbank_geometry(cfg: SpeakerNetConfig, sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` in samples of the fbank at ``sample_rate``."""
    win = round(sample_rate * cfg.frame_length_ms / 1000)
    return 1 << (win - 1).bit_length(), round(sample_rate * cfg.frame_shift_ms / 1000)


def valid_frames(lengths: jax.Array, cfg: SpeakerNetConfig, sample_rate: int) -> jax.Array:
    """Frames ``[B]`` (int32) of utterances of ``lengths`` samples whose FFT window ends inside
    the utterance (centred frames: frame ``t`` spans ``t·hop ± n_fft/2``); at least 0."""
    n_fft, hop = fbank_geometry(cfg, sample_rate)
    frames = (jnp.asarray(lengths, jnp.int32) - n_fft // 2) // hop + 1
    return jnp.maximum(frames, 0)


def features(
    wav: jax.Array, lengths: jax.Array, cfg: SpeakerNetConfig, sample_rate: int
) -> tuple[jax.Array, jax.Array]:
    """``(feats [B, T, n_mels], mask [B, T] bool)``: log-mel fbank of ``wav [B, S]``, minus its
    mean over each utterance's valid frames, zero on padded frames."""
    feats = dsp.fbank(
        wav,
        sample_rate,
        cfg.n_mels,
        frame_length_ms=cfg.frame_length_ms,
        frame_shift_ms=cfg.frame_shift_ms,
    )
    mask = jnp.arange(feats.shape[-2]) < valid_frames(lengths, cfg, sample_rate)[:, None]
    weights = mask[..., None].astype(jnp.float32)
    mean = (feats * weights).sum(-2, keepdims=True) / jnp.maximum(weights.sum(-2, keepdims=True), 1)
    return (feats - mean) * weights, mask


def _halve(mask: jax.Array) -> jax.Array:
    """The time mask ``[B, T]`` after a stride-2 layer (padding 1, kernel 3): ``[B, ceil(T/2)]``,
    frame ``t`` valid when input frame ``2t`` is."""
    return mask[:, ::2]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and a residual connection (1×1 conv + BN when the
    shape changes). Input and output ``[B, T, F, C]``; ``mask [B, T']`` of the output."""

    channels: int
    stride: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        keep = mask[:, :, None, None].astype(x.dtype)
        out = _conv(self.channels, 3, self.stride, self.dtype)(x)
        out = nn.relu(_batch_norm(train)(out)) * keep
        out = _batch_norm(train)(_conv(self.channels, 3, 1, self.dtype)(out))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            shortcut = _batch_norm(train)(_conv(self.channels, 1, self.stride, self.dtype)(x))
        return nn.relu(out + shortcut) * keep


def _conv(channels: int, kernel: int, stride: int, dtype) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(
        channels,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
    )


def _batch_norm(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name="data" if train else None,
        dtype=jnp.float32,
    )


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over time ``[B, T, C] -> [B, 2C]``;
    frames where ``mask [B, T]`` is False get zero weight."""

    attention_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        hidden = jnp.tanh(nn.Dense(self.attention_dim)(x))
        logits = nn.Dense(x.shape[-1])(hidden)
        logits = jnp.where(mask[..., None], logits, -jnp.inf)
        alpha = jax.nn.softmax(logits, axis=1)
        alpha = jnp.where(mask[..., None], alpha, 0.0)  # all-masked rows: 0, not NaN
        mean = jnp.sum(alpha * x, axis=1)
        var = jnp.sum(alpha * jnp.square(x), axis=1) - jnp.square(mean)
        return jnp.concatenate([mean, jnp.sqrt(jnp.maximum(var, _STD_FLOOR))], axis=-1)


class SpeakerNet(nn.Module):
    """ResNet + attentive statistics pooling: ``(feats [B, T, n_mels], mask [B, T]) ->
    embedding [B, embed_dim]`` (float32)."""

    cfg: SpeakerNetConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, feats: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.cfg
        x = feats[..., None].astype(self.dtype)  # [B, T, F, 1]: time × frequency image
        x = _conv(cfg.width, 3, 1, self.dtype)(x)
        x = nn.relu(_batch_norm(train)(x)) * mask[:, :, None, None].astype(x.dtype)
        for stage, count in enumerate(cfg.blocks):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                if stride == 2:
                    mask = _halve(mask)
                x = BasicBlock(cfg.width * 2**stage, stride, self.dtype)(x, mask, train)
        x = x.reshape(*x.shape[:2], -1)  # [B, T', F' · C]
        stats = AttentiveStatsPool(cfg.attention_dim)(x, mask)
        return nn.Dense(cfg.embed_dim)(stats)


def param_count(params) -> int:
    """Number of scalars in a params pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))

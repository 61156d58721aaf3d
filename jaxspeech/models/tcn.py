"""Temporal convolutional network (TCN) of Conv-TasNet: sequence norms and dilated depthwise blocks.

Shared by the Conv-TasNet separator (`jaxspeech.models.tasnet`) and the TCN mask estimator of
the enhancement task. Sequences are channels-last, `[..., T, C]`, so that every 1×1 convolution
is a plain matmul over the channel axis.

The three normalisations follow Luo & Mesgarani (2019) and Asteroid 0.7.0 (eps 1e-8, learnable
per-channel gain `gamma` and bias `beta`); names differ from Asteroid's aliases:

=========  =========================================  ==================
ours       statistics over                            Asteroid alias
=========  =========================================  ==================
``gLN``    all frames and channels (non-causal)       ``gLN`` (GlobLN)
``cLN``    frames ≤ t and all channels (causal)       ``cgLN`` (CumLN)
``chanLN`` the channels of frame t only (causal)      ``cLN`` (ChanLN)
=========  =========================================  ==================

The depthwise dilated convolution is written as `P` shifted multiply-adds, which XLA fuses
into one loop; on CPU this is several times faster than `feature_group_count=H` convolution
(`bench/depthwise.py`).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.errors import ConfigError

EPS = 1e-8
NORMS = ("gLN", "cLN", "chanLN")
CAUSAL_NORMS = ("cLN", "chanLN")


def global_layer_norm(x: jax.Array, eps: float = EPS) -> jax.Array:
    """gLN without gain/bias: `[..., T, C]` normalised by mean/variance over T and C (float32)."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=(-2, -1), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(-2, -1), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def cumulative_layer_norm(x: jax.Array, eps: float = EPS) -> jax.Array:
    """cLN without gain/bias: frame t of `[..., T, C]` normalised by statistics of frames ≤ t.

    Mean and variance at t are taken over all channels of frames 0..t (Asteroid's CumLN),
    so the output at t never depends on input after t. Computed in float32.
    """
    x = x.astype(jnp.float32)
    channels, frames = x.shape[-1], x.shape[-2]
    count = channels * jnp.arange(1, frames + 1, dtype=jnp.float32)[:, None]
    cum_mean = jnp.cumsum(jnp.sum(x, axis=-1, keepdims=True), axis=-2) / count
    cum_power = jnp.cumsum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), axis=-2) / count
    cum_var = jnp.maximum(cum_power - jnp.square(cum_mean), 0.0)
    return (x - cum_mean) * jax.lax.rsqrt(cum_var + eps)


def channel_layer_norm(x: jax.Array, eps: float = EPS) -> jax.Array:
    """chanLN without gain/bias: each frame of `[..., T, C]` normalised over its C channels."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


NORM_FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gLN": global_layer_norm,
    "cLN": cumulative_layer_norm,
    "chanLN": channel_layer_norm,
}


def check_tcn_config(norm: str, causal: bool, kernel_size: int) -> None:
    """Raise ConfigError unless `norm`, `causal` and `kernel_size` make a valid TCN."""
    if norm not in NORMS:
        raise ConfigError(f"norm={norm!r} is not a TCN norm; use one of {NORMS}.")
    if causal and norm not in CAUSAL_NORMS:
        raise ConfigError(
            f"norm={norm!r} looks at future frames, so it cannot be causal; "
            f"use one of {CAUSAL_NORMS} with causal=True."
        )
    if kernel_size < 1 or (not causal and kernel_size % 2 == 0):
        raise ConfigError(
            f"kernel_size={kernel_size} is invalid; use an odd kernel size ≥ 1 "
            "(an even size only works with causal=True)."
        )


def depthwise_conv1d(
    x: jax.Array, kernel: jax.Array, dilation: int, causal: bool = False
) -> jax.Array:
    """Dilated depthwise convolution of `x[..., T, H]` with `kernel[P, H]`, output `[..., T, H]`.

    Cross-correlation like `torch.nn.Conv1d(groups=H)`: `y[t] = Σ_k kernel[k] · x[t + k·d − p]`
    with zero padding `p = (P−1)·d / 2` on both sides, or `p = (P−1)·d` on the left only when
    `causal` (then `y[t]` depends on `x[..t]` only). Written as P shifted multiply-adds.
    """
    taps, frames = kernel.shape[0], x.shape[-2]
    total_pad = (taps - 1) * dilation
    left_pad = total_pad if causal else total_pad // 2
    pad_width = [(0, 0)] * (x.ndim - 2) + [(left_pad, total_pad - left_pad), (0, 0)]
    padded = jnp.pad(x, pad_width)
    out = padded[..., :frames, :] * kernel[0]
    for tap in range(1, taps):
        start = tap * dilation
        out = out + padded[..., start : start + frames, :] * kernel[tap]
    return out


class SequenceNorm(nn.Module):
    """gLN / cLN / chanLN of `[..., T, C]` with learnable gain and bias, computed in float32.

    Attributes:
      kind: one of `NORMS` (see the module docstring).
      dtype: dtype of the output (the compute dtype of the next layer).
    """

    kind: str = "gLN"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (channels,), jnp.float32)
        beta = self.param("beta", nn.initializers.zeros, (channels,), jnp.float32)
        return (NORM_FUNCTIONS[self.kind](x) * gamma + beta).astype(self.dtype)


def prelu(x: jax.Array, negative_slope: jax.Array) -> jax.Array:
    """PReLU with one shared slope, like `flax.linen.PReLU` and `torch.nn.PReLU()`."""
    return jnp.where(x >= 0, x, negative_slope.astype(x.dtype) * x)


def recompute_in_backward(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`fn(x, *params)` whose backward pass keeps only its inputs and recomputes the rest."""

    @jax.custom_vjp
    def wrapped(*args):
        return fn(*args)

    def forward(*args):
        return fn(*args), args

    def backward(args, cotangent):
        # A zero that XLA cannot fold: without it, XLA's common-subexpression elimination
        # merges the recomputation with the forward pass and keeps every intermediate alive
        # (XLA on CPU drops optimisation barriers before that pass, so they cannot stop it).
        first, *rest = args
        zero = 0 * jax.tree.leaves(cotangent)[0].ravel()[0]
        return jax.vjp(fn, first + zero.astype(first.dtype), *rest)[1](cotangent)

    wrapped.defvjp(forward, backward)
    return wrapped


def block_core(
    h: jax.Array,
    in_prelu: dict,
    in_norm: dict,
    depthwise: dict,
    depthwise_prelu: dict,
    out_norm: dict,
    out_convs: dict,
    *,
    dilation: int,
    norm: str,
    causal: bool,
    dtype: jnp.dtype,
) -> jax.Array:
    """PReLU, norm, depthwise conv, PReLU, norm, 1×1 conv: `[..., T, H] -> [..., T, C_out]`.

    The dicts hold each layer's params (`negative_slope`; `gamma`, `beta`; `kernel`, `bias`);
    `out_convs` is the residual and skip convs side by side (one matmul). Computed in `dtype`.
    """
    normalize = NORM_FUNCTIONS[norm]
    h = prelu(h, in_prelu["negative_slope"])
    h = (normalize(h) * in_norm["gamma"] + in_norm["beta"]).astype(dtype)
    h = depthwise_conv1d(h, depthwise["kernel"].astype(dtype), dilation, causal)
    h = prelu(h + depthwise["bias"].astype(dtype), depthwise_prelu["negative_slope"])
    h = (normalize(h) * out_norm["gamma"] + out_norm["beta"]).astype(dtype)
    return h @ out_convs["kernel"].astype(dtype) + out_convs["bias"].astype(dtype)


class ParamGroup(nn.Module):
    """The params of one layer whose computation lives in a pure function.

    `specs` holds `(name, initializer, shape)` triples; calling returns `{name: float32 array}`.
    """

    specs: tuple[tuple[str, Callable, tuple[int, ...]], ...]

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        return {name: self.param(name, init, shape) for name, init, shape in self.specs}


class TCNBlock(nn.Module):
    """One Conv-TasNet block: `[..., T, B] -> (residual [..., T, B], skip [..., T, Sc] | None)`.

    1×1 conv B→H, then `block_core`: PReLU, norm, depthwise conv (kernel P, dilation d), PReLU,
    norm, the residual 1×1 conv H→B and (when `skip_channels > 0`) the skip 1×1 conv H→Sc.
    For training, `block_core` keeps only its input for the backward pass and recomputes the
    rest, so a block holds one `[..., T, H]` activation instead of about thirteen: far less
    memory written per step, about half the step time on CPU (`bench/tasnet_speed.py`).
    """

    hidden_channels: int
    skip_channels: int
    kernel_size: int
    dilation: int
    norm: str = "gLN"
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        hidden, bottleneck = self.hidden_channels, x.shape[-1]
        ones, zeros = nn.initializers.ones, nn.initializers.zeros
        lecun = nn.initializers.lecun_normal()  # of [P, H]: fan-in P, like torch's groups=H

        def group(name: str, **specs: tuple[Callable, tuple[int, ...]]) -> dict:
            return ParamGroup(tuple((key, *spec) for key, spec in specs.items()), name=name)()

        def slope(name: str) -> dict:
            return group(name, negative_slope=(nn.initializers.constant(0.25), ()))

        def gain_bias(name: str) -> dict:
            return group(name, gamma=(ones, (hidden,)), beta=(zeros, (hidden,)))

        def conv1x1(name: str, features: int) -> dict:
            return group(name, kernel=(lecun, (hidden, features)), bias=(zeros, (features,)))

        out_convs = [conv1x1("residual_conv", bottleneck)]
        if self.skip_channels:
            out_convs.append(conv1x1("skip_conv", self.skip_channels))
        core = functools.partial(
            block_core, dilation=self.dilation, norm=self.norm, causal=self.causal, dtype=self.dtype
        )
        h = nn.Dense(hidden, dtype=self.dtype, name="in_conv")(x)
        out = recompute_in_backward(core)(
            h,
            slope("in_prelu"),
            gain_bias("in_norm"),
            group("depthwise", kernel=(lecun, (self.kernel_size, hidden)), bias=(zeros, (hidden,))),
            slope("depthwise_prelu"),
            gain_bias("out_norm"),
            jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *out_convs),
        )
        if not self.skip_channels:
            return out, None
        return out[..., :bottleneck], out[..., bottleneck:]


class TemporalConvNet(nn.Module):
    """Input norm, 1×1 bottleneck and R repeats × X dilated blocks (dilations 1, 2, …, 2^(X−1)).

    `[..., T, C_in] -> [..., T, Sc]` (sum of the skip outputs), or `[..., T, B]` (the residual
    stream) when `skip_channels == 0`. Output is float32; with `dtype=bfloat16` the convolutions
    run in bfloat16 while norms, the residual stream and the skip sum stay float32.

    Attributes (paper letters in brackets): bottleneck_channels [B], hidden_channels [H],
    skip_channels [Sc], kernel_size [P], blocks [X], repeats [R], norm (see `NORMS`), causal
    (left-only padding; needs a causal norm), dtype (compute dtype; params are float32).
    """

    bottleneck_channels: int = 128
    hidden_channels: int = 512
    skip_channels: int = 128
    kernel_size: int = 3
    blocks: int = 8
    repeats: int = 3
    norm: str = "gLN"
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_tcn_config(self.norm, self.causal, self.kernel_size)
        x = SequenceNorm(self.norm, self.dtype, name="input_norm")(x)
        stream = nn.Dense(self.bottleneck_channels, dtype=self.dtype, name="bottleneck")(x)
        stream = stream.astype(jnp.float32)
        skip_sum = 0.0
        for index in range(self.repeats * self.blocks):
            block = TCNBlock(
                hidden_channels=self.hidden_channels,
                skip_channels=self.skip_channels,
                kernel_size=self.kernel_size,
                dilation=2 ** (index % self.blocks),
                norm=self.norm,
                causal=self.causal,
                dtype=self.dtype,
                name=f"block_{index}",
            )
            residual, skip = block(stream)
            stream = stream + residual.astype(jnp.float32)
            if skip is not None:
                skip_sum = skip_sum + skip.astype(jnp.float32)
        return skip_sum if self.skip_channels else stream

"""Temporal convolutional network (TCN) of Conv-TasNet: its config and Flax modules.

Shared by the Conv-TasNet separator (`jaxspeech.models.tasnet`) and the TCN mask estimator of
the enhancement task. Sequences are channels-last, `[..., T, C]`. The layers are pure functions
in `jaxspeech.models.tcn_layers` (the norms are described there); the hand-written backward
pass of the gLN block is `jaxspeech.models.tcn_gln.gln_block_core`.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.errors import ConfigError
from jaxspeech.models.tcn_gln import gln_block_core
from jaxspeech.models.tcn_layers import (
    CAUSAL_NORMS,
    NORM_FUNCTIONS,
    NORMS,
    block_core,
    pointwise_conv,
    recompute_in_backward,
)

#: How a block's gradient is computed (`TCNConfig.backward`).
BACKWARDS = ("auto", "hand-written", "autodiff")


@dataclasses.dataclass(frozen=True)
class TCNConfig:
    """TCN hyper-parameters (paper letters in brackets); defaults are Conv-TasNet's best
    non-causal configuration.

    Attributes:
      bottleneck_channels [B], hidden_channels [H], kernel_size [P], blocks [X], repeats [R].
      skip_channels [Sc]: width of the skip outputs, whose sum is the TCN's output; 0: no skip
        convs, the output is the residual stream.
      norm: one of `NORMS` (see `jaxspeech.models.tcn_layers`), or None: "gLN", or "cLN" when
        causal.
      causal: left-only padding, so frame t sees frames ≤ t only; needs a causal norm.
      backward: how a block's gradient is computed in training (same outputs and gradients):
        "hand-written" (`gln_block_core`; gLN in float32 only), "autodiff" (XLA's derivative of
        `block_core`, recomputed in the backward pass) or "auto": hand-written where it applies
        on the CPU backend, where it was measured faster (`bench/RESULTS.md`), else autodiff.
    """

    bottleneck_channels: int = 128
    hidden_channels: int = 512
    skip_channels: int = 128
    kernel_size: int = 3
    blocks: int = 8
    repeats: int = 3
    norm: str | None = None
    causal: bool = False
    backward: str = "auto"

    @property
    def norm_kind(self) -> str:
        """The norm in use: `norm`, or its default for `causal`."""
        if self.norm is not None:
            return self.norm
        return "cLN" if self.causal else "gLN"

    def check(self) -> None:
        """Raise ConfigError unless the fields make a valid TCN."""
        norm = self.norm_kind
        if norm not in NORMS:
            raise ConfigError(f"norm={norm!r} is not a TCN norm; use one of {NORMS}.")
        if self.causal and norm not in CAUSAL_NORMS:
            raise ConfigError(
                f"norm={norm!r} looks at future frames, so it cannot be causal; "
                f"use one of {CAUSAL_NORMS} with causal=True."
            )
        if self.kernel_size < 1 or (not self.causal and self.kernel_size % 2 == 0):
            raise ConfigError(
                f"kernel_size={self.kernel_size} is invalid; use an odd kernel size ≥ 1 "
                "(an even size only works with causal=True)."
            )
        if self.backward not in BACKWARDS:
            raise ConfigError(f"backward={self.backward!r} is unknown; use one of {BACKWARDS}.")


def resolve_backward(config: TCNConfig, dtype, backend: str | None = None) -> str:
    """ "hand-written" or "autodiff": the block backward pass `config.backward` selects for
    compute `dtype` on `backend` (None: `jax.default_backend()`)."""
    applies = config.norm_kind == "gLN" and jnp.dtype(dtype) == jnp.float32
    if config.backward == "auto":
        on_cpu = (backend or jax.default_backend()) == "cpu"
        return "hand-written" if applies and on_cpu else "autodiff"
    if config.backward == "hand-written" and not applies:
        raise ConfigError(
            f"backward='hand-written' is written for gLN in float32, not norm={config.norm_kind!r} "
            f"with dtype {jnp.dtype(dtype).name}; use backward='auto' or 'autodiff'."
        )
    return config.backward


class SequenceNorm(nn.Module):
    """gLN / cLN / chanLN of `[..., T, C]` with learnable gain and bias, computed in float32.

    Attributes:
      kind: one of `NORMS` (see `jaxspeech.models.tcn_layers`).
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


class PointwiseConv(nn.Module):
    """`nn.Dense` over the channel axis (same params and initialisation) with `pointwise_conv`'s
    weight gradient; computed in `dtype`."""

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return pointwise_conv(
            x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        )


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
    For training, the core keeps little for the backward pass and recomputes the rest, so a
    block holds one or two `[..., T, H]` activations instead of about thirteen: far less memory
    written per step, about half the step time on CPU (`bench/tasnet_speed.py`). The backward
    pass is `gln_block_core`'s hand-written one or XLA's derivative of `block_core` under
    `recompute_in_backward`, as `resolve_backward` selects.

    Attributes:
      config: the TCN's hyper-parameters (B is the input's width).
      dilation: d of the depthwise conv.
      dtype: compute dtype; params are float32.
    """

    config: TCNConfig
    dilation: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        config = self.config
        hidden, bottleneck, skip = config.hidden_channels, x.shape[-1], config.skip_channels
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
        if skip:
            out_convs.append(conv1x1("skip_conv", skip))
        depthwise_kernel = (lecun, (config.kernel_size, hidden))
        params = (
            group("in_conv", kernel=(lecun, (bottleneck, hidden)), bias=(zeros, (hidden,))),
            slope("in_prelu"),
            gain_bias("in_norm"),
            group("depthwise", kernel=depthwise_kernel, bias=(zeros, (hidden,))),
            slope("depthwise_prelu"),
            gain_bias("out_norm"),
            jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *out_convs),
        )
        if resolve_backward(config, self.dtype) == "hand-written":
            flat = x.reshape(-1, *x.shape[-2:])
            out = gln_block_core(flat, *params, self.dilation)
            out = out.reshape(*x.shape[:-1], out.shape[-1])
        else:
            in_conv, *params = params
            kernel, bias = in_conv["kernel"].astype(self.dtype), in_conv["bias"].astype(self.dtype)
            h = pointwise_conv(x.astype(self.dtype), kernel, bias)
            core = functools.partial(
                block_core,
                dilation=self.dilation,
                norm=config.norm_kind,
                causal=config.causal,
                dtype=self.dtype,
            )
            out = recompute_in_backward(core)(h, *params)
        if not skip:
            return out, None
        return out[..., :bottleneck], out[..., bottleneck:]


class TemporalConvNet(nn.Module):
    """Input norm, 1×1 bottleneck and R repeats × X dilated blocks (dilations 1, 2, …, 2^(X−1)).

    `[..., T, C_in] -> [..., T, Sc]` (sum of the skip outputs), or `[..., T, B]` (the residual
    stream) when `skip_channels == 0`. Output is float32; with `dtype=bfloat16` the convolutions
    run in bfloat16 while norms, the residual stream and the skip sum stay float32.

    Attributes:
      config: the hyper-parameters (`TCNConfig`).
      dtype: compute dtype; params are float32.
    """

    config: TCNConfig = TCNConfig()
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        config.check()
        x = SequenceNorm(config.norm_kind, self.dtype, name="input_norm")(x)
        stream = nn.Dense(config.bottleneck_channels, dtype=self.dtype, name="bottleneck")(x)
        stream = stream.astype(jnp.float32)
        skip_sum = 0.0
        for index in range(config.repeats * config.blocks):
            block = TCNBlock(
                config, 2 ** (index % config.blocks), self.dtype, name=f"block_{index}"
            )
            residual, skip = block(stream)
            stream = stream + residual.astype(jnp.float32)
            if skip is not None:
                skip_sum = skip_sum + skip.astype(jnp.float32)
        return skip_sum if config.skip_channels else stream

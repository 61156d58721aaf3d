"""The TCN's layers as pure `jnp` functions: sequence norms, dilated depthwise convolution,
PReLU, 1×1 convolution and the block core; the Flax modules are in `jaxspeech.models.tcn`.

Sequences are channels-last, `[..., T, C]`, so that every 1×1 convolution is a plain matmul
over the channel axis.

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

EPS = 1e-8
NORMS = ("gLN", "cLN", "chanLN")
CAUSAL_NORMS = ("cLN", "chanLN")


def first_frame_mean(x: jax.Array) -> jax.Array:
    """Mean of the first frame of `x[..., T, C]`, `[..., 1, 1]` (float32)."""
    return jnp.mean(x[..., :1, :].astype(jnp.float32), axis=(-2, -1), keepdims=True)


def shifted_moments_to_statistics(
    shift: jax.Array, shifted_mean: jax.Array, shifted_power: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array]:
    """Mean and 1/sqrt(variance + eps) from `s`, `E[x − s]` and `E[(x − s)²]`."""
    var = jnp.maximum(shifted_power - jnp.square(shifted_mean), 0.0)
    return shift + shifted_mean, jax.lax.rsqrt(var + eps)


def global_statistics(x: jax.Array, eps: float = EPS) -> tuple[jax.Array, jax.Array]:
    """Mean and 1/sqrt(variance + eps) of `x[..., T, C]` over T and C, each `[..., 1, 1]`.

    One pass over `x` (float32): the sums of `x − s` and `(x − s)²`, shifted by
    `s = first_frame_mean(x)` so that `E[(x−s)²] − E[x−s]²` does not cancel when |mean| ≫ std.
    A second pass for the centred variance costs a whole extra `[..., T, C]` write on CPU.
    """
    x = x.astype(jnp.float32)
    shift = jax.lax.stop_gradient(first_frame_mean(x))
    shifted = x - shift
    return shifted_moments_to_statistics(
        shift,
        jnp.mean(shifted, axis=(-2, -1), keepdims=True),
        jnp.mean(jnp.square(shifted), axis=(-2, -1), keepdims=True),
        eps,
    )


def global_layer_norm(x: jax.Array, eps: float = EPS) -> jax.Array:
    """gLN without gain/bias: `[..., T, C]` normalised by mean/variance over T and C (float32)."""
    mean, inv_std = global_statistics(x, eps)
    return (x.astype(jnp.float32) - mean) * inv_std


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


def left_pad(taps: int, dilation: int, causal: bool) -> int:
    """Zero frames before `x` in a dilated convolution (all `(P−1)·d` when causal, else half)."""
    total_pad = (taps - 1) * dilation
    return total_pad if causal else total_pad // 2


def shifted_taps(
    x: jax.Array, taps: int, dilation: int, causal: bool = False, materialize: bool = False
) -> list[jax.Array]:
    """The P views `x[..., t + k·d − p, :]` (k = 0..P−1, zeros outside) of `x[..., T, H]` that a
    dilated convolution weighs; `p` as in `depthwise_conv1d`.

    `materialize` writes the padded `x` once (an optimisation barrier) so that the views are
    slices read by their consumer; otherwise XLA on CPU may write each view separately.
    Not differentiable with it (for hand-written backward passes).
    """
    frames, total_pad = x.shape[-2], (taps - 1) * dilation
    before = left_pad(taps, dilation, causal)
    pad_width = [(0, 0)] * (x.ndim - 2) + [(before, total_pad - before), (0, 0)]
    padded = jnp.pad(x, pad_width)
    if materialize:
        padded = jax.lax.optimization_barrier(padded)
    return [padded[..., k * dilation : k * dilation + frames, :] for k in range(taps)]


def depthwise_conv1d(
    x: jax.Array, kernel: jax.Array, dilation: int, causal: bool = False
) -> jax.Array:
    """Dilated depthwise convolution of `x[..., T, H]` with `kernel[P, H]`, output `[..., T, H]`.

    Cross-correlation like `torch.nn.Conv1d(groups=H)`: `y[t] = Σ_k kernel[k] · x[t + k·d − p]`
    with zero padding `p = (P−1)·d / 2` on both sides, or `p = (P−1)·d` on the left only when
    `causal` (then `y[t]` depends on `x[..t]` only). Written as P shifted multiply-adds.
    """
    return weighted_taps(shifted_taps(x, kernel.shape[0], dilation, causal), kernel)


def weighted_taps(views: list[jax.Array], kernel: jax.Array) -> jax.Array:
    return functools.reduce(jnp.add, (view * kernel[k] for k, view in enumerate(views)))


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


def sum_leading(x: jax.Array) -> jax.Array:
    """`x[N, ...]` summed over its small leading axis by plain adds (YNNPACK, which XLA on CPU
    gives a `jnp.sum` over that axis, took 3–4 ms for four `[256, 512]` slices)."""
    return functools.reduce(jnp.add, list(x))


def pointwise_conv_grads(
    x: jax.Array, kernel: jax.Array, grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Gradients of `y = x @ kernel + bias` (`x[..., C_in]`, `y[..., C_out]`) for `x` and
    `kernel`, given `grad = dL/dy`.

    The weight gradient `Σ x ⊗ grad` contracts the frames, the major axis of both operands.
    Taken per element of the leading (batch) axis, XLA on CPU runs that product without
    transposing either operand in memory, faster than one product over all rows with one
    operand transposed (`bench/RESULTS.md`); the per-element products are then added.
    """
    lead = x.shape[0] if x.ndim > 2 else 1
    per_element = jnp.einsum(
        "btc,bth->bch", x.reshape(lead, -1, x.shape[-1]), grad.reshape(lead, -1, grad.shape[-1])
    )
    return grad @ kernel.T, sum_leading(per_element)


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """1×1 convolution `x[..., C_in] @ kernel[C_in, C_out] + bias[C_out]` with the weight
    gradient of `pointwise_conv_grads`."""
    return x @ kernel + bias


pointwise_conv.defvjp(
    lambda x, kernel, bias: (x @ kernel + bias, (x, kernel)),
    lambda saved, grad: (
        *pointwise_conv_grads(*saved, grad),
        jnp.sum(grad.reshape(-1, grad.shape[-1]), axis=0),
    ),
)


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

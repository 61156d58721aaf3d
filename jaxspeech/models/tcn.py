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


def first_frame_mean(x: jax.Array) -> jax.Array:
    """Mean of the first frame of `x[..., T, C]`, `[..., 1, 1]` (float32)."""
    return jnp.mean(x[..., :1, :].astype(jnp.float32), axis=(-2, -1), keepdims=True)


def _shifted_moments_to_statistics(
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
    return _shifted_moments_to_statistics(
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


def _left_pad(taps: int, dilation: int, causal: bool) -> int:
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
    left_pad = _left_pad(taps, dilation, causal)
    pad_width = [(0, 0)] * (x.ndim - 2) + [(left_pad, total_pad - left_pad), (0, 0)]
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
    return _weighted_taps(shifted_taps(x, kernel.shape[0], dilation, causal), kernel)


def _weighted_taps(views: list[jax.Array], kernel: jax.Array) -> jax.Array:
    return functools.reduce(jnp.add, (view * kernel[k] for k, view in enumerate(views)))


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


def _sum_leading(x: jax.Array) -> jax.Array:
    """`x[N, ...]` summed over its small leading axis by plain adds (YNNPACK, which XLA on CPU
    gives a `jnp.sum` over that axis, took 3–4 ms for four `[256, 512]` slices)."""
    return functools.reduce(jnp.add, list(x))


def _pointwise_conv_grads(
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
    return grad @ kernel.T, _sum_leading(per_element)


@jax.custom_vjp
def pointwise_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """1×1 convolution `x[..., C_in] @ kernel[C_in, C_out] + bias[C_out]` with the weight
    gradient of `_pointwise_conv_grads`."""
    return x @ kernel + bias


pointwise_conv.defvjp(
    lambda x, kernel, bias: (x @ kernel + bias, (x, kernel)),
    lambda saved, grad: (
        *_pointwise_conv_grads(*saved, grad),
        jnp.sum(grad.reshape(-1, grad.shape[-1]), axis=0),
    ),
)


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


def _global_norm_input_grad(
    grad: jax.Array,
    normalized: jax.Array,
    inv_std: jax.Array,
    gamma: jax.Array,
    sum_grad: jax.Array,
    sum_grad_normalized: jax.Array,
) -> jax.Array:
    """Gradient for `x` of `y = normalized · gamma + beta` (gLN of `x`, all `[B, T, C]`), given
    `grad = dL/dy` and its per-(batch, channel) sums over T, plain and times `normalized`
    (`[B, C]` each)."""
    count = normalized.shape[-2] * normalized.shape[-1]
    mean_grad = (sum_grad @ gamma)[..., None, None] / count  # mean of grad · gamma
    mean_grad_normalized = (sum_grad_normalized @ gamma)[..., None, None] / count
    return inv_std * (grad * gamma - mean_grad - normalized * mean_grad_normalized)


def _prelu_backward(grad: jax.Array, x: jax.Array, slope: jax.Array):
    """`(dL/dx, dL/dy · dy/dslope)` of `y = prelu(x, slope)`, given `grad = dL/dy`; the sum of
    the second is the slope's gradient."""
    negative = x < 0
    return jnp.where(negative, slope * grad, grad), jnp.where(negative, grad * x, 0.0)


def frame_sums(arrays: list[jax.Array], chunk: int = 8) -> list[jax.Array]:
    """`Σ_t a[b, t, h]` of each `a[B, T, H]` in `arrays`, `[B, H]` each, from one pass.

    XLA on CPU hands a plain sum to a library kernel that needs its operand written out, so
    a sum of a product of shifted views costs a write and a read per view. A variadic
    reduction stays with XLA, which fuses the operands' producers (products, slices) into it;
    its fast form is a reduction over a few adjacent frames, `chunk` at a time, whose small
    result the library kernel then sums. Frames past the last whole chunk are summed apart.
    """
    batch, frames, channels = arrays[0].shape
    whole = frames // chunk * chunk
    chunked = tuple(a[:, :whole].reshape(batch, whole // chunk, chunk, channels) for a in arrays)
    partial = jax.lax.reduce(
        chunked,
        (jnp.zeros((), arrays[0].dtype),) * len(arrays),
        lambda left, right: tuple(x + y for x, y in zip(left, right, strict=True)),
        (2,),
    )
    return [
        jnp.sum(part, axis=1) + jnp.sum(a[:, whole:], axis=1)
        for part, a in zip(partial, arrays, strict=True)
    ]


def _tap_offsets(taps: int, dilation: int) -> list[int]:
    """Offsets `o_k = k·d − p` of the non-causal depthwise conv: `c[t] = Σ_k K[k] · x[t + o_k]`."""
    return [k * dilation - _left_pad(taps, dilation, causal=False) for k in range(taps)]


def _valid_sums(grad: jax.Array, total: jax.Array, offset: int) -> jax.Array:
    """`Σ_t grad[b, t, c]` over the frames t with `0 ≤ t + offset < T`, given the sum over all
    frames `total[B, C]`: the excluded edge frames are summed and subtracted."""
    frames = grad.shape[-2]
    if offset > 0:
        return total - jnp.sum(grad[:, max(frames - offset, 0) :], axis=1)
    if offset < 0:
        return total - jnp.sum(grad[:, : min(-offset, frames)], axis=1)
    return total


def _shifted_global_norm(
    activated: jax.Array, first_frame: jax.Array, norm: dict
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """gLN `n·gamma + beta` of `activated[B, T, H]` and its statistics, given its first frame
    `first_frame[B, 1, H]` computed from its producer's inputs.

    As `global_statistics`, with the same shift `s` (`first_frame_mean`), but the sums of
    `activated − s` and its square come from `frame_sums`, fused with `activated`'s producer:
    XLA on CPU would otherwise write `activated − s` out for its library reductions. The
    normalisation recomputes `activated − s` from the producer.
    """
    shift = first_frame_mean(first_frame)
    shifted = activated - shift
    sums, squares = frame_sums([shifted, jnp.square(shifted)])  # [B, H] each
    count = shifted.shape[-2] * shifted.shape[-1]
    shifted_mean = (jnp.sum(sums, axis=-1) / count)[:, None, None]
    shifted_power = (jnp.sum(squares, axis=-1) / count)[:, None, None]
    stats = _shifted_moments_to_statistics(shift, shifted_mean, shifted_power, EPS)
    return (shifted - shifted_mean) * stats[1] * norm["gamma"] + norm["beta"], stats


def _gln_core_forward(
    x, in_conv, in_prelu, in_norm, depthwise, depthwise_prelu, out_norm, out_convs, dilation
):
    """The 1×1 conv `in_conv` and `block_core` for gLN in float32 (non-causal), with what the
    backward pass needs: `(y, (h = in_conv(x) [B, T, H], depthwise output c [B, T, H],
    gLN statistics of both norms))`."""
    h = x @ in_conv["kernel"] + in_conv["bias"]
    slope = in_prelu["negative_slope"]
    normalized, in_stats = _shifted_global_norm(prelu(h, slope), prelu(h[:, :1], slope), in_norm)
    views = shifted_taps(normalized, depthwise["kernel"].shape[0], dilation, materialize=True)
    kernel, bias, slope = depthwise["kernel"], depthwise["bias"], depthwise_prelu["negative_slope"]
    c = _weighted_taps(views, kernel) + bias
    first_c = _weighted_taps([view[:, :1] for view in views], kernel) + bias
    normalized, out_stats = _shifted_global_norm(prelu(c, slope), prelu(first_c, slope), out_norm)
    return normalized @ out_convs["kernel"] + out_convs["bias"], (h, c, in_stats, out_stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def gln_block_core(
    x, in_conv, in_prelu, in_norm, depthwise, depthwise_prelu, out_norm, out_convs, dilation
):
    """`block_core(x @ in_conv["kernel"] + in_conv["bias"], ..., norm="gLN", causal=False,
    dtype=float32)` of `x[B, T, C_in]` with a hand-written backward pass.

    The forward pass keeps its input, the 1×1 conv's output `h`, the depthwise output `c` and
    the two norms' statistics; the backward pass recomputes the elementwise rest from them and
    gets the norms' sums over T from the weight-gradient products (linearity of the convs) so
    that it makes few passes over `[B, T, H]`. Against XLA's own derivative of `block_core`
    with everything recomputed, the paper-config training step takes about a third less time on the
    2-core CPU (`bench/RESULTS.md`).
    """
    return _gln_core_forward(
        x, in_conv, in_prelu, in_norm, depthwise, depthwise_prelu, out_norm, out_convs, dilation
    )[0]


def _gln_core_forward_with_residuals(x, *params_and_dilation):
    y, saved = _gln_core_forward(x, *params_and_dilation)
    return y, (x, params_and_dilation[:-1], saved)


def _gln_core_backward(dilation, residuals, grad_y):
    x, params, (h, c, in_stats, out_stats) = residuals
    in_conv, in_prelu, in_norm, depthwise, depthwise_prelu, out_norm, out_convs = params
    kernel, taps = depthwise["kernel"], depthwise["kernel"].shape[0]
    # Recompute the elementwise forward from the saved input, depthwise output and statistics,
    # offset by a zero XLA cannot fold (as in `recompute_in_backward`): otherwise it merges the
    # recomputation with the forward pass and keeps those [B, T, H] values alive in between.
    zero = 0 * grad_y[0, 0, 0]
    h, c = h + zero, c + zero
    in_normalized = (prelu(h, in_prelu["negative_slope"]) - in_stats[0]) * in_stats[1]
    out_normalized = (prelu(c, depthwise_prelu["negative_slope"]) - out_stats[0]) * out_stats[1]
    # Output 1×1 convs, y = (n·gamma + beta) @ W + b with n the second norm's output. The
    # per-batch products grad_y_bᵀ n_b [B, C_out, H] give W's gradient and, because the conv
    # is linear, the sums over T that the norm's backward needs: Σ_t dL/dn·n = Σ_o Wᵀ ⊙ grad_yᵀn
    # and Σ_t dL/dn = (Σ_t grad_y) @ Wᵀ (two fewer passes over [B, T, H]). XLA on CPU runs this
    # batched product, which contracts the frames, without transposing either operand.
    weight, gamma, beta = out_convs["kernel"], out_norm["gamma"], out_norm["beta"]
    # The partial sums stay behind barriers: XLA would otherwise sum the whole [B, T, C] array
    # again for each bias gradient.
    sum_grad_y = jax.lax.optimization_barrier(jnp.sum(grad_y, axis=1))  # [B, C_out]
    products = jnp.einsum("btc,bth->bch", grad_y, out_normalized)
    grad_out_kernel = gamma[:, None] * _sum_leading(products).T + jnp.outer(
        beta, jnp.sum(sum_grad_y, axis=0)
    )
    sum_grad = sum_grad_y @ weight.T  # [B, H]
    sum_grad_normalized = jnp.sum(products * weight.T, axis=-2)
    grad_act = _global_norm_input_grad(
        grad_y @ weight.T, out_normalized, out_stats[1], gamma, sum_grad, sum_grad_normalized
    )
    grad_out_norm = {"gamma": jnp.sum(sum_grad_normalized, 0), "beta": jnp.sum(sum_grad, 0)}
    grad_c, out_slope_terms = _prelu_backward(grad_act, c, depthwise_prelu["negative_slope"])
    # Depthwise conv c[t] = Σ_k K[k]·x[t + o_k] + bias on x = n·gamma + beta (n: the first
    # norm's output, zero outside [0, T)). Per batch, S_k = Σ_t dL/dc[t]·n[t + o_k] and the
    # sums of dL/dc over the frames each tap sees give the kernel gradient and, again by
    # linearity, the first norm's sums: Σ_t dL/dx = Σ_k K[k]·valid_k, Σ_t dL/dx·n = Σ_k K[k]·S_k.
    gamma, beta = in_norm["gamma"], in_norm["beta"]
    # grad_views[k][t] = dL/dc[t + o_k]; with o_{P−1−k} = −o_k, S_k = Σ_t grad_views[P−1−k]·n.
    # Reading the padded dL/dc that the transposed conv below needs anyway, XLA fuses the
    # products into `frame_sums` rather than recomputing dL/dc in it.
    grad_views = shifted_taps(grad_c, taps, dilation, materialize=True)
    *tap_products, sum_grad_c = frame_sums(
        [view * in_normalized for view in grad_views[::-1]] + [grad_views[taps // 2]]
    )
    tap_products = jnp.stack(tap_products)  # [P, B, H]
    sum_grad_c = jax.lax.optimization_barrier(sum_grad_c)  # [B, H]
    valid = jnp.stack([_valid_sums(grad_c, sum_grad_c, o) for o in _tap_offsets(taps, dilation)])
    grad_kernel = gamma * jnp.sum(tap_products, axis=1) + beta * jnp.sum(valid, axis=1)
    sum_grad = jnp.einsum("kbh,kh->bh", valid, kernel)
    sum_grad_normalized = jnp.einsum("kbh,kh->bh", tap_products, kernel)
    grad_act = _global_norm_input_grad(
        _weighted_taps(grad_views, kernel[::-1]),
        in_normalized,
        in_stats[1],
        gamma,
        sum_grad,
        sum_grad_normalized,
    )
    grad_h, in_slope_terms = _prelu_backward(grad_act, h, in_prelu["negative_slope"])
    grad_x, grad_in_kernel = _pointwise_conv_grads(x, in_conv["kernel"], grad_h)
    sum_grad_h, in_slope_sums = frame_sums([grad_h, in_slope_terms])
    return (
        grad_x,
        {"kernel": grad_in_kernel, "bias": jnp.sum(sum_grad_h, axis=0)},
        {"negative_slope": jnp.sum(in_slope_sums)},
        {"gamma": jnp.sum(sum_grad_normalized, 0), "beta": jnp.sum(sum_grad, 0)},
        {"kernel": grad_kernel, "bias": jnp.sum(sum_grad_c, axis=0)},
        {"negative_slope": jnp.sum(out_slope_terms)},
        grad_out_norm,
        {"kernel": grad_out_kernel, "bias": jnp.sum(sum_grad_y, axis=0)},
    )


gln_block_core.defvjp(_gln_core_forward_with_residuals, _gln_core_backward)


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
    written per step, about half the step time on CPU (`bench/tasnet_speed.py`). With gLN in
    float32 the core is `gln_block_core` (hand-written backward); otherwise XLA differentiates
    `block_core` under `recompute_in_backward`.
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
        params = (
            group("in_conv", kernel=(lecun, (bottleneck, hidden)), bias=(zeros, (hidden,))),
            slope("in_prelu"),
            gain_bias("in_norm"),
            group("depthwise", kernel=(lecun, (self.kernel_size, hidden)), bias=(zeros, (hidden,))),
            slope("depthwise_prelu"),
            gain_bias("out_norm"),
            jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *out_convs),
        )
        if self.norm == "gLN" and jnp.dtype(self.dtype) == jnp.float32:
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
                norm=self.norm,
                causal=self.causal,
                dtype=self.dtype,
            )
            out = recompute_in_backward(core)(h, *params)
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

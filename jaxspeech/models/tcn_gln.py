"""The gLN block core with a hand-written backward pass (`gln_block_core`), float32, non-causal.

One of the two backward passes of a TCN block (`jaxspeech.models.tcn.TCNConfig.backward`); the
other is XLA's derivative of `jaxspeech.models.tcn_layers.block_core`. The forward pass computes
the same function as the 1×1 conv followed by `block_core` with `norm="gLN"`.
"""

import functools

import jax
import jax.numpy as jnp

from jaxspeech.models.tcn_layers import (
    EPS,
    first_frame_mean,
    left_pad,
    pointwise_conv_grads,
    prelu,
    shifted_moments_to_statistics,
    shifted_taps,
    sum_leading,
    weighted_taps,
)


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
    return [k * dilation - left_pad(taps, dilation, causal=False) for k in range(taps)]


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
    stats = shifted_moments_to_statistics(shift, shifted_mean, shifted_power, EPS)
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
    c = weighted_taps(views, kernel) + bias
    first_c = weighted_taps([view[:, :1] for view in views], kernel) + bias
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
    grad_out_kernel = gamma[:, None] * sum_leading(products).T + jnp.outer(
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
        weighted_taps(grad_views, kernel[::-1]),
        in_normalized,
        in_stats[1],
        gamma,
        sum_grad,
        sum_grad_normalized,
    )
    grad_h, in_slope_terms = _prelu_backward(grad_act, h, in_prelu["negative_slope"])
    grad_x, grad_in_kernel = pointwise_conv_grads(x, in_conv["kernel"], grad_h)
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

"""Depthwise dilated conv: shifted multiply-adds vs grouped `lax.conv`, forward + backward.

Usage: python bench/depthwise.py [--batch 4] [--frames 2000] [--channels 512] [--repeats 7]

Prints the median wall time of one jitted forward + backward (gradients for input and kernel)
per dilation for both formulations, with a check that they agree.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.models.tcn_layers import depthwise_conv1d

DILATIONS = (1, 4, 32, 128)


def grouped_conv1d(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Non-causal depthwise conv of `x[B, T, H]` with `kernel[P, H]` as one grouped conv, in full
    float32 precision (as the shifted form computes; GPUs would otherwise use TF32)."""
    pad = (kernel.shape[0] - 1) * dilation // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel[:, None, :],
        window_strides=(1,),
        padding=[(pad, pad)],
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=x.shape[-1],
        precision=jax.lax.Precision.HIGHEST,
    )


def forward_backward(conv, dilation):
    """Jitted `(x, kernel) -> (dL/dx, dL/dkernel)` for L = Σ conv(x)² / 2."""

    def loss(x, kernel):
        return 0.5 * jnp.sum(jnp.square(conv(x, kernel, dilation)))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def seconds_of(fn, args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def measure(
    batch: int, frames: int, channels: int, taps: int, repeats_for: Callable[[float], int]
) -> tuple[dict[int, tuple[float, float]], int]:
    """Per dilation, the median seconds of (shifted, grouped) forward + backward on
    `x[batch, frames, channels]`, after a check that they agree and one warm-up call each, and
    the number of timed calls per function: `repeats_for(seconds of one call of every
    function)`; 0 times nothing."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, frames, channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(taps, channels)), jnp.float32)
    pairs = {}
    for dilation in DILATIONS:
        pair = (
            forward_backward(depthwise_conv1d, dilation),
            forward_backward(grouped_conv1d, dilation),
        )
        for got, want in zip(*(fn(x, kernel) for fn in pair), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2)
        pairs[dilation] = pair
    repeats = repeats_for(
        sum(seconds_of(fn, (x, kernel)) for pair in pairs.values() for fn in pair)
    )
    if repeats == 0:
        return {}, 0
    medians = {
        dilation: tuple(
            statistics.median(seconds_of(fn, (x, kernel)) for _ in range(repeats)) for fn in pair
        )
        for dilation, pair in pairs.items()
    }
    return medians, repeats


def table(medians: dict[int, tuple[float, float]]) -> list[str]:
    lines = [
        "| dilation | shifted multiply-adds (ms) | grouped conv (ms) | speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for dilation, (shifted, grouped) in medians.items():
        lines.append(
            f"| {dilation} | {1e3 * shifted:.1f} | {1e3 * grouped:.1f} | {grouped / shifted:.1f}× |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--taps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    x_shape = args.batch, args.frames, args.channels
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, x {x_shape} float32")
    medians, _ = measure(*x_shape, args.taps, lambda _: args.repeats)
    print("\n".join(table(medians)))


if __name__ == "__main__":
    main()

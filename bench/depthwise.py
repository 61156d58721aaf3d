"""Depthwise dilated conv: shifted multiply-adds vs grouped `lax.conv`, forward + backward.

Usage: python bench/depthwise.py [--batch 4] [--frames 2000] [--channels 512] [--repeats 7]

Prints the median wall time of one jitted forward + backward (gradients for input and kernel)
per dilation for both formulations, with a check that they agree.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.models.tcn_layers import depthwise_conv1d


def grouped_conv1d(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Non-causal depthwise conv of `x[B, T, H]` with `kernel[P, H]` as one grouped conv."""
    pad = (kernel.shape[0] - 1) * dilation // 2
    return jax.lax.conv_general_dilated(
        x,
        kernel[:, None, :],
        window_strides=(1,),
        padding=[(pad, pad)],
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=x.shape[-1],
    )


def forward_backward(conv, dilation):
    """Jitted `(x, kernel) -> (dL/dx, dL/dkernel)` for L = Σ conv(x)² / 2."""

    def loss(x, kernel):
        return 0.5 * jnp.sum(jnp.square(conv(x, kernel, dilation)))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--taps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, args.frames, args.channels)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(args.taps, args.channels)), jnp.float32)
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, x {tuple(x.shape)} float32")
    print("| dilation | shifted multiply-adds (ms) | grouped conv (ms) | speed-up |")
    print("|---:|---:|---:|---:|")
    for dilation in (1, 4, 32, 128):
        shifted = forward_backward(depthwise_conv1d, dilation)
        grouped = forward_backward(grouped_conv1d, dilation)
        for got, want in zip(shifted(x, kernel), grouped(x, kernel), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2)
        t_shifted = median_seconds(shifted, (x, kernel), args.repeats)
        t_grouped = median_seconds(grouped, (x, kernel), args.repeats)
        print(
            f"| {dilation} | {1e3 * t_shifted:.1f} | {1e3 * t_grouped:.1f} "
            f"| {t_grouped / t_shifted:.1f}× |"
        )


if __name__ == "__main__":
    main()

"""One Conv-TasNet gLN block at inference size: its time against its two matmuls alone, and
XLA's float32 against bfloat16 matmul rate.

Usage: python bench/tasnet_block.py [--frames 10000] [--dilation 4] [--repeats 15]
(run it with the allocator of `bench/tasnet_speed.py --malloc tcmalloc`:
`LD_PRELOAD=libtcmalloc_minimal.so.4`).

The block is `jaxspeech.models.tcn_gln.gln_block_core` in the paper configuration (B=128, H=512,
Sc=128) on one utterance of `--frames` encoder frames (10,000 = 10 s at 8 kHz), forward only,
with random params. Its 1×1 convs (B→H, then H→B+Sc) are timed alone on inputs of the same
shapes; the rest of the block's time is its norms, PReLUs and depthwise conv. The matmul
rates compare a jitted `a @ b` in float32 and bfloat16. Medians, the variants alternating.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.models.tcn_gln import gln_block_core

BOTTLENECK, HIDDEN, SKIP = 128, 512, 128


def block_params(rng: np.random.Generator) -> tuple[dict, ...]:
    """Random params of one block (`gln_block_core`'s order), float32."""

    def normal(*shape, scale=0.1):
        return jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)

    def gain_bias():
        return {"gamma": 1 + normal(HIDDEN), "beta": normal(HIDDEN)}

    return (
        {"kernel": normal(BOTTLENECK, HIDDEN), "bias": normal(HIDDEN)},
        {"negative_slope": jnp.float32(0.25)},
        gain_bias(),
        {"kernel": normal(3, HIDDEN), "bias": normal(HIDDEN)},
        {"negative_slope": jnp.float32(0.25)},
        gain_bias(),
        {"kernel": normal(HIDDEN, BOTTLENECK + SKIP), "bias": normal(BOTTLENECK + SKIP)},
    )


def interleaved_ms(calls: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each no-argument call, the calls alternating, after one warm-up."""
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--dilation", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    params = block_params(rng)
    x = jnp.asarray(rng.standard_normal((1, args.frames, BOTTLENECK)), jnp.float32)
    hidden = jnp.asarray(rng.standard_normal((1, args.frames, HIDDEN)), jnp.float32)
    block = jax.jit(lambda x, params: gln_block_core(x, *params, args.dilation))
    matmul = jax.jit(jnp.matmul)
    in_kernel, out_kernel = params[0]["kernel"], params[-1]["kernel"]
    block_ms = interleaved_ms(
        {
            "block": lambda: block(x, params).block_until_ready(),
            "in conv": lambda: matmul(x, in_kernel).block_until_ready(),
            "out convs": lambda: matmul(hidden, out_kernel).block_until_ready(),
        },
        args.repeats,
    )
    convs = block_ms["in conv"] + block_ms["out convs"]
    print(f"gLN block forward, [1, {args.frames}, {HIDDEN}], dilation {args.dilation}:")
    print(f"  whole block {block_ms['block']:.2f} ms; its two 1×1 convs alone {convs:.2f} ms")
    print(f"  ({block_ms['in conv']:.2f} + {block_ms['out convs']:.2f})\n")

    shapes = {
        "4096³": (4096, 4096, 4096),
        f"[{args.frames}, 128] @ [128, 512]": (args.frames, 128, 512),
    }
    print("| matmul | float32 GFLOP/s | bfloat16 GFLOP/s |")
    print("|---|---:|---:|")
    for label, (m, k, n) in shapes.items():
        calls = {}
        for dtype in (jnp.float32, jnp.bfloat16):
            a = jnp.asarray(rng.standard_normal((m, k)), dtype)
            b = jnp.asarray(rng.standard_normal((k, n)), dtype)
            calls[jnp.dtype(dtype).name] = lambda a=a, b=b: matmul(a, b).block_until_ready()
        rates = {name: 2 * m * k * n / ms / 1e6 for name, ms in interleaved_ms(calls, 7).items()}
        print(f"| {label} | {rates['float32']:.0f} | {rates['bfloat16']:.0f} |")


if __name__ == "__main__":
    main()

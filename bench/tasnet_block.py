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
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.models.tcn_gln import gln_block_core

BOTTLENECK, HIDDEN, SKIP = 128, 512, 128
MATMUL_REPEATS = 7


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


def interleaved_ms(
    calls: dict[str, Callable[[], object]], repeats_for: Callable[[float], int]
) -> tuple[dict[str, float], int]:
    """Median milliseconds of each no-argument call, the calls alternating, after two warm-up
    rounds (the first compiles), and the number of timed rounds: `repeats_for(seconds of the
    last warm-up round)`; 0 times nothing."""

    def round_seconds() -> dict[str, float]:
        seconds = {}
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name] = time.perf_counter() - start
        return seconds

    round_seconds()
    repeats = repeats_for(sum(round_seconds().values()))
    if repeats == 0:
        return {}, 0
    rounds = [round_seconds() for _ in range(repeats)]
    return {name: 1e3 * statistics.median(r[name] for r in rounds) for name in calls}, repeats


def measure_block(
    frames: int, dilation: int, repeats_for: Callable[[float], int]
) -> tuple[dict[str, float], int]:
    """Median ms of the block's forward ("block") and of its two 1×1 convs alone ("in conv",
    "out convs") on `frames` encoder frames, and the number of timed rounds."""
    rng = np.random.default_rng(0)
    params = block_params(rng)
    x = jnp.asarray(rng.standard_normal((1, frames, BOTTLENECK)), jnp.float32)
    hidden = jnp.asarray(rng.standard_normal((1, frames, HIDDEN)), jnp.float32)
    block = jax.jit(lambda x, params: gln_block_core(x, *params, dilation))
    matmul = jax.jit(jnp.matmul)
    in_kernel, out_kernel = params[0]["kernel"], params[-1]["kernel"]
    calls = {
        "block": lambda: block(x, params).block_until_ready(),
        "in conv": lambda: matmul(x, in_kernel).block_until_ready(),
        "out convs": lambda: matmul(hidden, out_kernel).block_until_ready(),
    }
    return interleaved_ms(calls, repeats_for)


def block_lines(block_ms: dict[str, float], frames: int, dilation: int) -> list[str]:
    convs = block_ms["in conv"] + block_ms["out convs"]
    return [
        f"gLN block forward, [1, {frames}, {HIDDEN}], dilation {dilation}: "
        f"whole block {block_ms['block']:.2f} ms; its two 1×1 convs alone {convs:.2f} ms "
        f"({block_ms['in conv']:.2f} + {block_ms['out convs']:.2f})."
    ]


def matmul_shapes(frames: int) -> dict[str, tuple[int, int, int]]:
    return {"4096³": (4096, 4096, 4096), f"[{frames}, 128] @ [128, 512]": (frames, 128, 512)}


def measure_matmul_dtypes(
    frames: int, repeats_for: Callable[[float], int]
) -> tuple[dict[str, dict[str, float]], int]:
    """GFLOP/s of a jitted `a @ b` in float32 and bfloat16 (medians, the two alternating) per
    shape of `matmul_shapes`, and the number of timed rounds (planned on the first shape)."""
    rng = np.random.default_rng(0)
    matmul = jax.jit(jnp.matmul)
    rates, repeats = {}, None
    for label, (m, k, n) in matmul_shapes(frames).items():
        calls = {}
        for dtype in (jnp.float32, jnp.bfloat16):
            a = jnp.asarray(rng.standard_normal((m, k)), dtype)
            b = jnp.asarray(rng.standard_normal((k, n)), dtype)
            calls[jnp.dtype(dtype).name] = lambda a=a, b=b: matmul(a, b).block_until_ready()
        if repeats is None:  # the largest shape first: its rounds bound the others'
            ms, repeats = interleaved_ms(calls, repeats_for)
        else:
            ms, _ = interleaved_ms(calls, lambda _, fixed=repeats: fixed)
        if repeats == 0:
            return {}, 0
        rates[label] = {name: 2 * m * k * n / t / 1e6 for name, t in ms.items()}
    return rates, repeats


def matmul_table(rates: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| matmul | float32 GFLOP/s | bfloat16 GFLOP/s |", "|---|---:|---:|"]
    for label, by_dtype in rates.items():
        lines.append(f"| {label} | {by_dtype['float32']:.0f} | {by_dtype['bfloat16']:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--dilation", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    block_ms, _ = measure_block(args.frames, args.dilation, lambda _: args.repeats)
    print("\n".join(block_lines(block_ms, args.frames, args.dilation)) + "\n")
    rates, _ = measure_matmul_dtypes(args.frames, lambda _: MATMUL_REPEATS)
    print("\n".join(matmul_table(rates)))


if __name__ == "__main__":
    main()

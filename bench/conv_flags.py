"""One 3×3 convolution of the speaker ResNet on XLA:CPU, forward and both gradients, under
each XLA:CPU library setting and activation/kernel layout.

Usage:
    python bench/conv_flags.py [--shape 16 200 80 32] [--repeats 5] [--layouts NHWC/HWIO ...]

The convolution maps ``[B, T, F, C]`` to ``C`` channels with padding 1, as every 3×3 layer of
``jaxspeech.models.speaker``; the input gradient and the kernel gradient are the two halves of
its ``jax.vjp``, timed separately. Each setting is a set of XLA debug options given to that
one compilation (``compiled = lowered.compile(compiler_options)``, the per-program form of
``XLA_FLAGS``), so all settings run in one process and their timings alternate (setting 1,
setting 2, …, setting 1, …): machine load hits them alike. Every setting's outputs are compared
with the default's (same layout) and the largest error relative to the output's largest
magnitude is printed; ``library`` names the library calls in the compiled program.
"""

import argparse
import statistics
import time

import jax
import numpy as np


def _ynn_types(*names: str) -> str:
    return ",".join(f"LIBRARY_FUSION_TYPE_{name}" for name in names)


SETTINGS = {
    "default (YNNPACK convolutions)": {},
    # jaxlib 0.10's default YNNPACK list is INDIVIDUAL_DOT, REDUCE, INDIVIDUAL_CONVOLUTION; a
    # compiler option replaces the whole list
    "YNNPACK convolutions off (Eigen)": {
        "xla_cpu_experimental_ynn_fusion_type": _ynn_types("INDIVIDUAL_DOT", "REDUCE")
    },
    "oneDNN custom calls": {
        "xla_cpu_use_onednn": True,
        "xla_cpu_experimental_onednn_custom_call": True,
    },
    "oneDNN fusions (dot, eltwise)": {
        "xla_cpu_use_onednn": True,
        "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,"
        "LIBRARY_FUSION_TYPE_ELTWISE",
    },
    "XNNPACK graph fusion (greedy)": {
        "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"
    },
    "XNNPACK off": {"xla_cpu_use_xnnpack": False},
}
#: (activations, kernel) layouts; the output has the activations' layout.
LAYOUTS = ("NHWC/HWIO", "NHWC/OIHW", "NCHW/OIHW", "NCHW/HWIO")
LIBRARY_MARKS = ("onednn", "ynn", "xnn")
PARTS = ("forward", "input gradient", "kernel gradient")


def programs(shape: list[int], layout: str) -> dict[str, tuple]:
    """``{part: (function, arguments)}`` of one convolution in ``layout``."""
    batch, frames, freq, channels = shape
    lhs, rhs = layout.split("/")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, frames, freq, channels), np.float32)
    w = (rng.standard_normal((3, 3, channels, channels)) / (3 * channels**0.5)).astype(np.float32)
    if lhs == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if rhs == "OIHW":
        w = w.transpose(3, 2, 0, 1)

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=(lhs, rhs, lhs)
        )

    cotangent = np.asarray(conv(x, w)) * 0.5 + 0.1
    return {
        "forward": (conv, (x, w)),
        "input gradient": (lambda w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], (w, cotangent)),
        "kernel gradient": (lambda x, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], (x, cotangent)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 200, 80, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    print(f"shape {args.shape} (B, T, F, C), 3×3 conv C→C, float32; seconds, medians of "
          f"{args.repeats} alternating runs")  # fmt: skip
    print("\n| setting | layout | forward | input grad | kernel grad | library | max rel. err |")
    print("|---|---|---:|---:|---:|---|---:|")
    for layout in args.layouts:
        compiled, outputs, libraries = {}, {}, {}
        for part, (fn, fn_args) in programs(args.shape, layout).items():
            lowered = jax.jit(fn).lower(*fn_args)
            for name in args.settings:
                program = lowered.compile(SETTINGS[name])
                text = program.as_text().lower()
                libraries.setdefault(name, set()).update(m for m in LIBRARY_MARKS if m in text)
                compiled[name, part] = (program, fn_args)
                outputs[name, part] = np.asarray(program(*fn_args))
        times = {key: [] for key in compiled}
        for _ in range(args.repeats):
            for key, (program, fn_args) in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(program(*fn_args))
                times[key].append(time.perf_counter() - start)
        reference = args.settings[0]
        for name in args.settings:
            error = max(
                float(
                    np.abs(outputs[name, p] - outputs[reference, p]).max()
                    / np.abs(outputs[reference, p]).max()
                )
                for p in PARTS
            )
            cells = " | ".join(f"{statistics.median(times[name, p]):.3f}" for p in PARTS)
            print(f"| {name} | {layout} | {cells} | {', '.join(sorted(libraries[name])) or '-'} "
                  f"| {error:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

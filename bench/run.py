"""Every benchmark of the project in one run, fitted to a time budget, its figures appended to
bench/RESULTS.md as a new dated section.

    python -m bench [--budget 7] [--device auto|cpu|gpu] [--dtype float32|bfloat16]
                    [--results bench/RESULTS.md] [--malloc auto]

The budget counts from the start of the process (an allocator restart included). In order,
with the shapes and repeat counts of the earlier RESULTS.md sections as the most: a 4096³
float32 matmul probe (always, at least one call; the floors and shares are against its rate),
- training: Conv-TasNet training step, ours against Asteroid 0.7.0 (`tasnet_speed.py`),
- inference: real-time factor at 10 s and 60 s, ours against Asteroid (`tasnet_speed.py`),
- block: one gLN block against its matmuls; float32 against bfloat16 matmuls (`tasnet_block.py`),
- depthwise: shifted multiply-adds against a grouped conv (`depthwise.py`),
- matching: ranking 100,000 cached tracks, descriptor extraction, a training step
  (`bgm_speed.py`),
- video: decoding, face detection and mouth tracking of 11 GRID clips (`video_speed.py`),
- audio-visual: the AV enhancement end to end on a 60 s video, lip-net training steps
  (`av_speed.py`).
A benchmark starts only when the budget left covers `least_seconds` (what it took on the
project's 2-core CPU, the slowest machine it targets); it then warms up, which measures one
repeat, and times as many repeats as fit its share (`bench/plan.py`). What does not fit is
skipped, and the section says so. Asteroid runs where torch and asteroid are installed (on
CUDA when ours runs on a GPU); otherwise its rows say why not.
"""

import argparse
import datetime
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from bench import av_speed, bgm_speed, depthwise, report, tasnet_block, tasnet_speed, video_speed
from bench.plan import Allotment, Budget, seconds_since_process_start
from jaxspeech.errors import ConfigError

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")
BATCH, EXAMPLE_SECONDS, WARMUP_STEPS = 4, 4.0, 2
INFERENCE_SECONDS = (10, 60)
BLOCK_FRAMES, BLOCK_DILATION = 10_000, 4
DEPTHWISE_SHAPE = dict(batch=4, frames=2000, channels=512, taps=3)
PROBE_SHARE = 0.05  # of the budget, for the matmul probe, which always runs at least once
NOT_TIMED = "Not timed: after the warm-up, its fewest repeats no longer fit in the budget."


class Context:
    """What the benchmarks share: our compute dtype, the matmul rate, the two models."""

    def __init__(self, dtype: jnp.dtype, matmul_rate: float):
        self.dtype, self.matmul_rate = dtype, matmul_rate
        self.asteroid_reason = tasnet_speed.asteroid_missing()
        self._runners = None

    def runners(self) -> list:
        """Ours, then Asteroid's where it can run; built on first use."""
        if self._runners is None:
            mixture, sources = tasnet_speed.training_batch(BATCH, EXAMPLE_SECONDS)
            self._runners = [tasnet_speed.JaxRunner(mixture, sources, self.dtype)]
            if self.asteroid_reason is None:
                import torch

                torch.set_num_threads(os.cpu_count())
                device = tasnet_speed.asteroid_device()
                self._runners.append(tasnet_speed.AsteroidRunner(mixture, sources, device))
        return self._runners

    def peers(self) -> str:
        ours = f"ours computes in {jnp.dtype(self.dtype).name} (float32 params)"
        if self.asteroid_reason:
            return f"{ours}; Asteroid not run: {self.asteroid_reason}"
        import torch

        device = tasnet_speed.asteroid_device()
        if device == "cuda":
            flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            where = f"CUDA (TF32 matmul {flags[0]}, cuDNN {flags[1]})"
        else:
            where = f"the CPU, {torch.get_num_threads()} threads"
        return f"{ours}; Asteroid in float32 on {where}"


def run_training(context: Context, allotment: Allotment) -> list[str]:
    runners = context.runners()
    xla_flops, temp_bytes = runners[0].compiled_cost()
    step, repeats, memory = tasnet_speed.measure_training(
        runners, WARMUP_STEPS, allotment.repeats_for(most=7, least=3)
    )
    if not repeats:
        return [NOT_TIMED]
    samples = int(EXAMPLE_SECONDS * tasnet_speed.SAMPLE_RATE)
    flops = tasnet_speed.train_step_flops(tasnet_speed.PAPER, BATCH, samples)
    return [
        f"Paper configuration, forward + backward + Adam on {BATCH} × {EXAMPLE_SECONDS:g} s at "
        f"8 kHz, PIT negative SI-SNR; {context.peers()}. Medians of {repeats} steps after "
        f"{WARMUP_STEPS} warm-up steps, the two alternating. Peak memory: ours by XLA's memory "
        "analysis, Asteroid's `torch.cuda.max_memory_allocated` (GPU only).",
        "",
        tasnet_speed.step_summary(flops, xla_flops, temp_bytes, context.matmul_rate),
        "",
        *tasnet_speed.training_table(
            step, memory, flops, context.matmul_rate, context.asteroid_reason
        ),
    ]


def run_inference(context: Context, allotment: Allotment) -> list[str]:
    rtf, repeats, memory = tasnet_speed.measure_inference(
        context.runners(), INFERENCE_SECONDS, allotment.repeats_for(most=5, least=2)
    )
    if not repeats:
        return [NOT_TIMED]
    return [
        f"One random mixture per length, batch 1; {context.peers()}. Medians of {repeats} after "
        "one warm-up (ours compiles there), the two alternating; RTF = wall time / duration.",
        "",
        *tasnet_speed.inference_table(rtf, memory, context.matmul_rate, context.asteroid_reason),
    ]


def run_block(context: Context, allotment: Allotment) -> list[str]:
    block_ms, repeats = tasnet_block.measure_block(
        BLOCK_FRAMES, BLOCK_DILATION, allotment.repeats_for(most=15, least=3, part=0.3)
    )
    if not repeats:
        return [NOT_TIMED]
    rates, matmul_repeats = tasnet_block.measure_matmul_dtypes(
        BLOCK_FRAMES, allotment.repeats_for(most=tasnet_block.MATMUL_REPEATS, least=3)
    )
    lines = [
        f"`gln_block_core` in float32 (medians of {repeats}, block and convs alternating):",
        "",
        *tasnet_block.block_lines(block_ms, BLOCK_FRAMES, BLOCK_DILATION),
    ]
    if not matmul_repeats:
        return [*lines, "", f"Matmul rates: {NOT_TIMED}"]
    return [
        *lines,
        "",
        f"Jitted `a @ b`, medians of {matmul_repeats}, the dtypes alternating:",
        "",
        *tasnet_block.matmul_table(rates),
    ]


def run_depthwise(context: Context, allotment: Allotment) -> list[str]:
    medians, repeats = depthwise.measure(
        **DEPTHWISE_SHAPE, repeats_for=allotment.repeats_for(most=7, least=3)
    )
    if not repeats:
        return [NOT_TIMED]
    shape = DEPTHWISE_SHAPE
    return [
        f"Forward + backward (gradients for input and kernel) of one non-causal depthwise conv, "
        f"kernel {shape['taps']}, `x = [{shape['batch']}, {shape['frames']}, "
        f"{shape['channels']}]` float32, medians of {repeats}.",
        "",
        *depthwise.table(medians),
    ]


def run_bgm(context: Context, allotment: Allotment) -> list[str]:
    from jaxspeech.data.corpus import resolve_data_root

    del context, allotment  # fixed sizes: its three parts take about a minute on the CPU
    return bgm_speed.report(100_000, 5, resolve_data_root())


def run_video(context: Context, allotment: Allotment) -> list[str]:
    del context, allotment  # fixed sizes: about a minute on the CPU
    return [f"- {line}" for line in video_speed.report(clips=11)]


def run_av(context: Context, allotment: Allotment) -> list[str]:
    from jaxspeech.data.corpus import resolve_data_root

    del context, allotment  # fixed sizes: about four minutes on the CPU
    return [f"- {line}" for line in av_speed.report(1, resolve_data_root())]


@dataclass(frozen=True)
class Benchmark:
    heading: str
    weight: float  # its share of the budget against the benchmarks still to run
    least_seconds: float  # its compile, warm-up and fewest repeats on the 2-core CPU
    run: Callable[[Context, Allotment], list[str]]


BENCHMARKS = (
    Benchmark("Conv-TasNet training step: jaxspeech vs Asteroid 0.7.0", 4, 75, run_training),
    Benchmark("Conv-TasNet inference: jaxspeech vs Asteroid 0.7.0", 3, 40, run_inference),
    Benchmark("One gLN block at inference size; matmul dtypes", 1, 10, run_block),
    Benchmark("Depthwise dilated convolution: shifted vs grouped", 2, 35, run_depthwise),
    Benchmark("Background-music matching: ranking, descriptors, training step", 1, 90, run_bgm),
    Benchmark("Video decoding and face/mouth tracking (11 GRID clips)", 1, 60, run_video),
    Benchmark("Audio-visual enhancement: end to end on 60 s, lip-net step", 1, 240, run_av),
)


def run_benchmarks(benchmarks, budget: Budget, context: Context) -> list[tuple[str, list[str]]]:
    """Each benchmark's (heading, Markdown lines), in order, within `budget`; printed as they
    finish."""
    parts = []
    weights_to_come = sum(b.weight for b in benchmarks)
    for benchmark in benchmarks:
        allotted = budget.share(benchmark.weight, weights_to_come)
        weights_to_come -= benchmark.weight
        if budget.fits(benchmark.least_seconds):
            start = time.monotonic()
            lines = benchmark.run(context, Allotment(budget, allotted))
            lines += ["", f"({time.monotonic() - start:.0f} s of the budget.)"]
        else:
            lines = [
                f"Skipped: a start needs about {benchmark.least_seconds:.0f} s; "
                f"{budget.left():.0f} s of the budget were left."
            ]
        print(f"\n### {benchmark.heading}\n\n" + "\n".join(lines), flush=True)
        parts.append((benchmark.heading, lines))
    return parts


def select_device(device: str) -> None:
    """Points JAX at `device`: "cpu", "gpu" (fails unless JAX's default backend is a GPU) or
    "auto" (JAX's own choice, the GPU when it sees one)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for torch
    if device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    backend = jax.default_backend()
    if device == "gpu" and backend != "gpu":
        raise ConfigError(
            f"--device gpu: JAX sees no GPU (its backend is {backend}); install JAX's CUDA "
            "plugin (jax[cuda13]) or use --device cpu"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=7.0, help="minutes for the whole run, start-up included"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS)
    parser.add_argument(
        "--malloc",
        choices=tasnet_speed.ALLOCATORS,
        default="auto",
        help="allocator of the process (see bench/tasnet_speed.py); auto: tcmalloc when "
        "installed, else glibc huge pages",
    )
    args = parser.parse_args(argv)
    if args.budget <= 0:
        raise ConfigError(f"--budget {args.budget}: give the run's minutes, more than 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    budget = Budget(60 * args.budget - seconds_since_process_start())
    allocator = tasnet_speed.resolve_allocator(args.malloc)
    if tasnet_speed.current_allocator() != allocator:
        tasnet_speed.restart_with(allocator)
    select_device(args.device)
    load_before = os.getloadavg()
    command = tasnet_speed.command_line()
    print(f"{command}\n" + "\n".join(report.machine_lines(allocator)), flush=True)

    probe = Allotment(budget, PROBE_SHARE * budget.left()).repeats_for(most=5, least=1)
    rate, repeats = tasnet_speed.matmul_gflops(probe)
    probe_line = f"4096³ float32 matmul: {rate:.0f} GFLOP/s (fastest of {repeats})"
    if args.dtype != "float32":
        other, _ = tasnet_speed.matmul_gflops(probe, jnp.dtype(args.dtype))
        probe_line += f"; {args.dtype}: {other:.0f} GFLOP/s"
    context = Context(jnp.dtype(args.dtype), rate)
    parts = run_benchmarks(BENCHMARKS, budget, context)

    used = seconds_since_process_start()
    summary = [
        *report.machine_lines(allocator),
        f"- {probe_line}",
        f"- budget {args.budget:g} min, {used / 60:.1f} min used; load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after",
    ]
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        summary.append(
            f"- JAX's peak device memory in the run: {tasnet_speed.gib(stats['peak_bytes_in_use'])}"
        )
    now = datetime.datetime.now(datetime.UTC)
    title = f"All benchmarks, {now:%Y-%m-%d %H:%M} UTC, {jax.devices()[0].device_kind}"
    report.append_section(args.results, report.render_section(title, summary, parts, command))
    print(f"\nappended to {args.results}", file=sys.stderr)

"""Conv-TasNet speed: our JAX training step and inference against Asteroid's, in one process.

Usage (torch + asteroid installed, e.g. the parity venv):
    python bench/tasnet_speed.py [--steps 5] [--warmup 2] [--threads 2] [--malloc MALLOC]
Without torch:
    python bench/tasnet_speed.py --jax-only
(`python -m bench` runs this benchmark with the project's others and writes bench/RESULTS.md.)

`--malloc` picks the allocator of the whole process (both frameworks): `glibc` (default),
`glibc-hugetlb` (glibc with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: transparent huge pages for
its mmapped blocks), `tcmalloc` (gperftools, Debian package libtcmalloc-minimal4, preloaded) or
`auto` (tcmalloc when installed, else glibc-hugetlb, as `train.py` picks); the script restarts
itself with the setting. With plain glibc malloc every large buffer is a fresh `mmap`, so
each step first-touches (page-faults) its whole working set; tcmalloc keeps freed pages.

Paper configuration (N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, 2 sources, gLN).
Training step: forward + backward + Adam on a batch of 4 × 4 s at 8 kHz with negative SI-SNR
under utterance-level PIT (ours: `jaxspeech.losses.pit(pairwise_neg_si_snr)`; Asteroid:
`PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")`). Inference: one 10 s and one 60 s
mixture, real-time factor = wall time / audio duration. On a GPU, both run there (Asteroid when
torch sees CUDA, synchronised around each timing). The two implementations alternate
(ours, Asteroid, ours, …) so that machine load hits both alike; medians after warm-up.
Also prints the step's FLOPs (analytic and XLA's cost analysis) and temporary memory (XLA's
memory analysis), the achieved GFLOP/s against a 4096³ float32 matmul measured in the same
run, and minor page faults per step; for inference, the forward FLOPs per second of audio,
the real-time factor that the matmul rate allows, and each implementation's share of it.
"""

import argparse
import ctypes.util
import functools
import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspeech.allocator import HUGETLB, TCMALLOC
from jaxspeech.errors import ConfigError
from jaxspeech.losses import pairwise_neg_si_snr, pit
from jaxspeech.models.tasnet import ConvTasNet, ConvTasNetConfig
from jaxspeech.models.tcn import TCNConfig

SAMPLE_RATE = 8000
PAPER = dict(N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, n_src=2)
ALLOCATORS = ("glibc", "glibc-hugetlb", "tcmalloc", "auto")
COMMAND_ENV = "TASNET_SPEED_COMMAND"  # the command line as typed, kept across the restart


def build_model(config: dict = PAPER, dtype: jnp.dtype = jnp.float32) -> ConvTasNet:
    """Our ConvTasNet of a config in the paper's letters (`PAPER`'s keys)."""
    tcn = TCNConfig(
        bottleneck_channels=config["B"],
        hidden_channels=config["H"],
        skip_channels=config["Sc"],
        kernel_size=config["P"],
        blocks=config["X"],
        repeats=config["R"],
    )
    model = ConvTasNetConfig(
        n_src=config["n_src"], n_filters=config["N"], filter_length=config["L"], tcn=tcn
    )
    return ConvTasNet(model, dtype)


def forward_flops_per_frame(c: dict) -> int:
    """Multiply-adds × 2 of one encoder frame through the model (1×1 convs, depthwise, filters)."""
    block = 2 * (c["B"] * c["H"] + c["P"] * c["H"] + c["H"] * c["B"] + c["H"] * c["Sc"])
    return (
        2
        * (
            c["L"] * c["N"]  # encoder
            + c["N"] * c["B"]  # bottleneck
            + c["Sc"] * c["n_src"] * c["N"]  # mask conv
            + c["n_src"] * c["N"] * c["L"]  # decoder
        )
        + c["X"] * c["R"] * block
    )


def train_step_flops(c: dict, batch: int, samples: int) -> float:
    """Forward + backward (input and weight gradients: 2× forward) of one training step."""
    frames = (samples - c["L"]) // (c["L"] // 2) + 1
    return 3.0 * batch * frames * forward_flops_per_frame(c)


def inference_flops_per_second(c: dict) -> float:
    """Forward FLOPs of one second of audio (encoder frames every L/2 samples)."""
    return SAMPLE_RATE / (c["L"] // 2) * forward_flops_per_frame(c)


def resolve_allocator(choice: str) -> str:
    """`choice`, with "auto" resolved to "tcmalloc" when its library is installed, else
    "glibc-hugetlb"."""
    if choice != "auto":
        return choice
    return "tcmalloc" if ctypes.util.find_library(TCMALLOC) else "glibc-hugetlb"


def command_line() -> str:
    """The command line that started this run, as typed (before any allocator restart)."""
    return os.environ.get(COMMAND_ENV) or shlex.join(sys.orig_argv)


def current_allocator() -> str:
    """ "tcmalloc" when it is mapped into this process, "glibc-hugetlb" or "glibc"."""
    with open("/proc/self/maps") as maps:
        if TCMALLOC in maps.read():
            return "tcmalloc"
    return "glibc-hugetlb" if HUGETLB in os.environ.get("GLIBC_TUNABLES", "") else "glibc"


def restart_with(allocator: str) -> None:
    """Re-executes this program (same interpreter arguments, e.g. `-m bench`) under `allocator`
    (no return); exits if that cannot be done."""
    if os.environ.get("TASNET_SPEED_RESTARTED"):
        sys.exit(f"--malloc {allocator}: still {current_allocator()} after a restart")
    env = dict(os.environ, TASNET_SPEED_RESTARTED="1", **{COMMAND_ENV: command_line()})
    preload = [lib for lib in env.get("LD_PRELOAD", "").split() if TCMALLOC not in lib]
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and t != HUGETLB]
    if allocator == "tcmalloc":
        name = ctypes.util.find_library(TCMALLOC)
        if name is None:
            raise ConfigError(
                "--malloc tcmalloc: libtcmalloc_minimal not found; install libtcmalloc-minimal4 "
                "or use --malloc auto"
            )
        preload.append(name)
    elif allocator == "glibc-hugetlb":
        tunables.append(HUGETLB)
    env["LD_PRELOAD"], env["GLIBC_TUNABLES"] = " ".join(preload), ":".join(tunables)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], None]) -> tuple[float, int]:
    """(seconds, minor page faults) of one call."""
    faults, start = minor_faults(), time.perf_counter()
    fn()
    return time.perf_counter() - start, minor_faults() - faults


def matmul_gflops(
    repeats_for: Callable[[float], int] = lambda _: 5, dtype: jnp.dtype = jnp.float32
) -> tuple[float, int]:
    """GFLOP/s of a jitted 4096³ matmul in `dtype`, the fastest of `repeats_for(seconds of the
    warm-up call)` calls (at least one), and that number."""
    a = jax.random.normal(jax.random.key(0), (4096, 4096), dtype)
    matmul = jax.jit(jnp.matmul)
    call = lambda: matmul(a, a).block_until_ready()
    repeats = max(1, repeats_for(timed(call)[0]))
    return 2 * 4096**3 / min(timed(call)[0] for _ in range(repeats)) / 1e9, repeats


def executable_bytes(compiled) -> int:
    """Device memory an XLA executable needs by its memory analysis: arguments, outputs that
    do not reuse (donated) argument buffers, and temporaries."""
    m = compiled.memory_analysis()
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


class JaxRunner:
    """Our ConvTasNet on JAX's default device: the training step (params and Adam state
    donated) and inference (once per input shape), each compiled ahead of time."""

    def __init__(
        self,
        mixture: np.ndarray,
        sources: np.ndarray,
        dtype: jnp.dtype = jnp.float32,
        config: dict = PAPER,
        name: str = "jaxspeech",
    ):
        self.name = name
        self.model = build_model(config, dtype)
        self.params = self.model.init(jax.random.key(0), jnp.zeros((1, 64)))
        self.optimizer = optax.adam(1e-3)
        self.opt_state = self.optimizer.init(self.params)
        self.mixture, self.sources = jnp.asarray(mixture), jnp.asarray(sources)
        self.inference_executables = {}  # per input shape
        self.used = {}  # the executables run since `reset_peak_memory`

    @functools.cached_property
    def step_executable(self):
        """The compiled training step (compiled on first use)."""
        step = jax.jit(self._step, donate_argnums=(0, 1))
        return step.lower(self.params, self.opt_state, self.mixture, self.sources).compile()

    def _loss(self, params, mixture, sources):
        loss, _ = pit(pairwise_neg_si_snr, self.model.apply(params, mixture), sources)
        return jnp.mean(loss)

    def _step(self, params, opt_state, mixture, sources):
        loss, grads = jax.value_and_grad(self._loss)(params, mixture, sources)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def compiled_cost(self) -> tuple[float, float]:
        """The training step's (FLOPs by XLA's cost analysis, temporary memory in bytes)."""
        compiled = self.step_executable
        analysis = compiled.cost_analysis()
        if isinstance(analysis, list):  # older jax: one dict per computation
            analysis = analysis[0]
        return float(analysis["flops"]), float(compiled.memory_analysis().temp_size_in_bytes)

    def train_step(self) -> None:
        self.used["step"] = self.step_executable
        self.params, self.opt_state, loss = self.step_executable(
            self.params, self.opt_state, self.mixture, self.sources
        )
        loss.block_until_ready()

    def infer(self, mixture: np.ndarray) -> None:
        wav = jnp.asarray(mixture)
        if wav.shape not in self.inference_executables:
            compiled = jax.jit(self.model.apply).lower(self.params, wav).compile()
            self.inference_executables[wav.shape] = compiled
        self.used[wav.shape] = self.inference_executables[wav.shape]
        self.used[wav.shape](self.params, wav).block_until_ready()

    def reset_peak_memory(self) -> None:
        self.used.clear()

    def peak_memory(self) -> int | None:
        """The most device memory any executable run since `reset_peak_memory` needs (XLA's
        memory analysis: the same on every backend)."""
        return max(map(executable_bytes, self.used.values()), default=None)


def asteroid_device() -> str:
    """Where Asteroid runs: on CUDA when ours runs on a GPU, else on the CPU."""
    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def asteroid_missing() -> str | None:
    """Why Asteroid's ConvTasNet cannot run next to ours here, or None when it can."""
    try:
        import torch
        from asteroid.models import ConvTasNet  # noqa: F401
    except ImportError as error:
        return f"not installed ({error}); `bash bench/setup_parity.sh` builds .venv-parity"
    if asteroid_device() == "cuda" and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (ours runs on the GPU)"
    return None


class AsteroidRunner:
    """Asteroid 0.7.0 ConvTasNet of `config` with torch Adam and PIT negative SI-SDR, on
    `device` ("cpu" or "cuda"; CUDA work is synchronised before each call returns); with
    `autocast` (a torch dtype), the forward pass runs under `torch.autocast` in that dtype."""

    def __init__(
        self,
        mixture: np.ndarray,
        sources: np.ndarray,
        device: str = "cpu",
        config: dict = PAPER,
        autocast=None,
        name: str = "Asteroid",
    ):
        import torch
        from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
        from asteroid.models import ConvTasNet as AsteroidConvTasNet

        self.torch, self.device, self.name = torch, torch.device(device), name
        torch.manual_seed(0)
        self.model = AsteroidConvTasNet(
            n_src=config["n_src"],
            n_filters=config["N"],
            kernel_size=config["L"],
            stride=config["L"] // 2,
            bn_chan=config["B"],
            hid_chan=config["H"],
            skip_chan=config["Sc"],
            conv_kernel_size=config["P"],
            n_blocks=config["X"],
            n_repeats=config["R"],
        ).to(self.device)
        self.autocast = torch.autocast(self.device.type, autocast, enabled=autocast is not None)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
        self.mixture = torch.from_numpy(mixture).to(self.device)
        self.sources = torch.from_numpy(sources).to(self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def train_step(self) -> None:
        self.synchronize()
        self.model.train()
        self.optimizer.zero_grad()
        with self.autocast:
            loss = self.loss(self.model(self.mixture), self.sources)
        loss.backward()
        self.optimizer.step()
        self.synchronize()

    def infer(self, mixture: np.ndarray) -> None:
        self.synchronize()
        self.model.eval()
        with self.torch.inference_mode(), self.autocast:
            self.model(self.torch.from_numpy(mixture).to(self.device))
        self.synchronize()

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> int | None:
        """Peak bytes torch allocated on the GPU since `reset_peak_memory`; None on the CPU."""
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated(self.device)


Timings = dict[str, dict[str, tuple[float, float]]]


def interleaved(runners, calls: dict[str, Callable], count: int) -> dict[str, dict[str, list]]:
    """`count` rounds of every call, each alternating over runners: per call label, per runner,
    the (seconds, minor faults) of each call."""
    samples = {label: {runner.name: [] for runner in runners} for label in calls}
    for label, call in calls.items():
        for _ in range(count):
            for runner in runners:
                samples[label][runner.name].append(timed(lambda c=call, r=runner: c(r)))
    return samples


def interleaved_medians(
    runners, calls: dict[str, Callable], warmup: int, repeats_for: Callable[[float], int]
) -> tuple[Timings, int]:
    """Per call label, per runner, (median seconds, median minor faults) of `call(runner)` over
    timed repeats after `warmup` untimed ones, and the number of repeats. The repeats are
    `repeats_for(seconds of one round of every call)`, asked after each warm-up round; 0 stops
    there and times nothing."""
    repeats = repeats_for(0.0)
    for _ in range(warmup):
        warm = interleaved(runners, calls, 1)
        repeats = repeats_for(sum(rows[0][0] for by in warm.values() for rows in by.values()))
        if repeats == 0:
            return {}, 0
    timed_rows = interleaved(runners, calls, repeats)
    return {
        label: {
            name: (statistics.median(s for s, _ in rows), statistics.median(f for _, f in rows))
            for name, rows in by_runner.items()
        }
        for label, by_runner in timed_rows.items()
    }, repeats


def measure_training(runners, warmup: int, repeats_for: Callable[[float], int]):
    """Training steps alternating over runners: ({name: (median s, median faults)}, repeats,
    {name: peak bytes or None})."""
    for runner in runners:
        runner.reset_peak_memory()
    timings, repeats = interleaved_medians(
        runners, {"step": lambda runner: runner.train_step()}, warmup, repeats_for
    )
    return timings.get("step", {}), repeats, {r.name: r.peak_memory() for r in runners}


def measure_inference(runners, seconds: tuple[int, ...], repeats_for: Callable[[float], int]):
    """Inference on one random mixture per length, after one warm-up each: ({seconds: {name:
    real-time factor}}, repeats, {name: peak bytes or None})."""
    rng = np.random.default_rng(1)
    calls = {}
    for length in seconds:
        wav = rng.normal(size=(1, length * SAMPLE_RATE)).astype(np.float32)
        calls[length] = lambda runner, wav=wav: runner.infer(wav)
    for runner in runners:
        runner.reset_peak_memory()
    timings, repeats = interleaved_medians(runners, calls, 1, repeats_for)
    rtf = {n: {name: s / n for name, (s, _) in by.items()} for n, by in timings.items()}
    return rtf, repeats, {r.name: r.peak_memory() for r in runners}


def gib(count: int | None) -> str:
    return "—" if count is None else f"{count / 2**30:.2f} GiB"


def training_table(
    step: dict[str, tuple[float, float]],
    memory: dict[str, int | None],
    flops: float,
    matmul_rate: float,
    asteroid_reason: str | None,
) -> list[str]:
    """Markdown rows of the training step per implementation (`flops`: the analytic FLOPs of
    a step; `matmul_rate`: float32 GFLOP/s), then Asteroid's step over ours."""
    lines = [
        "| implementation | step (s) | GFLOP/s (% of matmul) | minor faults / step | peak memory |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (seconds, faults) in step.items():
        rate = flops / seconds / 1e9
        lines.append(
            f"| {name} | {seconds:.3f} | {rate:.0f} ({100 * rate / matmul_rate:.0f} %) "
            f"| {faults:,.0f} | {gib(memory[name])} |"
        )
    if asteroid_reason:
        lines.append(f"| Asteroid | not run: {asteroid_reason} | | | |")
    elif len(step) == 2:
        ours, theirs = step.values()
        lines.append(f"| speed-up (Asteroid / ours) | **{theirs[0] / ours[0]:.2f}×** | | | |")
    return lines


def inference_table(
    rtf: dict[int, dict[str, float]],
    memory: dict[str, int | None],
    matmul_rate: float,
    asteroid_reason: str | None,
) -> list[str]:
    """Markdown rows of the real-time factor per implementation and length, Asteroid's over
    ours, then the RTF that the float32 matmul rate `matmul_rate` (GFLOP/s) allows."""
    lengths = list(rtf)
    names = list(rtf[lengths[0]])
    lines = [
        "| implementation | " + " | ".join(f"RTF {n} s" for n in lengths) + " | peak memory |",
        "|---|" + "---:|" * (len(lengths) + 1),
    ]
    for name in names:
        cells = " | ".join(f"{rtf[n][name]:.4f}" for n in lengths)
        lines.append(f"| {name} | {cells} | {gib(memory[name])} |")
    if asteroid_reason:
        lines.append(f"| Asteroid | not run: {asteroid_reason} |" + " |" * len(lengths))
    elif len(names) == 2:
        cells = " | ".join(f"{rtf[n][names[1]] / rtf[n][names[0]]:.2f}×" for n in lengths)
        lines.append(f"| speed-up (Asteroid / ours) | {cells} | |")
    audio_flops = inference_flops_per_second(PAPER)
    floor = audio_flops / matmul_rate / 1e9
    shares = ", ".join(f"{name} {100 * floor / rtf[lengths[0]][name]:.0f} %" for name in names)
    lines.append(
        f"\nInference: {audio_flops / 1e9:.1f} GFLOP per second of audio, so the RTF floor at the "
        f"matmul rate is {floor:.4f}; share of the matmul rate at {lengths[0]} s: {shares}."
    )
    return lines


def training_batch(batch: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Random (mixture[batch, T], sources[batch, n_src, T]) at 8 kHz, the same on every run."""
    rng = np.random.default_rng(0)
    samples = int(seconds * SAMPLE_RATE)
    sources = rng.normal(size=(batch, PAPER["n_src"], samples)).astype(np.float32)
    return sources.sum(axis=1), sources


def step_summary(analytic_flops: float, xla_flops: float, temp_bytes: float, rate: float) -> str:
    """One line: the step's FLOPs both ways, its floor at the matmul rate, its temporary memory."""
    return (
        f"Training step: {analytic_flops / 1e9:.0f} GFLOP analytic, "
        f"{xla_flops / 1e9:.0f} GFLOP by XLA cost analysis; 4096³ float32 matmul "
        f"{rate:.0f} GFLOP/s, so the floor is {analytic_flops / rate / 1e9:.3f} s. "
        f"Our step's temporary memory (XLA): {temp_bytes / 2**30:.2f} GiB."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jax-only", action="store_true", help="skip Asteroid (no torch)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--infer-repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="training example length")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--malloc", choices=ALLOCATORS, default="glibc")
    args = parser.parse_args()
    allocator = resolve_allocator(args.malloc)
    if current_allocator() != allocator:
        restart_with(allocator)

    mixture, sources = training_batch(args.batch, args.seconds)
    print(f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
    print(f"allocator: {current_allocator()}")
    print(f"load average before: {os.getloadavg()}")
    runners = [JaxRunner(mixture, sources)]
    start = time.perf_counter()
    xla_flops, temp_bytes = runners[0].compiled_cost()
    print(f"compiled our training step in {time.perf_counter() - start:.1f} s")
    missing = "--jax-only" if args.jax_only else asteroid_missing()
    if missing is None:
        import torch

        torch.set_num_threads(args.threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        runners.append(AsteroidRunner(mixture, sources, asteroid_device()))
    analytic_flops = train_step_flops(PAPER, args.batch, mixture.shape[-1])
    peak, _ = matmul_gflops()

    step, _, train_memory = measure_training(runners, args.warmup, lambda _: args.steps)
    rtf, _, infer_memory = measure_inference(runners, (10, 60), lambda _: args.infer_repeats)
    print(f"load average after: {os.getloadavg()}\n")
    print(step_summary(analytic_flops, xla_flops, temp_bytes, peak) + "\n")
    print("\n".join(training_table(step, train_memory, analytic_flops, peak, missing)) + "\n")
    print("\n".join(inference_table(rtf, infer_memory, peak, missing)))


if __name__ == "__main__":
    main()

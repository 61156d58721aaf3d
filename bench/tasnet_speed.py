"""Conv-TasNet speed: our JAX training step and inference against Asteroid's, in one process.

Usage (torch + asteroid installed, e.g. the parity venv):
    python bench/tasnet_speed.py [--steps 5] [--warmup 2] [--threads 2] [--malloc MALLOC]
Without torch:
    python bench/tasnet_speed.py --jax-only

`--malloc` picks the allocator of the whole process (both frameworks): `glibc` (default),
`glibc-hugetlb` (glibc with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`: transparent huge pages for
its mmapped blocks) or `tcmalloc` (gperftools, Debian package libtcmalloc-minimal4, preloaded);
the script restarts itself with the setting. With plain glibc malloc every large buffer is a
fresh `mmap`, so each step first-touches (page-faults) its whole working set; tcmalloc keeps
freed pages for reuse.

Paper configuration (N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, 2 sources, gLN).
Training step: forward + backward + Adam on a batch of 4 × 4 s at 8 kHz with negative SI-SNR
under utterance-level PIT (ours: `jaxspeech.losses.pit(pairwise_neg_si_snr)`; Asteroid:
`PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")`). Inference: one 10 s and one 60 s
mixture, real-time factor = wall time / audio duration. The two implementations alternate
(ours, Asteroid, ours, …) so that machine load hits both alike; medians after warm-up.
Also prints the step's FLOPs (analytic and XLA's cost analysis) and temporary memory (XLA's
memory analysis), the achieved GFLOP/s against a 4096³ float32 matmul measured in the same
run, and minor page faults per step; for inference, the forward FLOPs per second of audio,
the real-time factor that the matmul rate allows, and each implementation's share of it.
"""

import argparse
import ctypes.util
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspeech.allocator import HUGETLB, TCMALLOC
from jaxspeech.losses import pairwise_neg_si_snr, pit
from jaxspeech.models.tasnet import ConvTasNet

SAMPLE_RATE = 8000
PAPER = dict(N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, n_src=2)


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


def current_allocator() -> str:
    """ "tcmalloc" when it is mapped into this process, "glibc-hugetlb" or "glibc"."""
    with open("/proc/self/maps") as maps:
        if TCMALLOC in maps.read():
            return "tcmalloc"
    return "glibc-hugetlb" if HUGETLB in os.environ.get("GLIBC_TUNABLES", "") else "glibc"


def restart_with(allocator: str) -> None:
    """Re-executes this script under `allocator` (no return); exits if that cannot be done."""
    if os.environ.get("TASNET_SPEED_RESTARTED"):
        sys.exit(f"--malloc {allocator}: still {current_allocator()} after a restart")
    env = dict(os.environ, TASNET_SPEED_RESTARTED="1")
    preload = [lib for lib in env.get("LD_PRELOAD", "").split() if TCMALLOC not in lib]
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and t != HUGETLB]
    if allocator == "tcmalloc":
        name = ctypes.util.find_library(TCMALLOC)
        if name is None:
            sys.exit(
                "--malloc tcmalloc: libtcmalloc_minimal not found; install libtcmalloc-minimal4"
            )
        preload.append(name)
    elif allocator == "glibc-hugetlb":
        tunables.append(HUGETLB)
    env["LD_PRELOAD"], env["GLIBC_TUNABLES"] = " ".join(preload), ":".join(tunables)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], None]) -> tuple[float, int]:
    """(seconds, minor page faults) of one call."""
    faults, start = minor_faults(), time.perf_counter()
    fn()
    return time.perf_counter() - start, minor_faults() - faults


def matmul_gflops(repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (4096, 4096), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    seconds = min(timed(lambda: matmul(a, a).block_until_ready())[0] for _ in range(repeats))
    return 2 * 4096**3 / seconds / 1e9


class JaxRunner:
    """Our ConvTasNet: jitted training step (params and Adam state donated) and inference."""

    name = "jaxspeech"

    def __init__(self, mixture: np.ndarray, sources: np.ndarray):
        self.model = ConvTasNet()
        self.params = self.model.init(jax.random.key(0), jnp.zeros((1, 64)))
        self.optimizer = optax.adam(1e-3)
        self.opt_state = self.optimizer.init(self.params)
        self.mixture, self.sources = jnp.asarray(mixture), jnp.asarray(sources)
        self.step_fn = jax.jit(self._step, donate_argnums=(0, 1))
        self.apply = jax.jit(self.model.apply)

    def _loss(self, params, mixture, sources):
        loss, _ = pit(pairwise_neg_si_snr, self.model.apply(params, mixture), sources)
        return jnp.mean(loss)

    def _step(self, params, opt_state, mixture, sources):
        loss, grads = jax.value_and_grad(self._loss)(params, mixture, sources)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def compiled_cost(self) -> tuple[float, float]:
        """The training step's (FLOPs by XLA's cost analysis, temporary memory in bytes)."""
        compiled = self.step_fn.lower(
            self.params, self.opt_state, self.mixture, self.sources
        ).compile()
        analysis = compiled.cost_analysis()
        if isinstance(analysis, list):  # older jax: one dict per computation
            analysis = analysis[0]
        return float(analysis["flops"]), float(compiled.memory_analysis().temp_size_in_bytes)

    def train_step(self) -> None:
        self.params, self.opt_state, loss = self.step_fn(
            self.params, self.opt_state, self.mixture, self.sources
        )
        loss.block_until_ready()

    def infer(self, mixture: np.ndarray) -> None:
        self.apply(self.params, jnp.asarray(mixture)).block_until_ready()


class AsteroidRunner:
    """Asteroid 0.7.0 ConvTasNet with torch Adam and PIT negative SI-SDR."""

    name = "Asteroid"

    def __init__(self, mixture: np.ndarray, sources: np.ndarray):
        import torch
        from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
        from asteroid.models import ConvTasNet as AsteroidConvTasNet

        self.torch = torch
        torch.manual_seed(0)
        self.model = AsteroidConvTasNet(n_src=PAPER["n_src"])  # its defaults are the paper's
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
        self.mixture, self.sources = torch.from_numpy(mixture), torch.from_numpy(sources)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.loss(self.model(self.mixture), self.sources)
        loss.backward()
        self.optimizer.step()

    def infer(self, mixture: np.ndarray) -> None:
        self.model.eval()
        with self.torch.inference_mode():
            self.model(self.torch.from_numpy(mixture))


def interleaved_medians(runners, call, warmup: int, repeats: int) -> dict[str, tuple]:
    """Alternate `call(runner)` over runners; per runner (median s, median faults) after warm-up."""
    samples = {runner.name: [] for runner in runners}
    for index in range(warmup + repeats):
        for runner in runners:
            result = timed(lambda runner=runner: call(runner))
            if index >= warmup:
                samples[runner.name].append(result)
    return {
        name: (statistics.median(s for s, _ in rows), statistics.median(f for _, f in rows))
        for name, rows in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jax-only", action="store_true", help="skip Asteroid (no torch)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--infer-repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0, help="training example length")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--malloc", choices=("glibc", "glibc-hugetlb", "tcmalloc"), default="glibc")
    args = parser.parse_args()
    if current_allocator() != args.malloc:
        restart_with(args.malloc)

    rng = np.random.default_rng(0)
    samples = int(args.seconds * SAMPLE_RATE)
    sources = rng.normal(size=(args.batch, PAPER["n_src"], samples)).astype(np.float32)
    mixture = sources.sum(axis=1)

    print(f"jax {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
    print(f"allocator: {current_allocator()}")
    print(f"load average before: {os.getloadavg()}")
    runners = [JaxRunner(mixture, sources)]
    if not args.jax_only:
        import torch

        torch.set_num_threads(args.threads)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        runners.append(AsteroidRunner(mixture, sources))

    ours = runners[0]
    start = time.perf_counter()
    xla_flops, temp_bytes = ours.compiled_cost()
    print(f"compiled our training step in {time.perf_counter() - start:.1f} s")
    analytic_flops = train_step_flops(PAPER, args.batch, samples)
    peak = matmul_gflops()

    train = interleaved_medians(runners, lambda r: r.train_step(), args.warmup, args.steps)
    infer = {}
    for seconds in (10, 60):
        wav = rng.normal(size=(1, seconds * SAMPLE_RATE)).astype(np.float32)
        infer_once = lambda runner, wav=wav: runner.infer(wav)
        medians = interleaved_medians(runners, infer_once, 1, args.infer_repeats)
        infer[seconds] = {name: s / seconds for name, (s, _) in medians.items()}
    print(f"load average after: {os.getloadavg()}")

    print(
        f"\nTraining step: {analytic_flops / 1e9:.0f} GFLOP analytic, "
        f"{xla_flops / 1e9:.0f} GFLOP by XLA cost analysis; 4096³ float32 matmul "
        f"{peak:.0f} GFLOP/s, so the floor is {analytic_flops / peak / 1e9:.2f} s. "
        f"Our step's temporary memory: {temp_bytes / 2**30:.2f} GiB.\n"
    )
    print(
        "| implementation | train step (s) | GFLOP/s (% of matmul) | minor faults / step "
        "| RTF 10 s | RTF 60 s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for runner in runners:
        seconds, faults = train[runner.name]
        rate = analytic_flops / seconds / 1e9
        print(
            f"| {runner.name} | {seconds:.2f} | {rate:.0f} ({100 * rate / peak:.0f} %) "
            f"| {faults:,.0f} | {infer[10][runner.name]:.3f} | {infer[60][runner.name]:.3f} |"
        )
    if len(runners) == 2:
        theirs = runners[1].name
        print(
            f"| speed-up (Asteroid / ours) | {train[theirs][0] / train[ours.name][0]:.2f}× | | "
            f"| {infer[10][theirs] / infer[10][ours.name]:.2f}× "
            f"| {infer[60][theirs] / infer[60][ours.name]:.2f}× |"
        )
    audio_flops = inference_flops_per_second(PAPER)
    floor = audio_flops / peak / 1e9
    shares = ", ".join(f"{r.name} {100 * floor / infer[10][r.name]:.0f} %" for r in runners)
    print(
        f"\nInference: {audio_flops / 1e9:.1f} GFLOP per second of audio, so the RTF floor at the "
        f"matmul rate is {floor:.4f}; share of the matmul rate at 10 s: {shares}."
    )


if __name__ == "__main__":
    main()

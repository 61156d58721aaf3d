"""One accelerator run in parts, each in its own process under its own time limit
(`bench/gpu.sh` runs them in order; `--smoke`: tiny sizes on the CPU, same code paths).

    python -m bench.gpu PART --out DIR [--seconds S] [--smoke]
    python -m bench.gpu report --out DIR [--results bench/RESULTS.md]

PART is one of `PARTS`. Each part appends JSON lines (`{"part": ..., "what": ..., ...}`) to
DIR/results.jsonl as soon as each figure exists, so a part cut short keeps what it measured;
`--seconds` is its time limit, from which it fits its repeats (`bench/plan.py`). `report`
renders DIR/results.jsonl (`bench/gpu_report.py`) into DIR/gpu-section.md and, with
`--results`, into that file's generated section.

- env: device, driver, versions, date; 4096³ matmul rates in float32 and bfloat16.
- tasnet: Conv-TasNet at the paper's size (`tasnet_speed.PAPER`), training step in float32
  and bfloat16 against Asteroid (in float32, and under `torch.autocast` in bfloat16), both on
  the GPU, alternating; inference real-time factor; peak memory (XLA's memory analysis,
  `torch.cuda.max_memory_allocated`).
- speaker: the ResNet34-ASP training step and embedding against PyTorch (`speaker_speed.py`).
- ivector: UBM and T-matrix EM throughput (`ivector_speed.py`).
- pipeline: the separation recipe's training batches per second from its grain pipeline.
- curve: `train.py` on the separation recipe for the part's time limit (stopped with
  SIGTERM, which saves and exits), validation SI-SNRi against wall-clock time.
"""

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from bench import gpu_report, ivector_speed, report, speaker_speed, tasnet_speed
from bench.plan import Allotment, Budget
from jaxspeech.data.corpus import resolve_data_root
from jaxspeech.errors import ConfigError
from jaxspeech.models.speaker import RESNET34, SpeakerNetConfig
from jaxspeech.train import stages
from jaxspeech.train.tasks import separation
from jaxspeech.xla_flags import use_training_xla_flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_JSONL, SECTION_MD = "results.jsonl", "gpu-section.md"
SEPARATION_RECIPE = "configs/separation/convtasnet.py"
STOP_MARGIN_S = 30  # a curve's train.py gets this long to save and exit after SIGTERM


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each part runs: the recipes' sizes on a GPU, tiny ones in a smoke run."""

    tasnet: dict  # in the paper's letters
    tasnet_batch: int
    tasnet_seconds: float
    inference_seconds: tuple[int, ...]
    speaker_net: SpeakerNetConfig
    speaker_batch: int
    speaker_seconds: float
    speaker_classes: int
    embed_batch: int
    ivector: tuple[int, int, int, float]  # components, rank, batch, seconds
    separation_variant: str
    separation_overrides: tuple[str, ...]
    pipeline_batches: int
    most_repeats: int


GPU = Sizes(
    tasnet=tasnet_speed.PAPER,
    tasnet_batch=gpu_report.TASNET_RECIPE["batch"],
    tasnet_seconds=gpu_report.TASNET_RECIPE["seconds"],
    inference_seconds=(10, 60),
    speaker_net=RESNET34,
    speaker_batch=gpu_report.SPEAKER_RECIPE["batch"],
    speaker_seconds=gpu_report.SPEAKER_RECIPE["seconds"],
    speaker_classes=gpu_report.SPEAKER_RECIPE["speakers"],
    embed_batch=64,
    ivector=(2048, 400, 64, 4.0),
    separation_variant="",
    separation_overrides=(
        "train.steps=1000000",
        "train.log_every=50",
        "train.eval_every=250",
        "train.checkpoint_every=1000000",
    ),
    pipeline_batches=40,
    most_repeats=20,
)
SMOKE = Sizes(
    tasnet=dict(N=16, L=16, B=8, H=16, Sc=8, P=3, X=2, R=1, n_src=2),
    tasnet_batch=1,
    tasnet_seconds=0.25,
    inference_seconds=(1,),
    speaker_net=SpeakerNetConfig(blocks=(1, 1), width=4, embed_dim=16, attention_dim=8),
    speaker_batch=2,
    speaker_seconds=0.5,
    speaker_classes=10,
    embed_batch=2,
    ivector=(8, 4, 2, 0.5),
    separation_variant="smoke",
    separation_overrides=(
        "train.steps=4",
        "train.batch_size=2",
        "train.log_every=2",
        "train.eval_every=2",
        "train.checkpoint_every=4",
        "data.valid_size=2",
        "data.mixture.segment_seconds=0.25",
    ),
    pipeline_batches=3,
    most_repeats=2,
)


class Results:
    """DIR/results.jsonl: one JSON line per figure, flushed to disk as it is written."""

    def __init__(self, out: pathlib.Path):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / RESULTS_JSONL

    def write(self, part: str, what: str, **fields) -> None:
        line = json.dumps({"part": part, "what": what, **fields})
        print(line, flush=True)
        with self.path.open("a") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())


def torch_missing() -> str | None:
    """Why a PyTorch peer cannot run beside ours here (on CUDA when ours runs on a GPU), or
    None when it can."""
    try:
        import torch
    except ImportError as error:
        return f"not installed ({error})"
    if jax.default_backend() == "gpu" and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (ours runs on the GPU)"
    return None


def part_env(sizes: Sizes, results: Results, budget: Budget) -> None:
    allocator = tasnet_speed.current_allocator()
    rates = {}
    for dtype in ("float32", "bfloat16"):
        allotment = Allotment(budget, budget.left() / 2)
        repeats = allotment.repeats_for(most=sizes.most_repeats, least=1)
        rates[dtype] = tasnet_speed.matmul_gflops(repeats, jnp.dtype(dtype))[0]
    device = jax.devices()[0]
    results.write(
        "env",
        "machine",
        date=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        backend=jax.default_backend(),
        device_kind=device.device_kind,
        lines=report.machine_lines(allocator),
        matmul_gflops=rates,
        versions={p: report.version(p) for p in ("grain", "optax", "orbax-checkpoint")},
        smoke=sizes is SMOKE,
    )


NOT_TIMED = "not timed: after the warm-up, its fewest repeats no longer fit in the part's limit"


def part_tasnet(sizes: Sizes, results: Results, budget: Budget) -> None:
    config, batch = sizes.tasnet, sizes.tasnet_batch
    mixture, sources = tasnet_speed.training_batch(batch, sizes.tasnet_seconds)
    flops = tasnet_speed.train_step_flops(config, batch, mixture.shape[-1])
    reason = tasnet_speed.asteroid_missing()
    if reason:
        results.write("tasnet", "skipped", impl="Asteroid", reason=reason)
    most = sizes.most_repeats
    inference_runners = None
    for index, dtype in enumerate(("float32", "bfloat16")):
        runners = [
            tasnet_speed.JaxRunner(
                mixture, sources, jnp.dtype(dtype), config, name=f"jaxspeech {dtype}"
            )
        ]
        if not reason:
            import torch

            autocast = None if dtype == "float32" else torch.bfloat16
            name = "Asteroid float32" if autocast is None else "Asteroid autocast bfloat16"
            device = tasnet_speed.asteroid_device()
            runners.append(
                tasnet_speed.AsteroidRunner(mixture, sources, device, config, autocast, name)
            )
        xla_flops, temp_bytes = runners[0].compiled_cost()
        allotment = Allotment(budget, budget.share(1, 3 - index))
        step, repeats, memory = tasnet_speed.measure_training(
            runners, 2, allotment.repeats_for(most=most, least=2)
        )
        if not repeats:
            results.write("tasnet", "skipped", call=f"train_step {dtype}", reason=NOT_TIMED)
        for name, (seconds, _) in step.items():
            results.write(
                "tasnet", "train_step", impl=name, dtype=dtype, seconds=seconds,
                peak_bytes=memory[name], repeats=repeats, flops=flops, xla_flops=xla_flops,
                temp_bytes=temp_bytes, batch=batch, example_seconds=sizes.tasnet_seconds,
                config=config,
            )  # fmt: skip
        inference_runners = inference_runners or runners
    rtf, repeats, memory = tasnet_speed.measure_inference(
        inference_runners,
        sizes.inference_seconds,
        Allotment(budget, budget.left()).repeats_for(most=most, least=2),
    )
    if not repeats:
        results.write("tasnet", "skipped", call="inference", reason=NOT_TIMED)
    for length, by_name in rtf.items():
        for name, value in by_name.items():
            results.write(
                "tasnet", "inference", impl=name, audio_seconds=length, rtf=value,
                peak_bytes=memory[name], repeats=repeats,
                flops_per_audio_second=tasnet_speed.inference_flops_per_second(config),
            )  # fmt: skip
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        results.write("tasnet", "device_memory", peak_bytes=stats["peak_bytes_in_use"])


def part_speaker(sizes: Sizes, results: Results, budget: Budget) -> None:
    use_training_xla_flags()  # as train.py (XLA:CPU options; none for a GPU)
    wav, labels, utterances = speaker_speed.inputs(
        sizes.speaker_batch, sizes.speaker_seconds, sizes.speaker_classes, sizes.embed_batch, 4.0
    )
    runners = [
        speaker_speed.Ours(sizes.speaker_batch, sizes.speaker_classes, net=sizes.speaker_net)
    ]
    reason = torch_missing()
    if reason:
        results.write("speaker", "skipped", impl="PyTorch", reason=reason)
    else:
        device = "cuda" if jax.default_backend() == "gpu" else "cpu"
        threads = os.cpu_count()
        runners.append(
            speaker_speed.Torch(sizes.speaker_classes, threads, sizes.speaker_net, device)
        )
        counts = {r.name: r.params() for r in runners}
        if len(set(counts.values())) != 1:
            raise ConfigError(f"speaker networks differ in parameter count: {counts}")
    repeats_for = Allotment(budget, budget.left()).repeats_for(most=sizes.most_repeats, least=2)
    medians, repeats = speaker_speed.measure(runners, wav, labels, utterances, repeats_for)
    if not repeats:
        results.write("speaker", "skipped", call="train_step", reason=NOT_TIMED)
    for call, by_name in medians.items():
        for name, seconds in by_name.items():
            batch = sizes.speaker_batch if call == "train" else sizes.embed_batch
            results.write(
                "speaker", call, impl=name, seconds=seconds, batch=batch, repeats=repeats,
                example_seconds=sizes.speaker_seconds if call == "train" else 4.0,
            )  # fmt: skip


def part_ivector(sizes: Sizes, results: Results, budget: Budget) -> None:
    components, rank, batch, seconds = sizes.ivector
    repeats_for = Allotment(budget, budget.left()).repeats_for(most=sizes.most_repeats, least=2)
    medians, repeats = ivector_speed.measure(components, rank, batch, seconds, repeats_for)
    for stage, value in medians.items():
        results.write(
            "ivector", stage, seconds=value, components=components, rank=rank, batch=batch,
            example_seconds=seconds, repeats=repeats,
        )  # fmt: skip


def separation_overrides(sizes: Sizes, results: Results, part: str) -> list[str] | None:
    """The separation recipe's overrides for the pipeline and the curve: the sizes', and
    `data.speech` narrowed to the recipe's speech folders found under the data root (a device
    may hold a subset); None, with a skip record, when there is no data."""
    recipe = stages.load_recipe(f"{SEPARATION_RECIPE}:{sizes.separation_variant}")
    try:
        root = resolve_data_root()
    except ConfigError as error:
        results.write(part, "skipped", reason=str(error))
        return None
    present = [folder for folder in recipe.data.speech if (root / folder).is_dir()]
    if not present:
        results.write(part, "skipped", reason=f"none of {recipe.data.speech} under {root}")
        return None
    overrides = list(sizes.separation_overrides)
    if len(present) < len(recipe.data.speech):
        overrides.append(f"data.speech=({','.join(present)})")
    return overrides


def part_pipeline(sizes: Sizes, results: Results, budget: Budget) -> None:
    del budget  # a fixed number of batches
    overrides = separation_overrides(sizes, results, "pipeline")
    if overrides is None:
        return
    spec = f"{SEPARATION_RECIPE}:{sizes.separation_variant}"
    config = stages.apply_overrides(stages.load_recipe(spec), overrides)
    start = time.perf_counter()
    batches = iter(separation.Task(config).train_dataset(0, 1, 0))
    next(batches)  # the corpus scan and the first batch
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(sizes.pipeline_batches):
        next(batches)
    seconds = time.perf_counter() - start
    batch = config.train.batch_size
    results.write(
        "pipeline", "items_per_s", items_per_s=sizes.pipeline_batches * batch / seconds,
        batch=batch, batches=sizes.pipeline_batches, first_batch_seconds=first,
        example_seconds=config.data.mixture.segment_seconds, cpus=os.cpu_count(),
        speech=config.data.speech,
    )  # fmt: skip


def part_curve(sizes: Sizes, results: Results, budget: Budget) -> None:
    """Runs train.py until it finishes or the limit nears (then SIGTERM), and writes each
    record of its metrics.jsonl as it appears, timed from the process start."""
    overrides = separation_overrides(sizes, results, "curve")
    if overrides is None:
        return
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="jaxspeech-curve-"))
    workdir, log_path = scratch / "run", scratch / "train.log"
    spec = f"{SEPARATION_RECIPE}:{sizes.separation_variant}"
    arguments = ["--config", spec, *(f"--config.{item}" for item in overrides)]
    results.write("curve", "command", command=shlex.join(["train.py", *arguments]))
    command = [sys.executable, "train.py", "--workdir", str(workdir), *arguments]
    start = time.time()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seen = 0
    while True:
        finished = process.poll() is not None
        metrics = workdir / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        complete = lines if finished else lines[:-1]  # the last line may be half written
        for line in complete[seen:]:
            record = json.loads(line)
            results.write("curve", "record", wall_seconds=record.pop("time") - start, **record)
        seen = max(seen, len(complete))
        if finished:
            break
        if budget.left() < STOP_MARGIN_S and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_MARGIN_S - 5)
            except subprocess.TimeoutExpired:
                process.kill()
        time.sleep(1.0)
    tail = log_path.read_text()[-2000:]
    shutil.rmtree(scratch)
    results.write("curve", "exit", code=process.returncode, seconds=time.time() - start)
    if process.returncode not in (0, 128 + signal.SIGTERM):
        raise ConfigError(f"train.py exited with {process.returncode}:\n{tail}")


PARTS = {
    "env": part_env,
    "tasnet": part_tasnet,
    "speaker": part_speaker,
    "ivector": part_ivector,
    "pipeline": part_pipeline,
    "curve": part_curve,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=[*PARTS, "report"])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="results folder")
    parser.add_argument("--seconds", type=float, default=120.0, help="this part's time limit")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check)")
    parser.add_argument("--results", type=pathlib.Path, help="RESULTS.md to write (report)")
    args = parser.parse_args(argv)
    if args.part == "report":
        gpu_report.write(args.out / RESULTS_JSONL, args.out / SECTION_MD, args.results)
        return
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for torch
    budget = Budget(args.seconds - 5)  # 5 s to exit before the part's limit
    PARTS[args.part](SMOKE if args.smoke else GPU, Results(args.out), budget)


if __name__ == "__main__":
    main()

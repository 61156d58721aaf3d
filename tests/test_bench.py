"""The benchmarks' FLOP counts, budget planner, tables and RESULTS.md writer, and one real
`python -m bench` run on a tiny budget."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).parent.parent


def load_bench(name: str = "tasnet_speed"):
    """A module of bench/ by its file (bench/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_match_xla_cost_analysis():
    """XLA counts every multiply-add of the convs plus the elementwise work (norms, PReLUs,
    masks), so its count is at or a little above the analytic one, which has the matmuls only."""
    bench = load_bench()
    config = dict(N=128, L=16, B=64, H=256, Sc=64, P=3, X=3, R=2, n_src=2)
    model = bench.build_model(config)
    mixture = jnp.zeros((1, bench.SAMPLE_RATE))  # one second
    params = jax.eval_shape(model.init, jax.random.key(0), mixture)
    xla_flops = jax.jit(model.apply).lower(params, mixture).compile().cost_analysis()["flops"]
    analytic = bench.inference_flops_per_second(config)
    assert 1.0 <= xla_flops / analytic <= 1.25


class Clock:
    """A clock that moves only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_passes_unused_time_to_the_benchmarks_after():
    plan = load_bench("plan")
    clock = Clock()
    budget = plan.Budget(100.0, clock)
    assert budget.share(weight=1, weights_to_come=4) == pytest.approx(25.0)
    clock.now += 10.0  # the first benchmark used 10 of its 25 s
    assert budget.share(weight=1, weights_to_come=3) == pytest.approx(30.0)
    clock.now += 200.0
    assert budget.left() == 0.0
    assert not budget.fits(0.1)


def test_repeats_fit_the_share_between_least_and_most():
    plan = load_bench("plan")
    budget = plan.Budget(100.0, Clock())
    assert budget.repeats(2.0, allotted=9.0, most=7, least=3) == 4  # floor(9 / 2)
    assert budget.repeats(1.0, allotted=50.0, most=7, least=3) == 7
    assert budget.repeats(5.0, allotted=1.0, most=7, least=3) == 3  # the whole budget has room
    assert budget.repeats(40.0, allotted=1.0, most=7, least=3) == 0  # 3 × 40 s > 100 s left
    assert budget.repeats(0.0, allotted=0.0, most=7, least=3) == 7


def test_allotment_parts_share_what_is_left_of_it():
    plan = load_bench("plan")
    clock = Clock()
    allotment = plan.Allotment(plan.Budget(100.0, clock), seconds=20.0)
    assert allotment.repeats_for(most=100, least=1, part=0.5)(1.0) == 10
    clock.now += 8.0  # 12 s of the allotment left
    assert allotment.repeats_for(most=100, least=1)(1.0) == 12
    clock.now += 20.0  # past the allotment: the least, while the budget has room
    assert allotment.repeats_for(most=100, least=2)(1.0) == 2


class CountingRunner:
    def __init__(self, name: str):
        self.name, self.calls = name, 0

    def call(self) -> None:
        self.calls += 1


def test_interleaved_medians_warm_up_then_time_what_repeats_for_plans():
    bench = load_bench()
    runners = [CountingRunner("ours"), CountingRunner("theirs")]
    asked = []

    def repeats_for(seconds: float) -> int:
        asked.append(seconds)
        return 3

    calls = {"a": lambda r: r.call(), "b": lambda r: r.call()}
    timings, repeats = bench.interleaved_medians(runners, calls, 2, repeats_for)
    assert repeats == 3 and len(asked) == 1 + 2 and all(s >= 0.0 for s in asked)
    assert [r.calls for r in runners] == [2 * (2 + 3), 2 * (2 + 3)]
    assert set(timings) == {"a", "b"} and set(timings["a"]) == {"ours", "theirs"}
    assert bench.interleaved_medians(runners, calls, 3, lambda _: 0) == ({}, 0)
    assert [r.calls for r in runners] == [12, 12]  # one warm-up round, then it stopped


def test_training_table_ratio_and_missing_peer():
    bench = load_bench()
    step = {"jaxspeech": (2.0, 10.0), "Asteroid": (5.0, 20.0)}
    memory = {"jaxspeech": 3 * 2**30, "Asteroid": None}
    lines = bench.training_table(step, memory, flops=400e9, matmul_rate=400.0, asteroid_reason=None)
    assert lines[2] == "| jaxspeech | 2.000 | 200 (50 %) | 10 | 3.00 GiB |"
    assert lines[3] == "| Asteroid | 5.000 | 80 (20 %) | 20 | — |"
    assert lines[4].startswith("| speed-up (Asteroid / ours) | **2.50×**")
    alone = bench.training_table(
        {"jaxspeech": (2.0, 10.0)}, memory, 400e9, 400.0, asteroid_reason="torch not installed"
    )
    assert alone[-1].startswith("| Asteroid | not run: torch not installed |")
    assert not any("speed-up" in line for line in alone)


def test_inference_table_floor_from_the_matmul_rate():
    bench = load_bench()
    rtf = {10: {"jaxspeech": 0.02, "Asteroid": 0.05}, 60: {"jaxspeech": 0.03, "Asteroid": 0.06}}
    memory = {"jaxspeech": None, "Asteroid": None}
    lines = bench.inference_table(rtf, memory, matmul_rate=500.0, asteroid_reason=None)
    assert lines[2] == "| jaxspeech | 0.0200 | 0.0300 | — |"
    assert lines[4] == "| speed-up (Asteroid / ours) | 2.50× | 2.00× | |"
    # 1,000 encoder frames per second of audio (hop 8 at 8 kHz)
    floor = 1000 * bench.forward_flops_per_frame(bench.PAPER) / 500e9
    assert f"matmul rate is {floor:.4f}" in lines[-1]
    assert f"jaxspeech {100 * floor / 0.02:.0f} %" in lines[-1]


def test_append_section_keeps_earlier_text_byte_for_byte(tmp_path):
    report = load_bench("report")
    results = tmp_path / "RESULTS.md"
    earlier = "# Benchmark results\n\n## Old round\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    results.write_text(earlier)
    first = report.render_section(
        "Run one", ["- CPU: test"], [("Training", ["| x |", "|---|"])], "python -m bench"
    )
    report.append_section(results, first)
    report.append_section(results, report.render_section("Run two", [], [], "cmd two"))
    text = results.read_text()
    assert text.startswith(earlier + "\n\n## Run one\n\n`python -m bench`\n\n- CPU: test\n")
    assert "\n### Training\n\n| x |\n|---|\n" in text
    assert text.index("## Run one") < text.index("## Run two")
    assert text.endswith("## Run two\n\n`cmd two`\n\n")
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


def test_append_section_creates_a_missing_file(tmp_path):
    report = load_bench("report")
    results = tmp_path / "RESULTS.md"
    report.append_section(results, report.render_section("Run", [], [], "cmd"))
    assert results.read_text() == "# Benchmark results\n\n## Run\n\n`cmd`\n\n"


def test_entry_point_on_a_tiny_budget_writes_a_dated_section(tmp_path):
    """A real run: the matmul probe, the block benchmark where it fits, the others skipped."""
    results = tmp_path / "RESULTS.md"
    command = [sys.executable, "-m", "bench", "--budget", "0.25", "--device", "cpu"]
    command += ["--malloc", "glibc", "--results", str(results)]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## All benchmarks, 20")
    assert f"--results {results}`" in text
    assert "4096³ float32 matmul:" in text and "- backend: cpu" in text
    for heading in ("Conv-TasNet training step", "Conv-TasNet inference", "Depthwise"):
        section = text.split(f"### {heading}")[1].split("###")[0]
        assert "Skipped: a start needs about" in section


def test_bad_budget_is_a_config_error():
    command = [sys.executable, "-m", "bench", "--budget", "0"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "jaxspeech.errors.ConfigError: --budget 0.0" in run.stderr


def test_process_age_advances_with_the_monotonic_clock():
    plan = load_bench("plan")
    earlier, start = plan.seconds_since_process_start(), time.monotonic()
    time.sleep(0.3)
    later, elapsed = plan.seconds_since_process_start(), time.monotonic() - start
    assert later - earlier == pytest.approx(elapsed, abs=0.05)  # /proc ticks: 0.01 s
    assert earlier > 0.0  # this process has been running a while


def test_gpu_asked_for_without_one_is_a_config_error():
    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU")
    command = [sys.executable, "-m", "bench", "--device", "gpu", "--malloc", "glibc"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "jaxspeech.errors.ConfigError: --device gpu: JAX sees no GPU" in run.stderr


def test_chip_names_the_datasheet_entry_or_none():
    gpu_report = load_bench("gpu_report")
    assert gpu_report.chip("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert gpu_report.chip("NVIDIA H200") == "H200"
    assert gpu_report.chip("NVIDIA H100 PCIe") is None
    assert gpu_report.chip("cpu") is None


def gpu_records() -> list[dict]:
    """What a GPU run writes, with round figures to check the arithmetic by hand."""
    paper = dict(N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, n_src=2)
    step = dict(part="tasnet", what="train_step", flops=480e9, xla_flops=530e9, batch=4)
    step.update(example_seconds=4.0, config=paper, peak_bytes=2**30, repeats=20)
    return [
        {"part": "env", "what": "machine", "date": "2026-12-06 17:00 UTC", "smoke": False,
         "device_kind": "NVIDIA H100 80GB HBM3", "lines": ["- GPU: test"], "versions": {},
         "matmul_gflops": {"float32": 400e3, "bfloat16": 800e3}},
        {**step, "impl": "jaxspeech float32", "dtype": "float32", "seconds": 0.004},
        {**step, "impl": "Asteroid float32", "dtype": "float32", "seconds": 0.010},
        {**step, "impl": "jaxspeech bfloat16", "dtype": "bfloat16", "seconds": 0.002},
        {"part": "speaker", "what": "train", "impl": "ours (JAX)", "seconds": 0.1, "batch": 128,
         "example_seconds": 2.0, "repeats": 5},
        {"part": "speaker", "what": "train", "impl": "PyTorch", "seconds": 0.2, "batch": 128,
         "example_seconds": 2.0, "repeats": 5},
        {"part": "speaker", "what": "embed", "impl": "ours (JAX)", "seconds": 0.5, "batch": 64,
         "example_seconds": 4.0, "repeats": 5},
        {"part": "curve", "what": "skipped", "reason": "cut at its limit"},
    ]  # fmt: skip


def test_gpu_report_utilisation_speed_up_and_projection_by_hand():
    gpu_report = load_bench("gpu_report")
    text = gpu_report.render(gpu_records())
    # 480 GFLOP in 2 ms: 240 TFLOP/s of the H100 SXM's 989.4 dense bfloat16
    assert "| jaxspeech bfloat16 | 2.0 | 2000.0 | 240.0 | 24.3 % | 1,024 MiB |" in text
    # 120 TFLOP/s of its 494.7 TF32
    assert "| jaxspeech float32 | 4.0 | 1000.0 | 120.0 | 24.3 % | 1,024 MiB |" in text
    assert "| speed-up, Asteroid float32 / jaxspeech float32 | **2.50×** |" in text
    assert "| speed-up, PyTorch / ours | **2.00×** | | |" in text
    # 100 epochs of 5,000 steps at 4 ms: 2,000 s; 150 epochs of 8,531 steps at 0.1 s: 1.48 d
    assert "| 500,000 | jaxspeech float32 | 4.0 | 33.3 min |" in text
    assert "| 1,279,650 | ours (JAX) | 100.0 | 35.5 h |" in text
    assert "- curve: part: cut at its limit" in text
    assert "### Training curve: separation recipe on ../shared/data\n\nNo figures" in text
    assert text.startswith(gpu_report.BEGIN) and text.endswith(gpu_report.END + "\n")


def test_replace_section_swaps_only_the_generated_section(tmp_path):
    gpu_report = load_bench("gpu_report")
    results = tmp_path / "RESULTS.md"
    head, tail = "# Benchmark results\n\n## CPU round\n\ntext\n\n", "\n## Another section\n"
    results.write_text(head + tail)
    gpu_report.replace_section(results, gpu_report.render(gpu_records()))
    first = results.read_text()
    assert first.startswith(head + tail) and first.count(gpu_report.BEGIN) == 1
    middle = first.removeprefix(head + tail).lstrip("\n")
    results.write_text(head + middle + tail)  # the section between the two
    gpu_report.replace_section(results, gpu_report.render(gpu_records()[:1]))
    second = results.read_text()
    assert second.startswith(head + gpu_report.BEGIN) and second.endswith(
        gpu_report.END + "\n" + tail
    )
    assert second.count(gpu_report.BEGIN) == 1 and "jaxspeech float32" not in second


def run_gpu_sh(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    env.update(PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    command = ["bash", "bench/gpu.sh", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_gpu_sh_stops_before_installing_when_jax_sees_no_gpu(tmp_path):
    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU")
    run = run_gpu_sh(tmp_path)
    assert run.returncode == 1
    assert "JAX sees no GPU (its backend is cpu); stopping" in run.stdout
    assert "install" not in run.stdout


@pytest.mark.slow
def test_gpu_sh_smoke_runs_every_part_and_leaves_results_md_alone(shared_data, tmp_path):
    """The accelerator run's code paths at tiny sizes on the CPU (about two minutes)."""
    results_md = (ROOT / "bench" / "RESULTS.md").read_bytes()
    run = run_gpu_sh(tmp_path, "--smoke")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    seen = {(r["part"], r["what"], r.get("dtype")) for r in records}
    for part, what, dtype in [
        ("env", "machine", None),
        ("tasnet", "train_step", "float32"),
        ("tasnet", "train_step", "bfloat16"),
        ("speaker", "train", None),
        ("ivector", "T-matrix E-step", None),
        ("pipeline", "items_per_s", None),
    ]:
        assert (part, what, dtype) in seen, (part, what, dtype)
    assert any(r["part"] == "tasnet" and r["what"] == "inference" for r in records)
    curve = [r for r in records if r["part"] == "curve" and "valid_si_snr_i" in r]
    assert [r["step"] for r in curve] == [2, 4] and curve[0]["wall_seconds"] > 0
    skipped = {r["part"] for r in records if r["what"] == "skipped" and "impl" not in r}
    assert not skipped, [r for r in records if r["what"] == "skipped"]
    section = (out / "gpu-section.md").read_text()
    assert "**Smoke run**" in section and "No figures" not in section
    assert (ROOT / "bench" / "RESULTS.md").read_bytes() == results_md
    if (ROOT.parent / "shared" / "wheels").is_dir():
        assert "wheels: every name resolves in ../shared/wheels" in run.stdout

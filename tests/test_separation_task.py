"""Separation task: oracle baseline, and train.py → evaluate.py end to end on real speech."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest

from jaxspeech.losses import si_snr
from jaxspeech.train.tasks.separation import _pit_metrics, oracle_irm

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_oracle_irm_separates_disjoint_tones():
    sr, n_fft = 8000, 256
    t = np.arange(sr) / sr
    sources = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 2500 * t)])
    sources = sources[None].astype(np.float32)  # [1, 2, T]
    est = np.asarray(oracle_irm(sources.sum(1), sources, n_fft))
    assert est.shape == sources.shape
    assert np.all(np.asarray(si_snr(est, sources)) > 25.0)


def test_improvement_leaves_lone_speaker_mixtures_out():
    """A mixture whose second source is silent has no SI-SNR improvement to average; the
    loss still scores it (its silent track by level)."""
    rng = np.random.default_rng(0)
    sources = rng.normal(size=(2, 2, 800)).astype(np.float32)
    sources[1, 1] = 0.0
    mixture = sources.sum(1)
    est = (sources + 0.1 * rng.normal(size=sources.shape)).astype(np.float32)
    metrics = _pit_metrics(est, {"mixture": mixture, "sources": sources})
    improvement = np.mean(si_snr(est[0], sources[0])) - np.mean(
        si_snr(np.stack([mixture[0]] * 2), sources[0])
    )
    np.testing.assert_allclose(metrics["si_snr_i"], improvement, rtol=1e-4)
    assert np.isfinite(metrics["si_snr"])


#: Per recipe: the training overrides, and what that short training must show.
#: Conv-TasNet beats the mixture after 80 steps (1.65–1.78 dB SI-SNRi, 2.14–2.45 dB SDRi on
#: these test mixtures over three seeds, measured with the earlier constant rate of 1e-3; the
#: smoke recipe's warm-up now keeps the 80 steps below its peak rate of 3e-3). Deep clustering
#: needs hundreds of steps for that (still −7 to −3 dB SI-SNRi after 120; the README's 1.29 dB
#: took 1,500), so its 20 steps
#: must more than halve the affinity loss (0.62–0.63 to 0.25–0.27 over three seeds).
class ShortRun(NamedTuple):
    model_name: str
    steps: int
    checkpoint_every: int
    eval_every: int
    log_every: int


SHORT_RUNS = {
    "convtasnet": ShortRun("Conv-TasNet", 80, 40, 80, 20),
    "dpcl": ShortRun("deep clustering", 20, 10, 20, 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(SHORT_RUNS))
def test_train_then_evaluate_on_real_speech(shared_data, tmp_path, recipe):
    """The README's main job, shortened: smoke recipe, a few steps, then the metric table."""
    short = SHORT_RUNS[recipe]
    model_name = short.model_name
    workdir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAXSPEECH_DATA"] = str(shared_data)
    overrides = [
        f"--config.train.steps={short.steps}",
        f"--config.train.checkpoint_every={short.checkpoint_every}",
        f"--config.train.eval_every={short.eval_every}",
        f"--config.train.log_every={short.log_every}",
        "--config.data.valid_size=8",
        "--config.eval.size=8",
    ]
    spec = f"{REPO}/configs/separation/{recipe}.py:smoke"
    train = [sys.executable, str(REPO / "train.py"), "--config", spec, "--workdir", str(workdir)]
    subprocess.run(
        [*train, *overrides],
        check=True,
        env=env,
        timeout=600,
    )
    config = json.loads((workdir / "config.json").read_text())
    assert "separation" in json.dumps(config)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    losses = [r["loss"] for r in records if "loss" in r]
    if recipe == "dpcl":
        assert min(losses[-3:]) < 0.6 * losses[0], losses

    out = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--workdir", str(workdir)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "oracle IRM" in out.stdout
    rows = json.loads((workdir / "eval" / "test.json").read_text())
    overall = {r["system"]: r for r in rows if r["input SI-SNR (dB)"] == "all"}
    assert set(overall) == {"mixture", model_name, "oracle IRM"}
    assert overall["mixture"]["SI-SNRi mean"] == pytest.approx(0.0, abs=1e-4)
    assert overall["mixture"]["sources"] == 16  # 8 mixtures × 2 speakers
    # The oracle mask is a strong upper bound on real two-speaker mixtures.
    assert overall["oracle IRM"]["SI-SNRi mean"] > 8.0
    assert overall["oracle IRM"]["SDRi mean"] > 8.0
    assert np.isfinite(overall[model_name]["SDRi mean"])
    if recipe == "convtasnet":
        assert overall[model_name]["SI-SNRi mean"] > 0.5
        assert overall[model_name]["SDRi mean"] > 0.5
    for suffix in ("md", "csv"):
        assert (workdir / "eval" / f"test.{suffix}").stat().st_size > 0

"""Host-side logging: ``metrics.jsonl`` (and TensorBoard event files beside it when
``tensorboardX`` is installed), the best validation so far and a tqdm progress bar (metric
tables: ``jaxspeech.evaluation.tables``)."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.signal
import tqdm

from jaxspeech import files
from jaxspeech import workdir as names


def mean_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Fetches a list of per-step metric dicts (device scalars) and averages each key."""
    fetched = [{k: np.asarray(v) for k, v in r.items()} for r in records]
    return {k: float(np.mean([r[k] for r in fetched])) for k in fetched[0]} if fetched else {}


class MetricsLog:
    """Appends one JSON object per line to ``WORKDIR/metrics.jsonl`` (only when ``enabled``).

    When ``tensorboardX`` can be imported, the records' numbers also go to TensorBoard event
    files in ``WORKDIR`` (tags ``train/<key>`` and ``valid/<key>``), and :meth:`write_examples`
    adds audio with its log-spectrogram (``tensorboard --logdir WORKDIR``).
    """

    def __init__(self, workdir: pathlib.Path, enabled: bool) -> None:
        self.path = workdir / names.METRICS
        self.enabled = enabled
        self._events, self._opened, self._resumed_at = None, False, None
        self._images = False

    @property
    def events(self) -> Any:
        """The tensorboardX ``SummaryWriter`` (opened on first use; on resume it hides the
        events a killed run wrote after the checkpoint), or None without tensorboardX."""
        if not self._opened and self.enabled:
            self._opened = True
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                return None
            self._images = importlib.util.find_spec("PIL") is not None
            if not self._images:
                print(
                    "TensorBoard: Pillow is not installed, so the examples' spectrograms are "
                    'not logged (pip install -e ".[tensorboard]")',
                    file=sys.stderr,
                    flush=True,
                )
            purge = None if self._resumed_at is None else self._resumed_at + 1
            self._events = SummaryWriter(str(self.path.parent), purge_step=purge)
        return self._events

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with files.reported_write_errors(self.path), self.path.open("a") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")
        if self.events is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    tag = f"valid/{key[6:]}" if key.startswith("valid_") else f"train/{key}"
                    self.events.add_scalar(tag, value, record["step"])

    def write_examples(self, step: int, examples: Sequence[tuple[str, np.ndarray, int]]) -> None:
        """TensorBoard audio and log-spectrogram image of each ``(name, waveform [S],
        sample_rate)`` (scaled down to a peak of 0.99 where it is louder)."""
        for name, wav, rate in examples:
            wav = np.asarray(wav, np.float32)
            peak = float(np.max(np.abs(wav), initial=0.0))
            self.events.add_audio(name, wav / max(1.0, peak / 0.99), step, sample_rate=rate)
            if self._images:  # tensorboardX encodes images with Pillow
                image = log_spectrogram_image(wav, rate)
                self.events.add_image(name, image, step, dataformats="HW")

    def close(self) -> None:
        if self._events is not None:
            self._events.close()

    def drop_after(self, step: int) -> list[dict[str, Any]]:
        """Keeps only the records up to ``step`` and returns them (a resumed run writes the
        later ones again; a run killed mid-write may also have left a partial last line)."""
        self._resumed_at = step if step else None
        if not (self.enabled and self.path.is_file()):
            return []
        lines = self.path.read_text().splitlines()
        kept, records = [], []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
                records.append(record)
        if kept != lines:
            files.write_text(self.path, "".join(f"{line}\n" for line in kept))
        return records


def log_spectrogram_image(wav: np.ndarray, sample_rate: int, top_db: float = 80.0) -> np.ndarray:
    """``[F, T]`` float32 in [0, 1]: the magnitude STFT (Hann window of about 32 ms, a quarter
    window hop) in dB, the top ``top_db`` dB mapped to [0, 1], low frequencies at the bottom."""
    n_fft = 2 ** round(math.log2(0.032 * sample_rate))
    _, _, spectrum = scipy.signal.stft(
        wav, nperseg=n_fft, noverlap=n_fft - n_fft // 4, boundary=None, padded=False
    )
    db = 20 * np.log10(np.maximum(np.abs(spectrum), 1e-10))
    image = np.clip((db - db.max() + top_db) / top_db, 0.0, 1.0)
    return image[::-1].astype(np.float32)


class BestValidation:
    """The best value so far of the validation metric ``metric`` (``mode`` "min" or "max"),
    from the records of ``metrics.jsonl`` and the validations after them."""

    def __init__(self, metric: str, mode: str, records: Sequence[dict[str, Any]] = ()) -> None:
        self.metric, self.mode = metric, mode
        self.step: int | None = None
        self.value = math.nan
        for record in records:
            if f"valid_{metric}" in record:
                self.update(record["step"], record[f"valid_{metric}"])

    def update(self, step: int, value: float) -> str:
        """Takes the validation of ``step``; returns its line: the value and the best so far."""
        better = value < self.value if self.mode == "min" else value > self.value
        if math.isfinite(value) and (self.step is None or better):
            self.step, self.value = step, value
        return f"step {step}: valid {self.metric} {value:.4g} ({self._best()})"

    def summary(self) -> str:
        """The line printed at the end of training."""
        return f"training done: {self._best()}"

    def _best(self) -> str:
        if self.step is None:
            return f"no finite valid {self.metric} yet"
        return f"best {self.metric} {self.value:.4g} at step {self.step}"


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of ``WORKDIR/metrics.jsonl``."""
    lines = (pathlib.Path(workdir) / names.METRICS).read_text().splitlines()
    return [json.loads(line) for line in lines if line]


class Progress:
    """tqdm bar over steps (steps/s and ETA from tqdm; loss and samples/s as postfix)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = tqdm.tqdm(
            total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True
        )

    def update(self, record: dict[str, float] | None = None) -> None:
        self.bar.update(1)
        if record is not None:
            shown = {k: record[k] for k in ("loss", "samples_per_s") if k in record}
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)

    def write(self, line: str) -> None:
        """Prints ``line`` above the bar (only when the bar is enabled)."""
        if not self.bar.disable:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()

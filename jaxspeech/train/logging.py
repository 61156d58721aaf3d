"""Host-side logging: ``metrics.jsonl`` and a tqdm progress bar (metric tables:
``jaxspeech.evaluation.tables``)."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from jaxspeech import files
from jaxspeech import workdir as names


def mean_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Fetches a list of per-step metric dicts (device scalars) and averages each key."""
    fetched = [{k: np.asarray(v) for k, v in r.items()} for r in records]
    return {k: float(np.mean([r[k] for r in fetched])) for k in fetched[0]} if fetched else {}


class MetricsLog:
    """Appends one JSON object per line to ``WORKDIR/metrics.jsonl`` (only when ``enabled``)."""

    def __init__(self, workdir: pathlib.Path, enabled: bool) -> None:
        self.path = workdir / names.METRICS
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with files.reported_write_errors(self.path), self.path.open("a") as f:
                f.write(json.dumps({"time": time.time(), **record}) + "\n")

    def drop_after(self, step: int) -> None:
        """Keeps only the records up to ``step`` (a resumed run writes the later ones again;
        a run killed mid-write may also have left a partial last line)."""
        if not (self.enabled and self.path.is_file()):
            return
        lines = self.path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        if kept != lines:
            files.write_text(self.path, "".join(f"{line}\n" for line in kept))


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

    def close(self) -> None:
        self.bar.close()

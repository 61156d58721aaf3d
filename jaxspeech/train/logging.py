"""Host-side logging: ``metrics.jsonl``, a tqdm progress bar, and metric tables (MD/CSV/JSON)."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from jaxspeech import files


def mean_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Fetches a list of per-step metric dicts (device scalars) and averages each key."""
    fetched = [{k: np.asarray(v) for k, v in r.items()} for r in records]
    return {k: float(np.mean([r[k] for r in fetched])) for k in fetched[0]} if fetched else {}


class MetricsLog:
    """Appends one JSON object per line to ``WORKDIR/metrics.jsonl`` (only when ``enabled``)."""

    def __init__(self, workdir: pathlib.Path, enabled: bool) -> None:
        self.path = workdir / "metrics.jsonl"
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
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
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


def _cell(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4f}"
    return str(value)


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every key of ``rows``, in the order first seen (stages of a recipe may differ)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a Markdown table (a column per key of any row, empty where a row lacks it);
    floats with 4 decimals."""
    columns = table_columns(rows)
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


TABLE_SUFFIXES = (".md", ".csv", ".json")


def write_table(rows: Sequence[dict[str, Any]], stem: pathlib.Path) -> str:
    """Writes ``stem.md``, ``stem.csv`` and ``stem.json`` (each atomically); returns the
    Markdown text."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    markdown = markdown_table(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=table_columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    texts = (markdown, buffer.getvalue(), json.dumps(list(rows), indent=2) + "\n")
    for suffix, text in zip(TABLE_SUFFIXES, texts, strict=True):
        files.write_text(stem.with_suffix(suffix), text)
    return markdown

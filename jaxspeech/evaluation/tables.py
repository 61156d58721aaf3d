"""Metric tables (Markdown, CSV and JSON side by side) and an evaluation's three tables: the
task's summary, one row per test item, and the items' means by group."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxspeech import files
from jaxspeech import workdir as names

TABLE_SUFFIXES = (".md", ".csv", ".json")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What a task's ``evaluate`` gives.

    Attributes:
      table: the summary rows (each a dict: column -> value).
      items: one row per test item and system: ``system``, ``item`` (the item's ID), its
        metadata (strings and ints) and every score (floats).
      groups: the metadata columns of ``items`` to break the scores down by (e.g. "SNR (dB)",
        "gender", "age group"); each gives one group per distinct value.
      scores: this model's per-item scores ``{metric: [items]}`` in a fixed item order, for
        paired comparisons between runs; None when the task's items are not comparable so.
    """

    table: list[dict]
    items: list[dict] = dataclasses.field(default_factory=list)
    groups: tuple[str, ...] = ()
    scores: Mapping[str, np.ndarray] | None = None

    def group_means(self) -> list[dict]:
        """Per system, group column and value: the number of items (of those that have the
        column) and each score's mean (float columns of ``items``), in the order the values
        first appear."""
        rows = []
        systems = dict.fromkeys(item["system"] for item in self.items)
        for system in systems:
            mine = [item for item in self.items if item["system"] == system]
            scores = [
                key
                for key, value in mine[0].items()
                if isinstance(value, float) and key not in self.groups
            ]
            for column in self.groups:
                having = [item for item in mine if column in item]  # joined stages differ
                for value in dict.fromkeys(item[column] for item in having):
                    members = [item for item in having if item[column] == value]
                    row = {"system": system, "group": column, "value": value}
                    row["items"] = len(members)
                    row.update({k: float(np.mean([m[k] for m in members])) for k in scores})
                    rows.append(row)
        return rows


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


def write_evaluation(
    evaluation: Evaluation, workdir: pathlib.Path, table: str
) -> tuple[str, list[pathlib.Path]]:
    """Writes the summary to ``workdir/eval/<table>.*``, the items to ``<table>_items.*`` and
    the group means to ``<table>_groups.*`` (the last two when there are items and groups).
    Returns ``(the summary's Markdown, the stems written)``."""
    stem = names.eval_stem(workdir, table)
    markdown, written = write_table(evaluation.table, stem), [stem]
    if evaluation.items:
        stem = names.eval_stem(workdir, table, names.ITEMS_SUFFIX)
        write_table(evaluation.items, stem)
        written.append(stem)
    if evaluation.items and evaluation.groups:
        stem = names.eval_stem(workdir, table, names.GROUPS_SUFFIX)
        write_table(evaluation.group_means(), stem)
        written.append(stem)
    return markdown, written


def item_rows(
    system: str, scores: Mapping[str, np.ndarray], metadata: Sequence[Mapping[str, Any]]
) -> list[dict]:
    """One row per item ``i`` of ``system``: ``item`` (its index in the fixed test set),
    ``metadata[i]`` and every ``scores[name][i]`` as a float."""
    return [
        {"system": system, "item": i, **meta, **{k: float(v[i]) for k, v in scores.items()}}
        for i, meta in enumerate(metadata)
    ]

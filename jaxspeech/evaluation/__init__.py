"""Evaluation shared by every task: metric tables and writing them, per-item rows, their
breakdowns by group (input SNR band, gender pair, age group), trial lists and verification
scoring. Tasks keep only what is specific to them."""

from jaxspeech.evaluation.tables import (
    Evaluation,
    item_rows,
    markdown_table,
    write_evaluation,
    write_table,
)

__all__ = ["Evaluation", "item_rows", "markdown_table", "write_evaluation", "write_table"]

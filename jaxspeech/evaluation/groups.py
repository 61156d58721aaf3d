"""Per-item metadata that evaluations break scores down by: input SNR value or band, the
gender pair and age groups of the talkers in a mixture."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import numpy as np

from jaxspeech.data.corpus import Utterance, age_group

UNKNOWN = "?"


def snr_groups(snrs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``("all", everything)``, then one group per distinct SNR value, ascending."""
    groups = [("all", np.ones(snrs.shape, bool))]
    return groups + [(f"{value:g}", snrs == value) for value in np.unique(snrs)]


def band_labels(values: np.ndarray, edges: Sequence[float]) -> list[str]:
    """The interval ``"[low, high)"`` between ``edges`` (open-ended at both ends) that holds
    each of ``values``."""
    bounds = [-np.inf, *edges, np.inf]
    index = np.searchsorted(np.asarray(edges, float), values, side="right")
    return [f"[{bounds[i]:g}, {bounds[i + 1]:g})" for i in index]


def bands(values: np.ndarray, edges: Sequence[float]) -> list[tuple[str, np.ndarray]]:
    """``("all", everything)`` then one non-empty band per interval between ``edges``."""
    out = [("all", np.ones(values.shape, bool))]
    for low, high in itertools.pairwise([-np.inf, *edges, np.inf]):
        member = (values >= low) & (values < high)
        if member.any():
            out.append((f"[{low:g}, {high:g})", member))
    return out


def talker_metadata(
    examples: Sequence[dict], utterances: Sequence[Utterance]
) -> tuple[list[dict], tuple[str, ...]]:
    """``(metadata, groups)``: per mixture example (``info`` of ``data.make_mixture``) its
    ``speakers`` and source file names, and when the corpus metadata give them for any
    speaker, its ``gender`` pair (e.g. "F+M", sorted) and ``age group`` ("adult+child");
    ``groups`` names the breakdown columns present."""
    by_speaker = {utt.speaker: utt for utt in utterances}
    rows = []
    for example in examples:
        talkers = [by_speaker.get(s) for s in example["info"]["speakers"]]
        genders = [(u.gender if u else None) or UNKNOWN for u in talkers]
        ages = [(age_group(u.age) if u else None) or UNKNOWN for u in talkers]
        rows.append(
            {
                "speakers": "+".join(example["info"]["speakers"]),
                "files": "+".join(os.path.basename(f) for f in example["info"]["source_files"]),
                "gender": "+".join(sorted(genders)),
                "age group": "+".join(sorted(ages)),
            }
        )
    groups = tuple(
        column
        for column in ("gender", "age group")
        if any(set(row[column].split("+")) != {UNKNOWN} for row in rows)
    )
    return rows, groups

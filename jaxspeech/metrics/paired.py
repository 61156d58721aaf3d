"""Paired comparison of two systems scored on the same test utterances, over training seeds."""

from __future__ import annotations

import numpy as np
from scipy import stats

from jaxspeech.errors import ConfigError


def paired_difference(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Mean per-utterance difference of system A over system B with a Student-t interval.

    Each utterance's score is first averaged over a system's seeds, so the difference
    ``d[u] = mean_s a[s, u] − mean_s b[s, u]`` is paired by utterance, and the interval is
    ``mean(d) ± t(n−1) · std(d) / √n`` over the ``n`` utterances. The seed-to-seed spread is
    reported beside it as the range of the per-seed means.

    Args:
      a: ``[seeds_a, utterances]`` scores of A (one row per training seed).
      b: ``[seeds_b, utterances]`` scores of B on the same utterances, in the same order.
      confidence: the interval's coverage.

    Returns:
      ``{"A", "B", "difference", "low", "high", "A seed min", "A seed max", "B seed min",
      "B seed max"}`` (floats) and ``"utterances"``.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"paired scores must be [seeds, utterances] with the same utterances, got "
            f"{a.shape} and {b.shape}"
        )
    n = a.shape[1]
    if n < 2:
        raise ConfigError(f"a paired interval needs at least 2 utterances, got {n}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence} must lie in (0, 1)")
    diff = a.mean(axis=0) - b.mean(axis=0)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    a_seeds, b_seeds = a.mean(axis=1), b.mean(axis=1)
    return {
        "A": float(a.mean()),
        "B": float(b.mean()),
        "difference": float(diff.mean()),
        "low": float(diff.mean() - half),
        "high": float(diff.mean() + half),
        "utterances": n,
        "A seed min": float(a_seeds.min()),
        "A seed max": float(a_seeds.max()),
        "B seed min": float(b_seeds.min()),
        "B seed max": float(b_seeds.max()),
    }

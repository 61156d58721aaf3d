"""Ranking metrics: ROC AUC of scores against binary labels, recall@k and mean reciprocal rank
of ranked lists (numpy, host side)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats

from jaxspeech.errors import ShapeError, TrialError


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney U statistic over both counts).

    Raises:
      TrialError: shapes differ, or there are no positives or no negatives.
    """
    scores, positive = np.ravel(scores).astype(np.float64), np.ravel(positive).astype(bool)
    if scores.shape != positive.shape:
        raise TrialError(f"roc_auc: {scores.size} scores but {positive.size} labels")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise TrialError(f"roc_auc needs positives and negatives, got {n_pos} and {n_neg}")
    ranks = scipy.stats.rankdata(scores)  # ties get their mean rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ranking_metrics(
    scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """recall@k and MRR of ranking the columns of each row by ``scores`` ``[rows, items]``
    (highest first, ties in column order) against ``relevant`` ``[rows, items]`` (bool).

    recall@k of a row is the share of its relevant items among its top k; the reciprocal
    rank is 1 / the rank of its best-ranked relevant item. Both are averaged over the rows
    with at least one relevant item (``rows`` in the result counts them).

    Raises:
      ShapeError: the shapes differ or are not 2-D. TrialError: no row has a relevant item.
    """
    scores, relevant = np.asarray(scores, np.float64), np.asarray(relevant, bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise ShapeError(
            f"ranking_metrics: scores {scores.shape} and relevant {relevant.shape} must be the "
            "same [rows, items]"
        )
    rows = relevant.any(axis=1)
    if not rows.any():
        raise TrialError("ranking_metrics: no row has a relevant item; nothing to rank")
    scores, relevant = scores[rows], relevant[rows]
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(relevant, order, axis=1)
    out = {"rows": int(rows.sum())}
    for k in ks:
        out[f"recall@{k}"] = float((ranked[:, :k].sum(1) / ranked.sum(1)).mean())
    out["MRR"] = float((1.0 / (ranked.argmax(axis=1) + 1)).mean())
    return out

"""Speaker-verification metrics from trial scores: DET curve, EER and minimum DCF (numpy).

A trial is accepted when ``score >= threshold``. One sort of the scores gives every operating
point (``det_curve``); equal scores are grouped, so ties never split into operating points
that no threshold can realise. Runs on the host: a million trials take well under a second.
"""

from __future__ import annotations

import numpy as np

from jaxspeech.errors import TrialError


def _validate_trials(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise TrialError(
            f"scores {scores.shape} and labels {labels.shape} must be 1-D of equal length; "
            "pass one score and one label per trial"
        )
    if not np.all(np.isfinite(scores)):
        bad = int(np.size(scores) - np.count_nonzero(np.isfinite(scores)))
        raise TrialError(f"scores: {bad} NaN/Inf value(s); fix the scoring of those trials")
    if not np.all((labels == 0) | (labels == 1)):
        raise TrialError(
            f"labels must be binary (1 = target, 0 = non-target), got values "
            f"{np.unique(labels)[:5]}"
        )
    labels = labels.astype(bool)
    n_target = int(labels.sum())
    if n_target == 0 or n_target == labels.size:
        raise TrialError(
            f"labels: {n_target} target and {labels.size - n_target} non-target trials; "
            "both classes are needed"
        )
    return scores, labels


def det_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct threshold.

    Args:
      scores: ``[n_trials]`` similarity scores (higher = more likely the same speaker).
      labels: ``[n_trials]`` 1/True for target trials, 0/False for non-target trials.

    Returns:
      ``(p_miss, p_fa, thresholds)``, each ``[n_unique + 1]``: the thresholds are the distinct
      scores in increasing order followed by the next float above the largest score (reject
      all). ``p_miss`` rises from 0 to 1 and ``p_fa`` falls from 1 to 0.

    Raises:
      TrialError: mismatched shapes, non-binary labels, a missing class, NaN/Inf scores.
    """
    scores, labels = _validate_trials(scores, labels)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    targets_below = np.cumsum(labels[order])
    group_ends = np.append(np.flatnonzero(np.diff(sorted_scores)), scores.size - 1)
    n_target = targets_below[-1]
    n_nontarget = scores.size - n_target
    misses = np.concatenate([[0], targets_below[group_ends]])
    nontargets_below = np.concatenate([[0], group_ends + 1 - targets_below[group_ends]])
    thresholds = np.append(sorted_scores[group_ends], np.nextafter(sorted_scores[-1], np.inf))
    return misses / n_target, 1.0 - nontargets_below / n_nontarget, thresholds


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate, where the miss and false-alarm curves cross.

    Between the two operating points that bracket the crossing, both rates and the threshold
    are interpolated linearly.

    Returns:
      ``(eer, threshold)``: EER as a fraction in [0, 1]; the interpolated threshold.
    """
    p_miss, p_fa, thresholds = det_curve(scores, labels)
    gap = p_fa - p_miss  # 1 at the first point, -1 at the last, non-increasing
    k = int(np.argmax(gap <= 0))
    weight = gap[k - 1] / (gap[k - 1] - gap[k])
    rate = p_miss[k - 1] + weight * (p_miss[k] - p_miss[k - 1])
    threshold = thresholds[k - 1] + weight * (thresholds[k] - thresholds[k - 1])
    return float(rate), float(threshold)


def min_dcf(
    scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """Minimum normalised detection cost over all thresholds (NIST SRE definition).

    ``DCF = c_miss·p_target·P_miss + c_fa·(1 − p_target)·P_fa``, divided by
    ``min(c_miss·p_target, c_fa·(1 − p_target))``, the cost of the best trivial system.

    Returns:
      ``(min_dcf, threshold)`` with the threshold that attains it.

    Raises:
      TrialError: bad trials (see ``det_curve``), ``p_target`` outside (0, 1), costs <= 0.
    """
    if not 0.0 < p_target < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise TrialError(
            f"need 0 < p_target < 1 and positive costs, got p_target={p_target}, "
            f"c_miss={c_miss}, c_fa={c_fa}"
        )
    p_miss, p_fa, thresholds = det_curve(scores, labels)
    cost = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    best = int(np.argmin(cost))
    default_cost = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(cost[best] / default_cost), float(thresholds[best])


def adaptive_snorm(scores, enrol_cohort, test_cohort, top_k: int = 100) -> np.ndarray:
    """Adaptive symmetric score normalisation (AS-norm, Matějka et al. 2017), as WeSpeaker.

    Each side is normalised by the mean and (population) standard deviation of its ``top_k``
    highest scores against the cohort:
    ``0.5 · ((s − μ_e) / σ_e + (s − μ_t) / σ_t)``.

    Args:
      scores: ``[n_trials]`` raw scores of the trials.
      enrol_cohort, test_cohort: ``[n_trials, n_cohort]`` scores of each trial's enrolment and
        test side against every cohort member.
      top_k: how many of the highest cohort scores each side's statistics use (all of them
        when the cohort is smaller).

    Returns:
      ``[n_trials]`` float64 normalised scores.

    Raises:
      TrialError: shapes that do not fit, ``top_k < 1``, or a side whose top cohort scores
        are all equal (zero standard deviation).
    """
    scores = np.asarray(scores, np.float64)
    enrol_cohort = np.asarray(enrol_cohort, np.float64)
    test_cohort = np.asarray(test_cohort, np.float64)
    if (
        scores.ndim != 1
        or enrol_cohort.ndim != 2
        or enrol_cohort.shape != test_cohort.shape
        or enrol_cohort.shape[0] != scores.shape[0]
    ):
        raise TrialError(
            f"scores {scores.shape}, enrol_cohort {enrol_cohort.shape} and test_cohort "
            f"{test_cohort.shape} must be [n_trials] and two [n_trials, n_cohort]"
        )
    if top_k < 1:
        raise TrialError(f"top_k={top_k}; AS-norm needs at least one cohort score per side")
    k = min(top_k, enrol_cohort.shape[1])

    def normalised(cohort: np.ndarray) -> np.ndarray:
        top = -np.partition(-cohort, k - 1, axis=1)[:, :k]
        std = top.std(axis=1)
        if np.any(std == 0):
            raise TrialError(
                f"AS-norm: {int(np.sum(std == 0))} trial side(s) have equal top-{k} cohort "
                "scores; use a larger or more varied cohort"
            )
        return (scores - top.mean(axis=1)) / std

    return 0.5 * (normalised(enrol_cohort) + normalised(test_cohort))

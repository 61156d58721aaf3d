"""DET curve, EER and minDCF against brute-force threshold sweeps and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspeech.errors import TrialError
from jaxspeech.metrics import det_curve, eer, min_dcf


def brute_force_det(scores, labels):
    """O(n²): error rates at every distinct score, then at a threshold above all scores."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    thresholds = [*np.unique(scores), np.inf]
    p_miss = [np.mean(scores[labels] < t) for t in thresholds]
    p_fa = [np.mean(scores[~labels] >= t) for t in thresholds]
    return np.array(p_miss), np.array(p_fa)


def brute_force_eer(p_miss, p_fa):
    """Walks the segments between operating points; returns where miss = false alarm."""
    for k in range(1, len(p_miss)):
        before, after = p_fa[k - 1] - p_miss[k - 1], p_fa[k] - p_miss[k]
        if before > 0 >= after:
            weight = before / (before - after)
            return (1 - weight) * p_fa[k - 1] + weight * p_fa[k]
    raise AssertionError("curves do not cross")


def tied_trials(rng, n=300):
    """Scores rounded to one decimal (many ties) with a weak target/non-target shift."""
    labels = rng.random(n) < 0.3
    scores = np.round(rng.standard_normal(n) + 1.0 * labels, 1)
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_det_and_eer_match_brute_force_with_ties(seed):
    scores, labels = tied_trials(np.random.default_rng(seed))
    p_miss, p_fa, thresholds = det_curve(scores, labels)
    expected_miss, expected_fa = brute_force_det(scores, labels)
    np.testing.assert_allclose(p_miss, expected_miss)
    np.testing.assert_allclose(p_fa, expected_fa)
    np.testing.assert_array_equal(thresholds[:-1], np.unique(scores))
    assert thresholds[-1] > scores.max()
    rate, threshold = eer(scores, labels)
    assert rate == pytest.approx(brute_force_eer(expected_miss, expected_fa), abs=1e-12)
    # The EER lies between the best "worse of the two" and "better of the two" rates.
    assert np.max(np.minimum(expected_miss, expected_fa)) <= rate + 1e-12
    assert rate <= np.min(np.maximum(expected_miss, expected_fa)) + 1e-12
    assert scores.min() <= threshold <= scores.max()
    assert 0.1 < rate < 0.5


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("p_target,c_miss,c_fa", [(0.01, 1, 1), (0.05, 10, 1), (0.5, 1, 2)])
def test_min_dcf_matches_brute_force(seed, p_target, c_miss, c_fa):
    scores, labels = tied_trials(np.random.default_rng(seed))
    expected_miss, expected_fa = brute_force_det(scores, labels)
    costs = c_miss * p_target * expected_miss + c_fa * (1 - p_target) * expected_fa
    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    value, threshold = min_dcf(scores, labels, p_target, c_miss, c_fa)
    assert value == pytest.approx(costs.min() / norm, abs=1e-12)
    at_threshold = c_miss * p_target * np.mean(scores[labels] < threshold) + c_fa * (
        1 - p_target
    ) * np.mean(scores[~labels] >= threshold)
    assert at_threshold / norm == pytest.approx(value, abs=1e-12)
    assert 0.0 < value <= 1.0 + 1e-12  # never worse than the trivial system


def test_known_cases():
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert eer([5.0, 6, 7, 1, 2, 3], labels) == (0.0, 5.0)
    assert eer([1.0, 2, 3, 5, 6, 7], labels)[0] == 1.0
    assert min_dcf([5.0, 6, 7, 1, 2, 3], labels)[0] == 0.0
    # All scores tied: the only operating points are accept-all and reject-all.
    assert eer(np.zeros(6), labels)[0] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    assert eer(rng.standard_normal(20000), rng.random(20000) < 0.5)[0] == pytest.approx(
        0.5, abs=0.02
    )


def test_eer_interpolates_between_operating_points():
    # Targets 0.2, 0.6, 0.9; non-targets 0.1, 0.3, 0.4, 0.7.
    scores = [0.2, 0.6, 0.9, 0.1, 0.3, 0.4, 0.7]
    labels = [1, 1, 1, 0, 0, 0, 0]
    # (P_miss, P_fa) at t=0.4: (1/3, 1/2), gap 1/6; at t=0.6: (1/3, 1/4), gap -1/12.
    # The crossing is 2/3 of the way from t=0.4 to t=0.6, where P_fa = 1/2 - 2/3·1/4 = 1/3.
    rate, threshold = eer(scores, labels)
    assert rate == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.4 + 2 / 3 * 0.2)
    # A genuinely sloped crossing: misses rise while false alarms fall on one step.
    rate, threshold = eer([1.0, 2.0, 1.0, 0.0], [1, 1, 0, 0])
    # t=1: P_miss=0, P_fa=1/2 (gap 1/2); t=2: P_miss=1/2, P_fa=0 (gap -1/2) -> midpoint.
    assert (rate, threshold) == pytest.approx((0.25, 1.5))


def test_bad_trials():
    with pytest.raises(TrialError, match="equal length"):
        eer([0.1, 0.2], [1])
    with pytest.raises(TrialError, match="binary"):
        eer([0.1, 0.2, 0.3], [1, 0, 2])
    with pytest.raises(TrialError, match="both classes"):
        eer([0.1, 0.2], [1, 1])
    with pytest.raises(TrialError, match="NaN"):
        min_dcf([0.1, np.nan], [1, 0])
    with pytest.raises(TrialError, match="p_target"):
        min_dcf([0.1, 0.2], [1, 0], p_target=1.0)
    with pytest.raises(TrialError, match="1-D"):
        det_curve(np.zeros((2, 2)), np.zeros((2, 2)))


def test_eer_on_a_million_trials():
    """A million trials (their wall time: `bench/verification_speed.py`)."""
    rng = np.random.default_rng(0)
    labels = rng.random(1_000_000) < 0.01
    scores = rng.standard_normal(1_000_000) + 2.0 * labels
    rate, _ = eer(scores, labels)
    # Two unit Gaussians 2 apart cross at 1: EER = Phi(-1) = 0.1587.
    assert rate == pytest.approx(0.1587, abs=0.01)


def test_min_dcf_at_both_reported_priors_by_hand():
    """4 targets (0.9, 0.7, 0.6, 0.5) and 100 non-targets (one at 0.8, 99 below 0.5). By hand,
    DCF / min(p, 1 - p) at threshold 0.9 (3 of 4 targets missed, no false alarm) is
    p·0.75 / p = 0.75 for either prior; at 0.5 (no miss, 1 false alarm in 100) it is
    (1 - p)·0.01 / p: 0.99 at p = 0.01 and 0.19 at p = 0.05; every other threshold costs more."""
    from jaxspeech.evaluation.verification import error_rates

    scores = np.concatenate([[0.9, 0.7, 0.6, 0.5, 0.8], np.linspace(0.0, 0.4, 99)])
    labels = np.arange(scores.size) < 4
    assert min_dcf(scores, labels, 0.01) == pytest.approx((0.75, 0.9))
    assert min_dcf(scores, labels, 0.05) == pytest.approx((0.19, 0.5))
    rates = error_rates(scores, labels)
    assert list(rates) == ["EER (%)", "minDCF (p=0.01)", "minDCF (p=0.05)"]
    assert rates["minDCF (p=0.01)"] == pytest.approx(0.75)
    assert rates["minDCF (p=0.05)"] == pytest.approx(0.19)
    assert rates["EER (%)"] == pytest.approx(100 * eer(scores, labels)[0])

"""Paired differences over seeds against scipy's paired t-test interval."""

import numpy as np
import pytest
import scipy.stats

from jaxspeech.errors import ConfigError
from jaxspeech.metrics.paired import paired_difference


def test_one_seed_each_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 2.0, 40)
    b = a - 0.3 + rng.normal(0.0, 0.5, 40)
    result = paired_difference(a[None], b[None], confidence=0.9)
    reference = scipy.stats.ttest_rel(a, b).confidence_interval(0.9)
    np.testing.assert_allclose([result["low"], result["high"]], reference, rtol=1e-10)
    np.testing.assert_allclose(result["difference"], np.mean(a - b), rtol=1e-12)
    assert result["utterances"] == 40


def test_seeds_are_averaged_per_utterance_before_pairing():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 25)), rng.normal(size=(2, 25))
    result = paired_difference(a, b)
    reference = scipy.stats.ttest_rel(a.mean(0), b.mean(0)).confidence_interval(0.95)
    np.testing.assert_allclose([result["low"], result["high"]], reference, rtol=1e-10)
    assert result["A seed min"] == pytest.approx(a.mean(1).min())
    assert result["B seed max"] == pytest.approx(b.mean(1).max())
    assert result["A"] == pytest.approx(a.mean()) and result["B"] == pytest.approx(b.mean())


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="same utterances"):
        paired_difference(np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(ConfigError, match="at least 2 utterances"):
        paired_difference(np.zeros((1, 1)), np.zeros((1, 1)))
    with pytest.raises(ConfigError, match="confidence"):
        paired_difference(np.zeros(5), np.ones(5), confidence=1.0)

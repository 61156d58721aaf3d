"""`jaxspeech.losses.aam_softmax` against numpy transcriptions of published implementations.

SpeechBrain: `AdditiveAngularMargin` and `LogSoftmaxWrapper` in
speechbrain/speechbrain, speechbrain/nnet/losses.py. WeSpeaker: `ArcMarginProduct` in
wenet-e2e/wespeaker, wespeaker/models/projections.py, followed by cross-entropy. The two agree
except where `θ + m` passes π: SpeechBrain (like the original ArcFace code, and like ours) uses
`cos θ − m·sin m` there, WeSpeaker `cos θ − (1 − cos m)`, which joins `cos(θ + m)` continuously.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech import losses


def normalize(x, axis):
    """torch.nn.functional.normalize: x / max(‖x‖, 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def speechbrain_aam_loss(emb, weights, labels, margin, scale, easy_margin):
    """SpeechBrain's AdditiveAngularMargin on the cosines, then LogSoftmaxWrapper's
    KLDivLoss(sum) against one-hot targets — per example here, before its division by the
    batch size. float64; `weights` is `[D, C]`."""
    outputs = normalize(emb, -1) @ normalize(weights, 0)  # cosines [..., C]
    targets = np.eye(weights.shape[1])[labels]
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
    cosine = outputs
    sine = np.sqrt(1.0 - cosine**2)
    phi = cosine * cos_m - sine * sin_m
    if easy_margin:
        phi = np.where(cosine > 0, phi, cosine)
    else:
        phi = np.where(cosine > th, phi, cosine - mm)
    predictions = scale * (targets * phi + (1.0 - targets) * cosine)
    log_probs = predictions - np.logaddexp.reduce(predictions, axis=-1, keepdims=True)
    # KL(targets ‖ p) with one-hot targets: 0·log 0 terms vanish, leaving −log p[label].
    return np.sum(np.where(targets > 0, -log_probs, 0.0), axis=-1)


def wespeaker_aam_loss(emb, weights, labels, margin, scale, easy_margin):
    """WeSpeaker's ArcMarginProduct logits (its `weight` is our `weights.T`), then
    cross-entropy per example. float64."""
    cosine = normalize(emb, -1) @ normalize(weights.T, 1).T
    sine = np.sqrt(1.0 - cosine**2)
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    th, mmm = math.cos(math.pi - margin), 1.0 + math.cos(math.pi - margin)
    phi = cosine * cos_m - sine * sin_m
    if easy_margin:
        phi = np.where(cosine > 0, phi, cosine)
    else:
        phi = np.where(cosine > th, phi, cosine - mmm)
    one_hot = np.eye(weights.shape[1])[labels]
    output = scale * (one_hot * phi + (1.0 - one_hot) * cosine)
    log_probs = output - np.logaddexp.reduce(output, axis=-1, keepdims=True)
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def target_cosines(emb, weights, labels):
    cosine = normalize(emb.astype(np.float64), -1) @ normalize(weights.astype(np.float64), 0)
    return np.take_along_axis(cosine, labels[..., None], axis=-1)[..., 0]


@pytest.fixture(scope="module")
def trials():
    """Embeddings `[3, 8, 16]`, class centres `[16, 10]` and labels `[3, 8]`; some embeddings
    point near their centre, some across it (cos θ ≤ 0), some almost opposite (θ + m > π)."""
    rng = np.random.default_rng(11)
    weights = rng.normal(size=(16, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=(3, 8))
    centres = weights[:, labels].transpose(1, 2, 0)  # [3, 8, 16]
    pull = rng.choice([3.0, 0.5, -0.3, -30.0], size=(3, 8, 1))
    emb = (pull * centres + rng.normal(size=(3, 8, 16))).astype(np.float32)
    return emb, weights, labels


@pytest.mark.parametrize("easy_margin", [False, True])
@pytest.mark.parametrize(("margin", "scale"), [(0.2, 30.0), (0.35, 32.0), (0.5, 16.0)])
def test_aam_softmax_matches_speechbrain(trials, margin, scale, easy_margin):
    emb, weights, labels = trials
    cosine = target_cosines(emb, weights, labels)
    # every branch of both forms occurs
    assert (cosine > 0.5).any() and ((cosine <= 0) & (cosine > -0.9)).any()
    assert (cosine <= math.cos(math.pi - margin)).any()
    got = losses.aam_softmax(emb, weights, labels, margin, scale, easy_margin)
    assert got.shape == labels.shape and got.dtype == jnp.float32
    expected = speechbrain_aam_loss(
        emb.astype(np.float64), weights.astype(np.float64), labels, margin, scale, easy_margin
    )
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    # LogSoftmaxWrapper's reduction: the batch mean.
    assert float(jnp.mean(got)) == pytest.approx(expected.mean(), rel=2e-5)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_aam_softmax_against_wespeaker_differs_only_past_pi(trials, easy_margin):
    """The convention: WeSpeaker's loss equals ours wherever θ + m < π (and always with
    easy_margin); past π its target logit is higher by s·(m·sin m − (1 − cos m))."""
    emb, weights, labels = trials
    margin, scale = 0.2, 30.0
    got = np.asarray(losses.aam_softmax(emb, weights, labels, margin, scale, easy_margin))
    expected = wespeaker_aam_loss(
        emb.astype(np.float64), weights.astype(np.float64), labels, margin, scale, easy_margin
    )
    past_pi = target_cosines(emb, weights, labels) <= math.cos(math.pi - margin)
    same = ~past_pi | easy_margin
    np.testing.assert_allclose(got[same], expected[same], rtol=2e-5, atol=2e-5)
    if not easy_margin:
        # With the target's probability near zero, cross-entropy falls by the logit's rise.
        rise = scale * (margin * math.sin(margin) - (1.0 - math.cos(margin)))
        assert past_pi.any() and rise > 0.5
        np.testing.assert_allclose(got[past_pi] - expected[past_pi], rise, rtol=1e-3)

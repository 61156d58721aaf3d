"""Deep clustering: BLSTM embedding model, targets, weights, loss, k-means, inference path."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax.test_util import check_grads

from jaxspeech.dsp import cmvn, log_magnitude, stft
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.losses import si_snr
from jaxspeech.models.dpcl import (
    DeepClustering,
    DeepClusteringConfig,
    dpcl_loss,
    dpcl_targets,
    separate_dpcl,
    silence_weights,
)
from jaxspeech.models.kmeans import kmeans, kmeans_plusplus, lloyd
from jaxspeech.models.rnn import BLSTM

SMALL = DeepClusteringConfig(embedding_dim=6, hidden=8, layers=2)
FEATURE_SHAPE = (2, 12, 17)  # [B, T, F]


@pytest.fixture(scope="module")
def small_model():
    """A small model, its variables and a batch of features."""
    model = DeepClustering(SMALL)
    features = jax.random.normal(jax.random.key(0), FEATURE_SHAPE)
    variables = model.init(jax.random.key(1), features)
    return model, variables, features


@pytest.fixture(scope="module")
def embeddings(small_model):
    model, variables, features = small_model
    return np.asarray(model.apply(variables, features))


# --- Model ---------------------------------------------------------------------------------


def test_blstm_matches_flax_bidirectional_lstm():
    """The fused two-direction scan equals nn.Bidirectional of two OptimizedLSTMCell RNNs."""
    hidden, x = 5, jax.random.normal(jax.random.key(2), (3, 7, 4))
    reference = nn.Bidirectional(
        nn.RNN(nn.OptimizedLSTMCell(hidden)), nn.RNN(nn.OptimizedLSTMCell(hidden))
    )
    ref_params = reference.init(jax.random.key(3), x)["params"]
    # Non-zero biases, so that a bias mapped to the wrong gate would show.
    ref_params = jax.tree_util.tree_map_with_path(
        lambda path, p: (
            p + 0.3 * jnp.arange(p.size).reshape(p.shape) / p.size if path[-1].key == "bias" else p
        ),
        ref_params,
    )
    kernel, bias, recurrent = np.zeros((4, 2, 4 * hidden)), np.zeros((2, 4 * hidden)), None
    recurrent = np.zeros((2, hidden, 4 * hidden))
    for direction, name in enumerate(("forward_rnn", "backward_rnn")):
        cell = ref_params[name]["cell"]
        for gate_index, gate in enumerate("ifgo"):
            block = slice(gate_index * hidden, (gate_index + 1) * hidden)
            kernel[:, direction, block] = cell[f"i{gate}"]["kernel"]
            recurrent[direction, :, block] = cell[f"h{gate}"]["kernel"]
            bias[direction, block] = cell[f"h{gate}"]["bias"]
    ours = {"input": {"kernel": kernel, "bias": bias}, "recurrent": recurrent}
    expected = reference.apply({"params": ref_params}, x)
    got = BLSTM(hidden).apply({"params": ours}, x)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_embeddings_shape_unit_norm_and_batching(small_model, embeddings):
    model, variables, features = small_model
    assert embeddings.shape == (*FEATURE_SHAPE, SMALL.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-5)
    assert embeddings.std(axis=(1, 2)).min() > 1e-3  # bins differ: not a constant output
    per_example = jax.jit(jax.vmap(lambda f: model.apply(variables, f)))(features)
    np.testing.assert_allclose(per_example, embeddings, atol=1e-5)


def test_bfloat16_compute_is_close_to_float32(small_model, embeddings):
    _, variables, features = small_model
    low = DeepClustering(SMALL, jnp.bfloat16).apply(variables, features)
    assert low.dtype == jnp.float32
    cosine = np.sum(np.asarray(low) * embeddings, axis=-1)
    assert cosine.mean() > 0.99 and cosine.min() > 0.9


def test_activation_none_gives_unit_norm(small_model):
    _, variables, features = small_model
    linear_model = DeepClustering(dataclasses.replace(SMALL, activation=None))
    linear = np.asarray(linear_model.apply(variables, features))
    np.testing.assert_allclose(np.linalg.norm(linear, axis=-1), 1.0, atol=1e-5)


def test_dropout_only_when_training(small_model, embeddings):
    _, variables, features = small_model
    model = DeepClustering(dataclasses.replace(SMALL, dropout_rate=0.5))
    np.testing.assert_allclose(model.apply(variables, features), embeddings, atol=1e-6)
    dropped = model.apply(variables, features, train=True, rngs={"dropout": jax.random.key(4)})
    assert np.abs(np.asarray(dropped) - embeddings).max() > 1e-2


@pytest.mark.parametrize(
    "features, error",
    [(jnp.ones(5), ShapeError), (jnp.ones((4, 5), jnp.complex64), ShapeError)],
)
def test_model_rejects_bad_features(features, error):
    with pytest.raises(error, match="features"):
        DeepClustering(SMALL).init(jax.random.key(0), features)


def test_model_rejects_unknown_activation():
    with pytest.raises(ConfigError, match="activation"):
        relu = DeepClustering(dataclasses.replace(SMALL, activation="relu"))
        relu.init(jax.random.key(0), jnp.ones((4, 5)))


# --- Targets, weights, loss ----------------------------------------------------------------


def test_dpcl_targets_one_hot_of_dominant_source(rng):
    mags = rng.uniform(size=(2, 3, 4, 5)).astype(np.float32)  # [B, S, T, F]
    targets = np.asarray(dpcl_targets(mags))
    assert targets.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(targets.argmax(-1), mags.argmax(axis=1))
    np.testing.assert_array_equal(targets.sum(-1), 1.0)
    spectra = mags * np.exp(1j * rng.uniform(0, 6, size=mags.shape))
    np.testing.assert_array_equal(dpcl_targets(spectra), targets)
    with pytest.raises(ShapeError, match="source_mags"):
        dpcl_targets(np.ones((3, 4)))


def test_silence_weights_against_decibels(rng):
    mags = (10.0 ** rng.uniform(-4, 0, size=(2, 6, 7))).astype(np.float32)
    mags[1] *= 1e-3  # the threshold is relative to each utterance's own maximum
    levels = 20 * np.log10(mags / mags.max(axis=(1, 2), keepdims=True))
    for threshold in (-40.0, -20.0):
        weights = np.asarray(silence_weights(mags, threshold))
        np.testing.assert_array_equal(weights, (levels > threshold).astype(np.float32))
        assert 0 < weights.mean() < 1
    np.testing.assert_array_equal(silence_weights(np.zeros((3, 4))), 0.0)
    with pytest.raises(ConfigError, match="threshold_db"):
        silence_weights(mags, 10.0)
    with pytest.raises(ShapeError, match="mix_mag"):
        silence_weights(np.ones(4))


def _brute_force_loss(V, Y, w):
    """Σ_ij w_i w_j (v_i·v_j − y_i·y_j)² / (Σ w)² per utterance, and its gradient wrt V."""
    losses, grads = [], []
    for v, y, weight in zip(V, Y, w, strict=True):
        v = v.reshape(-1, v.shape[-1]).astype(np.float64)
        y = y.reshape(-1, y.shape[-1]).astype(np.float64)
        weight = weight.reshape(-1).astype(np.float64)
        pair_weights = np.outer(weight, weight) / weight.sum() ** 2
        difference = v @ v.T - y @ y.T
        losses.append(np.sum(pair_weights * difference**2))
        grads.append(4 * (pair_weights * difference) @ v)
    return np.array(losses), np.stack(grads).reshape(V.shape)


@pytest.fixture(scope="module")
def loss_example(embeddings):
    """Model output V, targets Y and silence weights (some zero) for the small batch."""
    source_rng = np.random.default_rng(5)
    mags = 10.0 ** source_rng.uniform(-3, 0, size=(FEATURE_SHAPE[0], 2, *FEATURE_SHAPE[1:]))
    Y = np.asarray(dpcl_targets(mags))
    weights = np.asarray(silence_weights(mags.sum(axis=1), -40.0))
    assert 0 < weights.mean() < 1
    return embeddings, Y, weights


def test_dpcl_loss_equals_brute_force_affinity(loss_example):
    V, Y, weights = loss_example
    expected, expected_grad = _brute_force_loss(V, Y, weights)
    loss_and_grad = jax.jit(jax.value_and_grad(lambda v: jnp.sum(dpcl_loss(v, Y, weights))))
    np.testing.assert_allclose(dpcl_loss(V, Y, weights), expected, rtol=1e-4)
    total, grad = loss_and_grad(V)
    np.testing.assert_allclose(total, expected.sum(), rtol=1e-4)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-7)
    unweighted, _ = _brute_force_loss(V, Y, np.ones(V.shape[:-1]))
    np.testing.assert_allclose(dpcl_loss(V, Y), unweighted, rtol=1e-4)
    per_example = jax.vmap(dpcl_loss)(V, Y, weights)
    np.testing.assert_allclose(per_example, expected, rtol=1e-4)


def test_dpcl_loss_gradient_by_finite_differences(loss_example):
    V, Y, weights = (a[:1, :3, :4] for a in loss_example)
    check_grads(lambda v: dpcl_loss(v, Y, weights), (V,), order=1, eps=1e-2, atol=2e-2, rtol=2e-2)


def test_dpcl_loss_rejects_mismatched_shapes(loss_example):
    V, Y, weights = loss_example
    with pytest.raises(ShapeError, match="V"):
        dpcl_loss(V[:, :-1], Y)
    with pytest.raises(ShapeError, match="weights"):
        dpcl_loss(V, Y, weights[:, :-1])


def _two_tone_batch(batch_rng, batch, samples, sample_rate=8000):
    """Mixtures ``[B, samples]`` and sources ``[B, 2, samples]`` of two random tones."""
    t = np.arange(samples) / sample_rate
    low = batch_rng.uniform(300, 1200, size=(batch, 1, 1))
    high = batch_rng.uniform(1800, 3500, size=(batch, 1, 1))
    amplitude = batch_rng.uniform(0.5, 1.0, size=(batch, 2, 1))
    phase = batch_rng.uniform(0, 2 * np.pi, size=(batch, 2, 1))
    sources = amplitude * np.sin(2 * np.pi * np.concatenate([low, high], axis=1) * t + phase)
    return sources.sum(axis=1).astype(np.float32), sources.astype(np.float32)


def _mean_si_snr_improvement(estimates, sources, mixtures):
    """SI-SNRi (dB) of `estimates[B, 2, T]` over the mixture, best source order per example."""
    improvements = []
    for estimate, reference, mixture in zip(estimates, sources, mixtures, strict=True):
        best = max(
            np.mean(np.asarray(si_snr(estimate[list(order)], reference)))
            for order in itertools.permutations(range(2))
        )
        improvements.append(best - np.mean(np.asarray(si_snr(np.stack([mixture] * 2), reference))))
    return float(np.mean(improvements))


def test_training_reduces_the_loss_and_separates_unseen_mixtures():
    n_fft, hop = 64, 32
    mixtures, sources = _two_tone_batch(np.random.default_rng(6), batch=8, samples=800)
    mix_stft = stft(mixtures, n_fft, hop)
    features = cmvn(log_magnitude(mix_stft))
    Y = dpcl_targets(stft(sources, n_fft, hop))
    weights = silence_weights(mix_stft)
    model = DeepClustering(DeepClusteringConfig(embedding_dim=8, hidden=16, layers=1))
    params = initial_params = model.init(jax.random.key(7), features)
    optimizer = optax.adam(1e-2)

    @jax.jit
    def train_step(params, opt_state):
        def loss_fn(params):
            return jnp.mean(dpcl_loss(model.apply(params, features), Y, weights))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    history = []
    for _ in range(30):
        params, opt_state, loss = train_step(params, opt_state)
        history.append(float(loss))
    assert np.all(np.isfinite(history))
    assert min(history[-5:]) < 0.5 * history[0]

    # Tone pairs the model never saw: k-means on its embeddings separates them, far better
    # than on the untrained model's (20–32 dB against 2–5 dB over four training seeds).
    unseen_mixtures, unseen_sources = _two_tone_batch(np.random.default_rng(17), 8, 800)
    separate = jax.jit(
        functools.partial(
            separate_dpcl, n_src=2, n_fft=n_fft, hop=hop, features=lambda s: cmvn(log_magnitude(s))
        ),
        static_argnums=0,
    )
    trained = _mean_si_snr_improvement(
        np.asarray(separate(model.apply, params, unseen_mixtures)), unseen_sources, unseen_mixtures
    )
    untrained = _mean_si_snr_improvement(
        np.asarray(separate(model.apply, initial_params, unseen_mixtures)),
        unseen_sources,
        unseen_mixtures,
    )
    assert trained > 12.0 and trained > untrained + 8.0, (trained, untrained)


# --- k-means -------------------------------------------------------------------------------


def _numpy_lloyd(x, centroids, iters, weights):
    """Reference Lloyd's algorithm, point by point, float64."""
    x, centroids = x.astype(np.float64), centroids.astype(np.float64).copy()

    def assign(centroids):
        return np.array([np.argmin([np.sum((p - c) ** 2) for c in centroids]) for p in x])

    for _ in range(iters):
        assignment = assign(centroids)
        for j in range(len(centroids)):
            members = (assignment == j) & (weights > 0)
            if members.any():
                w = weights[members][:, None]
                centroids[j] = np.sum(w * x[members], axis=0) / w.sum()
    return assign(centroids), centroids


@pytest.fixture(scope="module")
def overlapping_points():
    """60 points in 3-D from three overlapping blobs, and weights with some zeros."""
    points_rng = np.random.default_rng(8)
    centres = points_rng.normal(size=(3, 3)) * 2
    x = (centres[np.arange(60) % 3] + points_rng.normal(size=(60, 3))).astype(np.float32)
    weights = points_rng.uniform(size=60).astype(np.float32)
    weights[::7] = 0.0
    return x, weights


def test_lloyd_matches_numpy_from_the_same_seeds(overlapping_points):
    x, weights = overlapping_points
    key = jax.random.key(9)
    seeds = np.asarray(kmeans_plusplus(x, 4, key, weights))
    assert all(np.any(np.all(x == seed, axis=1) & (weights > 0)) for seed in seeds)
    # A fifth centroid far from every point stays empty and must keep its position.
    initial = np.concatenate([seeds, np.full((1, 3), 100.0, np.float32)])
    expected_assignment, expected_centroids = _numpy_lloyd(x, initial, 6, weights)
    assignment, centroids = lloyd(x, initial, 6, weights)
    np.testing.assert_array_equal(assignment, expected_assignment)
    np.testing.assert_allclose(centroids, expected_centroids, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(centroids[-1], 100.0)
    assert len(np.unique(expected_assignment)) == 4
    # kmeans = the same seeding followed by Lloyd.
    assignment, centroids = kmeans(x, 4, 6, key, weights)
    expected_assignment, expected_centroids = _numpy_lloyd(x, seeds, 6, weights)
    np.testing.assert_array_equal(assignment, expected_assignment)
    np.testing.assert_allclose(centroids, expected_centroids, rtol=1e-5, atol=1e-5)


def test_zero_weight_points_do_not_move_centroids(overlapping_points):
    x, weights = overlapping_points
    initial = x[:3] + 0.1
    outliers = np.full((10, 3), 50.0, np.float32)
    with_outliers = lloyd(
        np.concatenate([x, outliers]), initial, 5, np.concatenate([weights, np.zeros(10)])
    )
    without = lloyd(x, initial, 5, weights)
    np.testing.assert_allclose(with_outliers[1], without[1], rtol=1e-6)
    np.testing.assert_array_equal(with_outliers[0][:60], without[0])


def test_kmeans_plusplus_samples_proportional_to_weighted_squared_distance():
    points = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
    weights = np.array([1.0, 1.0, 2.0, 0.0], np.float32)
    draws = 4000
    seeds = np.asarray(
        kmeans_plusplus(
            np.broadcast_to(points, (draws, 4, 1)),
            2,
            jax.random.key(10),
            np.broadcast_to(weights, (draws, 4)),
        )
    )[..., 0]
    index = np.searchsorted(points[:, 0], seeds)  # [draws, 2] point indices
    assert np.all(points[index, 0] == seeds) and not np.any(index == 3)
    first_share = np.bincount(index[:, 0], minlength=4) / draws
    np.testing.assert_allclose(first_share, weights / weights.sum(), atol=0.03)
    for first in range(3):
        drawn = index[index[:, 0] == first, 1]
        score = weights * (points[:, 0] - points[first, 0]) ** 2
        np.testing.assert_allclose(
            np.bincount(drawn, minlength=4) / drawn.size, score / score.sum(), atol=0.05
        )


def test_kmeans_recovers_well_separated_clusters():
    blobs_rng = np.random.default_rng(11)
    centres = np.array([[10, 10, 0], [-10, 10, 0], [10, -10, 5], [-10, -10, -5]], np.float32)
    labels = np.repeat(np.arange(4), 30)
    x = (centres[labels] + 0.3 * blobs_rng.normal(size=(120, 3))).astype(np.float32)
    batch = np.stack([x, x[::-1]])  # two problems, vmapped
    assignments, centroids = kmeans(batch, 4, 10, jax.random.key(12))
    for assignment, found, truth in zip(
        np.asarray(assignments), np.asarray(centroids), (labels, labels[::-1]), strict=True
    ):
        # One cluster per blob: the confusion matrix is a permutation matrix of 30s.
        confusion = np.zeros((4, 4), int)
        np.add.at(confusion, (truth, assignment), 1)
        assert sorted(confusion.max(axis=1)) == [30] * 4
        assert len(set(confusion.argmax(axis=1))) == 4
        order = confusion.argmax(axis=1)
        np.testing.assert_allclose(found[order], centres, atol=0.2)


def test_batched_kmeans_equals_per_problem_calls(overlapping_points):
    x, weights = overlapping_points
    batch = np.stack([x, x * 2, -x]).reshape(3, 60, 3)
    key = jax.random.key(13)
    assignments, centroids = kmeans(batch, 3, 4, key, np.stack([weights] * 3))
    for index, problem_key in enumerate(jax.random.split(key, 3)):
        single = kmeans(batch[index], 3, 4, problem_key, weights)
        np.testing.assert_array_equal(assignments[index], single[0])
        np.testing.assert_allclose(centroids[index], single[1], rtol=1e-6)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x, w: kmeans(x, 0, 3, jax.random.key(0)), ConfigError, "k="),
        (lambda x, w: kmeans(x, 61, 3, jax.random.key(0)), ConfigError, "k="),
        (lambda x, w: kmeans(x[:, 0], 2, 3, jax.random.key(0)), ShapeError, "x has shape"),
        (lambda x, w: kmeans(x, 2, 3, jax.random.key(0), w[:-1]), ShapeError, "weights"),
        (lambda x, w: lloyd(x, x[:2, :2], 3), ShapeError, "centroids"),
        (lambda x, w: lloyd(x, x[:2], -1), ConfigError, "iters"),
    ],
)
def test_kmeans_rejects_bad_input(overlapping_points, call, error, match):
    with pytest.raises(error, match=match):
        call(*overlapping_points)


# --- Inference -----------------------------------------------------------------------------


def test_separate_dpcl_with_oracle_embeddings():
    """Embeddings that encode the ideal binary mask must give well-separated tones."""
    n_fft, hop, n_src = 256, 64, 2
    mixtures, sources = _two_tone_batch(np.random.default_rng(14), batch=2, samples=4000)
    ideal = dpcl_targets(stft(sources, n_fft, hop))  # [B, T, F, 2]
    noise = 0.1 * jax.random.normal(jax.random.key(15), (*ideal.shape[:-1], 4))
    oracle = jnp.concatenate([ideal, jnp.zeros_like(ideal)], axis=-1) + noise
    oracle = oracle / jnp.linalg.norm(oracle, axis=-1, keepdims=True)

    def oracle_apply(params, features):
        return params + 0.0 * features[..., None]  # params are the embeddings

    separate = jax.jit(
        separate_dpcl, static_argnames=("model_apply", "n_src", "n_fft", "hop", "kmeans_iters")
    )
    estimates = np.asarray(separate(oracle_apply, oracle, mixtures, n_src, n_fft, hop))
    assert estimates.shape == (2, n_src, 4000)
    for estimate, reference in zip(estimates, sources, strict=True):
        best = max(
            (
                np.asarray(si_snr(estimate[list(order)], reference))
                for order in itertools.permutations(range(n_src))
            ),
            key=np.mean,
        )
        assert best.min() > 10.0, best


def test_separate_dpcl_with_a_model_and_bad_embeddings(small_model):
    model, variables, _ = small_model
    mixture = np.asarray(_two_tone_batch(np.random.default_rng(16), 1, 480)[0])
    estimates = separate_dpcl(model.apply, variables, mixture, 2, 32, 16)  # F = 17 features
    assert estimates.shape == (1, 2, 480)
    # Binary masks partition the bins, so the sources sum back to the mixture.
    np.testing.assert_allclose(estimates.sum(axis=1), mixture, atol=1e-4)
    with pytest.raises(ShapeError, match="model_apply"):
        separate_dpcl(lambda p, f: f, None, mixture, 2, 32, 16)
    with pytest.raises(ConfigError, match="n_src"):
        separate_dpcl(model.apply, variables, mixture, 0, 32, 16)

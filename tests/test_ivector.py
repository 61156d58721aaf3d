"""The i-vector models against independent references: the UBM's EM step against
scikit-learn's GaussianMixture from the same start, EM never lowering the log-likelihood
(UBM and T matrix), T recovering a known low-rank subspace, extraction against a float64
numpy implementation, PLDA scores against scipy's Gaussian densities and its fit against the
covariances the data were drawn from."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from sklearn.mixture import GaussianMixture

from jaxspeech.models import ivector, plda


def mixture_frames(rng, n=600, dim=3):
    centres = np.array([[0.0, 0, 0], [4, 0, 1], [0, 5, -2], [3, 3, 3]])[:, :dim]
    labels = rng.integers(len(centres), size=n)
    return (centres[labels] + rng.normal(size=(n, dim)) * (0.5 + labels[:, None] / 4)).astype(
        np.float32
    )


def test_ubm_em_step_matches_sklearn(rng):
    x = mixture_frames(rng)
    start = {
        "weights": np.array([0.1, 0.2, 0.3, 0.4]),
        "means": x[:4].astype(np.float64) + 0.3,
        "variances": np.full((4, 3), 2.0),
    }
    ours = ivector.gmm_update(
        jax.tree.map(jnp.float32, start),
        ivector.gmm_statistics(jax.tree.map(jnp.float32, start), x, np.ones(len(x), bool)),
        variance_floor=0.0,
        min_count=0.0,
    )
    reference = GaussianMixture(
        4,
        covariance_type="diag",
        max_iter=1,
        tol=0.0,
        reg_covar=0.0,
        weights_init=start["weights"],
        means_init=start["means"],
        precisions_init=1.0 / start["variances"],
    )
    with pytest.warns(UserWarning):  # one iteration does not converge
        reference.fit(x.astype(np.float64))
    np.testing.assert_allclose(ours["weights"], reference.weights_, rtol=1e-4)
    np.testing.assert_allclose(ours["means"], reference.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["variances"], reference.covariances_, rtol=1e-3)


def test_ubm_grows_by_splitting_and_em_never_lowers_the_likelihood(rng):
    x = jnp.asarray(mixture_frames(rng))
    mask = jnp.ones(x.shape[0], bool)
    gmm = ivector.single_gaussian(4, 3)
    step = jax.jit(lambda g: ivector.gmm_update(g, ivector.gmm_statistics(g, x, mask), 0.01, 1.0))
    likelihood = jax.jit(lambda g: ivector.gmm_statistics(g, x, mask)["log_likelihood"])
    used = []
    for iteration in range(12):
        before = float(likelihood(gmm))
        gmm = step(gmm)
        assert float(likelihood(gmm)) >= before - 1e-3 * abs(before)
        if iteration % 3 == 2:
            gmm = ivector.split_components(gmm, 0.2)
        used.append(int((gmm["weights"] > 0).sum()))
    assert used == [1, 1, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4]
    np.testing.assert_allclose(float(gmm["weights"].sum()), 1.0, rtol=1e-5)
    # the grown UBM fits the four clusters better than one Gaussian does
    one = ivector.single_gaussian(4, 3)
    assert float(likelihood(gmm)) > float(likelihood(step(one))) + 0.5 * x.shape[0]


def low_rank_statistics(rng, utterances=300, components=6, dim=4, rank=2, frames=20):
    """Hard-aligned Baum-Welch statistics of frames drawn from ``m + T w``, ``w ~ N(0, I)``."""
    means = rng.normal(size=(components, dim)) * 3
    variances = rng.uniform(0.5, 1.5, size=(components, dim))
    t_true = rng.normal(size=(components, dim, rank))
    w = rng.normal(size=(utterances, rank))
    counts = rng.integers(frames // 2, frames * 2, size=(utterances, components)).astype(float)
    shifted = means + np.einsum("cdr,ur->ucd", t_true, w)
    noise_sum = rng.normal(size=shifted.shape) * np.sqrt(variances * counts[..., None])
    first = counts[..., None] * shifted + noise_sum
    # Σ_t x² = Σ_t (μ + e)²: exact in expectation, from the sum and a chi-square of the noise
    chi = rng.chisquare(counts[..., None] * np.ones(dim)) * variances
    second = first**2 / counts[..., None] + chi - noise_sum**2 / counts[..., None]
    stats = {
        "zeroth": counts,
        "first": first,
        "scaled_second": np.sum(second / variances, axis=(1, 2)),
    }
    ubm = {"weights": np.full(components, 1 / components), "means": means, "variances": variances}
    return jax.tree.map(jnp.float32, stats), jax.tree.map(jnp.float32, ubm), t_true


def test_total_variability_em_recovers_a_low_rank_subspace(rng):
    stats, ubm, t_true = low_rank_statistics(rng)
    tv = ivector.init_total_variability(jax.random.PRNGKey(0), ubm, rank=2)

    @jax.jit
    def iteration(tv):
        e_step = ivector.tv_statistics(tv, ubm["variances"], stats)
        return ivector.tv_update(tv, e_step), e_step["log_likelihood"]

    likelihoods = []
    for _ in range(15):
        tv, log_likelihood = iteration(tv)
        likelihoods.append(float(log_likelihood))
    assert all(b >= a - 1e-5 * abs(a) for a, b in itertools.pairwise(likelihoods))
    assert likelihoods[-1] > likelihoods[0]
    estimated = np.asarray(tv["T"]).reshape(-1, 2)
    angles = np.degrees(scipy.linalg.subspace_angles(estimated, t_true.reshape(-1, 2)))
    assert angles.max() < 5.0, angles
    # minimum divergence: the posteriors' empirical distribution is close to N(0, I)
    w = ivector.extract(tv, ubm["variances"], stats)
    np.testing.assert_allclose(np.cov(np.asarray(w).T), np.eye(2), atol=0.15)


def test_extraction_equals_a_float64_numpy_reference(rng):
    x = rng.normal(size=(2, 30, 3)).astype(np.float32)
    mask = np.ones((2, 30), bool)
    mask[1, 17:] = False
    gmm = {
        "weights": np.array([0.2, 0.3, 0.5]),
        "means": rng.normal(size=(3, 3)),
        "variances": rng.uniform(0.5, 2, size=(3, 3)),
    }
    tv = {"mean": gmm["means"] + 0.1, "T": rng.normal(size=(3, 3, 2))}
    f32 = lambda tree: jax.tree.map(jnp.float32, tree)
    ours = ivector.extract(f32(tv), f32(gmm)["variances"], ivector.baum_welch(f32(gmm), x, mask))
    for b in range(2):
        frames = x[b, mask[b]].astype(np.float64)
        log_pdf = np.stack(
            [
                np.log(gmm["weights"][c])
                + scipy.stats.multivariate_normal(
                    gmm["means"][c], np.diag(gmm["variances"][c])
                ).logpdf(frames)
                for c in range(3)
            ],
            axis=1,
        )
        gamma = np.exp(log_pdf - scipy.special.logsumexp(log_pdf, axis=1, keepdims=True))
        precision = np.eye(2)
        linear = np.zeros(2)
        for c in range(3):
            t_c, inv_var = tv["T"][c], 1.0 / gmm["variances"][c]
            centred = gamma[:, c] @ (frames - tv["mean"][c])
            precision += gamma[:, c].sum() * t_c.T @ (inv_var[:, None] * t_c)
            linear += t_c.T @ (inv_var * centred)
        reference = np.linalg.solve(precision, linear)
        np.testing.assert_allclose(ours[b], reference, rtol=1e-4, atol=1e-6)


def brute_force_llr(a, b, mean, between, within):
    total = between + within
    joint = np.block([[total, between], [between, total]])
    same = scipy.stats.multivariate_normal(np.concatenate([mean, mean]), joint)
    apart = scipy.stats.multivariate_normal(mean, total)
    return same.logpdf(np.concatenate([a, b])) - apart.logpdf(a) - apart.logpdf(b)


def test_plda_fit_recovers_covariances_and_scores_match_scipy(rng):
    dim, speakers, per_speaker = 3, 400, 8
    mixing = rng.normal(size=(dim, dim))
    between, within = mixing @ mixing.T + np.eye(dim), np.diag([0.5, 1.0, 2.0])
    mean = np.array([1.0, -2.0, 0.5])
    y = rng.multivariate_normal(mean, between, size=speakers)
    x = np.repeat(y, per_speaker, 0) + rng.multivariate_normal(
        np.zeros(dim), within, size=speakers * per_speaker
    )
    labels = np.repeat(np.arange(speakers + 2), per_speaker)[: len(x)]  # two absent speakers
    stats = plda.speaker_statistics(jnp.float32(x), labels, speakers + 2)
    model = jax.device_get(plda.fit(stats, iterations=20))
    np.testing.assert_allclose(model["within"], within, atol=0.15)
    np.testing.assert_allclose(model["between"], between, rtol=0.2, atol=0.3)
    np.testing.assert_allclose(model["mean"], mean, atol=0.3)
    scores = np.asarray(plda.score(model, jnp.float32(x[:6]), jnp.float32(x[6:12])))
    f64 = lambda k: np.asarray(model[k], np.float64)
    reference = [
        brute_force_llr(x[i], x[6 + i], f64("mean"), f64("between"), f64("within"))
        for i in range(6)
    ]
    np.testing.assert_allclose(scores, reference, rtol=1e-3, atol=1e-3)
    # with LDA to one dimension the scores still separate same from different speakers
    reduced = plda.fit(stats, iterations=5, lda_dim=1)
    same = plda.score(reduced, jnp.float32(x[0::8][:100]), jnp.float32(x[1::8][:100]))
    different = plda.score(reduced, jnp.float32(x[0::8][:100]), jnp.float32(x[9::8][:100]))
    assert float(jnp.mean(same)) > float(jnp.mean(different)) + 1.0

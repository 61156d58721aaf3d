"""jaxspeech.losses against numpy references written from the formulas, brute force over
permutations and N×N affinity matrices, fast_bss_eval, and finite-difference gradients."""

from __future__ import annotations

import functools
import itertools

import fast_bss_eval
import jax
import numpy as np
import pytest
from jax import numpy as jnp

from jaxspeech import losses
from jaxspeech.errors import ShapeError


def _np_si_snr(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    est = np.asarray(est, np.float64)
    ref = np.asarray(ref, np.float64)
    est = est - est.mean(-1, keepdims=True)
    ref = ref - ref.mean(-1, keepdims=True)
    target = (est * ref).sum(-1, keepdims=True) / (ref * ref).sum(-1, keepdims=True) * ref
    noise = est - target
    return 10 * np.log10((target**2).sum(-1) / (noise**2).sum(-1))


def _assert_grad_matches_finite_differences(fn, args, argnum, seed=0, step=1e-3, rtol=2e-2):
    """Directional derivative of the scalar ``sum(fn(*args))`` along a random direction."""
    args = [
        np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype, np.floating) else a
        for a in args
    ]
    direction = np.random.default_rng(seed).normal(size=np.shape(args[argnum]))
    direction = (direction / np.linalg.norm(direction)).astype(np.float32)

    @jax.jit
    def total(x):
        return jnp.sum(fn(*args[:argnum], x, *args[argnum + 1 :]))

    grad = np.asarray(jax.jit(jax.grad(total))(args[argnum]), np.float64)
    analytic = float(np.sum(grad * direction))
    x = np.asarray(args[argnum], np.float64)
    numeric = (
        float(total((x + step * direction).astype(np.float32)))
        - float(total((x - step * direction).astype(np.float32)))
    ) / (2 * step)
    assert abs(analytic) > 1e-3, "degenerate direction: the test would not check anything"
    np.testing.assert_allclose(analytic, numeric, rtol=rtol)


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(3, 6, 200)).astype(np.float32)
    est = (0.8 * ref + 0.4 * rng.normal(size=ref.shape) + 0.1).astype(np.float32)
    return est, ref


# --- SI-SNR ---------------------------------------------------------------------------------


def test_si_snr_matches_numpy_and_fast_bss_eval(signals):
    est, ref = signals
    got = losses.si_snr(est, ref)
    assert got.shape == (3, 6) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_si_snr(est, ref), rtol=1e-4, atol=1e-4)
    reference = fast_bss_eval.numpy.si_sdr(
        ref[..., None, :].astype(np.float64), est[..., None, :].astype(np.float64), zero_mean=True
    )[..., 0]
    np.testing.assert_allclose(got, reference, atol=1e-3)
    np.testing.assert_allclose(losses.neg_si_snr(est, ref), -got)


def test_si_snr_is_scale_invariant_and_perfect_estimate_is_high(signals):
    est, ref = signals
    np.testing.assert_allclose(losses.si_snr(3.0 * est, ref), losses.si_snr(est, ref), atol=1e-4)
    assert np.all(np.asarray(losses.si_snr(ref, ref)) > 60)


def test_si_snr_bfloat16_computes_in_float32(signals):
    est, ref = signals
    est_bf16, ref_bf16 = jnp.asarray(est, jnp.bfloat16), jnp.asarray(ref, jnp.bfloat16)
    got = losses.si_snr(est_bf16, ref_bf16)
    assert got.dtype == jnp.float32
    expected = _np_si_snr(np.asarray(est_bf16, np.float32), np.asarray(ref_bf16, np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_si_snr_jit_vmap_and_grad(signals):
    est, ref = signals
    np.testing.assert_allclose(jax.jit(losses.si_snr)(est, ref), losses.si_snr(est, ref), rtol=1e-5)
    np.testing.assert_allclose(
        jax.vmap(losses.si_snr)(est, ref), losses.si_snr(est, ref), rtol=1e-5
    )
    _assert_grad_matches_finite_differences(losses.neg_si_snr, [est[0, :2], ref[0, :2]], 0)


def test_si_snr_rejects_shape_mismatch():
    with pytest.raises(ShapeError, match="ref"):
        losses.si_snr(np.ones((2, 100)), np.ones((2, 99)))


def test_pairwise_neg_si_snr_matrix(signals):
    est, ref = signals
    matrix = losses.pairwise_neg_si_snr(est[:, :3], ref[:, 1:5])
    assert matrix.shape == (3, 3, 4)
    for batch, i, j in itertools.product(range(3), range(3), range(4)):
        expected = -_np_si_snr(est[batch, i], ref[batch, 1 + j])
        # Unrelated pairs are near −60 dB, where float32 cancellation costs ~1e-3 relative.
        np.testing.assert_allclose(matrix[batch, i, j], expected, rtol=1e-3)


def test_pairwise_separation_loss_scores_a_silent_reference_by_the_estimate_level(signals):
    """Against a sounding reference it is −SI-SNR, with a soft 30 dB ceiling in a mixture
    that has a silent reference; against the silent one (all zeros), the estimate's level
    below the mixture in dB, bottoming out 30 dB down; PIT then gives the silent reference
    the quiet estimate."""
    est, ref = signals
    ref = ref[:, :2].copy()
    ref[1, 1] = 0.0  # mixture 1 holds one speaker alone
    est = np.stack([est[:, 0], 1e-2 * est[:, 1]], 1)  # estimate 1 is 40 dB down
    mixture = ref.sum(1)
    matrix = np.asarray(losses.pairwise_separation_loss(est, ref, mixture))
    for batch, i, j in itertools.product(range(3), range(2), range(2)):
        if batch == 1 and j == 1:
            level = np.sum(est[batch, i].astype(np.float64) ** 2) / np.sum(mixture[batch] ** 2)
            expected = 10 * np.log10(level + 1e-3)
        elif batch == 1:
            snr = 10 ** (_np_si_snr(est[batch, i], ref[batch, j]) / 10)
            expected = 10 * np.log10(1 / snr + 1e-3)  # −10·log10(‖s‖² / (‖e‖² + τ‖s‖²))
        else:
            expected = -_np_si_snr(est[batch, i], ref[batch, j])
        np.testing.assert_allclose(matrix[batch, i, j], expected, rtol=1e-3, atol=1e-4)
    assert -30.0 < matrix[1, 1, 1] < -29.0 and matrix[1, 0, 1] > -3.0  # loud estimate: bad
    loss, permutation = jax.jit(
        lambda e, r, m: losses.pit(
            functools.partial(losses.pairwise_separation_loss, mixture=m), e, r
        )
    )(est, ref, mixture)
    np.testing.assert_array_equal(permutation[1], [0, 1])
    np.testing.assert_allclose(loss[1], (matrix[1, 0, 0] + matrix[1, 1, 1]) / 2, rtol=1e-5)
    grad = jax.grad(lambda e: losses.pairwise_separation_loss(e, ref, mixture).sum())(est)
    assert np.all(np.isfinite(np.asarray(grad)))
    perfect = losses.pairwise_separation_loss(ref, ref, mixture)
    np.testing.assert_allclose(perfect[1, 0, 0], -30.0, atol=1e-3)  # the ceiling
    assert perfect[0, 0, 0] < -60.0  # no ceiling where both speakers sound


def test_pairwise_with_two_event_axes(rng):
    pred, target = rng.uniform(size=(2, 3, 4, 5)), rng.uniform(size=(2, 3, 4, 5))
    matrix = losses.pairwise(losses.mask_mse, event_ndim=2)(pred, target)
    assert matrix.shape == (2, 3, 3)
    for batch, i, j in itertools.product(range(2), range(3), range(3)):
        expected = np.mean((pred[batch, i] - target[batch, j]) ** 2)
        np.testing.assert_allclose(matrix[batch, i, j], expected, rtol=1e-5)


def test_pairwise_rejects_missing_source_axis():
    with pytest.raises(ShapeError, match="sources"):
        losses.pairwise_neg_si_snr(np.ones(100), np.ones(100))


# --- Permutation-invariant training ---------------------------------------------------------


def _brute_force_pit(est: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full −SI-SNR of every permutation: (best loss ``[...]``, est index per ref ``[..., n]``)."""
    permutations = list(itertools.permutations(range(est.shape[-2])))
    totals = np.stack([-_np_si_snr(est[..., perm, :], ref).mean(-1) for perm in permutations])
    best = np.argmin(totals, axis=0)
    return np.min(totals, axis=0), np.array(permutations)[best]


_pit_neg_si_snr = jax.jit(functools.partial(losses.pit, losses.pairwise_neg_si_snr))


@pytest.mark.parametrize("n_src", [2, 3, 4, 5, 6])
def test_pit_matches_brute_force(n_src):
    rng = np.random.default_rng(n_src)
    ref = rng.normal(size=(2, 2, n_src, 64)).astype(np.float32)
    shuffled = np.stack([ref[b, t, rng.permutation(n_src)] for b, t in np.ndindex(2, 2)])
    est = (shuffled.reshape(ref.shape) + 0.7 * rng.normal(size=ref.shape)).astype(np.float32)
    loss, perm = _pit_neg_si_snr(est, ref)
    expected_loss, expected_perm = _brute_force_pit(est, ref)
    sdr, ref_of_est = fast_bss_eval.numpy.si_sdr(ref, est, zero_mean=True, return_perm=True)
    np.testing.assert_allclose(loss, -sdr.mean(-1), rtol=1e-3)
    np.testing.assert_array_equal(perm, ref_of_est)  # despite its docstring: est per ref
    assert loss.shape == (2, 2) and perm.shape == (2, 2, n_src) and perm.dtype == jnp.int32
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(perm, expected_perm)
    aligned = losses.reorder(est, perm)
    np.testing.assert_allclose(
        np.mean(losses.neg_si_snr(aligned, ref), axis=-1), loss, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("n_src", [3, 5])
def test_pit_grad_matches_finite_differences(n_src):
    rng = np.random.default_rng(10 + n_src)
    ref = rng.normal(size=(2, n_src, 48)).astype(np.float32)
    est = (ref[:, ::-1] + 0.5 * rng.normal(size=ref.shape)).astype(np.float32)

    def pit_loss(est, ref):
        return losses.pit(losses.pairwise_neg_si_snr, est, ref)[0]

    _assert_grad_matches_finite_differences(pit_loss, [est, ref], 0)


@pytest.mark.parametrize("n_src", [3, 5])
def test_pit_under_vmap(signals, n_src):
    est, ref = signals
    est, ref = est[:, :n_src], ref[:, n_src - 1 :: -1]  # est i belongs to ref n_src − 1 − i
    pit = jax.jit(jax.vmap(functools.partial(losses.pit, losses.pairwise_neg_si_snr)))
    loss, perm = pit(est, ref)
    expected_loss, expected_perm = _brute_force_pit(est, ref)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(perm, expected_perm)
    np.testing.assert_array_equal(perm, np.tile(np.arange(n_src)[::-1], (3, 1)))


def test_pit_with_mask_loss_and_hungarian_under_jit(rng):
    target = rng.uniform(size=(2, 5, 4, 6)).astype(np.float32)
    order = np.array([3, 0, 4, 1, 2])
    pred = target[:, order] + 0.01 * rng.normal(size=target.shape).astype(np.float32)
    pit = jax.jit(functools.partial(losses.pit, losses.pairwise(losses.mask_mse, event_ndim=2)))
    loss, perm = pit(pred, target)
    # pred[k] ≈ target[order[k]], so reference j is matched by estimate argsort(order)[j].
    np.testing.assert_array_equal(perm, np.tile(np.argsort(order), (2, 1)))
    np.testing.assert_allclose(
        loss, losses.mask_mse(losses.reorder(pred, perm), target).mean(-1), rtol=1e-5
    )


def test_pit_and_reorder_reject_bad_shapes():
    with pytest.raises(ShapeError, match="square"):
        losses.pit(losses.pairwise_neg_si_snr, np.ones((2, 3, 50)), np.ones((2, 2, 50)))
    with pytest.raises(ShapeError, match="permutation"):
        losses.reorder(np.ones((2, 3, 50)), np.zeros((3, 3), np.int32))


# --- Mask losses ----------------------------------------------------------------------------


def test_mask_mse_matches_numpy(rng):
    pred, target = rng.uniform(size=(3, 4, 5)), rng.uniform(size=(3, 4, 5))
    expected = ((pred - target) ** 2).mean(axis=(-2, -1))
    np.testing.assert_allclose(losses.mask_mse(pred, target), expected, rtol=1e-5)


def test_mask_mse_weighted_mean(rng):
    pred, target = rng.uniform(size=(3, 4, 5)), rng.uniform(size=(3, 4, 5))
    valid = np.ones((3, 4, 1))
    valid[0, 2:] = 0.0  # padded frames
    valid[2] = 0.0  # fully padded example
    got = losses.mask_mse(pred, target, valid)
    np.testing.assert_allclose(got[0], ((pred[0, :2] - target[0, :2]) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(got[1], ((pred[1] - target[1]) ** 2).mean(), rtol=1e-5)
    assert float(got[2]) == 0.0
    _assert_grad_matches_finite_differences(
        lambda p, t: losses.mask_mse(p, t, valid), [pred, target], 0
    )


def test_mask_mse_rejects_bad_shapes():
    with pytest.raises(ShapeError, match="target"):
        losses.mask_mse(np.ones((4, 5)), np.ones((4, 6)))
    with pytest.raises(ShapeError, match="frames, freqs"):
        losses.mask_mse(np.ones(5), np.ones(5))


def _np_mask_distillation(m_s, m_t, m_r):
    a = np.minimum(np.abs(m_r - m_t) + 0.5, 1.0)
    return (a * (m_r - m_s) ** 2 + (1 - a) * (m_t - m_s) ** 2).mean(axis=(-2, -1))


def test_mask_distillation_matches_numpy(rng):
    m_s, m_t, m_r = (rng.uniform(size=(2, 6, 7)).astype(np.float32) for _ in range(3))
    got = losses.mask_distillation(m_s, m_t, m_r)
    assert got.shape == (2,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_mask_distillation(m_s, m_t, m_r), rtol=1e-5)
    a = np.minimum(np.abs(m_r - m_t) + 0.5, 1.0)
    assert 0.5 < a.min() < 1.0 and a.max() == 1.0  # both regimes of a are exercised


def test_mask_distillation_with_a_fixed_ideal_weight(rng):
    m_s, m_t, m_r = (rng.uniform(size=(2, 6, 7)).astype(np.float32) for _ in range(3))
    expected = (0.3 * (m_r - m_s) ** 2 + 0.7 * (m_t - m_s) ** 2).mean(axis=(-2, -1))
    got = losses.mask_distillation(m_s, m_t, m_r, ideal_weight=0.3)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        losses.mask_distillation(m_s, m_t, m_r, ideal_weight=1.0), losses.mask_mse(m_s, m_r),
        rtol=1e-6,
    )  # fmt: skip
    with pytest.raises(ValueError, match="ideal_weight"):
        losses.mask_distillation(m_s, m_t, m_r, ideal_weight=1.5)


def test_mask_distillation_reduces_to_mse_when_teacher_is_ideal(rng):
    m_s, m_r = rng.uniform(size=(2, 6, 7)), rng.uniform(size=(2, 6, 7))
    np.testing.assert_allclose(
        losses.mask_distillation(m_s, m_r, m_r), losses.mask_mse(m_s, m_r), rtol=1e-6
    )


def test_mask_distillation_gradients_treat_a_as_constant(rng):
    m_s, m_t, m_r = (rng.uniform(size=(6, 7)).astype(np.float32) for _ in range(3))
    _assert_grad_matches_finite_differences(losses.mask_distillation, [m_s, m_t, m_r], 0)
    a = np.minimum(np.abs(m_r - m_t) + 0.5, 1.0)
    grad_r = jax.grad(lambda r: losses.mask_distillation(m_s, m_t, r))(m_r)
    np.testing.assert_allclose(grad_r, 2 * a * (m_r - m_s) / m_s.size, rtol=1e-5, atol=1e-8)


def test_mask_distillation_weighted_mean(rng):
    m_s, m_t, m_r = (rng.uniform(size=(2, 6, 7)).astype(np.float32) for _ in range(3))
    weights = rng.uniform(size=(2, 6, 7)) ** 4  # peaky, like bin energies
    a = np.minimum(np.abs(m_r - m_t) + 0.5, 1.0)
    per_bin = a * (m_r - m_s) ** 2 + (1 - a) * (m_t - m_s) ** 2
    expected = (weights * per_bin).sum(axis=(-2, -1)) / weights.sum(axis=(-2, -1))
    got = losses.mask_distillation(m_s, m_t, m_r, weights)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        losses.mask_distillation(m_s, m_r, m_r, weights), losses.mask_mse(m_s, m_r, weights)
    )


def test_mask_distillation_rejects_bad_shapes():
    with pytest.raises(ShapeError, match="m_r"):
        losses.mask_distillation(np.ones((4, 5)), np.ones((4, 5)), np.ones((5, 4)))
    with pytest.raises(ShapeError, match="frames, freqs"):
        losses.mask_distillation(np.ones(5), np.ones(5), np.ones(5))


# --- AAM-softmax ----------------------------------------------------------------------------


def _np_aam_softmax(emb, weights, labels, margin, scale, easy_margin=False):
    emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    weights = weights / np.linalg.norm(weights, axis=0, keepdims=True)
    cosine = emb.astype(np.float64) @ weights.astype(np.float64)
    out = np.zeros(len(labels))
    for row, label in enumerate(labels):
        logits = cosine[row].copy()
        theta = np.arccos(np.clip(cosine[row, label], -1, 1))
        if easy_margin and cosine[row, label] <= 0:
            target = cosine[row, label]
        elif not easy_margin and theta + margin > np.pi:
            target = cosine[row, label] - margin * np.sin(margin)
        else:
            target = np.cos(theta + margin)
        logits[label] = target
        logits *= scale
        out[row] = np.logaddexp.reduce(logits) - logits[label]
    return out


@pytest.fixture(scope="module")
def speaker_batch():
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(8, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 2])
    emb = rng.normal(size=(6, 8)).astype(np.float32)
    # Row 4 points away from its class centre: θ + m > π takes the fallback branch.
    emb[4] = -weights[:, 4] + 0.05 * rng.normal(size=8)
    return emb, weights, labels


@pytest.mark.parametrize("easy_margin", [False, True])
def test_aam_softmax_matches_numpy(speaker_batch, easy_margin):
    emb, weights, labels = speaker_batch
    got = losses.aam_softmax(emb, weights, labels, margin=0.2, scale=30.0, easy_margin=easy_margin)
    assert got.shape == (6,) and got.dtype == jnp.float32
    expected = _np_aam_softmax(emb, weights, labels, 0.2, 30.0, easy_margin)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_aam_softmax_fallback_branch_is_exercised(speaker_batch):
    emb, weights, _ = speaker_batch
    cosine = (emb[4] / np.linalg.norm(emb[4])) @ (weights[:, 4] / np.linalg.norm(weights[:, 4]))
    assert np.arccos(cosine) + 0.2 > np.pi


def test_aam_softmax_without_margin_is_scaled_cosine_cross_entropy(speaker_batch):
    emb, weights, labels = speaker_batch
    cosine = (emb / np.linalg.norm(emb, axis=-1, keepdims=True)) @ (
        weights / np.linalg.norm(weights, axis=0, keepdims=True)
    )
    logits = 10.0 * cosine.astype(np.float64)
    log_softmax = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    expected = -log_softmax[np.arange(6), labels]
    got = losses.aam_softmax(emb, weights, labels, margin=0.0, scale=10.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_aam_softmax_grads_match_finite_differences(speaker_batch):
    emb, weights, labels = speaker_batch
    loss = functools.partial(losses.aam_softmax, margin=0.2, scale=5.0)
    # Rows 0–3 stay on the cos(θ + m) branch; row 4 is on the fallback branch.
    _assert_grad_matches_finite_differences(lambda e, w: loss(e, w, labels), [emb, weights], 0)
    _assert_grad_matches_finite_differences(lambda e, w: loss(e, w, labels), [emb, weights], 1)


def test_aam_softmax_rejects_bad_shapes(speaker_batch):
    emb, weights, labels = speaker_batch
    with pytest.raises(ShapeError, match="weights"):
        losses.aam_softmax(emb, weights.T, labels)
    with pytest.raises(ShapeError, match="labels"):
        losses.aam_softmax(emb, weights, labels[:3])
    with pytest.raises(ShapeError, match="integer"):
        losses.aam_softmax(emb, weights, labels.astype(np.float32))


# --- Deep clustering ------------------------------------------------------------------------


def _np_affinity_loss(V, Y, weights=None):
    if weights is None:
        weights = np.ones(V.shape[:-1])
    out = np.zeros(V.shape[:-2])
    for index in np.ndindex(out.shape):
        difference = V[index] @ V[index].T - Y[index] @ Y[index].T  # explicit N×N
        out[index] = np.sum(np.outer(weights[index], weights[index]) * difference**2)
    return out


@pytest.fixture(scope="module")
def clustering_batch():
    rng = np.random.default_rng(3)
    V = rng.normal(size=(2, 3, 30, 4)).astype(np.float32)
    V /= np.linalg.norm(V, axis=-1, keepdims=True)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(2, 3, 30))]
    weights = rng.uniform(size=(2, 3, 30)).astype(np.float32)
    weights[..., :5] = 0.0  # silent bins
    return V, Y, weights


def test_deep_clustering_matches_explicit_affinity(clustering_batch):
    V, Y, _ = clustering_batch
    raw = losses.deep_clustering(V, Y, normalize=False)
    assert raw.shape == (2, 3) and raw.dtype == jnp.float32
    np.testing.assert_allclose(raw, _np_affinity_loss(V, Y), rtol=1e-4)
    np.testing.assert_allclose(losses.deep_clustering(V, Y), raw / 30**2, rtol=1e-6)


def test_deep_clustering_weighted_matches_explicit_affinity(clustering_batch):
    V, Y, weights = clustering_batch
    expected = _np_affinity_loss(V, Y, weights)
    raw = losses.deep_clustering(V, Y, weights, normalize=False)
    np.testing.assert_allclose(raw, expected, rtol=1e-4)
    normalized = losses.deep_clustering(V, Y, weights)
    np.testing.assert_allclose(normalized, expected / weights.sum(-1) ** 2, rtol=1e-4)
    zero = losses.deep_clustering(V, Y, np.zeros_like(weights))
    np.testing.assert_array_equal(zero, 0.0)


def test_deep_clustering_perfect_embedding_is_zero(clustering_batch):
    _, Y, _ = clustering_batch
    np.testing.assert_allclose(losses.deep_clustering(Y, Y), 0.0, atol=1e-6)


def test_deep_clustering_grad_and_jit(clustering_batch):
    V, Y, weights = clustering_batch
    np.testing.assert_allclose(
        jax.jit(losses.deep_clustering)(V, Y, weights),
        losses.deep_clustering(V, Y, weights),
        rtol=1e-5,
    )
    _assert_grad_matches_finite_differences(
        lambda v, y: losses.deep_clustering(v, y, weights[0]), [V[0], Y[0]], 0
    )


def test_deep_clustering_rejects_bad_shapes(clustering_batch):
    V, Y, weights = clustering_batch
    with pytest.raises(ShapeError, match="same bins"):
        losses.deep_clustering(V, Y[..., :20, :])
    with pytest.raises(ShapeError, match="weights"):
        losses.deep_clustering(V, Y, weights[..., None])


# --- Binary cross-entropy -------------------------------------------------------------------


def test_binary_cross_entropy_matches_numpy_log_sigmoid(rng):
    logits = np.array([-200.0, -30.0, -2.0, 0.0, 0.5, 3.0, 40.0, 200.0], np.float32)
    labels = np.array([0.0, 1.0, 1.0, 0.0, 0.3, 0.0, 1.0, 0.0], np.float32)
    log_sigmoid = -np.logaddexp(0.0, -logits.astype(np.float64))
    log_one_minus = -np.logaddexp(0.0, logits.astype(np.float64))
    expected = -(labels * log_sigmoid + (1 - labels) * log_one_minus)
    got = losses.binary_cross_entropy(logits, labels)
    assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    _assert_grad_matches_finite_differences(
        losses.binary_cross_entropy, [rng.normal(size=(4, 3)), rng.uniform(size=(4, 3))], 0
    )


def test_binary_cross_entropy_rejects_shape_mismatch():
    with pytest.raises(ShapeError, match="labels"):
        losses.binary_cross_entropy(np.zeros(4), np.zeros(5))

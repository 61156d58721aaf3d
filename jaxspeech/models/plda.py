"""Two-covariance PLDA back-end (Brümmer & de Villiers 2010; Sizov et al. 2014), with an
optional LDA projection in front, fitted by EM from per-speaker sums.

Model: ``x = P(v) = y_s + ε``, ``y_s ~ N(μ, Σ_b)`` per speaker, ``ε ~ N(0, Σ_w)`` per
utterance, where ``P`` is the LDA projection (identity without LDA). The verification score
is the log-likelihood ratio of "same speaker" against "different speakers" for one enrolment
and one test vector.

Params (``plda``): ``projection`` [R, K], ``mean`` [K], ``between`` and ``within`` [K, K]
(``Σ_b``, ``Σ_w``) and the scoring terms ``quadratic`` and ``cross`` [K, K] and ``offset``
(scalar): ``llr(a, b) = ½ aᵀ Q a + ½ bᵀ Q b + aᵀ P b + offset`` for centred projected ``a``,
``b``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def speaker_statistics(x: jax.Array, speakers: jax.Array, num_speakers: int) -> dict:
    """Sums for ``fit``: ``count`` [S], ``sums`` [S, R] per speaker label ``speakers`` [N] of
    ``x`` [N, R], and ``scatter`` [R, R] (``Σ x xᵀ``)."""
    return {
        "count": jax.ops.segment_sum(jnp.ones(x.shape[0]), speakers, num_speakers),
        "sums": jax.ops.segment_sum(x, speakers, num_speakers),
        "scatter": x.T @ x,
    }


def _scatters(count, sums, scatter):
    """Mean [R], between- and within-speaker covariances [R, R] (per-vector weighting)."""
    total = count.sum()
    mean = sums.sum(0) / total
    speaker_means = sums / jnp.maximum(count, 1.0)[:, None]
    centred = speaker_means - mean
    between = (centred * count[:, None]).T @ centred / total
    within = (scatter - (speaker_means * count[:, None]).T @ speaker_means) / total
    return mean, between, within


def lda_projection(stats: dict, dim: int) -> jax.Array:
    """``[R, dim]``: the ``dim`` directions of largest between/within-speaker variance ratio,
    scaled so that the within-speaker covariance becomes the identity."""
    _, between, within = _scatters(stats["count"], stats["sums"], stats["scatter"])
    values, vectors = jnp.linalg.eigh(within)
    inverse_root = vectors / jnp.sqrt(jnp.maximum(values, 1e-10 * values[-1]))
    _, directions = jnp.linalg.eigh(inverse_root.T @ between @ inverse_root)
    return inverse_root @ directions[:, ::-1][:, :dim]


def fit(stats: dict, iterations: int = 10, lda_dim: int | None = None) -> dict:
    """PLDA params from ``speaker_statistics`` sums (speakers with count 0 are ignored):
    LDA when ``lda_dim`` is given, the between/within scatters as the start, then
    ``iterations`` EM iterations (with simultaneous diagonalisation of the two covariances)."""
    rank = stats["sums"].shape[-1]
    projection = jnp.eye(rank) if lda_dim is None else lda_projection(stats, lda_dim)
    count = stats["count"]
    sums = stats["sums"] @ projection
    scatter = projection.T @ stats["scatter"] @ projection
    present = count > 0
    speakers, total = present.sum(), count.sum()
    mean, between, within = _scatters(count, sums, scatter)

    def em(_, carry):
        mean, between, within = carry
        # V with Vᵀ Σ_w⁻¹ V = I and Vᵀ Σ_b⁻¹ V = diag(ψ)
        factor = jnp.linalg.cholesky(within)
        whitened_between = jax.scipy.linalg.solve_triangular(factor, between, lower=True)
        whitened_between = jax.scipy.linalg.solve_triangular(factor, whitened_between.T, lower=True)
        values, q = jnp.linalg.eigh(whitened_between)
        v = factor @ q
        psi = 1.0 / jnp.maximum(values, 1e-10)
        inverse_v = jnp.linalg.inv(v)  # Σ_w⁻¹ = V⁻ᵀ V⁻¹, Σ_b⁻¹ = V⁻ᵀ ψ V⁻¹
        # posterior of y_s: precision V⁻ᵀ (ψ + n_s) V⁻¹, mean from Σ_b⁻¹ μ + Σ_w⁻¹ f_s
        rhs = (psi * (inverse_v @ mean))[None, :] + sums @ inverse_v.T  # [S, K] in V⁻¹ basis
        scale = 1.0 / (psi[None, :] + count[:, None])  # [S, K]
        y = (scale * rhs) @ v.T  # [S, K]
        y = jnp.where(present[:, None], y, 0.0)
        posterior_cov_sum = v @ jnp.diag(jnp.sum(jnp.where(present[:, None], scale, 0), 0)) @ v.T
        weighted_cov_sum = v @ jnp.diag(jnp.sum(count[:, None] * scale, 0)) @ v.T
        new_mean = y.sum(0) / speakers
        yy = y.T @ y
        new_between = (posterior_cov_sum + yy) / speakers - jnp.outer(new_mean, new_mean)
        cross = sums.T @ y
        weighted_yy = (y * count[:, None]).T @ y
        new_within = (scatter - cross - cross.T + weighted_cov_sum + weighted_yy) / total
        symmetric = lambda m: 0.5 * (m + m.T)
        return new_mean, symmetric(new_between), symmetric(new_within)

    mean, between, within = jax.lax.fori_loop(0, iterations, em, (mean, between, within))
    fitted = {"projection": projection, "mean": mean, "between": between, "within": within}
    return fitted | scoring_terms(between, within)


def scoring_terms(between: jax.Array, within: jax.Array) -> dict:
    """``quadratic``, ``cross`` and ``offset`` of the log-likelihood ratio (module docstring)."""
    dim = between.shape[0]
    total = between + within
    joint = jnp.block([[total, between], [between, total]])
    joint_inverse = jnp.linalg.inv(joint)
    total_inverse = jnp.linalg.inv(total)
    _, joint_log_det = jnp.linalg.slogdet(joint)
    _, total_log_det = jnp.linalg.slogdet(total)
    return {
        "quadratic": total_inverse - joint_inverse[:dim, :dim],
        "cross": -joint_inverse[:dim, dim:],
        "offset": -0.5 * joint_log_det + total_log_det,
    }


def score(plda: dict, enrol: jax.Array, test: jax.Array) -> jax.Array:
    """Log-likelihood ratios ``[N]`` of the pairs ``enrol[i]``, ``test[i]`` (``[N, R]``)."""
    a = enrol @ plda["projection"] - plda["mean"]
    b = test @ plda["projection"] - plda["mean"]
    quadratic = plda["quadratic"]
    return (
        0.5 * jnp.einsum("ni,ij,nj->n", a, quadratic, a)
        + 0.5 * jnp.einsum("ni,ij,nj->n", b, quadratic, b)
        + jnp.einsum("ni,ij,nj->n", a, plda["cross"], b)
        + plda["offset"]
    )

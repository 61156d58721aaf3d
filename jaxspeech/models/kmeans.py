"""k-means clustering in JAX: k-means++ seeding and Lloyd iterations, with per-point weights.

Used at deep-clustering inference to turn T-F embeddings into binary masks, but general:
``x`` is ``[..., N, D]`` (N points of dimension D) and every leading axis is a separate problem
(vmapped; problem ``b`` of the B flattened leading indices is seeded exactly as a call on that
problem alone with key ``jax.random.split(rng, B)[b]``; with no leading axes ``rng`` is used
as is).
``k`` and ``iters`` are static, so each distinct pair compiles once. Points with weight 0 (e.g.
silent time-frequency bins) are still assigned to a cluster but neither seed nor move centroids.
Computation is in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxspeech.errors import ConfigError, ShapeError


def _check_points(x: jax.Array, weights: jax.Array | None) -> None:
    if jnp.ndim(x) < 2:
        raise ShapeError(f"x has shape {jnp.shape(x)}; expected points [..., N, D]")
    if weights is not None and jnp.shape(weights) != jnp.shape(x)[:-1]:
        raise ShapeError(
            f"weights {jnp.shape(weights)} must have x's shape without its last axis, "
            f"{jnp.shape(x)[:-1]} (one weight per point)"
        )


def _point_weights(x: jax.Array, weights: jax.Array | None) -> jax.Array:
    """float32 weights ``[..., N]`` (ones when ``None``)."""
    if weights is None:
        return jnp.ones(x.shape[:-1], jnp.float32)
    return jnp.asarray(weights, jnp.float32)


def _squared_distances(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """``[N, D]``, ``[k, D]`` → ``[N, k]`` squared Euclidean distances (exact differences)."""
    return jnp.sum(jnp.square(x[:, None, :] - centroids[None, :, :]), axis=-1)


def _plusplus_one(x: jax.Array, weights: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """k-means++ seeds ``[k, D]`` for one problem ``x`` ``[N, D]``, ``weights`` ``[N]``."""
    # All-zero weights (an all-silent input): seed from every point alike rather than fail.
    base = jnp.where(jnp.sum(weights) > 0, weights, 1.0)
    keys = jax.random.split(key, k)
    first = x[jax.random.categorical(keys[0], jnp.log(base))]
    centroids = jnp.zeros((k, x.shape[-1]), jnp.float32).at[0].set(first)
    nearest = _squared_distances(x, first[None])[:, 0]

    def add_seed(index, state):
        centroids, nearest = state
        score = base * nearest
        # Every point coincides with a seed: fall back to the weights alone.
        logits = jnp.log(jnp.where(jnp.sum(score) > 0, score, base))
        seed = x[jax.random.categorical(keys[index], logits)]
        nearest = jnp.minimum(nearest, _squared_distances(x, seed[None])[:, 0])
        return centroids.at[index].set(seed), nearest

    centroids, _ = lax.fori_loop(1, k, add_seed, (centroids, nearest))
    return centroids


def _lloyd_one(
    x: jax.Array, weights: jax.Array, centroids: jax.Array, iters: int
) -> tuple[jax.Array, jax.Array]:
    """``iters`` Lloyd steps on one problem, then the assignment to the final centroids."""
    k = centroids.shape[0]

    def update(_, centroids):
        assignment = jnp.argmin(_squared_distances(x, centroids), axis=-1)
        membership = jax.nn.one_hot(assignment, k, dtype=jnp.float32) * weights[:, None]
        counts = jnp.sum(membership, axis=0)
        sums = jnp.matmul(membership.T, x, precision=lax.Precision.HIGHEST)
        means = sums / jnp.where(counts > 0, counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, means, centroids)  # empty cluster: keep centroid

    centroids = lax.fori_loop(0, iters, update, centroids)
    return jnp.argmin(_squared_distances(x, centroids), axis=-1).astype(jnp.int32), centroids


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_plusplus(
    x: jax.Array, k: int, rng: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007).

    The first seed is a point drawn with probability proportional to its weight; each further
    seed is drawn with probability proportional to ``weight · d²``, ``d`` the distance to the
    nearest seed so far. Zero-weight points are never drawn (unless every weight is 0, when
    all points count alike).

    Args:
      x: ``[..., N, D]`` points.
      k: number of seeds (static), ``1 ≤ k ≤ N``.
      rng: a PRNG key (split over the flattened leading axes of ``x``, if any).
      weights: optional ``[..., N]`` non-negative point weights.

    Returns:
      ``[..., k, D]`` float32 seeds, each one of the points.
    """
    _check_points(x, weights)
    n_points = jnp.shape(x)[-2]
    if not isinstance(k, int) or not 1 <= k <= n_points:
        raise ConfigError(f"k={k!r} must be an int in [1, N = {n_points}] (the number of points)")
    x = jnp.asarray(x, jnp.float32)
    weights = _point_weights(x, weights)
    lead, dim = x.shape[:-2], x.shape[-1]
    keys = jax.random.split(rng, math.prod(lead)) if lead else rng[None]
    seeds = jax.vmap(functools.partial(_plusplus_one, k=k))(
        x.reshape(-1, n_points, dim), weights.reshape(-1, n_points), keys
    )
    return seeds.reshape(*lead, k, dim)


@functools.partial(jax.jit, static_argnames=("iters",))
def lloyd(
    x: jax.Array, centroids: jax.Array, iters: int, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Lloyd's algorithm from given centroids.

    Each of the ``iters`` steps assigns every point to its nearest centroid and moves each
    centroid to the weighted mean of its points; a centroid with no (positively weighted)
    point keeps its position.

    Args:
      x: ``[..., N, D]`` points.
      centroids: ``[..., k, D]`` initial centroids.
      iters: number of update steps (static, ≥ 0).
      weights: optional ``[..., N]`` non-negative point weights.

    Returns:
      ``(assignments, centroids)``: ``[..., N]`` int32 index of each point's nearest final
      centroid, and the final ``[..., k, D]`` float32 centroids.
    """
    _check_points(x, weights)
    if jnp.ndim(centroids) != jnp.ndim(x) or (
        jnp.shape(centroids)[:-2] + jnp.shape(centroids)[-1:]
        != jnp.shape(x)[:-2] + jnp.shape(x)[-1:]
    ):
        raise ShapeError(
            f"centroids {jnp.shape(centroids)} must be [..., k, D] with x's leading axes and "
            f"dimension D, x being {jnp.shape(x)}"
        )
    if not isinstance(iters, int) or iters < 0:
        raise ConfigError(f"iters={iters!r} must be a non-negative int")
    x = jnp.asarray(x, jnp.float32)
    weights = _point_weights(x, weights)
    lead, (n_points, dim), k = x.shape[:-2], x.shape[-2:], centroids.shape[-2]
    assignments, centroids = jax.vmap(functools.partial(_lloyd_one, iters=iters))(
        x.reshape(-1, n_points, dim),
        weights.reshape(-1, n_points),
        jnp.asarray(centroids, jnp.float32).reshape(-1, k, dim),
    )
    return assignments.reshape(*lead, n_points), centroids.reshape(*lead, k, dim)


def kmeans(
    x: jax.Array, k: int, iters: int, rng: jax.Array, weights: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """k-means: :func:`kmeans_plusplus` seeds, then :func:`lloyd` for ``iters`` steps.

    Args:
      x: ``[..., N, D]`` points; each leading index is an independent problem.
      k: number of clusters (static), ``1 ≤ k ≤ N``.
      iters: Lloyd steps (static).
      rng: PRNG key for the seeding.
      weights: optional ``[..., N]`` non-negative point weights; zero-weight points are
        assigned but do not seed or move centroids.

    Returns:
      ``(assignments [..., N] int32, centroids [..., k, D] float32)``.
    """
    return lloyd(x, kmeans_plusplus(x, k, rng, weights), iters, weights)

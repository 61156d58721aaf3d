"""Training losses: SI-SNR, permutation invariance, mask losses, AAM-softmax, deep clustering, BCE.

Every loss is a pure ``jnp`` function batched over leading axes that returns *unreduced*
per-example values (optax style: the caller takes the mean). Inputs of any float dtype
(bfloat16 included) are computed in float32. "Lower is better" for every loss here; SI-SNR
itself is a quality (higher is better), so separation trains on :func:`neg_si_snr`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import jax
import numpy as np
import optax
from jax import lax
from jax import numpy as jnp

from jaxspeech.errors import ShapeError

# The largest number of sources solved by enumerating every permutation (4! = 24 sums);
# beyond it the Hungarian algorithm is used.
MAX_EXHAUSTIVE_SOURCES = 4


def _float32(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.asarray(x).astype(jnp.float32)


def _require_same_shape(
    first: jnp.ndarray, second: jnp.ndarray, first_name: str, second_name: str
) -> None:
    if jnp.shape(first) != jnp.shape(second):
        raise ShapeError(
            f"{first_name} has shape {jnp.shape(first)} but {second_name} has shape "
            f"{jnp.shape(second)}; they must match"
        )


def _require_mask_layout(mask: jnp.ndarray, name: str) -> None:
    if jnp.ndim(mask) < 2:
        raise ShapeError(f"{name} has shape {jnp.shape(mask)}; masks are [..., frames, freqs]")


def _mean_over_bins(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over the last two (time-frequency) axes."""
    return jnp.mean(x, axis=(-2, -1))


# --- Scale-invariant SNR and permutation-invariant training -------------------------------


def si_snr(
    est: jnp.ndarray,
    ref: jnp.ndarray,
    eps: float = 1e-8,
    ceiling_db: float | jax.Array | None = None,
) -> jnp.ndarray:
    """Scale-invariant signal-to-noise ratio in dB (Le Roux et al., 2019; Asteroid's form).

    Both signals are made zero-mean; the target is the projection of ``est`` on ``ref``,
    ``s = (⟨est, ref⟩ / (‖ref‖² + eps))·ref``, the noise ``e = est − s``, and the result
    ``10·log10(‖s‖² / (‖e‖² + eps) + eps)``. With ``ceiling_db`` the noise gets
    ``10^(−ceiling_db/10)·‖s‖²`` added, a soft ceiling at ``ceiling_db`` (Wisdom et al. 2020).

    Args:
      est: ``[..., samples]`` estimate.
      ref: same shape, reference.
      ceiling_db: None, or the ceiling (dB) as a number or an array broadcasting to
        ``[...]``; ``inf`` leaves a result without ceiling.

    Returns:
      ``[...]`` float32 SI-SNR in dB (higher is better).
    """
    _require_same_shape(est, ref, "est", "ref")
    est = _float32(est)
    ref = _float32(ref)
    est = est - jnp.mean(est, axis=-1, keepdims=True)
    ref = ref - jnp.mean(ref, axis=-1, keepdims=True)
    scale = jnp.sum(est * ref, axis=-1, keepdims=True) / (
        jnp.sum(ref * ref, axis=-1, keepdims=True) + eps
    )
    target = scale * ref
    noise = est - target
    target_energy = jnp.sum(target * target, axis=-1)
    noise_energy = jnp.sum(noise * noise, axis=-1)
    if ceiling_db is not None:
        noise_energy = noise_energy + 10.0 ** (-ceiling_db / 10.0) * target_energy
    return 10.0 * jnp.log10(target_energy / (noise_energy + eps) + eps)


def neg_si_snr(
    est: jnp.ndarray,
    ref: jnp.ndarray,
    eps: float = 1e-8,
    ceiling_db: float | jax.Array | None = None,
) -> jnp.ndarray:
    """``−si_snr(est, ref)``: ``[..., samples]`` → ``[...]``, a loss (lower is better)."""
    return -si_snr(est, ref, eps, ceiling_db)


def pairwise(
    loss_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray], event_ndim: int = 1
) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
    """Turn a per-example loss into a matrix of losses between every estimate and reference.

    Args:
      loss_fn: ``loss_fn(est, ref)`` reducing the last ``event_ndim`` axes (1 for waveforms,
        2 for masks) and broadcasting over the others.
      event_ndim: number of trailing axes one example has.

    Returns:
      ``fn(est, ref)`` with est ``[..., n_est, *event]`` and ref ``[..., n_ref, *event]``,
      giving ``[..., n_est, n_ref]`` with entry ``[i, j] = loss_fn(est[i], ref[j])``.
    """

    def pairwise_loss(est: jnp.ndarray, ref: jnp.ndarray) -> jnp.ndarray:
        est = jnp.asarray(est)
        ref = jnp.asarray(ref)
        if est.ndim <= event_ndim or est.ndim != ref.ndim:
            raise ShapeError(
                f"est {est.shape} and ref {ref.shape} need the same number of axes, "
                f"[..., sources] followed by {event_ndim} example axes"
            )
        source_axis = est.ndim - event_ndim - 1
        est_b, ref_b = jnp.broadcast_arrays(
            jnp.expand_dims(est, source_axis + 1), jnp.expand_dims(ref, source_axis)
        )
        return loss_fn(est_b, ref_b)

    return pairwise_loss


def pairwise_neg_si_snr(est: jnp.ndarray, ref: jnp.ndarray) -> jnp.ndarray:
    """``[..., n_est, samples]``, ``[..., n_ref, samples]`` → ``[..., n_est, n_ref]`` −SI-SNR."""
    return pairwise(neg_si_snr)(est, ref)


#: In a mixture with a silent source, losses saturate this many dB from perfect.
LONE_SPEAKER_CEILING_DB = 30.0


def pairwise_separation_loss(
    est: jnp.ndarray, ref: jnp.ndarray, mixture: jnp.ndarray
) -> jnp.ndarray:
    """:func:`pairwise_neg_si_snr` for mixtures whose references all sound. In a mixture with
    a silent reference (all zeros: one speaker alone), whose SI-SNR is undefined, the silent
    reference scores the estimate's level relative to the mixture, ``10·log10(‖est‖² /
    ‖mixture‖² + τ)``, which a separator lowers by leaving that track silent, and the others
    −SI-SNR with the soft ceiling ``τ``; ``τ = 10^(−LONE_SPEAKER_CEILING_DB/10)``, the
    thresholds of Wisdom et al. 2020 (MixIT). Without the ceiling the lone voice, an easy
    target (the input itself), gives ever larger gradients and swamps the batch.

    Args:
      est: ``[..., n_est, samples]``; ref: ``[..., n_ref, samples]``; mixture
        ``[..., samples]``.

    Returns:
      ``[..., n_est, n_ref]`` float32.
    """
    est, ref = _float32(est), _float32(ref)
    ceiling = LONE_SPEAKER_CEILING_DB
    mixture_energy = jnp.sum(jnp.square(_float32(mixture)), axis=-1)[..., None, None]
    est_energy = jnp.sum(jnp.square(est), axis=-1)[..., :, None]
    level = 10.0 * jnp.log10(
        est_energy / jnp.maximum(mixture_energy, 1e-12) + 10.0 ** (-ceiling / 10.0)
    )
    silent = jnp.all(ref == 0, axis=-1)[..., None, :]
    ceiling_db = jnp.where(jnp.any(silent, axis=-1, keepdims=True), ceiling, jnp.inf)
    sounding = pairwise(functools.partial(neg_si_snr, ceiling_db=ceiling_db))(est, ref)
    return jnp.where(silent, level, sounding)


def _exhaustive_permutation(loss_matrix: jnp.ndarray) -> jnp.ndarray:
    """``[..., n, n]`` → ``[..., n]`` est index per ref minimising the sum, by enumeration."""
    n_src = loss_matrix.shape[-1]
    permutations = np.array(list(itertools.permutations(range(n_src))))  # [P, n]
    totals = jnp.sum(loss_matrix[..., permutations, np.arange(n_src)], axis=-1)  # [..., P]
    return jnp.asarray(permutations)[jnp.argmin(totals, axis=-1)]


def _hungarian_permutation(loss_matrix: jnp.ndarray) -> jnp.ndarray:
    """``[..., n, n]`` → ``[..., n]`` est index per ref minimising the sum, by Hungarian."""
    n_src = loss_matrix.shape[-1]

    def solve(cost: jnp.ndarray) -> jnp.ndarray:
        est_index, ref_index = optax.assignment.hungarian_algorithm(cost)
        return jnp.zeros(n_src, jnp.int32).at[ref_index].set(est_index)

    flat = loss_matrix.reshape((-1, n_src, n_src))
    return jax.vmap(solve)(flat).reshape(loss_matrix.shape[:-1])


def pit(
    pairwise_loss: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
    est: jnp.ndarray,
    ref: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Utterance-level permutation-invariant training loss.

    Computes the pair matrix once, finds the assignment of estimates to references with the
    smallest mean loss (exactly: every permutation for up to ``MAX_EXHAUSTIVE_SOURCES``
    sources, the Hungarian algorithm beyond), and returns the loss of that assignment.
    Gradients flow through the chosen pairs' losses; the choice itself is piecewise constant.

    Args:
      pairwise_loss: ``pairwise_loss(est, ref)`` → ``[..., n_src, n_src]``, entry ``[i, j]``
        the loss (lower is better) of estimate ``i`` against reference ``j``, e.g.
        :func:`pairwise_neg_si_snr` or ``pairwise(loss_fn, event_ndim)``.
      est: ``[..., n_src, *event]`` estimates.
      ref: ``[..., n_src, *event]`` references.

    Returns:
      ``(loss, permutation)``: loss ``[...]`` float32, the mean over sources of the best
      assignment; permutation ``[..., n_src]`` int32, ``permutation[..., j]`` the index of the
      estimate assigned to reference ``j``, so ``reorder(est, permutation)`` is aligned with
      ``ref``.
    """
    loss_matrix = _float32(pairwise_loss(est, ref))
    n_src = loss_matrix.shape[-1]
    if loss_matrix.ndim < 2 or loss_matrix.shape[-2] != n_src:
        raise ShapeError(
            f"pairwise_loss returned shape {loss_matrix.shape}; pit needs a square "
            "[..., n_src, n_src] matrix: give as many estimates as references"
        )
    if n_src <= MAX_EXHAUSTIVE_SOURCES:
        permutation = _exhaustive_permutation(lax.stop_gradient(loss_matrix))
    else:
        permutation = _hungarian_permutation(lax.stop_gradient(loss_matrix))
    permutation = permutation.astype(jnp.int32)
    chosen = jnp.take_along_axis(loss_matrix, permutation[..., None, :], axis=-2)[..., 0, :]
    return jnp.mean(chosen, axis=-1), permutation


def reorder(est: jnp.ndarray, permutation: jnp.ndarray) -> jnp.ndarray:
    """Put the estimates in reference order: ``out[..., j, ...] = est[..., permutation[j], ...]``.

    Args:
      est: ``[..., n_src, *event]``.
      permutation: ``[..., n_src]`` from :func:`pit` (same leading axes as ``est``).

    Returns:
      ``est`` reordered along its source axis, same shape.
    """
    source_axis = jnp.ndim(permutation) - 1
    if jnp.shape(est)[: source_axis + 1] != jnp.shape(permutation):
        raise ShapeError(
            f"permutation {jnp.shape(permutation)} does not match the leading axes of est "
            f"{jnp.shape(est)}; pass the permutation pit returned for these estimates"
        )
    index = jnp.reshape(permutation, jnp.shape(permutation) + (1,) * (est.ndim - source_axis - 1))
    return jnp.take_along_axis(est, index, axis=source_axis)


# --- Mask losses ---------------------------------------------------------------------------


def mask_mse(
    pred: jnp.ndarray, target: jnp.ndarray, weights: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Mean squared error over the time-frequency bins.

    Args:
      pred: ``[..., frames, freqs]`` predicted mask.
      target: same shape.
      weights: optional, broadcastable to ``pred`` (e.g. ``[..., frames, 1]`` valid-frame
        flags): the result is then the weighted mean ``Σ w·(pred−target)² / Σ w`` (0 where
        every weight is 0).

    Returns:
      ``[...]`` float32.
    """
    _require_same_shape(pred, target, "pred", "target")
    _require_mask_layout(pred, "pred")
    return _weighted_mean_over_bins(jnp.square(_float32(pred) - _float32(target)), weights)


def _weighted_mean_over_bins(per_bin: jnp.ndarray, weights: jnp.ndarray | None) -> jnp.ndarray:
    """``Σ w·per_bin / Σ w`` over the time-frequency bins (0 where every weight is 0); the plain
    mean without ``weights`` (broadcastable to ``per_bin``)."""
    if weights is None:
        return _mean_over_bins(per_bin)
    weights = jnp.broadcast_to(_float32(weights), per_bin.shape)
    total_weight = jnp.sum(weights, axis=(-2, -1))
    weighted = jnp.sum(weights * per_bin, axis=(-2, -1))
    return weighted / jnp.where(total_weight > 0, total_weight, 1.0)


def mask_distillation(
    m_s: jnp.ndarray,
    m_t: jnp.ndarray,
    m_r: jnp.ndarray,
    weights: jnp.ndarray | None = None,
    ideal_weight: float | None = None,
) -> jnp.ndarray:
    """Teacher→student mask distillation loss.

    ``mean over bins of a·(m_r − m_s)² + (1 − a)·(m_t − m_s)²`` with, per bin,
    ``a = min(|m_r − m_t| + 0.5, 1)``: the student follows the ideal mask at least half-way,
    and fully where the teacher is far from it; or, with ``ideal_weight``, the same ``a`` in
    every bin (the fixed interpolation of classic distillation). ``a`` is treated as a constant
    (``stop_gradient``): it is a weighting, not something to optimise. Gradients still reach
    ``m_t`` through the second term; freeze the teacher's parameters in the caller.

    Args:
      m_s: ``[..., frames, freqs]`` student mask.
      m_t: same shape, teacher mask.
      m_r: same shape, reference (ideal) mask.
      weights: optional bin weights, as for :func:`mask_mse` (a weighted mean over bins).
      ideal_weight: a fixed ``a`` in [0, 1], or None for the per-bin rule.

    Returns:
      ``[...]`` float32.
    """
    if ideal_weight is not None and not 0.0 <= ideal_weight <= 1.0:
        raise ValueError(f"mask_distillation: ideal_weight must be in [0, 1], got {ideal_weight}")
    _require_same_shape(m_s, m_t, "m_s", "m_t")
    _require_same_shape(m_s, m_r, "m_s", "m_r")
    _require_mask_layout(m_s, "m_s")
    m_s, m_t, m_r = _float32(m_s), _float32(m_t), _float32(m_r)
    if ideal_weight is None:
        a = lax.stop_gradient(jnp.minimum(jnp.abs(m_r - m_t) + 0.5, 1.0))
    else:
        a = jnp.float32(ideal_weight)
    per_bin = a * jnp.square(m_r - m_s) + (1.0 - a) * jnp.square(m_t - m_s)
    return _weighted_mean_over_bins(per_bin, weights)


# --- Speaker classification, deep clustering, binary classification ------------------------


def _l2_normalize(x: jnp.ndarray, axis: int) -> jnp.ndarray:
    norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


def aam_softmax(
    emb: jnp.ndarray,
    weights: jnp.ndarray,
    labels: jnp.ndarray,
    margin: float = 0.2,
    scale: float = 30.0,
    easy_margin: bool = False,
) -> jnp.ndarray:
    """Additive angular margin softmax cross-entropy (ArcFace / AAM-softmax).

    Logits are cosines between the L2-normalised embeddings and class centres; the target
    class's cosine ``cos θ`` becomes ``cos(θ + m)``, and everything is multiplied by
    ``scale``. Where ``θ + m`` would pass π (``cos θ ≤ cos(π − m)``) the target logit is
    ``cos θ − m·sin m`` instead, keeping it monotonic in θ, as in SpeechBrain/WeSpeaker
    (``easy_margin=True`` instead keeps ``cos θ`` wherever ``cos θ ≤ 0``).

    Args:
      emb: ``[..., D]`` embeddings.
      weights: ``[D, C]`` class centres (one column per class).
      labels: ``[...]`` int class indices in ``[0, C)``.
      margin: additive angle ``m`` in radians (a float or a scalar array).
      scale: logit scale ``s``.

    Returns:
      ``[...]`` float32 cross-entropy.
    """
    if jnp.ndim(weights) != 2 or jnp.shape(emb)[-1:] != jnp.shape(weights)[:1]:
        raise ShapeError(
            f"emb {jnp.shape(emb)} and weights {jnp.shape(weights)} do not fit: weights must "
            "be [D, n_classes] with D the embedding size (emb's last axis)"
        )
    if jnp.shape(labels) != jnp.shape(emb)[:-1]:
        raise ShapeError(
            f"labels {jnp.shape(labels)} must have emb's leading shape {jnp.shape(emb)[:-1]}"
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ShapeError(f"labels have dtype {jnp.result_type(labels)}; give integer class indices")
    cosine = jnp.matmul(
        _l2_normalize(_float32(emb), -1),
        _l2_normalize(_float32(weights), 0),
        precision=lax.Precision.HIGHEST,
    )
    cosine = jnp.clip(cosine, -1.0 + 1e-7, 1.0 - 1e-7)
    sine = jnp.sqrt(1.0 - jnp.square(cosine))
    margin = jnp.asarray(margin, jnp.float32)  # a traced margin follows a warm-up schedule
    with_margin = cosine * jnp.cos(margin) - sine * jnp.sin(margin)
    if easy_margin:
        with_margin = jnp.where(cosine > 0, with_margin, cosine)
    else:
        with_margin = jnp.where(
            cosine > jnp.cos(math.pi - margin), with_margin, cosine - margin * jnp.sin(margin)
        )
    is_target = jax.nn.one_hot(labels, cosine.shape[-1], dtype=jnp.bool_)
    logits = scale * jnp.where(is_target, with_margin, cosine)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def deep_clustering(
    V: jnp.ndarray,
    Y: jnp.ndarray,
    weights: jnp.ndarray | None = None,
    normalize: bool = True,
) -> jnp.ndarray:
    """Deep-clustering affinity loss ``‖VVᵀ − YYᵀ‖²_F`` in its low-rank form.

    Computed as ``‖VᵀV‖² − 2‖VᵀY‖² + ‖YᵀY‖²`` (D×D, D×C and C×C matrices, never N×N).
    Optional per-bin weights scale the rows of V and Y by ``√w`` (Hershey et al. 2016;
    Isik et al. 2016), so the raw loss is ``Σ_ij w_i w_j (v_i·v_j − y_i·y_j)²``.

    Args:
      V: ``[..., N, D]`` embeddings of the N time-frequency bins.
      Y: ``[..., N, C]`` one-hot (or soft) source assignment of each bin.
      weights: optional ``[..., N]`` non-negative bin weights (e.g. 0 for silent bins).
      normalize: divide by ``(Σ_i w_i)²`` (``N²`` without weights), making the loss the
        weighted mean over bin pairs and independent of the number of bins; 0 when every
        weight is 0. ``False`` returns the raw sum.

    Returns:
      ``[...]`` float32.
    """
    if jnp.ndim(V) < 2 or jnp.shape(V)[:-1] != jnp.shape(Y)[:-1]:
        raise ShapeError(
            f"V {jnp.shape(V)} and Y {jnp.shape(Y)} must be [..., N, D] and [..., N, C] "
            "with the same bins N"
        )
    V, Y = _float32(V), _float32(Y)
    n_bins = V.shape[-2]
    if weights is None:
        total_weight = jnp.full(V.shape[:-2], float(n_bins))
    else:
        if jnp.shape(weights) != V.shape[:-1]:
            raise ShapeError(f"weights {jnp.shape(weights)} must be [..., N] = {V.shape[:-1]}")
        weights = _float32(weights)
        total_weight = jnp.sum(weights, axis=-1)
        root = jnp.sqrt(weights)[..., None]
        V, Y = V * root, Y * root

    def squared_gram_norm(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
        gram = jnp.einsum("...na,...nb->...ab", a, b, precision=lax.Precision.HIGHEST)
        return jnp.sum(jnp.square(gram), axis=(-2, -1))

    loss = squared_gram_norm(V, V) - 2.0 * squared_gram_norm(V, Y) + squared_gram_norm(Y, Y)
    if not normalize:
        return loss
    return loss / jnp.where(total_weight > 0, jnp.square(total_weight), 1.0)


def binary_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Sigmoid binary cross-entropy from logits, numerically stable for any logit.

    Args:
      logits: ``[...]``, one logit per example (e.g. one per audio–music pair).
      labels: same shape, targets in [0, 1] (hard or soft).

    Returns:
      ``[...]`` float32 ``−(y·log σ(x) + (1−y)·log σ(−x))``.
    """
    _require_same_shape(logits, labels, "logits", "labels")
    return optax.sigmoid_binary_cross_entropy(_float32(logits), _float32(labels))

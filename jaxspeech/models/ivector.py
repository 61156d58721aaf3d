"""The i-vector system in JAX: MFCC front end, diagonal GMM-UBM by EM with mixture splitting,
Baum-Welch statistics, total-variability matrix by EM with minimum-divergence re-estimation,
i-vector extraction and the centring/whitening/length-normalisation of the back end.

Front end (Kaldi's speaker-recognition recipes): ``n_mfcc`` MFCCs (c0 included) of 25 ms
frames every 10 ms, Δ and ΔΔ (``dsp.deltas``), sliding-window mean normalisation (300 frames,
centred) and energy VAD on the raw frame energy (``dsp.energy_vad``, Kaldi's VoxCeleb
settings). Every utterance of a padded batch is reflect-padded at its own end, so its
features, statistics and i-vector are the same alone and in a batch.

GMM (``gmm``: ``weights`` [C], ``means`` [C, D], ``variances`` [C, D]): every array has all
``C`` components from the start; a component of weight 0 is unused. A UBM starts with one
component and grows by ``split_components`` (heaviest first) up to ``C``.

Total variability (Dehak et al. 2011; Kenny's EM): supervector ``M = m + T w``, ``w ~ N(0,
I)``; ``tv``: ``mean`` ``m`` [C, D], ``T`` [C, D, R]; covariances are the UBM's. For an
utterance with zeroth-order statistics ``N`` [C] and first-order statistics ``F̃`` [C, D]
centred on ``m``, the posterior of ``w`` has precision ``L = I + Σ_c N_c T_cᵀ Σ_c⁻¹ T_c`` and
mean ``L⁻¹ Σ_c T_cᵀ Σ_c⁻¹ F̃_c`` (the i-vector).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxspeech import dsp
from jaxspeech.errors import ConfigError

#: int16 full scale: Kaldi's energy thresholds are for samples on that scale.
INT16_SCALE = 32768.0


@dataclasses.dataclass(frozen=True)
class FrontEndConfig:
    """MFCC + Δ + ΔΔ, sliding CMN and energy VAD (see the module docstring).

    Attributes:
      n_mfcc, n_mels, f_min, f_max: the MFCCs (``dsp.mfcc``; ``f_max`` None is Nyquist).
      delta_window: frames each side of the delta regression.
      cmn_window: frames of the sliding mean normalisation.
      vad_threshold, vad_mean_scale, vad_context, vad_proportion: ``dsp.energy_vad``.
    """

    n_mfcc: int = 20
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = 7600.0
    delta_window: int = 2
    cmn_window: int = 300
    vad_threshold: float = 5.5
    vad_mean_scale: float = 0.5
    vad_context: int = 2
    vad_proportion: float = 0.12

    @property
    def feature_dim(self) -> int:
        return 3 * self.n_mfcc


@dataclasses.dataclass(frozen=True)
class UBMConfig:
    """A diagonal GMM-UBM grown by splitting.

    Attributes:
      components: final number of Gaussians ``C``.
      iterations_per_split: EM iterations between two splits (each split doubles the
        components until ``C``: ``1 → 2 → 4 → …``).
      split_perturbation: a split component's two means are ``μ ± split_perturbation · σ``.
      variance_floor: variances are floored at this fraction of the global variance.
      min_count: a component with fewer frames (soft count) in an iteration is dropped and
        its slot refilled by the next split.
      frontend: the features.
    """

    components: int = 64
    iterations_per_split: int = 4
    split_perturbation: float = 0.2
    variance_floor: float = 0.01
    min_count: float = 3.0
    frontend: FrontEndConfig = FrontEndConfig()

    def __post_init__(self) -> None:
        if self.components < 1 or self.iterations_per_split < 1:
            raise ConfigError("UBMConfig: components and iterations_per_split must be >= 1")
        if not 0.0 <= self.variance_floor < 1.0:
            raise ConfigError(f"UBMConfig.variance_floor={self.variance_floor} must be in [0, 1)")

    @property
    def growth_iterations(self) -> int:
        """EM iterations until the UBM has all its components."""
        return self.iterations_per_split * math.ceil(math.log2(self.components))


def frontend(
    cfg: FrontEndConfig, wav: jax.Array, lengths: jax.Array, sample_rate: int
) -> tuple[jax.Array, jax.Array]:
    """Features and voiced frames of a padded batch.

    Args:
      wav: ``[B, S]`` float32 at ``sample_rate``; row ``b`` holds ``lengths[b]`` samples
        (more than half an FFT frame, 256 at 16 kHz), then anything.
      lengths: ``[B]`` int32 samples.

    Returns:
      ``features`` ``[B, 1 + S // hop, 3 n_mfcc]`` and ``voiced`` bool ``[B, 1 + S // hop]``
      (False past each utterance's ``1 + lengths // hop`` frames).
    """
    hop = round(sample_rate * 0.010)
    win = round(sample_rate * 0.025)
    n_fft = 1 << (win - 1).bit_length()
    padded = dsp.reflect_pad_lengths(wav, lengths, n_fft // 2)
    frames = 1 + jnp.asarray(lengths, jnp.int32) // hop
    cepstra = dsp.mfcc(
        padded, sample_rate, cfg.n_mfcc, cfg.n_mels, f_min=cfg.f_min, f_max=cfg.f_max, center=False
    )
    energy = dsp.frame_log_energy(padded * INT16_SCALE, sample_rate, center=False)
    voiced = dsp.energy_vad(
        energy, frames, cfg.vad_threshold, cfg.vad_mean_scale, cfg.vad_context, cfg.vad_proportion
    )
    delta = dsp.deltas(cepstra, frames, cfg.delta_window)
    features = jnp.concatenate([cepstra, delta, dsp.deltas(delta, frames, cfg.delta_window)], -1)
    return dsp.sliding_cmn(features, frames, cfg.cmn_window), voiced


# --------------------------------------------------------------------------- GMM-UBM


def single_gaussian(components: int, dim: int) -> dict[str, jax.Array]:
    """A GMM of ``components`` slots with one used component, N(0, I): the first EM
    iteration turns it into the data's mean and variance."""
    return {
        "weights": jnp.zeros(components).at[0].set(1.0),
        "means": jnp.zeros((components, dim)),
        "variances": jnp.ones((components, dim)),
    }


def gmm_log_densities(gmm: dict, x: jax.Array) -> jax.Array:
    """``log w_c + log N(x | μ_c, diag σ²_c)``: ``x`` ``[..., D]`` -> ``[..., C]`` (−inf for
    unused components)."""
    precision = 1.0 / gmm["variances"]
    dim = gmm["means"].shape[-1]
    constant = -0.5 * (
        dim * math.log(2 * math.pi)
        + jnp.sum(jnp.log(gmm["variances"]), -1)
        + jnp.sum(jnp.square(gmm["means"]) * precision, -1)
    )
    log_weights = jnp.where(
        gmm["weights"] > 0, jnp.log(jnp.maximum(gmm["weights"], 1e-30)), -jnp.inf
    )
    linear = x @ (gmm["means"] * precision).T - 0.5 * (jnp.square(x) @ precision.T)
    return log_weights + constant + linear


def posteriors(gmm: dict, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Component posteriors ``[..., C]`` (zero where ``mask`` ``[...]`` is False) and the
    per-frame log-likelihood ``[...]`` (zero there)."""
    log_density = gmm_log_densities(gmm, x)
    log_likelihood = jax.nn.logsumexp(log_density, axis=-1)
    gamma = jnp.exp(log_density - log_likelihood[..., None])
    return jnp.where(mask[..., None], gamma, 0.0), jnp.where(mask, log_likelihood, 0.0)


def gmm_statistics(gmm: dict, x: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """E-step sums over the frames ``x`` ``[..., D]`` where ``mask`` ``[...]``: ``count``
    [C], ``first`` [C, D], ``second`` [C, D] (posterior-weighted x and x²), ``log_likelihood``
    and ``frames`` (scalars)."""
    x = jnp.where(mask[..., None], x, 0.0).reshape(-1, x.shape[-1])
    gamma, log_likelihood = posteriors(gmm, x, mask.reshape(-1))
    return {
        "count": gamma.sum(0),
        "first": gamma.T @ x,
        "second": gamma.T @ jnp.square(x),
        "log_likelihood": log_likelihood.sum(),
        "frames": mask.sum().astype(jnp.float32),
    }


def gmm_update(gmm: dict, stats: dict, variance_floor: float, min_count: float) -> dict:
    """M-step: weights, means and variances from ``gmm_statistics`` sums; variances floored
    at ``variance_floor`` × the global variance of the frames; components with a count of
    ``min_count`` or less (or unused) get weight 0 and keep their old means and variances."""
    count = stats["count"]
    usable = (gmm["weights"] > 0) & (count > min_count)
    safe = jnp.maximum(count, 1e-10)[:, None]
    means = stats["first"] / safe
    total = jnp.sum(count)
    global_mean = stats["first"].sum(0) / total
    global_variance = stats["second"].sum(0) / total - jnp.square(global_mean)
    floor = variance_floor * global_variance
    variances = jnp.maximum(stats["second"] / safe - jnp.square(means), floor)
    kept = jnp.where(usable, count, 0.0)
    return {
        "weights": kept / kept.sum(),
        "means": jnp.where(usable[:, None], means, gmm["means"]),
        "variances": jnp.where(usable[:, None], variances, gmm["variances"]),
    }


def split_components(gmm: dict, perturbation: float) -> dict:
    """Doubles the used components (or fills the remaining slots): each of the heaviest
    ``min(used, unused)`` components gives half its weight to an unused slot, the two means
    moved to ``μ ± perturbation · σ``, variances copied. Shapes are kept (jit-able)."""
    weights = gmm["weights"]
    used = weights > 0
    splits = jnp.minimum(used.sum(), (~used).sum())
    order = jnp.argsort(-weights)  # heaviest first; unused last
    rank = jnp.argsort(order)
    parent = used & (rank < splits)
    free_rank = jnp.cumsum(~used) - 1
    child = ~used & (free_rank < splits)
    source = jnp.where(child, order[jnp.clip(free_rank, 0, weights.shape[0] - 1)], 0)
    step = perturbation * jnp.sqrt(gmm["variances"])
    means = jnp.where(parent[:, None], gmm["means"] + step, gmm["means"])
    means = jnp.where(child[:, None], gmm["means"][source] - step[source], means)
    return {
        "weights": jnp.where(parent, weights / 2, jnp.where(child, weights[source] / 2, weights)),
        "means": means,
        "variances": jnp.where(child[:, None], gmm["variances"][source], gmm["variances"]),
    }


# --------------------------------------------------------------- Baum-Welch and T matrix


def baum_welch(gmm: dict, x: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Per-utterance statistics of frames ``x`` ``[B, T, D]`` where ``mask`` ``[B, T]``:
    ``zeroth`` [B, C], ``first`` [B, C, D] (raw, ``Σ_t γ_tc x_t``) and ``scaled_second`` [B]
    (``Σ_t Σ_c γ_tc Σ_d x_td² / σ²_cd``, for the likelihood of the T-matrix EM)."""
    x = jnp.where(mask[..., None], x, 0.0)
    gamma, _ = posteriors(gmm, x, mask)
    scaled = jnp.square(x) @ (1.0 / gmm["variances"]).T  # [B, T, C]
    return {
        "zeroth": gamma.sum(1),
        "first": jnp.einsum("btc,btd->bcd", gamma, x),
        "scaled_second": jnp.sum(gamma * scaled, axis=(1, 2)),
    }


def init_total_variability(
    rng: jax.Array, ubm: dict, rank: int, scale: float = 0.1
) -> dict[str, jax.Array]:
    """``mean`` = the UBM means, ``T`` [C, D, rank] Gaussian with column scale ``scale · σ``."""
    noise = jax.random.normal(rng, (*ubm["means"].shape, rank))
    return {"mean": ubm["means"], "T": scale * jnp.sqrt(ubm["variances"])[..., None] * noise}


def ivector_posterior(tv: dict, variances: jax.Array, stats: dict):
    """Posterior of ``w`` per utterance: ``(mean [B, R], Cholesky factor of the precision
    L [B, R, R], linear term b [B, R])`` of the ``baum_welch`` statistics."""
    scaled_t = tv["T"] / variances[..., None]  # Σ⁻¹ T, [C, D, R]
    gram = jnp.einsum("cdr,cds->crs", tv["T"], scaled_t)
    rank = tv["T"].shape[-1]
    precision = jnp.eye(rank) + jnp.einsum("bc,crs->brs", stats["zeroth"], gram)
    centred = stats["first"] - stats["zeroth"][..., None] * tv["mean"]
    linear = jnp.einsum("bcd,cdr->br", centred, scaled_t)
    factor = jnp.linalg.cholesky(precision)
    mean = jax.scipy.linalg.cho_solve((factor, True), linear[..., None])[..., 0]
    return mean, factor, linear


def extract(tv: dict, variances: jax.Array, stats: dict) -> jax.Array:
    """i-vectors ``[B, R]``: posterior means of ``w`` for the ``baum_welch`` statistics."""
    return ivector_posterior(tv, variances, stats)[0]


def tv_statistics(tv: dict, variances: jax.Array, stats: dict) -> dict[str, jax.Array]:
    """E-step sums over the utterances of ``stats`` (``baum_welch``): ``a`` [C, R, R]
    (``Σ_u N_uc E[wwᵀ]``), ``c`` [C, D, R] (``Σ_u F_uc E[w]ᵀ``, F centred on ``tv["mean"]``),
    ``w_sum`` [R], ``ww_sum`` [R, R], ``utterances`` and ``log_likelihood`` (the marginal
    log-likelihood of the statistics under ``tv``, summed)."""
    mean, factor, linear = ivector_posterior(tv, variances, stats)
    rank = mean.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(rank), factor.shape)
    covariance = jax.scipy.linalg.cho_solve((factor, True), eye)
    second = covariance + mean[:, :, None] * mean[:, None, :]
    centred = stats["first"] - stats["zeroth"][..., None] * tv["mean"]
    precision = 1.0 / variances
    zeroth = stats["zeroth"]
    centred_second = (
        stats["scaled_second"]
        - 2 * jnp.einsum("bcd,cd->b", stats["first"], tv["mean"] * precision)
        + zeroth @ jnp.sum(jnp.square(tv["mean"]) * precision, -1)
    )
    dim = variances.shape[-1]
    gaussian_norm = dim * math.log(2 * math.pi) + jnp.sum(jnp.log(variances), -1)  # [C]
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), -1)
    log_likelihood = 0.5 * (
        jnp.sum(linear * mean, -1) - log_det - centred_second - zeroth @ gaussian_norm
    )
    return {
        "a": jnp.einsum("bc,brs->crs", zeroth, second),
        "c": jnp.einsum("bcd,br->cdr", centred, mean),
        "w_sum": mean.sum(0),
        "ww_sum": second.sum(0),
        "utterances": jnp.asarray(mean.shape[0], jnp.float32),
        "log_likelihood": log_likelihood.sum(),
    }


def tv_update(tv: dict, stats: dict, minimum_divergence: bool = True) -> dict:
    """M-step ``T_c = C_c A_c⁻¹`` (unchanged where ``A_c = 0``), then (``minimum_divergence``)
    the re-parametrisation that makes the i-vectors' empirical distribution N(0, I):
    ``m ← m + T μ``, ``T ← T G`` with ``μ``, ``G Gᵀ`` the mean and covariance of the
    posteriors."""
    solved = jnp.linalg.solve(stats["a"], jnp.swapaxes(stats["c"], -1, -2))
    # a component no frame was aligned to (A_c = 0) keeps its columns
    aligned = jnp.trace(stats["a"], axis1=-2, axis2=-1) > 0
    t_matrix = jnp.where(aligned[:, None, None], jnp.swapaxes(solved, -1, -2), tv["T"])
    if not minimum_divergence:
        return {"mean": tv["mean"], "T": t_matrix}
    mu = stats["w_sum"] / stats["utterances"]
    covariance = stats["ww_sum"] / stats["utterances"] - jnp.outer(mu, mu)
    return {
        "mean": tv["mean"] + t_matrix @ mu,
        "T": t_matrix @ jnp.linalg.cholesky(covariance),
    }


# ------------------------------------------------------------------ centring and whitening


def whitening(w_sum: jax.Array, outer_sum: jax.Array, count: jax.Array, eps: float = 1e-6):
    """``(mean [R], matrix [R, R])`` from sums of vectors and of their outer products: the
    symmetric (ZCA) inverse square root of their covariance, eigenvalues floored at ``eps``
    × the largest."""
    mean = w_sum / count
    covariance = outer_sum / count - jnp.outer(mean, mean)
    values, vectors = jnp.linalg.eigh(covariance)
    values = jnp.maximum(values, eps * values[-1])
    return mean, (vectors / jnp.sqrt(values)) @ vectors.T


def length_normalise(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / |x|`` along the last axis."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), -1, keepdims=True), eps))


def normalised_ivectors(backend: dict, ivectors: jax.Array) -> jax.Array:
    """Centred, whitened, length-normalised i-vectors ``[B, R]`` (``backend``: ``mean``,
    ``whitening``)."""
    return length_normalise((ivectors - backend["mean"]) @ backend["whitening"])

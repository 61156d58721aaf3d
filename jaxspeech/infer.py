"""Long-file inference: chunked separation with source alignment and overlap-add.

:func:`separate_long` runs any waveform model ``apply_fn(variables, chunks[B, C]) ->
[B, S, C]`` (Conv-TasNet with S sources, an enhancer with S = 1) on a recording of any length
in fixed-size chunks, so one compilation serves every file length and memory does not grow
with it:

* chunk ``i`` covers samples ``[i·hop, i·hop + chunk)`` with ``hop = chunk − overlap``; the
  recording is zero-padded at the end to a whole number of hops;
* the host loops over blocks of ``chunks_per_block`` chunks; each block is one jitted
  ``lax.scan`` that runs the model on one chunk per step, so device memory holds one chunk's
  activations and one block's output, whatever the file length. The last chunk's overlap
  (and whether there is one) is carried from block to block;
* a model's sources come out in arbitrary order, independently in every chunk, so each chunk's
  sources are permuted to best match the previous chunk's on their shared ``overlap`` samples
  (least squared difference, :func:`align_sources`: the loud tracks decide, so a lone speaker
  stays on one track and its near-silent partner on the other), then the two are cross-faded
  there with complementary Hann ramps (``sin²`` in, ``cos²`` out, summing to one). A speaker
  thus stays on one output track for the whole recording, as far as the model keeps it on one
  track within each chunk.

Choosing ``chunk`` and ``overlap``: an output sample depends on input within the model's
receptive field, so near a chunk's edges the model lacks context. Make ``overlap`` at least
the receptive field: every sample is then produced with full context by at least one of the
two chunks it falls in, and the cross-fade hides the edges of the other. A Conv-TasNet's
receptive field is ``(L/2)·(1 + R·(P−1)·(2^X − 1))`` samples (1.53 s for the paper model at
8 kHz, half on each side). Models with global normalisation (gLN) see the statistics of the
whole chunk, so use chunks like the training segments rather than much shorter ones
(:func:`default_chunking` derives both from the training crop and the receptive field; a
caller may ask for longer chunks, as ``Separator`` does).
``overlap ≤ chunk / 2`` is required, so only neighbouring chunks overlap.

A recording no longer than one chunk is separated in a single call of the model, exactly as
the model would do it (this compiles once per such length).

:func:`rescale_to_mixture` then gives each source the level it has in the mixture and keeps
every sample within ``±peak`` so the result can be written to 16-bit audio without clipping.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxspeech import audio
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.losses import pairwise, pit, reorder

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]


def crossfade_ramp(overlap: int) -> jax.Array:
    """Fade-in weights ``[overlap]``: ``sin²(π/2 · (n + ½) / overlap)``, rising from 0 to 1.

    ``1 − ramp`` is the matching fade-out (``cos²``); the two sum to one at every sample.
    """
    position = (jnp.arange(overlap, dtype=jnp.float32) + 0.5) / overlap
    return jnp.square(jnp.sin(0.5 * jnp.pi * position))


def squared_distance(est: jax.Array, ref: jax.Array) -> jax.Array:
    """``‖est − ref‖²`` over the last axis: ``[..., C]``, ``[..., C]`` → ``[...]``."""
    return jnp.sum(jnp.square(est - ref), axis=-1)


def align_sources(sources: jax.Array, previous_tail: jax.Array) -> jax.Array:
    """Permutes ``sources[..., S, C]`` so that their first ``O`` samples are closest to
    ``previous_tail[..., S, O]``: the permutation with the least total squared difference,
    which is the one with the largest total inner product ``Σⱼ⟨head_π(j), tailⱼ⟩`` (the
    energies do not depend on it). Returns ``[..., S, C]``.

    The model's outputs are compared at their own scale, which is the same in every chunk (a
    masking model's outputs scale with its input), so each track weighs in by its energy: a
    near-silent track (one speaker talking, or pausing) cannot outvote the loud one. A
    scale-invariant score such as SI-SNR weighs them equally and cannot tell a track from a
    faint copy of it, which a model trained on mixtures of two leaves on its second output
    for a lone speaker: with it the lone speaker would flip between tracks from chunk to
    chunk.
    """
    overlap = previous_tail.shape[-1]
    _, permutation = pit(pairwise(squared_distance), sources[..., :overlap], previous_tail)
    return reorder(sources, permutation)


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk", "overlap"))
def _separate_block(
    apply_fn: ApplyFn,
    variables: PyTree,
    block: jax.Array,
    chunks_left: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    *,
    chunk: int,
    overlap: int,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Separates the K chunks of ``block[K·hop + overlap]``; returns ``(out[S, K·hop], carry)``.

    ``carry = (tail[S, overlap], has_tail)``: the aligned last ``overlap`` samples of the
    previous chunk, not yet emitted, and whether there was a previous chunk. Chunks at index
    ``≥ chunks_left`` lie past the recording: the model is skipped and they only flush the
    carried tail.
    """
    hop = chunk - overlap
    n_chunks = (block.shape[0] - overlap) // hop
    ramp = crossfade_ramp(overlap)
    n_src = carry[0].shape[0]

    def step(carry, index):
        tail, has_tail = carry
        valid = index < chunks_left
        segment = lax.dynamic_slice_in_dim(block, index * hop, chunk)
        sources = lax.cond(
            valid,
            lambda: apply_fn(variables, segment[None])[0].astype(jnp.float32),
            lambda: jnp.zeros((n_src, chunk), jnp.float32),
        )
        sources = jnp.where(has_tail & valid, align_sources(sources, tail), sources)
        weight = jnp.where(valid, jnp.where(has_tail, ramp, 1.0), 0.0)
        head = weight * sources[:, :overlap] + (1.0 - weight) * tail
        out = jnp.concatenate([head, sources[:, overlap:hop]], axis=-1)
        return (sources[:, hop:], has_tail | valid), out

    carry, outs = lax.scan(step, carry, jnp.arange(n_chunks))  # outs [K, S, hop]
    return jnp.moveaxis(outs, 0, 1).reshape(n_src, n_chunks * hop), carry


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _separate_whole(apply_fn: ApplyFn, variables: PyTree, mixture: jax.Array) -> jax.Array:
    return apply_fn(variables, mixture[None])[0].astype(jnp.float32)


def _n_sources(apply_fn: ApplyFn, variables: PyTree, chunk: int) -> int:
    shape = jax.eval_shape(apply_fn, variables, jax.ShapeDtypeStruct((1, chunk), jnp.float32))
    shape = getattr(shape, "shape", None)
    if shape is None or len(shape) != 3 or shape[0] != 1 or shape[2] != chunk:
        raise ShapeError(
            f"apply_fn maps chunks [1, {chunk}] to {shape}; it must return [B, S, C] "
            "(B chunks, S sources, C samples), e.g. ConvTasNet(...).apply"
        )
    return shape[1]


def separate_long(
    apply_fn: ApplyFn,
    variables: PyTree,
    mixture: np.ndarray | jax.Array,
    *,
    chunk: int,
    overlap: int,
    chunks_per_block: int = 8,
) -> np.ndarray:
    """Separates a recording of any length in overlapping chunks (see the module docstring).

    Args:
      apply_fn: ``apply_fn(variables, chunks[B, C]) -> [B, S, C]``, e.g. ``model.apply``
        of a Flax module; pass the same function object again to reuse its compilation.
      variables: what ``apply_fn`` takes first, e.g. ``{"params": params}``.
      mixture: ``[T]`` mono waveform (any float dtype; computed in float32).
      chunk: samples per chunk (static: one compilation per value).
      overlap: samples shared by neighbouring chunks, ``1 ≤ overlap ≤ chunk / 2``.
      chunks_per_block: chunks per jitted scan; bounds device memory, not the result.

    Returns:
      ``[S, T]`` float32 numpy array of sources at the model's output level, in a source
      order that stays the same through the whole recording.

    Raises:
      ConfigError: bad ``chunk``, ``overlap`` or ``chunks_per_block``. ChannelError: mixture is
      not mono. EmptyAudioError, NonFiniteAudioError: empty or NaN/Inf mixture.
      ShapeError: ``apply_fn`` does not return ``[B, S, C]``.
    """
    if chunk < 2 or not 1 <= overlap <= chunk // 2:
        raise ConfigError(
            f"chunk={chunk}, overlap={overlap} samples: need chunk ≥ 2 and "
            "1 ≤ overlap ≤ chunk / 2; lengthen the chunk or shorten the overlap"
        )
    if chunks_per_block < 1:
        raise ConfigError(f"chunks_per_block={chunks_per_block} must be ≥ 1")
    mixture = np.asarray(mixture, np.float32)
    mixture = audio.require_mono(audio.validate(mixture, "mixture"), "mixture")
    n_src = _n_sources(apply_fn, variables, chunk)
    length = mixture.shape[-1]
    if length <= chunk:
        return np.asarray(_separate_whole(apply_fn, variables, jnp.asarray(mixture)))

    hop = chunk - overlap
    n_chunks = math.ceil((length - overlap) / hop)
    block_hops = chunks_per_block * hop
    # Chunk i emits samples [i·hop, (i + 1)·hop); chunk n_chunks, past the recording, emits
    # the last chunk's tail, so the blocks must reach sample `length`.
    n_blocks = math.ceil(length / block_hops)
    carry = (jnp.zeros((n_src, overlap), jnp.float32), jnp.zeros((), bool))
    separated = np.empty((n_src, length), np.float32)
    for index in range(n_blocks):
        start = index * block_hops
        block = np.zeros(block_hops + overlap, np.float32)
        piece = mixture[start : start + block.shape[0]]
        block[: piece.shape[0]] = piece
        chunks_left = np.int32(n_chunks - index * chunks_per_block)
        out, carry = _separate_block(
            apply_fn, variables, block, chunks_left, carry, chunk=chunk, overlap=overlap
        )
        stop = min(length, start + block_hops)
        separated[:, start:stop] = np.asarray(out)[:, : stop - start]
    return separated


def rescale_to_mixture(
    sources: jax.Array, mixture: jax.Array, peak: float = 0.99, ridge: float = 1e-4
) -> jax.Array:
    """Gives each source its level in the mixture, then keeps every sample within ``±peak``.

    A separation model trained with SI-SNR returns each source at an arbitrary scale. The gains
    ``g [S]`` are those that best explain the mixture with all sources together,
    ``argmin ‖mixture − Σₛ gₛ·sourceₛ‖²``: ``(G + Λ)·g = b`` with the Gram matrix
    ``G = sources·sourcesᵀ``, ``b = sources·mixture`` and ``Λ = ridge·diag(G)`` (a ridge that
    keeps the gains independent of each source's scale and only matters when sources are near
    copies of each other; exact copies share the gain). For estimates
    ``cₛ·xₛ`` of uncorrelated sources ``xₛ`` summing to the mixture, ``gₛ·cₛ·xₛ = xₛ``: their
    true levels and polarities. Fitted together, a faint track that is a trace of a louder one
    (a model trained on mixtures of two given one speaker) stays faint, where fitting each
    source alone would raise it to the speaker's level. If any scaled sample then exceeds
    ``peak``, all sources of that mixture are scaled down by the same factor, keeping their
    relative levels. A silent source (or mixture) stays silent.

    Args:
      sources: ``[..., S, T]`` estimates; mixture: ``[..., T]``; peak: largest magnitude
        allowed (below 1 so that 16-bit PCM never clips); ridge: Λ relative to each
        source's energy.

    Returns:
      ``[..., S, T]`` float32.
    """
    sources = jnp.asarray(sources).astype(jnp.float32)
    mixture = jnp.asarray(mixture).astype(jnp.float32)
    gram = jnp.einsum("...st,...rt->...sr", sources, sources)
    energy = jnp.diagonal(gram, axis1=-2, axis2=-1)
    loading = ridge * energy + jnp.finfo(jnp.float32).tiny
    gram = gram + loading[..., None] * jnp.eye(energy.shape[-1])
    projection = jnp.einsum("...st,...t->...s", sources, mixture)
    gain = jnp.linalg.solve(gram, projection[..., None])[..., 0]
    scaled = gain[..., None] * sources
    top = jnp.max(jnp.abs(scaled), axis=(-2, -1), keepdims=True)
    return scaled * jnp.minimum(1.0, peak / jnp.maximum(top, jnp.finfo(jnp.float32).tiny))


def default_chunking(crop: int, receptive_field: int | None, min_chunk: int = 0) -> tuple[int, int]:
    """``(chunk, overlap)`` samples for :func:`separate_long` with a model trained on crops of
    ``crop`` samples whose output sample depends on ``receptive_field`` input samples (None:
    unbounded, a recurrent net): the overlap is the receptive field (half the crop when
    unbounded), the chunk the training crop, lengthened to two receptive fields (so only
    neighbouring chunks overlap) and to ``min_chunk`` if shorter."""
    if receptive_field is None:
        return max(crop, min_chunk), max(1, crop // 2)
    return max(crop, 2 * receptive_field, min_chunk), receptive_field


def tcn_receptive_frames(tcn) -> int:
    """Frames an output frame of a TCN (``models.tcn.TCNConfig``) depends on:
    ``1 + R·(P − 1)·(2^X − 1)``."""
    return 1 + tcn.repeats * (tcn.kernel_size - 1) * (2**tcn.blocks - 1)

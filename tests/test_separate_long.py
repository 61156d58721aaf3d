"""Long recordings keep each speaker on one output track (jaxspeech.infer.separate_long on real
LibriSpeech speech, with an oracle model whose source order changes from chunk to chunk)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from jaxspeech import audio, infer

RATE, CHUNK, OVERLAP = 8000, 8000, 4000  # the smoke Conv-TasNet's default chunking
HOP = CHUNK - OVERLAP
#: LibriSpeech test-other: two men (1688, 2033) and a woman (1998).
UTTERANCES = ("1688-142285-0000", "1998-15444-0000", "2033-164914-0006")


@pytest.fixture(scope="module")
def speakers(shared_data) -> np.ndarray:
    """``[3, T]`` three readers at 8 kHz, 13.3 s each, at equal energy."""
    waves = []
    for name in UTTERANCES:
        path = shared_data / "librispeech" / "test-other" / name.split("-")[0] / f"{name}.flac"
        wave, rate = sf.read(path, dtype="float32")
        waves.append(np.asarray(audio.resample(wave, rate, RATE), np.float32))
    length = min(wave.size for wave in waves)
    waves = np.stack([wave[:length] for wave in waves])
    return waves * (0.1 / np.sqrt(np.mean(np.square(waves), axis=-1, keepdims=True)))


def chunked(signals: np.ndarray) -> np.ndarray:
    """``[..., T]`` → ``[n_chunks, ..., CHUNK]``: the chunks ``separate_long`` cuts, zero-padded
    past the end."""
    n_chunks = -(-(signals.shape[-1] - OVERLAP) // HOP)
    padded = np.pad(signals, [(0, 0)] * (signals.ndim - 1) + [(0, CHUNK)])
    return np.stack([padded[..., i * HOP : i * HOP + CHUNK] for i in range(n_chunks)])


def oracle(mixture: np.ndarray, outputs: np.ndarray):
    """A "model" ``apply_fn(variables, chunks[B, C]) -> [B, S, C]`` that finds each chunk among
    ``chunked(mixture)`` and returns its ``outputs [n_chunks, S, C]``."""
    mixture_chunks = chunked(mixture)

    def apply_fn(variables, chunks):
        del variables
        distance = jnp.sum(jnp.square(chunks[:, None] - mixture_chunks[None]), axis=-1)
        return jnp.asarray(outputs)[jnp.argmin(distance, axis=-1)]

    return apply_fn


def shuffled(outputs: np.ndarray, seed: int = 0) -> np.ndarray:
    """``outputs [n_chunks, S, C]`` with the sources of every chunk in a random order, each
    chunk's order differing from the previous one's."""
    rng = np.random.default_rng(seed)
    orders = [np.arange(outputs.shape[1])]
    while len(orders) < len(outputs):
        order = rng.permutation(outputs.shape[1])
        if not np.array_equal(order, orders[-1]):
            orders.append(order)
    return np.stack([chunk[order] for chunk, order in zip(outputs, orders, strict=True)])


def assert_one_order(out: np.ndarray, expected: np.ndarray, atol: float) -> None:
    """``out [S, T]`` is ``expected [S, T]`` in one order for the whole recording."""
    order = [int(np.argmin(np.sum(np.square(out - row), axis=-1))) for row in expected]
    np.testing.assert_allclose(out[order], expected, atol=atol)


@pytest.mark.parametrize("n_src", [2, 3])
def test_each_speaker_stays_on_one_track(speakers, n_src):
    """Male and female readers (and a second man): the oracle returns the exact sources in a
    new order in every one of 26 chunks; the stitched tracks are the sources, each whole."""
    sources = speakers[:n_src]
    mixture = sources.sum(axis=0)
    model = oracle(mixture, shuffled(chunked(sources)))
    out = infer.separate_long(model, {}, mixture, chunk=CHUNK, overlap=OVERLAP)
    assert out.shape == sources.shape
    assert_one_order(out, sources, atol=1e-6)


def test_one_speaker_keeps_one_track_and_a_near_silent_one(speakers, rng):
    """One reader alone: in every chunk the oracle gives the reader with a −30 dB error of its
    own on one output and a faint (−30 dB) copy of that on the other, as a model trained on
    mixtures of two tends to, swapping the two from chunk to chunk. A scale-invariant match
    cannot tell a track from its faint copy; the stitched tracks keep the reader on one and
    silence on the other all through."""
    reader = speakers[0]
    reader_chunks = chunked(reader)
    loud = reader_chunks + 0.03 * 0.1 * rng.standard_normal(reader_chunks.shape)
    outputs = np.stack([loud, 0.03 * loud], axis=1).astype(np.float32)
    out = infer.separate_long(
        oracle(reader, shuffled(outputs)), {}, reader, chunk=CHUNK, overlap=OVERLAP
    )
    assert_one_order(out, np.stack([reader, 0.03 * reader]), atol=0.02)
    energy = np.sum(np.square(out), axis=-1) / np.sum(np.square(reader))
    np.testing.assert_allclose(sorted(10 * np.log10(energy)), [-30.46, 0.0], atol=0.1)


def test_faint_track_stays_faint_at_the_mixture_level(speakers):
    """Rescaling to the mixture keeps a one-speaker input's faint track faint (here a −30 dB
    copy of the reader plus a −40 dB second voice), instead of raising it to the reader's
    level."""
    reader = speakers[0]
    outputs = np.stack([2.0 * reader, 0.03 * reader + 0.01 * speakers[1]])
    scaled = np.asarray(infer.rescale_to_mixture(outputs, reader, peak=np.inf))
    energy_db = 10 * np.log10(np.sum(np.square(scaled), axis=-1) / np.sum(np.square(reader)))
    np.testing.assert_allclose(scaled[0], reader, atol=0.03 * np.abs(reader).max())
    assert energy_db[1] < -25.0, energy_db


def test_a_minimum_chunk_lengthens_the_chunk_but_not_the_overlap():
    """A Conv-TasNet (bounded receptive field) asks for chunks of at least 30 s; the overlap
    stays its receptive field, and a recurrent model's stays half its crop."""
    whole = 30 * 8000
    assert infer.default_chunking(8000, 4088, min_chunk=whole) == (whole, 4088)
    assert infer.default_chunking(320000, 12248, min_chunk=whole) == (320000, 12248)
    assert infer.default_chunking(32000, None, min_chunk=whole) == (whole, 16000)

"""Audio-visual nets: the output mask against numpy, the no-face fallback bit for bit, the
lip net's causality and frame-by-frame state, band averaging."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from synthetic import random_params

from jaxspeech import masks
from jaxspeech.errors import ConfigError
from jaxspeech.models.av import (
    GateNetConfig,
    LipNet,
    LipNetConfig,
    av_mask,
    build_gate_net,
    gate_inputs,
)

FRAMES, FREQS, BANDS, CROP = 7, 13, 4, (12, 16)


def numpy_av_mask(audio, lips, gate, face):
    """Reference: per frame and bin, g·(B·IRM) + (1−g)·IRM with face, IRM without."""
    bands = np.array_split(np.arange(FREQS), BANDS)
    out = np.array(audio, np.float64)
    for b in range(audio.shape[0]):
        for t in range(FRAMES):
            if not face[b, t]:
                continue
            for k, bins in enumerate(bands):
                g = gate[b, t, 0] if gate.shape[-1] == 1 else gate[b, t, k]
                out[b, t, bins] = (
                    g * lips[b, t, k] * audio[b, t, bins] + (1 - g) * audio[b, t, bins]
                )
    return out


@pytest.mark.parametrize("gate_bands", [1, BANDS])
def test_av_mask_matches_numpy_and_falls_back_without_a_face(rng, gate_bands):
    audio = rng.uniform(0, 1, (3, FRAMES, FREQS)).astype(np.float32)
    lips = rng.uniform(0, 1, (3, FRAMES, BANDS)).astype(np.float32)
    gate = rng.uniform(0.2, 1, (3, FRAMES, gate_bands)).astype(np.float32)
    face = np.ones((3, FRAMES), bool)
    face[0, 2] = False  # one frame without a face
    face[1] = False  # a whole clip without a face
    face[2, 4:] = False  # a video shorter than its audio
    mask, g = jax.jit(av_mask)(audio, lips, gate, face)
    np.testing.assert_allclose(mask, numpy_av_mask(audio, lips, gate, face), atol=1e-6)
    no_face = ~face
    assert np.array_equal(np.asarray(mask)[no_face], audio[no_face])  # bit for bit
    assert np.all(np.asarray(g)[no_face] == 0) and np.all(np.asarray(g)[face] > 0)
    assert np.abs(np.asarray(mask)[face] - audio[face]).max() > 1e-2  # the gate acts
    eager = av_mask(audio, lips, gate, face.astype(np.float32))  # 0/1 flags, not jitted
    assert np.array_equal(np.asarray(eager[0])[no_face], audio[no_face])


def test_band_average_is_mean_over_array_split_bins(rng):
    values = rng.normal(size=(2, FRAMES, FREQS)).astype(np.float32)
    expected = np.stack(
        [part.mean(axis=-1) for part in np.array_split(values, BANDS, axis=-1)], axis=-1
    )
    average = jax.jit(masks.band_average, static_argnums=1)
    np.testing.assert_allclose(average(values, BANDS), expected, rtol=1e-6, atol=1e-6)
    spread = np.repeat(expected, [len(p) for p in np.array_split(np.arange(FREQS), BANDS)], -1)
    np.testing.assert_allclose(average(spread, BANDS), expected, atol=1e-6)


@pytest.fixture(scope="module")
def lip_net():
    net = LipNet(BANDS, LipNetConfig(channels=(4, 8), embedding=16, hidden=8, layers=2))
    lips = np.random.default_rng(5).uniform(0, 1, (2, FRAMES, *CROP)).astype(np.float32)
    face = np.ones((2, FRAMES), bool)
    face[1, 3] = False
    params = random_params(net, lips, face)
    return net, params, lips, face, jax.jit(lambda x, f: net.apply({"params": params}, x, f))


def test_lip_net_frame_by_frame_equals_offline_and_is_causal(lip_net):
    net, params, lips, face, run = lip_net
    offline = run(lips, face)
    assert offline.shape == (2, FRAMES, BANDS) and offline.dtype == jnp.float32
    step = jax.jit(lambda x, f, c: net.apply({"params": params}, x, f, c, method=LipNet.with_carry))
    zeros = jnp.zeros((2, 8))
    carry, pieces = ((zeros, zeros),) * 2, []
    for t in range(FRAMES):
        out, carry = step(lips[:, t : t + 1], face[:, t : t + 1], carry)
        pieces.append(out)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), offline, atol=1e-5)
    future = lips.copy()
    future[:, 5:] = 0.0  # changing frames 5.. leaves frames ..4 alone
    changed = run(future, face)
    np.testing.assert_array_equal(changed[:, :5], offline[:, :5])
    assert np.abs(changed[:, 5:] - offline[:, 5:]).max() > 0


def test_lip_net_ignores_crops_without_a_face(lip_net):
    net, params, lips, face, run = lip_net
    other = lips.copy()
    other[1, 3] = 1.0  # face[1, 3] is False
    np.testing.assert_array_equal(run(other, face), run(lips, face))
    embed = jax.jit(lambda x, f: net.apply({"params": params}, x, f, method=LipNet.embed))
    embedded = embed(lips, face)
    assert np.all(embedded[1, 3] == 0) and np.abs(embedded[0, 3]).max() > 0


def test_non_causal_nets_and_gate_shapes(rng):
    bidirectional = LipNet(BANDS, LipNetConfig(channels=(4,), embedding=8, hidden=4, causal=False))
    lips, face = np.zeros((1, FRAMES, *CROP), np.float32), np.ones((1, FRAMES), bool)
    params = random_params(bidirectional, lips, face)
    apply = lambda *args, **kw: jax.eval_shape(
        lambda x, f: bidirectional.apply({"params": params}, x, f, **kw), *args
    )
    assert apply(lips, face).shape == (1, FRAMES, BANDS)
    with pytest.raises(ConfigError, match="non-causal"):
        apply(lips, face, method=LipNet.with_carry)
    audio = rng.uniform(0, 1, (1, FRAMES, FREQS)).astype(np.float32)
    lip_mask = rng.uniform(0, 1, (1, FRAMES, BANDS)).astype(np.float32)
    inputs = jax.jit(gate_inputs)(audio, lip_mask)
    assert inputs.shape == (1, FRAMES, 3 * BANDS)
    np.testing.assert_allclose(inputs[..., BANDS : 2 * BANDS], lip_mask)
    for per_band, width in ((False, 1), (True, BANDS)):
        gate = build_gate_net(GateNetConfig(hidden=4, per_band=per_band), BANDS)
        gate_params = random_params(gate, inputs)
        shape = jax.eval_shape(gate.apply, {"params": gate_params}, inputs).shape
        assert shape == (1, FRAMES, width)
    with pytest.raises(ConfigError, match="channels"):
        jax.eval_shape(
            LipNet(BANDS, LipNetConfig(channels=())).init, jax.random.PRNGKey(0), lips, face
        )

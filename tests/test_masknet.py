"""Mask estimators: LSTM against a numpy loop, streaming = offline, causality, the shared TCN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.errors import ConfigError
from jaxspeech.models.masknet import (
    LSTMMaskNet,
    LSTMMaskNetConfig,
    TCNMaskNet,
    TCNMaskNetConfig,
    macs_per_frame,
    param_count,
)
from jaxspeech.models.rnn import BLSTM, LSTM, lstm_gates
from jaxspeech.models.tcn import TCNConfig, TemporalConvNet

FREQS, FRAMES, FEATURES = 9, 12, 9


def numpy_lstm(x, kernel_in, bias, kernel_rec, reverse=False):
    """Reference LSTM: an explicit loop over frames, gates i, f, g, o (PyTorch's equations)."""
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))
    hidden = kernel_rec.shape[0]
    h, c = np.zeros((*x.shape[:-2], hidden)), np.zeros((*x.shape[:-2], hidden))
    out = np.zeros((*x.shape[:-1], hidden))
    order = range(x.shape[-2])[::-1] if reverse else range(x.shape[-2])
    for t in order:
        z = x[..., t, :] @ kernel_in + bias + h @ kernel_rec
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out[..., t, :] = h
    return out


@pytest.fixture(scope="module")
def features():
    return jax.random.normal(jax.random.PRNGKey(0), (2, FRAMES, FEATURES))


def test_lstm_matches_numpy_loop(features):
    layer = LSTM(5)
    params = layer.init(jax.random.PRNGKey(1), features)["params"]
    out, (cell, hidden) = layer.apply({"params": params}, features)
    expected = numpy_lstm(
        np.asarray(features, np.float64),
        np.asarray(params["input"]["kernel"], np.float64),
        np.asarray(params["input"]["bias"], np.float64),
        np.asarray(params["recurrent"], np.float64),
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hidden, expected[:, -1], rtol=1e-5, atol=1e-5)
    assert cell.shape == (2, 5)
    # forget-gate bias starts at one, the other gates at zero
    np.testing.assert_array_equal(params["input"]["bias"], np.repeat([0.0, 1.0, 0.0, 0.0], 5))


def test_blstm_matches_numpy_loops_both_ways(features):
    layer = BLSTM(5)
    params = jax.tree.map(
        lambda p: np.asarray(p, np.float64),
        layer.init(jax.random.PRNGKey(2), features)["params"],
    )
    params["input"]["bias"] = np.random.default_rng(0).normal(size=params["input"]["bias"].shape)
    out = layer.apply({"params": params}, features)
    x = np.asarray(features, np.float64)
    kernel, bias, recurrent = (
        params["input"]["kernel"],
        params["input"]["bias"],
        params["recurrent"],
    )
    forward = numpy_lstm(x, kernel[:, 0], bias[0], recurrent[0])
    backward = numpy_lstm(x, kernel[:, 1], bias[1], recurrent[1], reverse=True)
    np.testing.assert_allclose(out, np.concatenate([forward, backward], -1), rtol=1e-5, atol=1e-5)


def test_lstm_gates_saturate_as_expected():
    big = 50.0
    # input gate open, forget closed, g = tanh(big) ~ 1, output open -> c = 1, h = tanh(1)
    gates = jnp.array([big, -big, big, big])
    cell, hidden = lstm_gates(gates, jnp.array([3.0]))
    np.testing.assert_allclose(cell, [1.0], atol=1e-6)
    np.testing.assert_allclose(hidden, [np.tanh(1.0)], atol=1e-6)


@pytest.fixture(scope="module")
def causal_lstm(features):
    net = LSTMMaskNet(FREQS, LSTMMaskNetConfig(hidden=6, layers=2))
    return net, net.init(jax.random.PRNGKey(2), features)


def test_lstm_mask_net_range_shape_and_causality(causal_lstm, features):
    net, variables = causal_lstm
    mask = net.apply(variables, features)
    assert mask.shape == (2, FRAMES, FREQS) and mask.dtype == jnp.float32
    assert float(mask.min()) > 0.0 and float(mask.max()) < 1.0
    changed = features.at[:, 7:].add(5.0)
    other = net.apply(variables, changed)
    np.testing.assert_allclose(other[:, :7], mask[:, :7], rtol=1e-6)
    assert np.abs(np.asarray(other[:, 7:] - mask[:, 7:])).max() > 1e-3


def test_streaming_frame_by_frame_equals_offline(causal_lstm, features):
    net, variables = causal_lstm
    offline = net.apply(variables, features)
    step = jax.jit(lambda frame, carry: net.apply(variables, frame, carry, method="with_carry"))
    _, carry = net.apply(variables, features[:, :1], method="with_carry")  # zero-state start
    pieces = [net.apply(variables, features[:, :1], method="with_carry")[0]]
    for t in range(1, FRAMES):
        mask, carry = step(features[:, t : t + 1], carry)
        pieces.append(mask)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), offline, rtol=1e-5, atol=1e-6)


def test_bidirectional_sees_the_future_and_has_no_carry(features):
    net = LSTMMaskNet(FREQS, LSTMMaskNetConfig(hidden=4, layers=1, bidirectional=True))
    variables = net.init(jax.random.PRNGKey(3), features)
    assert set(variables["params"]) == {"blstm_0", "mask"}
    mask = net.apply(variables, features)
    # Changing one frame changes the mask of the frame before it (the backward direction).
    other = net.apply(variables, features.at[:, FRAMES // 2].add(5.0))
    assert np.abs(np.asarray(other[:, FRAMES // 2 - 1] - mask[:, FRAMES // 2 - 1])).max() > 1e-4
    with pytest.raises(ConfigError, match="bidirectional"):
        net.apply(variables, features, method="with_carry")


def test_lstm_mask_net_vmap_matches_batch(causal_lstm, features):
    net, variables = causal_lstm
    batched = net.apply(variables, features)
    mapped = jax.vmap(lambda f: net.apply(variables, f))(features)
    np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-6)


def test_tcn_mask_net_reuses_temporal_conv_net(features):
    settings = TCNConfig(
        bottleneck_channels=4,
        hidden_channels=6,
        skip_channels=4,
        blocks=2,
        repeats=1,
        norm="cLN",
        causal=True,
    )
    net = TCNMaskNet(FREQS, TCNMaskNetConfig(settings))
    variables = net.init(jax.random.PRNGKey(4), features)
    tcn = TemporalConvNet(settings)
    tcn_params = tcn.init(jax.random.PRNGKey(4), features)["params"]
    assert jax.tree.structure(variables["params"]["tcn"]) == jax.tree.structure(tcn_params)
    # the mask is sigmoid(dense(prelu(TCN(features)))) with the same TCN params
    hidden = jax.jit(tcn.apply)({"params": variables["params"]["tcn"]}, features)
    slope = variables["params"]["mask_prelu"]["negative_slope"]
    hidden = jnp.where(hidden >= 0, hidden, slope * hidden)
    dense = variables["params"]["mask"]
    expected = jax.nn.sigmoid(hidden @ dense["kernel"] + dense["bias"])
    apply = jax.jit(net.apply)
    mask = apply(variables, features)
    np.testing.assert_allclose(mask, expected, rtol=1e-5, atol=1e-6)
    # causal: the future does not leak into the past
    other = apply(variables, features.at[:, 8:].add(3.0))
    np.testing.assert_allclose(other[:, :8], mask[:, :8], rtol=1e-5, atol=1e-6)


def test_macs_and_params_count_every_weight(features):
    net = LSTMMaskNet(FREQS, LSTMMaskNetConfig(hidden=6, layers=2, bidirectional=True))
    params = net.init(jax.random.PRNGKey(5), features)["params"]
    hidden, directions = 6, 2
    layer0 = directions * 4 * hidden * (FEATURES + hidden)
    layer1 = directions * 4 * hidden * (directions * hidden + hidden)
    head = directions * hidden * FREQS
    assert macs_per_frame(params) == layer0 + layer1 + head
    biases = 2 * directions * 4 * hidden + FREQS
    assert param_count(params) == layer0 + layer1 + head + biases

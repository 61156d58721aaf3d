"""Streaming enhancement: hop by hop equals the offline causal path; latency; bad input."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech import stream
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.inference.enhancement import Enhancer
from jaxspeech.models.masknet import LSTMMaskNetConfig, TCNMaskNetConfig
from jaxspeech.train import stages

RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs/enhancement/distill.py"


def smoke_model(estimator, params=None, model_state=None) -> Enhancer:
    """The smoke recipe's student (16 kHz, 512-point window, hop 256) with ``estimator`` as
    a loaded model: ``params`` random unless given, fixed random feature statistics."""
    config = stages.load_recipe(f"{RECIPE}:smoke").stages[1].config
    model = dataclasses.replace(config.model, estimator=estimator, teacher=None)
    config = dataclasses.replace(config, model=model)
    n_freqs = 257
    if params is None:
        net = Enhancer(pathlib.Path("smoke"), config, 0, {}, {}).module
        params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, n_freqs)))["params"]
    if model_state is None:
        rng = np.random.default_rng(1)
        model_state = {
            "feature_mean": jnp.asarray(rng.normal(-4.0, 1.0, n_freqs), jnp.float32),
            "feature_std": jnp.asarray(rng.uniform(1.0, 3.0, n_freqs), jnp.float32),
        }
    return Enhancer(pathlib.Path("smoke"), config, 0, params, model_state)


@pytest.fixture(scope="module")
def enhancer() -> stream.StreamingEnhancer:
    """A two-layer causal LSTM with random weights and fixed feature statistics."""
    return stream.StreamingEnhancer(smoke_model(LSTMMaskNetConfig(hidden=16, layers=2)))


def run_stream(enhancer, signal: np.ndarray) -> np.ndarray:
    """Feeds ``signal [..., T]`` hop by hop (zero hops flush the delay); returns the raw
    stream output ``[..., hops · hop]``."""
    hop = enhancer.hop
    n_hops = -(-(signal.shape[-1] + enhancer.delay) // hop)
    padded = np.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, n_hops * hop - signal.shape[-1])])
    state, outputs = enhancer.init_state(signal.shape[:-1]), []
    for index in range(n_hops):
        state, out = enhancer.process_hop(state, padded[..., index * hop : (index + 1) * hop])
        outputs.append(np.asarray(out))
    return np.concatenate(outputs, axis=-1)


def test_latency_is_one_window(enhancer):
    assert (enhancer.hop, enhancer.n_fft) == (256, 512)
    assert enhancer.delay == 256 and enhancer.latency == 512  # 16 ms lag, 32 ms at most


def test_stream_equals_offline_causal_enhancement(enhancer):
    rng = np.random.default_rng(0)
    noisy = (0.1 * rng.standard_normal((2, 4000))).astype(np.float32)  # not whole hops
    delay, length = enhancer.delay, noisy.shape[-1]
    streamed = run_stream(enhancer, noisy)
    model = smoke_model(enhancer.model.config, *enhancer.variables)
    offline = jax.jit(lambda x: stream.enhance_causal(model, x))(noisy)
    np.testing.assert_allclose(streamed[:, delay : delay + length], offline, atol=1e-5)
    assert enhancer._step._cache_size() == 1  # one compilation for every hop
    # the model really acts: output is neither the input nor a scaled copy of it
    assert np.abs(offline - noisy).max() > 1e-2
    assert np.abs(offline).max() > 1e-2
    # batch rows are independent streams
    np.testing.assert_allclose(run_stream(enhancer, noisy[1]), streamed[1], atol=1e-6)


def test_unit_mask_returns_the_input_one_delay_late(enhancer):
    params, model_state = enhancer.variables
    saturated = jax.tree.map(lambda x: x, params)
    saturated["mask"]["bias"] = jnp.full_like(params["mask"]["bias"], 60.0)  # sigmoid = 1
    saturated["mask"]["kernel"] = jnp.zeros_like(params["mask"]["kernel"])
    unit = stream.StreamingEnhancer(smoke_model(enhancer.model.config, saturated, model_state))
    signal = np.random.default_rng(2).uniform(-1, 1, 1500).astype(np.float32)
    streamed = run_stream(unit, signal)
    delay = unit.delay
    np.testing.assert_allclose(streamed[delay : delay + signal.size], signal, atol=1e-5)


def test_silence_streams_to_silence_and_scan_matches_loop(enhancer):
    np.testing.assert_array_equal(run_stream(enhancer, np.zeros(1000, np.float32)), 0.0)
    hops = np.random.default_rng(3).standard_normal((6, enhancer.hop)).astype(np.float32)

    @jax.jit
    def scanned(hops):
        return jax.lax.scan(enhancer.process_hop, enhancer.init_state(), hops)[1]

    np.testing.assert_allclose(
        np.asarray(scanned(hops)).reshape(-1),
        run_stream(enhancer, hops.reshape(-1))[: hops.size],
        atol=1e-5,
    )


def test_bad_input(enhancer):
    state = enhancer.init_state()
    with pytest.raises(ShapeError, match=r"expected \(256,\)"):
        enhancer.process_hop(state, np.zeros(100, np.float32))
    with pytest.raises(ShapeError, match="batch shape"):
        enhancer.process_hop(state, np.zeros((2, 256), np.float32))
    bidirectional = smoke_model(LSTMMaskNetConfig(hidden=8, layers=1, bidirectional=True))
    with pytest.raises(ConfigError, match="causal LSTM"):
        stream.StreamingEnhancer(bidirectional)
    with pytest.raises(ConfigError, match="causal LSTM"):
        stream.enhance_causal(smoke_model(TCNMaskNetConfig(), params={}), np.zeros(999))
    with pytest.raises(ConfigError, match="causal LSTM"):
        bidirectional.stream()

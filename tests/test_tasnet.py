"""Conv-TasNet and its TCN: norms, depthwise conv, filterbanks, causality, Asteroid parity."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import signal

from jaxspeech.errors import AudioError, ConfigError, TooShortError
from jaxspeech.models.tasnet import (
    ConvTasNet,
    ConvTasNetConfig,
    decode,
    encode,
    load_asteroid_state_dict,
)
from jaxspeech.models.tcn import SequenceNorm, TCNConfig, TemporalConvNet, resolve_backward
from jaxspeech.models.tcn_gln import frame_sums, gln_block_core
from jaxspeech.models.tcn_layers import (
    block_core,
    channel_layer_norm,
    cumulative_layer_norm,
    depthwise_conv1d,
    global_layer_norm,
    pointwise_conv,
)

TINY = ConvTasNetConfig(
    n_filters=16,
    filter_length=4,
    tcn=TCNConfig(bottleneck_channels=8, hidden_channels=12, skip_channels=6, blocks=2, repeats=2),
)
TCN_FIELDS = {field.name for field in dataclasses.fields(TCNConfig)}


def tiny_config(**overrides) -> ConvTasNetConfig:
    """TINY with `overrides` of its own fields or of its TCN's."""
    tcn = {k: v for k, v in overrides.items() if k in TCN_FIELDS}
    top = {k: v for k, v in overrides.items() if k not in TCN_FIELDS}
    return dataclasses.replace(TINY, tcn=dataclasses.replace(TINY.tcn, **tcn), **top)


def tiny_model(dtype=jnp.float32, **overrides) -> ConvTasNet:
    return ConvTasNet(tiny_config(**overrides), dtype)


def random_params(model: ConvTasNet, seed: int):
    """Random values for every param of `model` (no init compile; gains near 1, slopes random)."""
    length = model.config.filter_length
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, length)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        scale = 1 / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 0.3
        offset = 1.0 if path[-1].key == "gamma" else 0.0
        return jnp.asarray(rng.normal(size=leaf.shape) * scale + offset, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny_params():
    return random_params(tiny_model(), 0)


# ----------------------------------------------------------------------------- norms


def test_norms_match_numpy(rng):
    x = rng.normal(size=(2, 7, 5)).astype(np.float32) * 3 + 1
    ref_global = (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(
        x.var(axis=(1, 2), keepdims=True) + 1e-8
    )
    ref_channel = (x - x.mean(axis=2, keepdims=True)) / np.sqrt(x.var(axis=2, keepdims=True) + 1e-8)
    ref_cumulative = np.empty_like(x)
    for t in range(x.shape[1]):
        past = x[:, : t + 1]
        mean, var = past.mean(axis=(1, 2)), past.var(axis=(1, 2))
        ref_cumulative[:, t] = (x[:, t] - mean[:, None]) / np.sqrt(var[:, None] + 1e-8)
    np.testing.assert_allclose(global_layer_norm(x), ref_global, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(channel_layer_norm(x), ref_channel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cumulative_layer_norm(x), ref_cumulative, rtol=1e-4, atol=1e-4)
    # bfloat16 in, float32 statistics out
    assert global_layer_norm(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.float32


def test_sequence_norm_gain_bias(rng):
    x = rng.normal(size=(2, 7, 5)).astype(np.float32)
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    params = {"params": {"gamma": gamma, "beta": beta}}
    out = SequenceNorm("chanLN").apply(params, x)
    np.testing.assert_allclose(out, channel_layer_norm(x) * gamma + beta, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="norm='batch'"):
        tiny_model(norm="batch").init(jax.random.key(0), jnp.zeros((1, 64)))


# ------------------------------------------------------------------- depthwise conv


@pytest.mark.parametrize("causal", [False, True])
def test_depthwise_conv_matches_scipy(rng, causal):
    x = rng.normal(size=(2, 20, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 4)).astype(np.float32)
    dilation = 2
    dilated = np.zeros((5, 4), np.float32)
    dilated[::dilation] = kernel
    pad = (4, 0) if causal else (2, 2)
    padded = np.pad(x, [(0, 0), pad, (0, 0)])
    ref = np.stack(
        [
            [signal.correlate(padded[b, :, c], dilated[:, c], mode="valid") for c in range(4)]
            for b in range(2)
        ]
    ).transpose(0, 2, 1)
    out = jax.jit(depthwise_conv1d, static_argnums=(2, 3))(x, kernel, dilation, causal)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    grouped = jax.lax.conv_general_dilated(
        x,
        kernel[:, None, :],
        window_strides=(1,),
        padding=[pad],
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=4,
    )
    np.testing.assert_allclose(out, grouped, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------- filterbanks


def test_encode_decode_match_numpy_convolutions(rng):
    length, n_filters, samples = 6, 5, 41
    wav = rng.normal(size=(2, samples)).astype(np.float32)
    enc_filters = rng.normal(size=(length, n_filters)).astype(np.float32)
    dec_filters = rng.normal(size=(n_filters, length)).astype(np.float32)
    hop, frames = length // 2, (samples - length) // (length // 2) + 1
    ref_rep = np.stack(
        [wav[:, k * hop : k * hop + length] @ enc_filters for k in range(frames)], axis=1
    )
    rep = encode(wav, enc_filters)
    np.testing.assert_allclose(rep, ref_rep, rtol=1e-5, atol=1e-5)
    ref_wav = np.zeros((2, samples), np.float32)
    for k in range(frames):  # transposed conv, zero after the last frame
        ref_wav[:, k * hop : k * hop + length] += ref_rep[:, k] @ dec_filters
    np.testing.assert_allclose(decode(rep, dec_filters, samples), ref_wav, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- model


def test_paper_config_parameter_count():
    shapes = jax.eval_shape(ConvTasNet().init, jax.random.key(0), jnp.zeros((1, 32)))
    assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 5_050_545
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))


def test_no_skip_variant_masks_from_residual_stream():
    shapes = jax.eval_shape(tiny_model(skip_channels=0).init, jax.random.key(0), jnp.zeros((1, 8)))[
        "params"
    ]
    assert "skip_conv" not in shapes["tcn"]["block_0"]
    assert shapes["mask_conv"]["kernel"].shape == (8, 2 * 16)  # from B=8 channels


def test_shapes_leading_axes_and_vmap():
    model = tiny_model()
    params = random_params(tiny_model(), 1)
    apply = jax.jit(model.apply)
    mixture = jax.random.normal(jax.random.key(2), (2, 3, 103))  # 103 is not a multiple of 2
    out = apply(params, mixture)
    assert out.shape == (2, 3, 2, 103)
    # The last 103 − ((K−1)·2 + 4) = 1 sample is beyond the last encoder frame: zero.
    np.testing.assert_array_equal(out[..., -1], 0.0)
    assert float(jnp.std(out[..., :-1])) > 1e-3
    per_example = jax.jit(jax.vmap(apply, (None, 0)))(params, mixture.reshape(6, 103))
    np.testing.assert_allclose(per_example.reshape(out.shape), out, rtol=1e-4, atol=1e-5)
    assert apply(params, mixture[0, 0, :4]).shape == (2, 4)  # exactly one frame


@pytest.mark.parametrize("norm", ["cLN", "chanLN"])
def test_causal_output_ignores_future_input(norm):
    model = tiny_model(causal=True, norm=norm)
    params = random_params(tiny_model(), 3)
    mixture = jax.random.normal(jax.random.key(4), (1, 96))
    change_from = 50
    changed = mixture.at[:, change_from:].set(jax.random.normal(jax.random.key(5), (1, 46)))
    out, out_changed = jax.jit(model.apply)(params, jnp.concatenate([mixture, changed]))
    # Output sample n uses frames up to ⌊n/2⌋, which end at sample 2⌊n/2⌋ + 3 (L = 4).
    unaffected = 2 * (np.arange(96) // 2) + 3 < change_from
    np.testing.assert_array_equal(out[:, unaffected], out_changed[:, unaffected])
    assert float(jnp.max(jnp.abs(out - out_changed))) > 1e-3

    non_causal = jax.jit(tiny_model().apply)(params, jnp.concatenate([mixture, changed]))
    assert float(jnp.max(jnp.abs(non_causal[0, :, :10] - non_causal[1, :, :10]))) > 1e-4


def test_grad_matches_finite_difference():
    model = tiny_model()
    flat_params, unravel = ravel_pytree(random_params(model, 6))
    mixture = jax.random.normal(jax.random.key(7), (2, 64))

    @jax.jit
    def loss(flat, mixture):
        return jnp.mean(jnp.square(model.apply(unravel(flat), mixture) - mixture[:, None]))

    grad = np.asarray(jax.jit(jax.grad(loss))(flat_params, mixture))
    assert np.all(np.isfinite(grad))
    norm, step = np.linalg.norm(grad), 1e-3
    finite_difference = (
        loss(flat_params + step * grad / norm, mixture)
        - loss(flat_params - step * grad / norm, mixture)
    ) / (2 * step)
    np.testing.assert_allclose(finite_difference, norm, rtol=1e-2)


@pytest.mark.parametrize("frames", [5, 16, 29])
def test_frame_sums_match_numpy(rng, frames):
    """Chunked variadic sums over frames (fewer frames than a chunk, whole chunks, a remainder)
    of fused products against float64 numpy."""
    a, b = (rng.standard_normal((3, frames, 4)).astype(np.float32) for _ in range(2))
    sums = jax.jit(lambda a, b: frame_sums([a * b, a, jnp.roll(b, 2, axis=1)]))(a, b)
    for ours, reference in zip(sums, [a * b, a, np.roll(b, 2, axis=1)], strict=True):
        assert ours.shape == (3, 4)
        np.testing.assert_allclose(
            ours, reference.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("leading", [(), (2,), (2, 3)])
def test_pointwise_conv_gradients_match_dense(rng, leading):
    """Per-batch-element weight gradients, for inputs of rank 2 to 4, against XLA's derivative
    of x @ W + b."""
    in_channels, out_channels = 3, 8
    x = jnp.asarray(rng.standard_normal((*leading, 5, in_channels)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((in_channels, out_channels)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(out_channels), jnp.float32)
    grad = jnp.asarray(rng.standard_normal((*leading, 5, out_channels)), jnp.float32)
    y, vjp = jax.vjp(pointwise_conv, x, kernel, bias)
    y_ref, vjp_ref = jax.vjp(lambda x, w, b: x @ w + b, x, kernel, bias)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    for ours, reference in zip(vjp(grad), vjp_ref(grad), strict=True):
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilation", [1, 4, 16, 32])
def test_gln_block_backward_matches_autodiff(rng, dilation):
    """The hand-written gLN block backward against XLA's derivative of `block_core`; at
    dilation 32 the outer taps see no frame of the 29."""
    batch, frames, channels, hidden, out = 3, 29, 6, 10, 7
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    params = (
        {"kernel": normal(channels, hidden), "bias": 0.5 + 0.3 * normal(hidden)},
        {"negative_slope": jnp.float32(0.3)},
        {"gamma": 1 + 0.3 * normal(hidden), "beta": 0.3 * normal(hidden)},
        {"kernel": normal(3, hidden), "bias": 0.3 * normal(hidden)},
        {"negative_slope": jnp.float32(-0.2)},
        {"gamma": 1 + 0.3 * normal(hidden), "beta": 0.3 * normal(hidden)},
        {"kernel": normal(hidden, out) / 3, "bias": normal(out)},
    )
    x = normal(batch, frames, channels)  # h = in_conv(x): non-zero mean, both PReLU sides
    grad_y = normal(batch, frames, out)

    def reference(x, in_conv, *params):
        h = x @ in_conv["kernel"] + in_conv["bias"]
        return block_core(
            h, *params, dilation=dilation, norm="gLN", causal=False, dtype=jnp.float32
        )

    y_ref, vjp_ref = jax.vjp(reference, x, *params)
    y, vjp = jax.vjp(lambda x, *params: gln_block_core(x, *params, dilation), x, *params)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    grads, grads_ref = jax.tree.leaves(vjp(grad_y)), jax.tree.leaves(vjp_ref(grad_y))
    assert len(grads) == len(grads_ref) == 13
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert grad.shape == grad_ref.shape
        np.testing.assert_allclose(grad, grad_ref, atol=2e-5 * float(jnp.max(jnp.abs(grad_ref))))


def test_block_backwards_give_the_same_outputs_and_gradients():
    """A small gLN TCN (two leading axes, skip outputs) with the hand-written block backward
    against XLA's derivative of the block core: same outputs, same input and param gradients."""
    config = TCNConfig(
        bottleneck_channels=6, hidden_channels=10, skip_channels=5, blocks=3, repeats=1
    )
    x = jax.random.normal(jax.random.key(10), (2, 3, 21, 7)) + 0.5
    cotangent = jax.random.normal(jax.random.key(11), (2, 3, 21, 5))
    params = TemporalConvNet(config).init(jax.random.key(12), x)
    results = {}
    for backward in ("hand-written", "autodiff"):
        net = TemporalConvNet(dataclasses.replace(config, backward=backward))
        assert resolve_backward(net.config, jnp.float32) == backward
        y, vjp = jax.vjp(jax.jit(net.apply), params, x)
        results[backward] = (y, vjp(cotangent))
    (y, grads), (y_ref, grads_ref) = results["hand-written"], results["autodiff"]
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    leaves, leaves_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
    assert jax.tree.structure(grads) == jax.tree.structure(grads_ref) and len(leaves) == 47
    for grad, grad_ref in zip(leaves, leaves_ref, strict=True):
        np.testing.assert_allclose(grad, grad_ref, atol=2e-5 * float(jnp.max(jnp.abs(grad_ref))))


def test_auto_backward_is_hand_written_only_for_float32_gln_on_cpu():
    gln, cln = TCNConfig(), TCNConfig(causal=True)
    assert gln.norm_kind == "gLN" and cln.norm_kind == "cLN"
    assert resolve_backward(gln, jnp.float32, "cpu") == "hand-written"
    assert resolve_backward(gln, jnp.float32, "gpu") == "autodiff"
    assert resolve_backward(gln, jnp.float32, "tpu") == "autodiff"
    assert resolve_backward(gln, jnp.bfloat16, "cpu") == "autodiff"
    assert resolve_backward(cln, jnp.float32, "cpu") == "autodiff"
    forced = dataclasses.replace(gln, backward="hand-written")
    assert resolve_backward(forced, jnp.float32, "gpu") == "hand-written"
    with pytest.raises(ConfigError, match=r"backward='hand-written'.*bfloat16"):
        resolve_backward(forced, jnp.bfloat16, "cpu")
    with pytest.raises(ConfigError, match="backward='fused' is unknown"):
        tiny_model(backward="fused").init(jax.random.key(0), jnp.zeros((1, 64)))


def test_bfloat16_compute_close_to_float32():
    params = random_params(tiny_model(), 8)
    mixture = jax.random.normal(jax.random.key(9), (2, 64))
    out32 = jax.jit(tiny_model().apply)(params, mixture)
    out16 = jax.jit(tiny_model(jnp.bfloat16).apply)(params, mixture)
    assert out16.dtype == jnp.float32
    error = jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32)
    assert 0 < float(error) < 0.05


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(causal=True, norm="gLN"), "cannot be causal"),
        (dict(kernel_size=4), "odd kernel size"),
        (dict(filter_length=5), "must be even"),
        (dict(mask_activation="tanh"), "mask_activation='tanh'"),
        (dict(n_src=0), "n_src=0 must be"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_model(**overrides).init(jax.random.key(0), jnp.zeros((1, 64)))


def test_bad_mixture_raises(tiny_params):
    with pytest.raises(TooShortError, match="3 samples"):
        tiny_model().apply(tiny_params, jnp.zeros((2, 3)))
    with pytest.raises(AudioError, match="scalar"):
        tiny_model().apply(tiny_params, jnp.zeros(()))


# ------------------------------------------------- parity with Asteroid (parity extra)

PARITY_REASON = "torch + asteroid not installed: run bench/setup_parity.sh, then .venv-parity"


def asteroid_model(**kwargs):
    torch = pytest.importorskip("torch", reason=PARITY_REASON)
    models = pytest.importorskip("asteroid.models", reason=PARITY_REASON)
    torch.manual_seed(0)
    model = models.ConvTasNet(**kwargs).eval()
    with torch.no_grad():  # random gains, biases and slopes, so no layer is an identity
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model


def assert_parity(asteroid_kwargs, ours, samples, rtol=1e-4):
    model = asteroid_model(**asteroid_kwargs)
    import torch

    mixture = np.random.default_rng(0).normal(size=(2, samples)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(mixture)).numpy()
    params = load_asteroid_state_dict(model.state_dict(), ours)
    got = np.asarray(jax.jit(ConvTasNet(ours).apply)(params, mixture))
    assert got.shape == expected.shape
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert error <= rtol, f"relative error {error:.2e}"
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert count == sum(p.numel() for p in model.parameters())


ASTEROID_TINY = dict(
    n_filters=16,
    kernel_size=4,
    stride=2,
    bn_chan=8,
    hid_chan=12,
    skip_chan=6,
    n_blocks=2,
    n_repeats=2,
)


@pytest.mark.parametrize(
    ("asteroid_extra", "ours_extra"),
    [
        ({}, {}),
        (dict(causal=True, norm_type="cgLN"), dict(causal=True, norm="cLN")),
        (dict(causal=True, norm_type="cLN"), dict(causal=True, norm="chanLN")),
        (dict(mask_act="relu"), dict(mask_activation="relu")),
        (dict(skip_chan=0), dict(skip_channels=0)),
    ],
    ids=["gLN", "causal-cLN", "causal-chanLN", "relu", "no-skip"],
)
def test_parity_with_asteroid_small(asteroid_extra, ours_extra):
    assert_parity({"n_src": 2, **ASTEROID_TINY, **asteroid_extra}, tiny_config(**ours_extra), 203)


def test_parity_with_asteroid_paper_config():
    assert_parity({"n_src": 2}, ConvTasNetConfig(), 4003)

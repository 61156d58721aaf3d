"""Conv-TasNet (Luo & Mesgarani, 2019): learned encoder, TCN mask estimator, learned decoder.

Matches Asteroid 0.7.0's `ConvTasNet` (free filterbank, no encoder activation, sigmoid masks,
decoder output right-padded with zeros to the input length) output for output and parameter
for parameter; `load_asteroid_state_dict` converts its weights.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxspeech.errors import AudioError, ConfigError, TooShortError
from jaxspeech.models.tcn import PointwiseConv, TCNConfig, TemporalConvNet

MASK_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "softmax": lambda scores: jax.nn.softmax(scores, axis=-2),  # over sources
}


def frame_signal(wav: jax.Array, hop: int, frames: int) -> jax.Array:
    """Non-overlapping hops `[..., frames + 1, hop]` of the first `(frames + 1)·hop` samples."""
    return wav[..., : (frames + 1) * hop].reshape(*wav.shape[:-1], frames + 1, hop)


def encode(wav: jax.Array, filters: jax.Array) -> jax.Array:
    """Strided conv `[..., T] -> [..., K, N]` with `filters[L, N]`, stride L/2, no padding.

    `K = (T − L) // (L/2) + 1`; frame k sees samples `k·L/2 … k·L/2 + L − 1`.
    """
    length = filters.shape[0]
    hop = length // 2
    frames = (wav.shape[-1] - length) // hop + 1
    hops = frame_signal(wav, hop, frames)
    return hops[..., :-1, :] @ filters[:hop] + hops[..., 1:, :] @ filters[hop:]


def decode(rep: jax.Array, filters: jax.Array, length: int) -> jax.Array:
    """Transposed conv (overlap-add) `[..., K, N] -> [..., length]` with `filters[N, L]`.

    Frames are placed every L/2 samples and summed; samples after the last frame are zero.
    """
    hop = filters.shape[1] // 2
    frames = rep @ filters  # [..., K, L]
    pad = [(0, 0)] * (frames.ndim - 2)
    hops = jnp.pad(frames[..., :hop], [*pad, (0, 1), (0, 0)]) + jnp.pad(
        frames[..., hop:], [*pad, (1, 0), (0, 0)]
    )
    wav = hops.reshape(*hops.shape[:-2], -1)
    return jnp.pad(wav, [*pad, (0, length - wav.shape[-1])])


@dataclasses.dataclass(frozen=True)
class ConvTasNetConfig:
    """Conv-TasNet hyper-parameters (paper letters in brackets); defaults are the paper's best
    non-causal configuration (5,050,545 parameters).

    Attributes:
      n_src: number of sources separated.
      n_filters [N], filter_length [L]: the learned filterbanks (L even; stride L/2).
      tcn: the mask estimator's TCN (B, H, Sc, P, X, R, norm, causal); `skip_channels=0`
        takes the masks from the residual stream.
      mask_activation: "sigmoid", "relu" or "softmax" over sources.
    """

    n_src: int = 2
    n_filters: int = 512
    filter_length: int = 16
    tcn: TCNConfig = dataclasses.field(default_factory=TCNConfig)
    mask_activation: str = "sigmoid"


class ConvTasNet(nn.Module):
    """Conv-TasNet separator: `mixture[..., T] -> sources[..., n_src, T]` (float32).

    Attributes:
      config: the hyper-parameters (`ConvTasNetConfig`).
      dtype: compute dtype for convolutions and matmuls; params and norms stay float32.
    """

    config: ConvTasNetConfig = ConvTasNetConfig()
    dtype: jnp.dtype = jnp.float32

    def _check(self, mixture: jax.Array) -> None:
        config = self.config
        if config.n_src < 1:
            raise ConfigError(f"n_src={config.n_src} must be ≥ 1 (the number of sources).")
        if config.filter_length < 2 or config.filter_length % 2:
            raise ConfigError(
                f"filter_length={config.filter_length} must be even and ≥ 2 (stride is L/2)."
            )
        if config.mask_activation not in MASK_ACTIVATIONS:
            raise ConfigError(
                f"mask_activation={config.mask_activation!r} is unknown; "
                f"use one of {tuple(MASK_ACTIVATIONS)}."
            )
        if mixture.ndim == 0:
            raise AudioError("mixture is a scalar; pass a waveform [..., T].")
        if mixture.shape[-1] < config.filter_length:
            raise TooShortError(
                f"mixture has {mixture.shape[-1]} samples, fewer than one encoder frame "
                f"(filter_length={config.filter_length}); pad or use longer audio."
            )

    @nn.compact
    def __call__(self, mixture: jax.Array) -> jax.Array:
        self._check(mixture)
        config = self.config
        length, n_filters, n_src = config.filter_length, config.n_filters, config.n_src
        # torch's xavier_normal_ on Asteroid's [N, 1, L] filters: std √(2 / (L + N·L)).
        filter_init = nn.initializers.normal(math.sqrt(2.0 / (length * (n_filters + 1))))
        enc_filters = self.param("encoder_filters", filter_init, (length, n_filters))
        dec_filters = self.param("decoder_filters", filter_init, (n_filters, length))

        rep = encode(mixture.astype(self.dtype), enc_filters.astype(self.dtype))  # [..., K, N]
        features = TemporalConvNet(config.tcn, self.dtype, name="tcn")(rep)
        features = nn.PReLU(negative_slope_init=0.25, name="mask_prelu")(features)
        scores = PointwiseConv(n_src * n_filters, self.dtype, name="mask_conv")(features)
        scores = scores.reshape(*scores.shape[:-1], n_src, n_filters)
        masks = MASK_ACTIVATIONS[config.mask_activation](scores.astype(jnp.float32))
        masked = (masks * rep[..., None, :]).astype(self.dtype)  # [..., K, n_src, N]
        masked = jnp.moveaxis(masked, -2, -3)  # [..., n_src, K, N]
        sources = decode(masked, dec_filters.astype(self.dtype), mixture.shape[-1])
        return sources.astype(jnp.float32)


def _conv1x1(weight: np.ndarray) -> np.ndarray:
    """torch 1×1 Conv1d weight [out, in, 1] -> Dense kernel [in, out]."""
    return weight[:, :, 0].T


def _asteroid_name_map(n_blocks: int, causal: bool) -> dict[str, tuple[str, Callable]]:
    """Our flattened param path -> (Asteroid state-dict key, array transform)."""
    same = lambda a: a
    scalar = lambda a: a.reshape(())
    names = {
        "encoder_filters": ("encoder.filterbank._filters", lambda a: a[:, 0, :].T),
        "decoder_filters": ("decoder.filterbank._filters", lambda a: a[:, 0, :]),
        "tcn/input_norm/gamma": ("masker.bottleneck.0.gamma", same),
        "tcn/input_norm/beta": ("masker.bottleneck.0.beta", same),
        "tcn/bottleneck/kernel": ("masker.bottleneck.1.weight", _conv1x1),
        "tcn/bottleneck/bias": ("masker.bottleneck.1.bias", same),
        "mask_prelu/negative_slope": ("masker.mask_net.0.weight", scalar),
        "mask_conv/kernel": ("masker.mask_net.1.weight", _conv1x1),
        "mask_conv/bias": ("masker.mask_net.1.bias", same),
    }
    depthwise = "shared_block.3.0" if causal else "shared_block.3"  # causal adds a chop layer
    for index in range(n_blocks):
        ours, theirs = f"tcn/block_{index}", f"masker.TCN.{index}"
        for layer, torch_layer in (
            ("in_conv", "shared_block.0"),
            ("residual_conv", "res_conv"),
            ("skip_conv", "skip_conv"),
        ):
            names[f"{ours}/{layer}/kernel"] = (f"{theirs}.{torch_layer}.weight", _conv1x1)
            names[f"{ours}/{layer}/bias"] = (f"{theirs}.{torch_layer}.bias", same)
        for layer, torch_layer in (
            ("in_prelu", "shared_block.1"),
            ("depthwise_prelu", "shared_block.4"),
        ):
            names[f"{ours}/{layer}/negative_slope"] = (f"{theirs}.{torch_layer}.weight", scalar)
        for layer, torch_layer in (("in_norm", "shared_block.2"), ("out_norm", "shared_block.5")):
            names[f"{ours}/{layer}/gamma"] = (f"{theirs}.{torch_layer}.gamma", same)
            names[f"{ours}/{layer}/beta"] = (f"{theirs}.{torch_layer}.beta", same)
        names[f"{ours}/depthwise/kernel"] = (f"{theirs}.{depthwise}.weight", lambda a: a[:, 0].T)
        names[f"{ours}/depthwise/bias"] = (f"{theirs}.{depthwise}.bias", same)
    return names


def load_asteroid_state_dict(state_dict: Mapping[str, Any], config: ConvTasNetConfig) -> dict:
    """Params of `ConvTasNet(config)` from Asteroid 0.7.0 `ConvTasNet.state_dict()`.

    `state_dict` maps Asteroid's parameter names to torch tensors or numpy arrays; `config`
    must describe the same architecture (e.g. `n_filters=64`, `tcn.blocks=2`,
    `tcn.causal=True`). Norm names differ: Asteroid's `norm_type="cgLN"` is our `norm="cLN"`
    and its `"cLN"` is our `"chanLN"` — so `asteroid.models.ConvTasNet(causal=True)`, whose
    default becomes its "cLN", loads with `TCNConfig(causal=True, norm="chanLN")`.
    Raises ConfigError naming any missing, unexpected or wrongly shaped parameter.
    """
    abstract = jax.eval_shape(
        ConvTasNet(config).init,
        jax.random.key(0),
        jnp.zeros((1, config.filter_length), jnp.float32),
    )["params"]
    targets = traverse_util.flatten_dict(abstract, sep="/")
    names = _asteroid_name_map(config.tcn.blocks * config.tcn.repeats, config.tcn.causal)
    names = {path: names[path] for path in targets}  # no skip convs when skip_channels == 0
    expected = {name for name, _ in names.values()}
    unexpected = sorted(set(state_dict) - expected)
    missing = sorted(expected - set(state_dict))
    if unexpected or missing:
        raise ConfigError(
            f"state_dict does not fit ConvTasNet({config}): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; pass the config the Asteroid model was built with."
        )
    params = {}
    for path, target in targets.items():
        name, transform = names[path]
        value = state_dict[name]
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        array = np.asarray(transform(np.asarray(value)), dtype=np.float32)
        if array.shape != target.shape:
            raise ConfigError(
                f"state_dict[{name!r}] gives shape {array.shape} for {path}, expected "
                f"{target.shape}; pass the config the Asteroid model was built with."
            )
        params[path] = jnp.asarray(array)
    return {"params": traverse_util.unflatten_dict(params, sep="/")}

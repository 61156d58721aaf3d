"""Time-frequency mask estimators for speech enhancement: LSTM and TCN, sigmoid output.

Both map normalised features ``[..., T, F_in]`` to one mask value per time-frequency bin,
``[..., T, n_freqs]`` in (0, 1), float32.

* :class:`LSTMMaskNet`: stacked LSTM layers (unidirectional, hence causal, or bidirectional),
  then a dense sigmoid layer. Each layer projects all frames at once (one matmul) and runs
  only the recurrent matmul under ``lax.scan``. A unidirectional net can carry its state
  across calls (:meth:`LSTMMaskNet.with_carry`), so feeding the frames one at a time gives
  the same masks as one offline call.
* :class:`TCNMaskNet`: Conv-TasNet's dilated depthwise TCN (``jaxspeech.models.tcn``), then
  PReLU, a 1×1 conv to ``n_freqs`` and a sigmoid, as Conv-TasNet's mask head.

:func:`macs_per_frame` counts multiply-accumulates analytically: every weight matrix of these
nets (dense, LSTM input and recurrent, 1×1 and depthwise kernels) is applied once per frame.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.errors import ConfigError
from jaxspeech.models.rnn import BLSTM, LSTM, LSTMState
from jaxspeech.models.tcn import TCNConfig, TemporalConvNet


@dataclasses.dataclass(frozen=True)
class LSTMMaskNetConfig:
    """``layers`` LSTM layers of ``hidden`` units (per direction); ``bidirectional``: each
    layer runs forward and backward and concatenates (not causal)."""

    hidden: int = 256
    layers: int = 2
    bidirectional: bool = False


@dataclasses.dataclass(frozen=True)
class TCNMaskNetConfig:
    """The TCN of a TCN mask net (smaller by default than Conv-TasNet's)."""

    tcn: TCNConfig = dataclasses.field(
        default_factory=lambda: TCNConfig(hidden_channels=256, blocks=6, repeats=2)
    )


class LSTMMaskNet(nn.Module):
    """``config.layers`` LSTM layers of ``config.hidden`` units (per direction), dense, sigmoid.

    A bidirectional net (2·hidden outputs per layer) is not causal, so it cannot carry state.
    """

    n_freqs: int
    config: LSTMMaskNetConfig = LSTMMaskNetConfig()
    dtype: Any = jnp.float32

    def setup(self) -> None:
        config = self.config
        if config.layers < 1 or config.hidden < 1:
            raise ConfigError(
                f"LSTMMaskNet: layers={config.layers}, hidden={config.hidden}; use >= 1"
            )
        layer = BLSTM if config.bidirectional else LSTM
        prefix = "blstm" if config.bidirectional else "lstm"
        self.recurrent = [
            layer(config.hidden, dtype=self.dtype, name=f"{prefix}_{i}")
            for i in range(config.layers)
        ]
        self.head = nn.Dense(self.n_freqs, dtype=self.dtype, name="mask")

    def __call__(self, features: jax.Array) -> jax.Array:
        """``features [B, T, F_in] -> mask [B, T, n_freqs]`` in (0, 1), float32."""
        if self.config.bidirectional:
            x = features
            for layer in self.recurrent:
                x = layer(x)
            return jax.nn.sigmoid(self.head(x).astype(jnp.float32))
        return self.with_carry(features)[0]

    def with_carry(self, features: jax.Array, carry: tuple[LSTMState, ...] | None = None):
        """Causal run from the state ``carry`` (one ``(c, h)`` per layer; None: zeros).

        Returns ``(mask [..., T, n_freqs], new carry)``: feeding consecutive pieces of a
        sequence with the returned carry gives the masks of one call on the whole sequence.
        """
        if self.config.bidirectional:
            raise ConfigError("a bidirectional LSTMMaskNet has no causal state; use it offline")
        carry = (None,) * self.config.layers if carry is None else carry
        x, new_carry = features, []
        for layer, state in zip(self.recurrent, carry, strict=True):
            x, state = layer(x, state)
            new_carry.append(state)
        return jax.nn.sigmoid(self.head(x).astype(jnp.float32)), tuple(new_carry)


class TCNMaskNet(nn.Module):
    """Conv-TasNet TCN (``TemporalConvNet``), PReLU, 1×1 conv to ``n_freqs``, sigmoid.

    A causal TCN needs a causal norm (``cLN`` or ``chanLN``); see ``jaxspeech.models.tcn``.
    """

    n_freqs: int
    config: TCNMaskNetConfig = TCNMaskNetConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        """``features [..., T, F_in] -> mask [..., T, n_freqs]`` in (0, 1), float32."""
        x = TemporalConvNet(self.config.tcn, self.dtype, name="tcn")(features)
        x = nn.PReLU(negative_slope_init=0.25, name="mask_prelu")(x)
        return jax.nn.sigmoid(nn.Dense(self.n_freqs, dtype=self.dtype, name="mask")(x))


def param_count(params: Any) -> int:
    """Number of scalar parameters in a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def macs_per_frame(params: Any) -> int:
    """Multiply-accumulates per STFT frame of a mask net: the sizes of its weight matrices.

    Every kernel with two or more axes (dense ``[in, out]``, LSTM input ``[F, (2,) 4H]`` and
    recurrent ``[(2,) H, 4H]``, depthwise ``[P, H]``) is applied exactly once per frame, so
    its size is its MAC count per frame. Biases, norms, activations and the STFT are not
    counted.
    """
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return int(
        sum(
            np.size(leaf)
            for path, leaf in leaves
            if np.ndim(leaf) >= 2 and getattr(path[-1], "key", None) != "bias"
        )
    )

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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.errors import ConfigError
from jaxspeech.models.rnn import BLSTM, LSTM, LSTMState
from jaxspeech.models.tcn import TemporalConvNet


class LSTMMaskNet(nn.Module):
    """``layers`` LSTM layers of ``hidden`` units (per direction), dense, sigmoid.

    ``bidirectional``: each layer runs forward and backward and concatenates (2·hidden
    outputs); not causal, so it cannot carry state.
    """

    n_freqs: int
    hidden: int = 256
    layers: int = 2
    bidirectional: bool = False
    dtype: Any = jnp.float32

    def setup(self) -> None:
        if self.layers < 1 or self.hidden < 1:
            raise ConfigError(f"LSTMMaskNet: layers={self.layers}, hidden={self.hidden}; use >= 1")
        if self.bidirectional:
            self.recurrent = [
                BLSTM(self.hidden, dtype=self.dtype, name=f"blstm_{i}") for i in range(self.layers)
            ]
        else:
            self.recurrent = [
                LSTM(self.hidden, dtype=self.dtype, name=f"lstm_{i}") for i in range(self.layers)
            ]
        self.head = nn.Dense(self.n_freqs, dtype=self.dtype, name="mask")

    def __call__(self, features: jax.Array) -> jax.Array:
        """``features [B, T, F_in] -> mask [B, T, n_freqs]`` in (0, 1), float32."""
        if self.bidirectional:
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
        if self.bidirectional:
            raise ConfigError("a bidirectional LSTMMaskNet has no causal state; use it offline")
        carry = (None,) * self.layers if carry is None else carry
        x, new_carry = features, []
        for layer, state in zip(self.recurrent, carry, strict=True):
            x, state = layer(x, state)
            new_carry.append(state)
        return jax.nn.sigmoid(self.head(x).astype(jnp.float32)), tuple(new_carry)


class TCNMaskNet(nn.Module):
    """Conv-TasNet TCN (``TemporalConvNet``), PReLU, 1×1 conv to ``n_freqs``, sigmoid.

    ``causal`` needs a causal norm (``cLN`` or ``chanLN``); see ``jaxspeech.models.tcn``.
    """

    n_freqs: int
    bottleneck_channels: int = 128
    hidden_channels: int = 256
    skip_channels: int = 128
    kernel_size: int = 3
    blocks: int = 6
    repeats: int = 2
    norm: str = "gLN"
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        """``features [..., T, F_in] -> mask [..., T, n_freqs]`` in (0, 1), float32."""
        x = TemporalConvNet(
            bottleneck_channels=self.bottleneck_channels,
            hidden_channels=self.hidden_channels,
            skip_channels=self.skip_channels,
            kernel_size=self.kernel_size,
            blocks=self.blocks,
            repeats=self.repeats,
            norm=self.norm,
            causal=self.causal,
            dtype=self.dtype,
            name="tcn",
        )(features)
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

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
from jaxspeech.models.tcn import TemporalConvNet

#: ``(c, h)`` of one LSTM layer, each ``[..., hidden]`` float32.
LSTMState = tuple[jax.Array, jax.Array]


def lstm_gates(gates: jax.Array, cell: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One LSTM update from pre-activations ``gates [..., 4H]`` (order i, f, g, o) and the
    previous cell ``[..., H]``; returns the new ``(cell, hidden)``, float32."""
    i, f, g, o = jnp.split(gates.astype(jnp.float32), 4, axis=-1)
    cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    return cell, jax.nn.sigmoid(o) * jnp.tanh(cell)


class LSTM(nn.Module):
    """One LSTM layer over the time axis of ``x [..., T, D]`` (``reverse``: last frame first).

    Params: ``input`` (Dense ``D -> 4H`` with bias; forget-gate bias starts at 1) and
    ``recurrent`` ``[H, 4H]`` (orthogonal init).
    """

    hidden: int
    reverse: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, carry: LSTMState | None = None):
        """Returns ``(outputs [..., T, H] float32, final (c, h))``; ``carry`` defaults to 0."""
        hidden = self.hidden
        forget_one = lambda key, shape, dtype: (
            jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1)
        )
        projected = nn.Dense(4 * hidden, dtype=self.dtype, bias_init=forget_one, name="input")(x)
        kernel = self.param("recurrent", nn.initializers.orthogonal(), (hidden, 4 * hidden))
        if carry is None:
            zeros = jnp.zeros((*x.shape[:-2], hidden), jnp.float32)
            carry = (zeros, zeros)
        kernel = kernel.astype(self.dtype)

        def step(state: LSTMState, gates_x: jax.Array):
            cell, out = state
            gates = gates_x.astype(jnp.float32) + jnp.dot(out.astype(self.dtype), kernel)
            cell, out = lstm_gates(gates, cell)
            return (cell, out), out

        time_major = jnp.moveaxis(projected, -2, 0)
        carry, outputs = jax.lax.scan(step, carry, time_major, reverse=self.reverse)
        return jnp.moveaxis(outputs, 0, -2), carry


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
        self.forward = [
            LSTM(self.hidden, dtype=self.dtype, name=f"lstm_{i}") for i in range(self.layers)
        ]
        self.backward = [
            LSTM(self.hidden, reverse=True, dtype=self.dtype, name=f"lstm_{i}_reverse")
            for i in range(self.layers)
            if self.bidirectional
        ]
        self.head = nn.Dense(self.n_freqs, dtype=self.dtype, name="mask")

    def __call__(self, features: jax.Array) -> jax.Array:
        """``features [..., T, F_in] -> mask [..., T, n_freqs]`` in (0, 1), float32."""
        x = features
        for index, layer in enumerate(self.forward):
            out, _ = layer(x)
            if self.bidirectional:
                out = jnp.concatenate([out, self.backward[index](x)[0]], axis=-1)
            x = out
        return jax.nn.sigmoid(self.head(x).astype(jnp.float32))

    def with_carry(self, features: jax.Array, carry: tuple[LSTMState, ...] | None = None):
        """Causal run from the state ``carry`` (one ``(c, h)`` per layer; None: zeros).

        Returns ``(mask [..., T, n_freqs], new carry)``: feeding consecutive pieces of a
        sequence with the returned carry gives the masks of one call on the whole sequence.
        """
        if self.bidirectional:
            raise ConfigError("a bidirectional LSTMMaskNet has no causal state; use it offline")
        carry = (None,) * self.layers if carry is None else carry
        x, new_carry = features, []
        for layer, state in zip(self.forward, carry, strict=True):
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

    Every kernel with two or more axes (dense ``[in, out]``, LSTM recurrent ``[H, 4H]``,
    depthwise ``[P, H]``) is applied exactly once per frame, so its size is its MAC count per
    frame. Biases, norms, activations and the STFT are not counted.
    """
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params) if np.ndim(leaf) >= 2))

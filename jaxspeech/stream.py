"""Frame-by-frame (streaming) enhancement with a causal LSTM mask net, and its offline twin.

:class:`StreamingEnhancer` takes one hop of ``hop`` samples at a time and returns one hop of
enhanced speech, carrying the LSTM state, the last ``n_fft − hop`` input samples and the
not yet finished overlap-add output in a :class:`StreamState`. Its step is one jitted
function of arrays (one compilation per batch shape), so it can also be ``lax.scan``-ned.

Framing. The offline ``Task.enhance`` centres its frames with reflect padding, which would
need ``n_fft / 2`` samples of lookahead. The stream instead starts from ``D = n_fft − hop``
zeros of history: frame ``t`` covers input samples ``[t·hop − D, t·hop + hop)``, i.e. it
ends with the ``t``-th hop and is analysed as soon as that hop arrives. Synthesis is the
weighted overlap-add of ``dsp.istft``: after frame ``t``, output samples ``[t·hop − D,
t·hop − D + hop)`` have all their frames and are emitted, divided by the steady-state sum of
squared windows.

Latency (exact). Output sample ``n`` of the stream is enhanced input sample ``n − D``:
``delay = n_fft − hop`` samples (256 = 16 ms for the 32 ms / 16 ms recipes at 16 kHz). Counting
the wait for a hop to fill, input sample ``t·hop + j`` leaves the enhancer when the hop
ending ``n_fft − j`` samples after it has arrived: at most ``latency = n_fft`` samples
(32 ms; one hop of buffering plus the delay). The first ``D`` output samples precede the
input (the enhanced zero history, small but not zero); to get the last ``D`` samples out,
feed ``ceil(D / hop)`` hops of zeros after the input.

:func:`enhance_causal` is the offline computation the stream reproduces: the same zero
history, ``center=False`` STFT/ISTFT and one offline run of the LSTM over all frames. It
differs from the centred ``Task.enhance`` at the edges: zeros instead of reflected samples
before the first and after the last input sample (and, through the LSTM state, the effect
of the first frames on later ones).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import dsp, masks
from jaxspeech.errors import ConfigError, ShapeError
from jaxspeech.models.masknet import LSTMMaskNet
from jaxspeech.models.rnn import LSTMState


class StreamState(NamedTuple):
    """What the stream carries from one hop to the next (float32, leading axes ``[...]``).

    Attributes:
      history: the last ``n_fft − hop`` input samples ``[..., n_fft − hop]``.
      pending: overlap-added output of past frames not yet emitted ``[..., n_fft − hop]``.
      carry: the LSTM ``(c, h)`` per layer, each ``[..., hidden]``.
    """

    history: jax.Array
    pending: jax.Array
    carry: tuple[LSTMState, ...]


def _check_causal_lstm(task) -> LSTMMaskNet:
    model = task.model
    if not isinstance(model, LSTMMaskNet) or model.config.bidirectional:
        raise ConfigError(
            f"streaming needs a causal LSTM mask net; this run's estimator is "
            f"{type(model).__name__}({model.config}); use a unidirectional LSTM model "
            "(e.g. the student of configs/enhancement/distill.py)"
        )
    return model


class StreamingEnhancer:
    """Causal hop-by-hop enhancement with a trained enhancement task's LSTM (module docstring).

    Usage::

        enhancer = StreamingEnhancer(task, params, model_state)
        state = enhancer.init_state()
        for hop in hops:                      # each [hop] float32
            state, out = enhancer.process_hop(state, hop)   # out [hop], `delay` samples late

    Attributes:
      hop: samples per call. delay: ``n_fft − hop``, output lag in samples. latency:
      ``n_fft``, the longest time (samples) from a sample's arrival to its output.
    """

    def __init__(self, task, params, model_state) -> None:
        self.model = _check_causal_lstm(task)
        self.task = task
        self.variables = (params, model_state)
        self.hop, self.n_fft = task.hop, task.n_fft
        self.delay = self.n_fft - self.hop
        self.latency = self.n_fft
        self.window = dsp.get_window(task.config.model.features.window, self.n_fft)
        squared = np.square(self.window.astype(np.float64))
        rows = np.pad(squared, (0, -self.n_fft % self.hop)).reshape(-1, self.hop)
        self.inverse_window_sum = (1.0 / rows.sum(axis=0)).astype(np.float32)  # [hop]
        self._step = jax.jit(self._hop_step)

    def init_state(self, batch_shape: tuple[int, ...] = ()) -> StreamState:
        """The state before the first hop: zero history, nothing pending, zero LSTM state."""
        zeros = jnp.zeros((*batch_shape, self.delay), jnp.float32)
        cell = jnp.zeros((*batch_shape, self.model.config.hidden), jnp.float32)
        return StreamState(zeros, zeros, ((cell, cell),) * self.model.config.layers)

    def process_hop(self, state: StreamState, samples: jax.Array) -> tuple[StreamState, jax.Array]:
        """Consumes ``samples [..., hop]`` (any float dtype); returns ``(state, out [..., hop])``
        float32, ``out`` being the enhanced input ``delay`` samples earlier."""
        if samples.shape[-1:] != (self.hop,) or samples.shape[:-1] != state.history.shape[:-1]:
            raise ShapeError(
                f"process_hop got samples of shape {samples.shape}; expected "
                f"{(*state.history.shape[:-1], self.hop)} (the state's batch shape, one hop)"
            )
        return self._step(self.variables, state, samples)

    def _hop_step(self, variables, state: StreamState, samples: jax.Array):
        params, model_state = variables
        frame = jnp.concatenate([state.history, samples.astype(jnp.float32)], axis=-1)
        spec = jnp.fft.rfft(frame * self.window, n=self.n_fft, axis=-1)  # [..., F]
        features = self.task.features(spec[..., None, :], model_state)  # [..., 1, F]
        mask, carry = self.model.apply(
            {"params": params}, features, state.carry, method=LSTMMaskNet.with_carry
        )
        masked = masks.apply_mask(spec, mask[..., 0, :])
        synthesis = jnp.fft.irfft(masked, n=self.n_fft, axis=-1) * self.window
        lead = [(0, 0)] * (samples.ndim - 1)
        summed = jnp.pad(state.pending, [*lead, (0, self.hop)]) + synthesis
        out = summed[..., : self.hop] * self.inverse_window_sum
        return StreamState(frame[..., self.hop :], summed[..., self.hop :], carry), out


def enhance_causal(task, params, model_state, noisy: jax.Array) -> jax.Array:
    """Offline causal enhancement ``[..., T]`` of ``noisy [..., T]``: what
    :class:`StreamingEnhancer` outputs, realigned by its delay (module docstring).

    Pure ``jnp`` (jit it with ``task`` closed over); the LSTM must be causal.
    """
    _check_causal_lstm(task)
    length = noisy.shape[-1]
    delay = task.n_fft - task.hop
    # Frames up to the one that ends with the hop holding the last sample, so that every
    # input sample is covered by all of its frames.
    last_frame = math.ceil((delay + length) / task.hop) - 1
    padded_length = last_frame * task.hop + task.n_fft
    lead = [(0, 0)] * (noisy.ndim - 1)
    padded = jnp.pad(noisy.astype(jnp.float32), [*lead, (delay, padded_length - delay - length)])
    spec = task.spectrum(padded, center=False)
    mask = task.model.apply({"params": params}, task.features(spec, model_state))
    out = task.resynthesise(spec, mask, padded_length, center=False)
    return out[..., delay : delay + length]

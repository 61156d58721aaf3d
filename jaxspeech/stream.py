"""Frame-by-frame (streaming) enhancement with a causal LSTM mask net, and its offline twin;
the same for the audio-visual system (:class:`AVStreamingEnhancer`, :func:`enhance_causal_av`).

:class:`StreamingEnhancer` takes one hop of ``hop`` samples at a time and returns one hop of
enhanced speech, carrying the LSTM state, the last ``n_fft − hop`` input samples and the
not yet finished overlap-add output in a :class:`StreamState`. Its step is one jitted
function of arrays (one compilation per batch shape), so it can also be ``lax.scan``-ned.

Framing. The offline ``MaskEnhancer.enhance`` centres its frames with reflect padding, which
would need ``n_fft / 2`` samples of lookahead. The stream instead starts from ``D = n_fft − hop``
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
differs from the centred ``MaskEnhancer.enhance`` at the edges: zeros instead of reflected
samples before the first and after the last input sample (and, through the LSTM state, the effect
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
from jaxspeech.models.av import LipNet, av_mask, gate_inputs
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


def _check_causal_lstm(core) -> LSTMMaskNet:
    model = core.model
    if not isinstance(model, LSTMMaskNet) or model.config.bidirectional:
        raise ConfigError(
            f"streaming needs a causal LSTM mask net; this run's estimator is "
            f"{type(model).__name__}({model.config}); use a unidirectional LSTM model "
            "(e.g. the student of configs/enhancement/distill.py)"
        )
    return model


class StreamingEnhancer:
    """Causal hop-by-hop enhancement with a loaded enhancement model's LSTM (module docstring):
    ``model`` is an :class:`~jaxspeech.inference.enhancement.Enhancer`.

    Usage::

        enhancer = jaxspeech.load(WORKDIR).stream()   # StreamingEnhancer(model)
        state = enhancer.init_state()
        for hop in hops:                      # each [hop] float32
            state, out = enhancer.process_hop(state, hop)   # out [hop], `delay` samples late

    Attributes:
      hop: samples per call. delay: ``n_fft − hop``, output lag in samples. latency:
      ``n_fft``, the longest time (samples) from a sample's arrival to its output.
      core: the model's :class:`~jaxspeech.inference.enhancement.MaskEnhancer`. variables:
      ``(params, model_state)``.
    """

    def __init__(self, model) -> None:
        self.core = model.core
        self.model = _check_causal_lstm(self.core)
        self.variables = (model.variables["params"], model.model_state)
        self.hop, self.n_fft = self.core.hop, self.core.n_fft
        self.delay = self.n_fft - self.hop
        self.latency = self.n_fft
        self.window = dsp.get_window(self.core.window, self.n_fft)
        squared = np.square(self.window.astype(np.float64))
        rows = np.pad(squared, (0, -self.n_fft % self.hop)).reshape(-1, self.hop)
        self.inverse_window_sum = (1.0 / rows.sum(axis=0)).astype(np.float32)  # [hop]
        self._step = jax.jit(self._hop_step)

    def init_state(self, batch_shape: tuple[int, ...] = ()) -> StreamState:
        """The state before the first hop: zero history, nothing pending, zero LSTM state."""
        zeros = jnp.zeros((*batch_shape, self.delay), jnp.float32)
        cell = jnp.zeros((*batch_shape, self.model.config.hidden), jnp.float32)
        return StreamState(zeros, zeros, ((cell, cell),) * self.model.config.layers)

    def process_hop(
        self, state: StreamState, samples: jax.Array, *frame_inputs
    ) -> tuple[StreamState, jax.Array]:
        """Consumes ``samples [..., hop]`` (any float dtype); returns ``(state, out [..., hop])``
        float32, ``out`` being the enhanced input ``delay`` samples earlier. ``frame_inputs``:
        what a subclass's ``frame_mask`` takes besides the spectrum (none here)."""
        if samples.shape[-1:] != (self.hop,) or samples.shape[:-1] != state.history.shape[:-1]:
            raise ShapeError(
                f"process_hop got samples of shape {samples.shape}; expected "
                f"{(*state.history.shape[:-1], self.hop)} (the state's batch shape, one hop)"
            )
        return self._step(self.variables, state, samples, *frame_inputs)

    def frame_mask(self, variables, carry, spec: jax.Array):
        """The mask ``[..., F]`` of one frame's STFT ``spec [..., F]`` and the new carry."""
        params, model_state = variables
        features = self.core.features(spec[..., None, :], model_state)  # [..., 1, F]
        mask, carry = self.model.apply(
            {"params": params}, features, carry, method=LSTMMaskNet.with_carry
        )
        return mask[..., 0, :], carry

    def _hop_step(self, variables, state: StreamState, samples: jax.Array, *frame_inputs):
        frame = jnp.concatenate([state.history, samples.astype(jnp.float32)], axis=-1)
        spec = jnp.fft.rfft(frame * self.window, n=self.n_fft, axis=-1)  # [..., F]
        mask, carry = self.frame_mask(variables, state.carry, spec, *frame_inputs)
        masked = masks.apply_mask(spec, mask)
        synthesis = jnp.fft.irfft(masked, n=self.n_fft, axis=-1) * self.window
        lead = [(0, 0)] * (samples.ndim - 1)
        summed = jnp.pad(state.pending, [*lead, (0, self.hop)]) + synthesis
        out = summed[..., : self.hop] * self.inverse_window_sum
        return StreamState(frame[..., self.hop :], summed[..., self.hop :], carry), out


def causal_frames(n_fft: int, hop: int, length: int) -> int:
    """How many frames the stream analyses for ``length`` input samples: up to the one that
    ends with the hop holding the last sample, so that every sample has all of its frames."""
    return math.ceil((n_fft - hop + length) / hop)


def causal_apply(core, noisy: jax.Array, mask_fn) -> jax.Array:
    """``ISTFT(mask · STFT)`` of ``noisy [..., T]`` in the stream's framing (zero history,
    ``center=False``) with the STFT of ``core`` (a
    :class:`~jaxspeech.inference.enhancement.MaskEnhancer`), realigned by the delay;
    ``mask_fn(spec [..., frames, F]) -> mask``."""
    length = noisy.shape[-1]
    delay = core.n_fft - core.hop
    padded_length = (causal_frames(core.n_fft, core.hop, length) - 1) * core.hop + core.n_fft
    lead = [(0, 0)] * (noisy.ndim - 1)
    padded = jnp.pad(noisy.astype(jnp.float32), [*lead, (delay, padded_length - delay - length)])
    spec = core.spectrum(padded, center=False)
    out = core.resynthesise(spec, mask_fn(spec), padded_length, center=False)
    return out[..., delay : delay + length]


def enhance_causal(model, noisy: jax.Array) -> jax.Array:
    """Offline causal enhancement ``[..., T]`` of ``noisy [..., T]`` by a loaded
    :class:`~jaxspeech.inference.enhancement.Enhancer`: what :class:`StreamingEnhancer`
    outputs, realigned by its delay (module docstring).

    Pure ``jnp`` (jit it with ``model`` closed over); the LSTM must be causal.
    """
    core, params, model_state = model.core, model.variables["params"], model.model_state
    _check_causal_lstm(core)
    return causal_apply(
        core,
        noisy,
        lambda spec: core.model.apply({"params": params}, core.features(spec, model_state)),
    )


class AVStreamingEnhancer(StreamingEnhancer):
    """Causal hop-by-hop audio-visual enhancement with a loaded gate stage and its frozen
    audio and lip nets (``model``, an :class:`~jaxspeech.inference.av.AVEnhancer`).

    Each hop takes the newest video frame's mouth crop and face flag, or none (then the last
    ones are reused: a 25 fps camera gives a new frame every 2.5 hops of 16 ms). The state's
    ``carry`` holds the audio LSTM's, the lip net's and the gate's LSTM states and the last
    crop and face flag; ``history`` and ``pending`` are the audio framing and overlap-add
    buffers of :class:`StreamingEnhancer`.

    Latency: that of :class:`StreamingEnhancer` (``n_fft`` samples, 32 ms for the recipes);
    frame ``t`` is centred on input sample ``t·hop + hop − n_fft/2`` and uses the video frame
    shown then, which has been captured before the frame's last sample arrives, so the video
    adds no delay beyond the camera's own.

    Usage::

        enhancer = jaxspeech.load(AV_WORKDIR).stream()   # AVStreamingEnhancer(model)
        state = enhancer.init_state()
        state, out = enhancer.process_hop(state, hop, crop, face)   # a new video frame
        state, out = enhancer.process_hop(state, hop)               # the same frame again
    """

    def __init__(self, model) -> None:
        if not model.lip_net.config.causal or model.gate_net.config.bidirectional:
            raise ConfigError(
                "AV streaming needs a causal lip net and gate; train them with causal=True"
            )
        super().__init__(model.audio_model)
        self.av = model
        self.variables = (*model.audio_variables, model.lips_params, model.variables["params"])

    def init_state(self, batch_shape: tuple[int, ...] = ()) -> StreamState:
        """Zero history, nothing pending, zero LSTM states, a blank last frame without face."""
        audio = super().init_state(batch_shape)

        def zeros(hidden: int, layers: int):
            cell = jnp.zeros((*batch_shape, hidden), jnp.float32)
            return ((cell, cell),) * layers

        lip_cfg, gate_cfg = self.av.lip_net.config, self.av.gate_net.config
        crop = jnp.zeros((*batch_shape, *self.av.crop_shape), jnp.float32)
        carry = (
            audio.carry,
            zeros(lip_cfg.hidden, lip_cfg.layers),
            zeros(gate_cfg.hidden, gate_cfg.layers),
            crop,
            jnp.zeros(batch_shape, bool),
        )
        return audio._replace(carry=carry)

    def process_hop(self, state: StreamState, samples, lips=None, face=None):
        """Consumes ``samples [..., hop]`` and, when a new video frame has arrived, its crop
        ``lips [..., h, w]`` and face flag ``face [...]`` (default True); returns
        ``(state, out [..., hop])``, ``out`` being the enhanced input ``delay`` samples
        earlier."""
        last_lips, last_face = state.carry[3:]
        if lips is None:
            lips, face = last_lips, last_face
        lips = jnp.asarray(lips, jnp.float32)
        face = jnp.broadcast_to(jnp.asarray(True if face is None else face, bool), last_face.shape)
        if lips.shape != last_lips.shape:
            raise ShapeError(f"process_hop got lips {lips.shape}; expected {last_lips.shape}")
        return super().process_hop(state, samples, lips, face)

    def frame_mask(self, variables, carry, spec, lips, face):
        audio_params, audio_state, lips_params, gate_params = variables
        audio_carry, lip_carry, gate_carry = carry[:3]
        audio_mask, audio_carry = super().frame_mask((audio_params, audio_state), audio_carry, spec)
        logits, lip_carry = self.av.lip_net.apply(
            {"params": lips_params},
            lips[..., None, :, :],
            face[..., None],
            lip_carry,
            method=LipNet.with_carry,
        )
        lip_mask = jax.nn.sigmoid(logits)
        gate, gate_carry = self.av.gate_net.apply(
            {"params": gate_params},
            gate_inputs(audio_mask[..., None, :], lip_mask),
            gate_carry,
            method=LSTMMaskNet.with_carry,
        )
        mask, _ = av_mask(audio_mask[..., None, :], lip_mask, gate, face[..., None])
        return mask[..., 0, :], (audio_carry, lip_carry, gate_carry, lips, face)


def enhance_causal_av(model, noisy, lips, face) -> jax.Array:
    """Offline causal audio-visual enhancement ``[..., T]`` by a loaded
    :class:`~jaxspeech.inference.av.AVEnhancer`: what :class:`AVStreamingEnhancer` outputs,
    realigned by its delay. ``lips [..., frames, h, w]`` and ``face [..., frames]`` give the
    crop and flag of each of the stream's ``causal_frames(n_fft, hop, T)`` frames."""
    _check_causal_lstm(model.audio)
    params = model.variables["params"]
    return causal_apply(
        model.audio, noisy, lambda spec: model.masks_from_spectrum(params, spec, lips, face)["mask"]
    )

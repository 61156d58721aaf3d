"""ONNX graphs of the LSTM mask-based enhancement systems (``jaxspeech.train.tasks.enhancement``).

* :func:`whole_file_model`: ``noisy [batch, samples] -> enhanced [batch, samples]``, what
  ``Task.enhance`` computes (centred, reflect-padded STFT; ISTFT at the input length).
* :func:`streaming_model`: one hop in, one hop out, the state carried explicitly:
  ``(samples [batch, hop], state [batch, S]) -> (enhanced [batch, hop], state_out [batch, S])``,
  what ``jaxspeech.stream.StreamingEnhancer.process_hop`` computes. The state is one flat
  float32 row per stream, zeros at the start; its layout (``metadata_props["state_layout"]``,
  offsets along the last axis) is: ``history`` (the last ``n_fft − hop`` input samples),
  ``pending`` (overlap-added output not yet emitted, ``n_fft − hop``), then per LSTM layer
  ``lstm_<i>_c`` and ``lstm_<i>_h`` (``hidden`` each). The output lags the input by
  ``delay = n_fft − hop`` samples; to flush the last ones, feed ``ceil(delay / hop)`` hops of
  zeros.

The STFT is a strided convolution with the windowed DFT matrix (its inverse a transposed one),
the mask net ONNX ``LSTM`` nodes (bidirectional for the teachers), so the graphs use only
standard ONNX operators.
"""

from __future__ import annotations

import numpy as np

from jaxspeech import dsp
from jaxspeech.errors import ConfigError
from jaxspeech.export.graph import FlatState, Graph, dft_kernels, lstm_layer
from jaxspeech.models.masknet import LSTMMaskNet

#: ``dsp.normalize``'s floor on the feature std.
_STD_FLOOR = 1e-5
#: ``dsp.istft``'s threshold below which the window sum is left as is.
_NOLA_TOLERANCE = 1e-10


class _Spec:
    """The STFT settings and feature statistics the graphs bake in."""

    def __init__(self, module, params, model_state, config) -> None:
        if not isinstance(module, LSTMMaskNet):
            raise ConfigError(
                f"ONNX export of enhancement supports LSTM mask nets; this run's estimator is "
                f"{type(module).__name__}"
            )
        features = config.model.features
        self.sample_rate = config.data.sample_rate
        self.n_fft = round(features.window_ms * self.sample_rate / 1000)
        self.hop = round(features.hop_ms * self.sample_rate / 1000)
        self.window_name = features.window
        self.window = dsp.get_window(features.window, self.n_fft)
        self.log_floor = features.log_floor
        self.mean = np.asarray(model_state["feature_mean"], np.float32)
        self.inverse_std = 1.0 / np.maximum(np.asarray(model_state["feature_std"]), _STD_FLOOR)
        self.module, self.params = module, params
        self.n_freqs = self.n_fft // 2 + 1

    def metadata(self, graph: str) -> dict:
        return {
            "system": "enhancement",
            "graph": graph,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "window": self.window_name,
            "mask_net": {
                "hidden": self.module.config.hidden,
                "layers": self.module.config.layers,
                "bidirectional": self.module.config.bidirectional,
            },
        }

    def masked_spectrum(self, graph: Graph, spec: str, carry=None):
        """``spec [T, B, 2F]`` (real parts, then imaginary) times the mask net's mask; returns
        the masked spectrum ``[T, B, 2F]`` and each layer's final ``(h, c)`` ``[D, B, H]``.
        ``carry``: each layer's initial ``(h, c)`` ``[1, B, H]``, or None for zeros."""
        real, imag = graph.op(
            "Split", spec, graph.ints(self.n_freqs, self.n_freqs), axis=-1, outputs=2
        )
        power = graph.op("Add", graph.op("Mul", real, real), graph.op("Mul", imag, imag))
        log_mag = graph.op(
            "Log", graph.op("Add", graph.op("Sqrt", power), graph.const(self.log_floor))
        )
        x = graph.op(
            "Mul", graph.op("Sub", log_mag, graph.const(self.mean)), graph.const(self.inverse_std)
        )
        layers = self.module.config.layers
        prefix = "blstm" if self.module.config.bidirectional else "lstm"
        states = []
        for index in range(layers):
            initial = None if carry is None else carry[index]
            x, h, c = lstm_layer(graph, x, self.params[f"{prefix}_{index}"], initial)
            states.append((h, c))
        head = self.params["mask"]
        mask = graph.op("Sigmoid", graph.dense(x, head["kernel"], head["bias"]))
        masked = graph.op(
            "Concat", graph.op("Mul", real, mask), graph.op("Mul", imag, mask), axis=-1
        )
        return masked, states


def whole_file_model(module, params, model_state, config):
    """The ``ModelProto`` of ``Task.enhance``: ``noisy [batch, samples]`` (float32 at the
    model's rate, more than ``n_fft / 2`` samples) ``-> enhanced [batch, samples]``.

    ``module``: the run's ``LSTMMaskNet``; ``params``, ``model_state``: its trained params and
    feature statistics; ``config``: the run's ``EnhancementConfig``.
    """
    spec = _Spec(module, params, model_state, config)
    graph = Graph()
    hop, pad = spec.hop, spec.n_fft // 2
    analysis, synthesis = dft_kernels(spec.window)
    wav = graph.op("Unsqueeze", "noisy", graph.ints(1))  # [B, 1, T]
    padded = graph.op("Pad", wav, graph.ints(0, 0, pad, 0, 0, pad), mode="reflect")
    frames = graph.op("Conv", padded, graph.const(analysis.T[:, None]), strides=[hop])
    masked, _ = spec.masked_spectrum(graph, graph.op("Transpose", frames, perm=[2, 0, 1]))
    masked = graph.op("Transpose", masked, perm=[1, 2, 0])  # [B, 2F, N]
    overlapped = graph.op(
        "ConvTranspose", masked, graph.const(synthesis[:, None]), strides=[hop]
    )  # [B, 1, (N - 1) hop + n_fft]
    n_frames = graph.op("Shape", masked, start=2, end=3)
    ones = graph.op(
        "ConstantOfShape",
        graph.op("Concat", graph.ints(1, 1), n_frames, axis=0),
        value=graph.onnx.numpy_helper.from_array(np.ones(1, np.float32)),
    )
    window_sum = graph.op(
        "ConvTranspose", ones, graph.const(np.square(spec.window)[None, None]), strides=[hop]
    )
    covered = graph.op("Greater", window_sum, graph.const(_NOLA_TOLERANCE))
    inverse_sum = graph.op(
        "Where",
        covered,
        graph.op("Reciprocal", graph.op("Max", window_sum, graph.const(_NOLA_TOLERANCE))),
        graph.const(1.0),
    )
    signal = graph.op("Mul", overlapped, inverse_sum)
    # dsp.istft zero-pads to the input length when the frames end before it.
    signal = graph.op("Pad", signal, graph.ints(0, 0, 0, 0, 0, hop))
    end = graph.op("Add", graph.op("Shape", "noisy", start=1, end=2), graph.ints(pad))
    signal = graph.op("Slice", signal, graph.ints(pad), end, graph.ints(2))
    graph.rename(graph.op("Squeeze", signal, graph.ints(1)), "enhanced")
    return graph.model(
        [("noisy", ["batch", "samples"])],
        [("enhanced", ["batch", "samples"])],
        spec.metadata("whole_file") | {"min_samples": pad + 1},
    )


def streaming_model(module, params, model_state, config):
    """The ``ModelProto`` of one ``StreamingEnhancer.process_hop`` (module docstring):
    ``(samples [batch, hop], state [batch, S]) -> (enhanced [batch, hop], state_out [batch, S])``.

    Raises ConfigError for a bidirectional (non-causal) mask net.
    """
    if isinstance(module, LSTMMaskNet) and module.config.bidirectional:
        raise ConfigError(
            "a bidirectional LSTM mask net looks at future frames, so it cannot stream; "
            "export it without --streaming, or export a causal student"
        )
    spec = _Spec(module, params, model_state, config)
    graph = Graph()
    state = FlatState(graph)
    n_fft, hop, hidden = spec.n_fft, spec.hop, module.config.hidden
    delay = n_fft - hop
    history, pending = state.read("history", [delay]), state.read("pending", [delay])
    carry = []
    for index in range(module.config.layers):
        cell = state.read(f"lstm_{index}_c", [hidden])
        out = state.read(f"lstm_{index}_h", [hidden])
        carry.append(tuple(graph.op("Unsqueeze", x, graph.ints(0)) for x in (out, cell)))
    frame = graph.op("Concat", history, "samples", axis=1)  # [B, n_fft]
    analysis, synthesis = dft_kernels(spec.window)
    spectrum = graph.op("Unsqueeze", graph.dense(frame, analysis), graph.ints(0))  # [1, B, 2F]
    masked, states = spec.masked_spectrum(graph, spectrum, carry)
    synthesised = graph.dense(graph.op("Squeeze", masked, graph.ints(0)), synthesis)
    summed = graph.op("Add", graph.op("Pad", pending, graph.ints(0, 0, 0, hop)), synthesised)
    window_rows = np.pad(np.square(spec.window.astype(np.float64)), (0, -n_fft % hop))
    inverse_sum = 1.0 / window_rows.reshape(-1, hop).sum(axis=0)
    emitted = graph.op("Slice", summed, graph.ints(0), graph.ints(hop), graph.ints(1))
    graph.rename(graph.op("Mul", emitted, graph.const(inverse_sum)), "enhanced")
    state.write(
        "history", graph.op("Slice", frame, graph.ints(hop), graph.ints(n_fft), graph.ints(1))
    )
    state.write(
        "pending", graph.op("Slice", summed, graph.ints(hop), graph.ints(n_fft), graph.ints(1))
    )
    for index, (out, cell) in enumerate(states):
        state.write(f"lstm_{index}_h", graph.op("Squeeze", out, graph.ints(0)))
        state.write(f"lstm_{index}_c", graph.op("Squeeze", cell, graph.ints(0)))
    state.finish()
    return graph.model(
        [("samples", ["batch", hop]), ("state", ["batch", state.size])],
        [("enhanced", ["batch", hop]), ("state_out", ["batch", state.size])],
        spec.metadata("streaming")
        | state.metadata()
        | {"delay_samples": delay, "latency_samples": n_fft},
    )

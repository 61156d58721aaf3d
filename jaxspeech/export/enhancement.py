"""ONNX graphs of the mask-based enhancement systems (a loaded ``jaxspeech.load`` Enhancer).

* :func:`whole_file_model`: ``noisy [batch, samples] -> enhanced [batch, samples]``, what
  ``Enhancer.core.enhance`` computes (centred, reflect-padded STFT; ISTFT at the input
  length), for an LSTM, BLSTM or TCN mask net.
* :func:`streaming_model`: one hop in, one hop out, the state carried explicitly:
  ``(samples [batch, hop], state [batch, S]) -> (enhanced [batch, hop], state_out [batch, S])``,
  what ``jaxspeech.stream.StreamingEnhancer.process_hop`` computes (a causal LSTM). The state
  is one flat float32 row per stream, zeros at the start; its layout
  (``metadata_props["state_layout"]``, offsets along the last axis) is: ``history`` (the last
  ``n_fft − hop`` input samples), ``pending`` (overlap-added output not yet emitted,
  ``n_fft − hop``), then per LSTM layer ``lstm_<i>_c`` and ``lstm_<i>_h`` (``hidden`` each).
  The output lags the input by ``delay = n_fft − hop`` samples; to flush the last ones, feed
  ``ceil(delay / hop)`` hops of zeros.

The STFT is a strided convolution with the windowed DFT matrix (its inverse a transposed one),
the mask net ONNX ``LSTM`` nodes (bidirectional for the teachers) or the TCN of
``jaxspeech.export.separation``, so the graphs use only standard ONNX operators.
"""

from __future__ import annotations

import numpy as np

from jaxspeech import dsp
from jaxspeech.errors import ConfigError
from jaxspeech.export.graph import FlatState, Graph, centred_stft, dft_kernels, lstm_layer
from jaxspeech.export.separation import pointwise, prelu, tcn
from jaxspeech.models.masknet import LSTMMaskNet, TCNMaskNet

#: ``dsp.normalize``'s floor on the feature std.
_STD_FLOOR = 1e-5
#: ``dsp.istft``'s threshold below which the window sum is left as is.
_NOLA_TOLERANCE = 1e-10


class EnhancementSpec:
    """The STFT settings, feature statistics and mask net of a loaded Enhancer."""

    def __init__(self, model) -> None:
        core = model.core
        self.module, self.params = core.model, model.variables["params"]
        if not isinstance(self.module, LSTMMaskNet | TCNMaskNet):
            raise ConfigError(
                f"ONNX export of enhancement supports LSTM and TCN mask nets; this run's "
                f"estimator is {type(self.module).__name__}"
            )
        self.sample_rate, self.n_fft, self.hop = core.sample_rate, core.n_fft, core.hop
        self.window_name = core.window
        self.window = dsp.get_window(core.window, self.n_fft)
        self.log_floor = core.log_floor
        self.mean = np.asarray(model.model_state["feature_mean"], np.float32)
        std = np.asarray(model.model_state["feature_std"])
        self.inverse_std = 1.0 / np.maximum(std, _STD_FLOOR)
        self.n_freqs = core.n_freqs

    def metadata(self, graph: str) -> dict:
        config = self.module.config
        if isinstance(self.module, TCNMaskNet):
            mask_net = {"kind": "tcn", "norm": config.tcn.norm_kind, "causal": config.tcn.causal}
        else:
            mask_net = {"kind": "blstm" if config.bidirectional else "lstm"}
            mask_net |= {"hidden": config.hidden, "layers": config.layers}
        return {
            "system": "enhancement",
            "graph": graph,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "window": self.window_name,
            "mask_net": mask_net,
        }

    def causal_lstm(self):
        """The mask net's ``LSTMMaskNetConfig``; ConfigError unless it is a causal LSTM."""
        if isinstance(self.module, TCNMaskNet):
            raise ConfigError(
                "streaming export supports causal LSTM mask nets; this run's mask net is a "
                "TCN, so export it without --streaming"
            )
        if self.module.config.bidirectional:
            raise ConfigError(
                "a bidirectional LSTM mask net looks at future frames, so it cannot stream; "
                "export it without --streaming, or export a causal student"
            )
        return self.module.config

    def split(self, graph: Graph, spec: str) -> list[str]:
        """The real and imaginary parts ``[..., F]`` of ``spec [..., 2F]``."""
        return graph.op("Split", spec, graph.ints(self.n_freqs, self.n_freqs), axis=-1, outputs=2)

    def mask(self, graph: Graph, real: str, imag: str, carry=None):
        """The mask net's mask ``[T, B, F]`` of the spectrum ``real, imag [T, B, F]`` and, for
        an LSTM, each layer's final ``(h, c)`` ``[D, B, H]``. ``carry``: each LSTM layer's
        initial ``(h, c)`` ``[1, B, H]``, or None for zeros."""
        power = graph.op("Add", graph.op("Mul", real, real), graph.op("Mul", imag, imag))
        log_mag = graph.op(
            "Log", graph.op("Add", graph.op("Sqrt", power), graph.const(self.log_floor))
        )
        x = graph.op(
            "Mul", graph.op("Sub", log_mag, graph.const(self.mean)), graph.const(self.inverse_std)
        )
        if isinstance(self.module, TCNMaskNet):
            return self._tcn_mask(graph, x), []
        return lstm_mask_net(graph, x, self.module.config, self.params, carry)

    def _tcn_mask(self, graph: Graph, x: str) -> str:
        x = graph.op("Transpose", x, perm=[1, 2, 0])  # [B, F, T]
        x = tcn(graph, x, self.params["tcn"], self.module.config.tcn)
        x = prelu(graph, x, self.params["mask_prelu"]["negative_slope"])
        head = self.params["mask"]
        mask = graph.op("Sigmoid", pointwise(graph, x, head["kernel"], head["bias"]))
        return graph.op("Transpose", mask, perm=[2, 0, 1])  # [T, B, F]


def lstm_mask_net(graph: Graph, x: str, config, params, carry=None):
    """An ``LSTMMaskNet`` (``config``: its ``LSTMMaskNetConfig``, ``params`` its params) over
    time-major ``x [T, B, in]``: the sigmoid mask ``[T, B, out]`` and each layer's final
    ``(h, c)`` ``[D, B, H]``; ``carry``: each layer's initial ``(h, c)`` ``[1, B, H]``, or
    None for zeros."""
    prefix = "blstm" if config.bidirectional else "lstm"
    states = []
    for index in range(config.layers):
        initial = None if carry is None else carry[index]
        x, h, c = lstm_layer(graph, x, params[f"{prefix}_{index}"], initial)
        states.append((h, c))
    head = params["mask"]
    return graph.op("Sigmoid", graph.dense(x, head["kernel"], head["bias"])), states


def times_mask(graph: Graph, real: str, imag: str, mask: str) -> str:
    """The masked spectrum ``[..., 2F]`` (real parts, then imaginary) of ``real, imag`` and
    ``mask``, each ``[..., F]``: the noisy phase kept, as ``masks.apply_mask``."""
    return graph.op("Concat", graph.op("Mul", real, mask), graph.op("Mul", imag, mask), axis=-1)


def istft(graph: Graph, masked: str, window, hop: int, start: int, like: str, name: str) -> str:
    """``dsp.istft`` of ``masked [B, 2F, N]`` (real parts, then imaginary) as the output
    ``name [B, samples]``: the weighted overlap-add from sample ``start`` on, as long as the
    input ``like [B, samples]`` (zero-padded where the frames end before it)."""
    _, synthesis = dft_kernels(window)
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
        "ConvTranspose", ones, graph.const(np.square(window)[None, None]), strides=[hop]
    )
    covered = graph.op("Greater", window_sum, graph.const(_NOLA_TOLERANCE))
    inverse_sum = graph.op(
        "Where",
        covered,
        graph.op("Reciprocal", graph.op("Max", window_sum, graph.const(_NOLA_TOLERANCE))),
        graph.const(1.0),
    )
    signal = graph.op("Mul", overlapped, inverse_sum)
    signal = graph.op("Pad", signal, graph.ints(0, 0, 0, 0, 0, hop))
    end = graph.op("Add", graph.op("Shape", like, start=1, end=2), graph.ints(start))
    signal = graph.op("Slice", signal, graph.ints(start), end, graph.ints(2))
    return graph.rename(graph.op("Squeeze", signal, graph.ints(1)), name)


def read_carry(state: FlatState, prefix: str, layers: int, hidden: int) -> list:
    """Each LSTM layer's initial ``(h, c)`` ``[1, B, H]`` from the state parts
    ``<prefix>_<i>_c`` and ``<prefix>_<i>_h``."""
    graph, carry = state.graph, []
    for index in range(layers):
        cell = state.read(f"{prefix}_{index}_c", [hidden])
        out = state.read(f"{prefix}_{index}_h", [hidden])
        carry.append(tuple(graph.op("Unsqueeze", x, graph.ints(0)) for x in (out, cell)))
    return carry


def write_carry(state: FlatState, prefix: str, states) -> None:
    """Writes each LSTM layer's final ``(h, c)`` ``[1, B, H]`` (as :func:`read_carry` reads)."""
    graph = state.graph
    for index, (out, cell) in enumerate(states):
        state.write(f"{prefix}_{index}_h", graph.op("Squeeze", out, graph.ints(0)))
        state.write(f"{prefix}_{index}_c", graph.op("Squeeze", cell, graph.ints(0)))


def stream_step(spec: EnhancementSpec, state: FlatState, frame_mask) -> dict:
    """One ``StreamingEnhancer._hop_step`` on the input ``samples [B, hop]``: reads the state
    parts ``history`` and ``pending`` (``n_fft − hop`` each), masks the frame's spectrum with
    ``frame_mask(real, imag) -> mask`` (each ``[1, B, F]``; it reads and writes its own state
    parts), writes the output ``enhanced [B, hop]``, the new history and pending, and
    ``state_out``. Returns the stream's metadata (state layout, delay, latency)."""
    graph = state.graph
    n_fft, hop = spec.n_fft, spec.hop
    delay = n_fft - hop
    history, pending = state.read("history", [delay]), state.read("pending", [delay])
    frame = graph.op("Concat", history, "samples", axis=1)  # [B, n_fft]
    analysis, synthesis = dft_kernels(spec.window)
    spectrum = graph.op("Unsqueeze", graph.dense(frame, analysis), graph.ints(0))  # [1, B, 2F]
    real, imag = spec.split(graph, spectrum)
    masked = times_mask(graph, real, imag, frame_mask(real, imag))
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
    state.finish()
    return state.metadata() | {"delay_samples": delay, "latency_samples": n_fft}


def whole_file_model(model):
    """The ``ModelProto`` of ``model.core.enhance`` (``model``: a loaded Enhancer):
    ``noisy [batch, samples]`` (float32 at the model's rate, more than ``n_fft / 2`` samples)
    ``-> enhanced [batch, samples]``."""
    spec = EnhancementSpec(model)
    graph = Graph()
    hop, pad = spec.hop, spec.n_fft // 2
    frames = centred_stft(graph, "noisy", spec.window, hop)  # [B, 2F, N]
    real, imag = spec.split(graph, graph.op("Transpose", frames, perm=[2, 0, 1]))  # [N, B, F]
    mask, _ = spec.mask(graph, real, imag)
    masked = graph.op("Transpose", times_mask(graph, real, imag, mask), perm=[1, 2, 0])
    istft(graph, masked, spec.window, hop, pad, "noisy", "enhanced")
    return graph.model(
        [("noisy", ["batch", "samples"])],
        [("enhanced", ["batch", "samples"])],
        spec.metadata("whole_file") | {"min_samples": pad + 1},
    )


def streaming_model(model):
    """The ``ModelProto`` of one ``StreamingEnhancer.process_hop`` of a loaded Enhancer
    (module docstring): ``(samples [batch, hop], state [batch, S]) -> (enhanced [batch, hop],
    state_out [batch, S])``. Raises ConfigError unless the mask net is a causal LSTM."""
    spec = EnhancementSpec(model)
    config = spec.causal_lstm()
    graph = Graph()
    state = FlatState(graph)

    def lstm_mask(real: str, imag: str) -> str:
        carry = read_carry(state, "lstm", config.layers, config.hidden)
        mask, states = spec.mask(graph, real, imag, carry)
        write_carry(state, "lstm", states)
        return mask

    stream_metadata = stream_step(spec, state, lstm_mask)
    hop = spec.hop
    return graph.model(
        [("samples", ["batch", hop]), ("state", ["batch", state.size])],
        [("enhanced", ["batch", hop]), ("state_out", ["batch", state.size])],
        spec.metadata("streaming") | stream_metadata,
    )

"""A small ONNX graph builder and the layers the exported systems share (STFT as a strided
convolution, LSTM stacks, dense layers), written from the trained params with the ``onnx``
helper API.

Every tensor is float32 unless said otherwise. Shapes in comments use ONNX's axis order.
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

import jaxspeech
from jaxspeech.errors import MissingExtraError

#: ONNX opset of every exported graph (LSTM, Pad with reflect, Slice and CumSum as needed).
OPSET = 17


def require_onnx():
    """The ``onnx`` module, or a MissingExtraError naming the extra to install."""
    try:
        return importlib.import_module("onnx")
    except ImportError as err:
        raise MissingExtraError(
            'exporting needs the "export" extra: pip install "jaxspeech[export]"'
        ) from err


class Graph:
    """Nodes and constant initialisers of one ONNX graph; ``op`` returns output names."""

    def __init__(self) -> None:
        self.onnx = require_onnx()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._ids = itertools.count()

    def name(self, stem: str) -> str:
        return f"{stem}_{next(self._ids)}"

    def const(self, value, dtype=np.float32) -> str:
        """A constant initialiser holding ``value`` (float32 unless ``dtype``)."""
        name = self.name("const")
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, *values: int) -> str:
        """A constant int64 vector (shapes, axes, pads, slice bounds)."""
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        """Appends one node; returns its output name, or a list of ``outputs`` names."""
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def rename(self, tensor: str, name: str) -> str:
        """Gives ``tensor`` the public name ``name`` (an Identity node)."""
        self.nodes.append(self.onnx.helper.make_node("Identity", [tensor], [name]))
        return name

    def dense(self, x: str, kernel, bias=None) -> str:
        """``x [..., in] @ kernel [in, out] + bias``."""
        y = self.op("MatMul", x, self.const(kernel))
        return y if bias is None else self.op("Add", y, self.const(bias))

    def model(
        self,
        inputs: Sequence[tuple[str, Sequence[int | str]]],
        outputs: Sequence[tuple[str, Sequence[int | str]]],
        metadata: dict[str, Any],
    ):
        """The checked ``ModelProto``: named float32 inputs and outputs (shape entries are
        sizes or symbolic names) and ``metadata`` (values JSON-encoded unless strings) in
        ``metadata_props``, with the jaxspeech version and the input/output shapes added."""
        helper, float32 = self.onnx.helper, self.onnx.TensorProto.FLOAT
        graph = helper.make_graph(
            self.nodes,
            "jaxspeech",
            [helper.make_tensor_value_info(n, float32, list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(n, float32, list(s)) for n, s in outputs],
            self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="jaxspeech",
            producer_version=jaxspeech.__version__,
        )
        model.ir_version = 8  # readable by ONNX Runtime 1.14 and later
        metadata = {
            "jaxspeech_version": jaxspeech.__version__,
            "inputs": {n: list(s) for n, s in inputs},
            "outputs": {n: list(s) for n, s in outputs},
            **metadata,
        }
        helper.set_model_props(
            model, {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
        )
        self.onnx.checker.check_model(model, full_check=True)
        return model


def read_metadata(model) -> dict[str, Any]:
    """``metadata_props`` of an exported ``ModelProto`` as a dict, JSON values decoded (the
    strings written as they are stay strings)."""
    info = {}
    for prop in model.metadata_props:
        try:
            info[prop.key] = json.loads(prop.value)
        except ValueError:
            info[prop.key] = prop.value
    return info


def dft_kernels(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windowed real DFT and its windowed inverse as matrices, for ``n_fft = len(window)``.

    Returns ``analysis [n_fft, 2F]`` (``frame @ analysis`` is ``[Re X, Im X]`` of
    ``rfft(frame · window)``) and ``synthesis [2F, n_fft]`` (``[Re, Im] @ synthesis`` is
    ``irfft(X) · window``, the imaginary parts of DC and Nyquist ignored as numpy does).
    """
    n_fft = window.size
    n = np.arange(n_fft)[:, None]
    k = np.arange(n_fft // 2 + 1)[None, :]
    phase = 2.0 * np.pi * n * k / n_fft  # [n_fft, F]
    w = window.astype(np.float64)[:, None]
    analysis = np.concatenate([np.cos(phase) * w, -np.sin(phase) * w], axis=1)
    weight = np.full(k.shape[1], 2.0)
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    synthesis = np.concatenate([np.cos(phase) * weight, -np.sin(phase) * weight], axis=1) / n_fft
    return analysis.astype(np.float32), (synthesis * w).T.astype(np.float32)


def centred_stft(graph: Graph, wav: str, window: np.ndarray, hop: int) -> str:
    """``dsp.stft`` (``center=True``: reflect-padded by ``n_fft // 2``) of ``wav [B, T]`` with
    the ``window`` of ``n_fft`` taps, as ``[B, 2F, frames]`` (real parts, then imaginary): a
    strided ``Conv`` with the windowed DFT matrix."""
    pad = window.size // 2
    wav = graph.op("Unsqueeze", wav, graph.ints(1))  # [B, 1, T]
    padded = graph.op("Pad", wav, graph.ints(0, 0, pad, 0, 0, pad), mode="reflect")
    analysis, _ = dft_kernels(window)
    return graph.op("Conv", padded, graph.const(analysis.T[:, None]), strides=[hop])


def lstm_weights(kernel_in, bias_in, recurrent):
    """ONNX ``W [D, 4H, in]``, ``R [D, 4H, H]``, ``B [D, 8H]`` (gates i, o, f, c) from
    jaxspeech's input kernel ``[in, D, 4H]``, bias ``[D, 4H]`` and recurrent ``[D, H, 4H]``
    (gates i, f, g, o; ``D`` directions)."""
    hidden = recurrent.shape[-2]
    i, f, g, o = (np.arange(hidden) + gate * hidden for gate in range(4))
    order = np.concatenate([i, o, f, g])
    w = np.transpose(np.asarray(kernel_in)[..., order], (1, 2, 0))
    r = np.transpose(np.asarray(recurrent)[..., order], (0, 2, 1))
    b = np.asarray(bias_in)[..., order]
    return w, r, np.concatenate([b, np.zeros_like(b)], axis=-1)


def lstm_layer(graph: Graph, x: str, layer_params, initial=None) -> tuple[str, str, str]:
    """One jaxspeech ``LSTM`` or ``BLSTM`` layer (``jaxspeech.models.rnn``) over time-major
    ``x [T, B, in]``; ``initial``: ``(h, c)`` names, each ``[1, B, H]``, or None for zeros.

    Returns ``(y [T, B, D·H], h [D, B, H], c [D, B, H])``, the directions concatenated as
    jaxspeech does (forward first).
    """
    kernel = np.asarray(layer_params["input"]["kernel"])
    bias = np.asarray(layer_params["input"]["bias"])
    recurrent = np.asarray(layer_params["recurrent"])
    if kernel.ndim == 2:  # one direction
        kernel, bias, recurrent = kernel[:, None], bias[None], recurrent[None]
    directions, hidden = recurrent.shape[0], recurrent.shape[1]
    w, r, b = lstm_weights(kernel, bias, recurrent)
    state = ["", *initial] if initial is not None else []  # no sequence_lens
    y, h, c = graph.op(
        "LSTM",
        x,
        graph.const(w),
        graph.const(r),
        graph.const(b),
        *state,
        outputs=3,
        hidden_size=hidden,
        direction="bidirectional" if directions == 2 else "forward",
    )
    y = graph.op("Transpose", y, perm=[0, 2, 1, 3])  # [T, B, D, H]
    return graph.op("Reshape", y, graph.ints(0, 0, directions * hidden)), h, c


class FlatState:
    """The state of a streaming graph as one flat float32 tensor ``state [batch, S]`` in and
    ``state_out [batch, S]`` out; parts are laid out in the order they are first read.

    ``read(name, shape)`` slices part ``name`` ``[batch, *shape]`` out of the input state;
    ``write(name, tensor)`` gives its new value; ``finish()`` concatenates the new values
    (every part read must be written) into ``state_out``. ``layout`` maps each part to its
    ``{"offset": [start, end], "shape": shape}`` along the state's last axis.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.layout: dict[str, dict] = {}
        self.size = 0
        self._new: dict[str, str] = {}

    def read(self, name: str, shape: Sequence[int]) -> str:
        graph, size = self.graph, int(np.prod(shape))
        self.layout[name] = {"offset": [self.size, self.size + size], "shape": list(shape)}
        part = graph.op(
            "Slice", "state", graph.ints(self.size), graph.ints(self.size + size), graph.ints(1)
        )
        self.size += size
        return part if len(shape) == 1 else graph.op("Reshape", part, graph.ints(0, *shape))

    def write(self, name: str, tensor: str) -> None:
        self._new[name] = self.graph.op("Reshape", tensor, self.graph.ints(0, -1))

    def finish(self) -> str:
        missing = set(self.layout) - set(self._new)
        if missing:
            raise AssertionError(f"state parts read but never written: {sorted(missing)}")
        parts = [self._new[name] for name in self.layout]
        return self.graph.rename(self.graph.op("Concat", *parts, axis=1), "state_out")

    def metadata(self) -> dict:
        return {"state_shape": ["batch", self.size], "state_layout": self.layout}

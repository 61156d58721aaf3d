"""ONNX graph of the speaker embedder (``jaxspeech.models.speaker``):
``wav [batch, samples] -> embedding [batch, embed_dim]``, each row a whole recording (no
padding), as ``Task.embed(params, model_state, wav, lengths=samples)``.

Front end: pre-emphasis, the centred STFT as a strided ``Conv`` with the windowed DFT matrix,
mel filters as a ``MatMul``, log, mean removal over the valid frames (``valid_frames``).
The ResNet runs in ``[batch, channels, time, freq]`` with every batch norm (running averages)
folded into its convolution; frames past the valid ones are zeroed after every ReLU as in JAX.
"""

from __future__ import annotations

import numpy as np

from jaxspeech import dsp
from jaxspeech.export.graph import Graph, centred_stft
from jaxspeech.models.speaker import _STD_FLOOR, SpeakerNet, fbank_geometry

_PREEMPHASIS, _LOG_FLOOR, _F_MIN = 0.97, 1e-6, 20.0  # dsp.fbank's defaults, as features uses
_BN_EPSILON = 1e-5


def _conv_bn(graph: Graph, x: str, conv, norm, stats, stride: int) -> str:
    """Flax ``Conv`` (``kernel [kh, kw, in, out]``, no bias, padding ``k // 2``) then
    ``BatchNorm`` with running averages, folded into one ``Conv`` of ``x [B, C, T, F]``."""
    kernel = np.asarray(conv["kernel"], np.float64)
    scale = np.asarray(norm["scale"]) / np.sqrt(np.asarray(stats["var"]) + _BN_EPSILON)
    weight = (kernel * scale).transpose(3, 2, 0, 1)
    bias = np.asarray(norm["bias"]) - np.asarray(stats["mean"]) * scale
    pad = kernel.shape[0] // 2
    return graph.op(
        "Conv",
        x,
        graph.const(weight),
        graph.const(bias),
        strides=[stride, stride],
        pads=[pad, pad, pad, pad],
    )


def _masked_relu(graph: Graph, x: str, keep: str) -> str:
    return graph.op("Mul", graph.op("Relu", x), keep)


def _keep(graph: Graph, mask: str) -> str:
    """``mask [T]`` (float 0/1) as ``[1, 1, T, 1]``."""
    return graph.op("Unsqueeze", mask, graph.ints(0, 1, 3))


def _features(graph: Graph, cfg, sample_rate: int) -> tuple[str, str]:
    """``(feats [B, T, n_mels], mask [T])`` of the graph input ``wav`` (float mask)."""
    n_fft, hop = fbank_geometry(cfg, sample_rate)
    win = round(sample_rate * cfg.frame_length_ms / 1000)
    previous = graph.op(
        "Concat",
        graph.op("Slice", "wav", graph.ints(0), graph.ints(1), graph.ints(1)),
        graph.op("Slice", "wav", graph.ints(0), graph.ints(-1), graph.ints(1)),
        axis=1,
    )
    wav = graph.op("Sub", "wav", graph.op("Mul", previous, graph.const(_PREEMPHASIS)))
    pad = n_fft // 2
    spectrum = centred_stft(graph, wav, dsp.get_window("hann", n_fft, win), hop)
    squared = graph.op("Transpose", graph.op("Mul", spectrum, spectrum), perm=[0, 2, 1])
    real, imag = graph.op(
        "Split", squared, graph.ints(n_fft // 2 + 1, n_fft // 2 + 1), axis=2, outputs=2
    )
    filters = dsp.mel_filterbank(n_fft // 2 + 1, cfg.n_mels, sample_rate, _F_MIN)
    energy = graph.dense(graph.op("Add", real, imag), np.asarray(filters))
    feats = graph.op("Log", graph.op("Max", energy, graph.const(_LOG_FLOOR)))  # [B, T, M]
    samples = graph.op("Shape", "wav", start=1, end=2)
    valid = graph.op(
        "Add",
        graph.op("Div", graph.op("Sub", samples, graph.ints(pad)), graph.ints(hop)),
        graph.ints(1),
    )
    frames = graph.op("Shape", feats, start=1, end=2)
    index = graph.op(
        "Range",
        graph.op("Squeeze", graph.ints(0), graph.ints(0)),
        graph.op("Squeeze", frames, graph.ints(0)),
        graph.op("Squeeze", graph.ints(1), graph.ints(0)),
    )
    mask = graph.op("Cast", graph.op("Less", index, valid), to=1)  # [T]
    weights = graph.op("Unsqueeze", mask, graph.ints(0, 2))  # [1, T, 1]
    total = graph.op("ReduceSum", graph.op("Mul", feats, weights), graph.ints(1), keepdims=1)
    count = graph.op(
        "Max", graph.op("ReduceSum", weights, graph.ints(1), keepdims=1), graph.const(1.0)
    )
    centred = graph.op("Sub", feats, graph.op("Div", total, count))
    return graph.op("Mul", centred, weights), mask


def speaker_model(module: SpeakerNet, params, batch_stats, sample_rate: int):
    """The ``ModelProto`` of the embedder: ``wav [batch, samples]`` (float32 at
    ``sample_rate``, more than half an FFT window) ``-> embedding [batch, embed_dim]``.
    ``params``, ``batch_stats``: the net's (``params["net"]`` and
    ``model_state["batch_stats"]`` of the speaker task)."""
    cfg = module.cfg
    graph = Graph()
    feats, mask = _features(graph, cfg, sample_rate)
    x = graph.op("Unsqueeze", feats, graph.ints(1))  # [B, 1, T, M]
    keep = _keep(graph, mask)
    x = _masked_relu(
        graph,
        _conv_bn(graph, x, params["Conv_0"], params["BatchNorm_0"], batch_stats["BatchNorm_0"], 1),
        keep,
    )
    block = 0
    for stage, count in enumerate(cfg.blocks):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            if stride == 2:
                mask = graph.op(
                    "Slice", mask, graph.ints(0), graph.ints(2**62), graph.ints(0), graph.ints(2)
                )
                keep = _keep(graph, mask)
            p, s = params[f"BasicBlock_{block}"], batch_stats[f"BasicBlock_{block}"]
            out = _conv_bn(graph, x, p["Conv_0"], p["BatchNorm_0"], s["BatchNorm_0"], stride)
            out = _masked_relu(graph, out, keep)
            out = _conv_bn(graph, out, p["Conv_1"], p["BatchNorm_1"], s["BatchNorm_1"], 1)
            shortcut = x
            if "Conv_2" in p:
                shortcut = _conv_bn(
                    graph, x, p["Conv_2"], p["BatchNorm_2"], s["BatchNorm_2"], stride
                )
            x = _masked_relu(graph, graph.op("Add", out, shortcut), keep)
            block += 1
    x = graph.op("Transpose", x, perm=[0, 2, 3, 1])  # [B, T', F', C]
    x = graph.op("Reshape", x, graph.ints(0, 0, -1))  # [B, T', F'·C]
    pool = params["AttentiveStatsPool_0"]
    hidden = graph.op("Tanh", graph.dense(x, pool["Dense_0"]["kernel"], pool["Dense_0"]["bias"]))
    logits = graph.dense(hidden, pool["Dense_1"]["kernel"], pool["Dense_1"]["bias"])
    valid = graph.op("Cast", graph.op("Unsqueeze", mask, graph.ints(0, 2)), to=9)  # [1, T', 1]
    logits = graph.op("Where", valid, logits, graph.const(-np.inf))
    alpha = graph.op("Where", valid, graph.op("Softmax", logits, axis=1), graph.const(0.0))
    axis = graph.ints(1)
    mean = graph.op("ReduceSum", graph.op("Mul", alpha, x), axis, keepdims=0)
    power = graph.op("ReduceSum", graph.op("Mul", alpha, graph.op("Mul", x, x)), axis, keepdims=0)
    variance = graph.op("Sub", power, graph.op("Mul", mean, mean))
    std = graph.op("Sqrt", graph.op("Max", variance, graph.const(_STD_FLOOR)))
    stats = graph.op("Concat", mean, std, axis=1)
    head = params["Dense_0"]
    graph.rename(graph.dense(stats, head["kernel"], head["bias"]), "embedding")
    n_fft, _ = fbank_geometry(cfg, sample_rate)
    return graph.model(
        [("wav", ["batch", "samples"])],
        [("embedding", ["batch", cfg.embed_dim])],
        {
            "system": "speaker",
            "graph": "whole_file",
            "sample_rate": sample_rate,
            "embed_dim": cfg.embed_dim,
            "min_samples": n_fft // 2 + 1,
        },
    )

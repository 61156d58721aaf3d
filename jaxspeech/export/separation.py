"""ONNX graph of Conv-TasNet (``jaxspeech.models.tasnet``):
``mixture [batch, samples] -> sources [batch, n_src, samples]``.

Sequences are channels-first in the graph (``[batch, channels, frames]``), so that the
encoder is a strided ``Conv``, every 1×1 convolution a ``Conv`` of width 1, the depthwise
dilated convolution a grouped ``Conv`` and the decoder a ``ConvTranspose``; the norms are
reductions (gLN, chanLN) or running sums (cLN, ``CumSum``).
"""

from __future__ import annotations

import numpy as np

from jaxspeech.export.graph import Graph
from jaxspeech.models.tasnet import ConvTasNet
from jaxspeech.models.tcn_layers import EPS, left_pad


def pointwise(graph: Graph, x: str, kernel, bias) -> str:
    """1×1 convolution of ``x [B, C_in, K]`` with a Dense ``kernel [C_in, C_out]``, ``bias``."""
    weight = np.asarray(kernel).T[:, :, None]
    return graph.op("Conv", x, graph.const(weight), graph.const(bias))


def prelu(graph: Graph, x: str, slope) -> str:
    return graph.op("PRelu", x, graph.const(np.reshape(np.asarray(slope), (1,))))


def sequence_norm(graph: Graph, x: str, kind: str, gamma, beta) -> str:
    """gLN / cLN / chanLN (``jaxspeech.models.tcn_layers``) of ``x [B, C, K]`` with gain and
    bias ``[C]``."""
    if kind == "gLN":
        mean = graph.op("ReduceMean", x, axes=[1, 2])
        centred = graph.op("Sub", x, mean)
        variance = graph.op("ReduceMean", graph.op("Mul", centred, centred), axes=[1, 2])
    elif kind == "chanLN":
        mean = graph.op("ReduceMean", x, axes=[1])
        centred = graph.op("Sub", x, mean)
        variance = graph.op("ReduceMean", graph.op("Mul", centred, centred), axes=[1])
    else:  # cLN: statistics of every channel of frames 0..t
        channels = np.asarray(gamma).size
        frames = graph.op("Shape", x, start=2, end=3)
        ones = graph.op(
            "ConstantOfShape",
            frames,
            value=graph.onnx.numpy_helper.from_array(np.ones(1, np.float32)),
        )
        count = graph.op("Mul", graph.op("CumSum", ones, graph.ints(0)), graph.const(channels))
        axis = graph.ints(2)
        total = graph.op("CumSum", graph.op("ReduceSum", x, graph.ints(1)), axis)
        power = graph.op(
            "CumSum", graph.op("ReduceSum", graph.op("Mul", x, x), graph.ints(1)), axis
        )
        mean = graph.op("Div", total, count)
        square = graph.op("Sub", graph.op("Div", power, count), graph.op("Mul", mean, mean))
        variance = graph.op("Max", square, graph.const(0.0))
        centred = graph.op("Sub", x, mean)
    inverse_std = graph.op(
        "Reciprocal", graph.op("Sqrt", graph.op("Add", variance, graph.const(EPS)))
    )
    normalised = graph.op("Mul", centred, inverse_std)
    scaled = graph.op("Mul", normalised, graph.const(np.asarray(gamma)[:, None]))
    return graph.op("Add", scaled, graph.const(np.asarray(beta)[:, None]))


def depthwise(graph: Graph, x: str, kernel, bias, dilation: int, causal: bool) -> str:
    """Dilated depthwise convolution of ``x [B, H, K]`` with ``kernel [P, H]`` and zero
    padding as ``tcn_layers.depthwise_conv1d`` (all on the left when ``causal``)."""
    taps, hidden = np.asarray(kernel).shape
    total = (taps - 1) * dilation
    before = left_pad(taps, dilation, causal)
    return graph.op(
        "Conv",
        x,
        graph.const(np.asarray(kernel).T[:, None, :]),
        graph.const(bias),
        group=hidden,
        dilations=[dilation],
        pads=[before, total - before],
    )


def tcn(graph: Graph, x: str, params, config) -> str:
    """``TemporalConvNet`` of ``x [B, C_in, K]``: the skip sum ``[B, Sc, K]`` (or the residual
    stream ``[B, B_ch, K]`` without skip convs)."""
    norm = config.norm_kind
    x = sequence_norm(graph, x, norm, params["input_norm"]["gamma"], params["input_norm"]["beta"])
    stream = pointwise(graph, x, params["bottleneck"]["kernel"], params["bottleneck"]["bias"])
    skip_sum = None
    for index in range(config.repeats * config.blocks):
        block = params[f"block_{index}"]
        h = pointwise(graph, stream, block["in_conv"]["kernel"], block["in_conv"]["bias"])
        h = prelu(graph, h, block["in_prelu"]["negative_slope"])
        h = sequence_norm(graph, h, norm, block["in_norm"]["gamma"], block["in_norm"]["beta"])
        dilation = 2 ** (index % config.blocks)
        dw = block["depthwise"]
        h = depthwise(graph, h, dw["kernel"], dw["bias"], dilation, config.causal)
        h = prelu(graph, h, block["depthwise_prelu"]["negative_slope"])
        h = sequence_norm(graph, h, norm, block["out_norm"]["gamma"], block["out_norm"]["beta"])
        residual = pointwise(
            graph, h, block["residual_conv"]["kernel"], block["residual_conv"]["bias"]
        )
        stream = graph.op("Add", stream, residual)
        if config.skip_channels:
            skip = pointwise(graph, h, block["skip_conv"]["kernel"], block["skip_conv"]["bias"])
            skip_sum = skip if skip_sum is None else graph.op("Add", skip_sum, skip)
    return skip_sum if config.skip_channels else stream


def convtasnet_model(module: ConvTasNet, params, sample_rate: int):
    """The ``ModelProto`` of ``ConvTasNet.apply``: ``mixture [batch, samples]`` (float32, at
    least ``filter_length`` samples) ``-> sources [batch, n_src, samples]``."""
    config = module.config
    graph = Graph()
    length, n_filters, n_src = config.filter_length, config.n_filters, config.n_src
    hop = length // 2
    wav = graph.op("Unsqueeze", "mixture", graph.ints(1))  # [B, 1, T]
    encoder = np.asarray(params["encoder_filters"]).T[:, None, :]  # [N, 1, L]
    rep = graph.op("Conv", wav, graph.const(encoder), strides=[hop])  # [B, N, K]
    features = tcn(graph, rep, params["tcn"], config.tcn)
    features = prelu(graph, features, params["mask_prelu"]["negative_slope"])
    scores = pointwise(graph, features, params["mask_conv"]["kernel"], params["mask_conv"]["bias"])
    scores = graph.op("Reshape", scores, graph.ints(0, n_src, n_filters, -1))  # [B, S, N, K]
    if config.mask_activation == "softmax":
        masks = graph.op("Softmax", scores, axis=1)
    else:
        masks = graph.op({"sigmoid": "Sigmoid", "relu": "Relu"}[config.mask_activation], scores)
    masked = graph.op("Mul", masks, graph.op("Unsqueeze", rep, graph.ints(1)))
    frames = graph.op("Shape", rep, start=2, end=3)
    masked = graph.op(
        "Reshape", masked, graph.op("Concat", graph.ints(-1, n_filters), frames, axis=0)
    )  # [B·S, N, K]
    decoder = np.asarray(params["decoder_filters"])[:, None, :]  # [N, 1, L]
    wav_out = graph.op("ConvTranspose", masked, graph.const(decoder), strides=[hop])
    batch = graph.op("Shape", "mixture", start=0, end=1)
    wav_out = graph.op(
        "Reshape", wav_out, graph.op("Concat", batch, graph.ints(n_src, -1), axis=0)
    )  # [B, S, (K + 1)·hop]
    # The decoder's output is right-padded with zeros to the input length (fewer than a hop).
    wav_out = graph.op("Pad", wav_out, graph.ints(0, 0, 0, 0, 0, hop))
    samples = graph.op("Shape", "mixture", start=1, end=2)
    graph.rename(graph.op("Slice", wav_out, graph.ints(0), samples, graph.ints(2)), "sources")
    return graph.model(
        [("mixture", ["batch", "samples"])],
        [("sources", ["batch", n_src, "samples"])],
        {
            "system": "separation",
            "model": "convtasnet",
            "graph": "whole_file",
            "sample_rate": sample_rate,
            "n_src": n_src,
            "hop": hop,
            "min_samples": length,
            "causal": config.tcn.causal,
        },
    )

"""ONNX graph of Conv-TasNet (``jaxspeech.models.tasnet``):
``mixture [batch, samples] -> sources [batch, n_src, samples]``.

Sequences are channels-first in the graph (``[batch, channels, frames]``), so that the
encoder is a strided ``Conv``, every 1×1 convolution a ``Conv`` of width 1, the depthwise
dilated convolution a grouped ``Conv`` and the decoder a ``ConvTranspose``; the norms are
reductions (gLN, chanLN) or running sums (cLN, ``CumSum``).
"""

from __future__ import annotations

import numpy as np

from jaxspeech.errors import ConfigError
from jaxspeech.export.graph import FlatState, Graph
from jaxspeech.models.tasnet import ConvTasNet
from jaxspeech.models.tcn_layers import EPS, left_pad


def pointwise(graph: Graph, x: str, kernel, bias) -> str:
    """1×1 convolution of ``x [B, C_in, K]`` with a Dense ``kernel [C_in, C_out]``, ``bias``."""
    weight = np.asarray(kernel).T[:, :, None]
    return graph.op("Conv", x, graph.const(weight), graph.const(bias))


def prelu(graph: Graph, x: str, slope) -> str:
    """PReLU with one shared slope: ``LeakyRelu`` with the trained slope (ONNX Runtime's
    ``PRelu`` broadcasts a scalar slope several times slower)."""
    return graph.op("LeakyRelu", x, alpha=float(np.asarray(slope)))


def channel_mean(graph: Graph, x: str, channels: int) -> str:
    """Mean over the channels of ``x [B, C, K]``, ``[B, 1, K]``: a matrix product with a row
    of ``1/C`` (ONNX Runtime reduces a non-last axis several times slower)."""
    return graph.op("MatMul", graph.const(np.full((1, channels), 1.0 / channels)), x)


def sequence_norm(graph: Graph, x: str, kind: str, gamma, beta, stream=None, name="") -> str:
    """gLN / cLN / chanLN (``jaxspeech.models.tcn_layers``) of ``x [B, C, K]`` with gain and
    bias ``[C]``. With ``stream`` (:class:`_Stream`), cLN continues the running sums of the
    state part ``<name>_sums`` and leaves out the frames before the signal."""
    if kind == "gLN":
        mean = graph.op("ReduceMean", x, axes=[1, 2])
        centred = graph.op("Sub", x, mean)
        variance = graph.op("ReduceMean", graph.op("Mul", centred, centred), axes=[1, 2])
    elif kind == "chanLN":
        channels = np.asarray(gamma).size
        mean = channel_mean(graph, x, channels)
        centred = graph.op("Sub", x, mean)
        variance = channel_mean(graph, graph.op("Mul", centred, centred), channels)
    else:  # cLN: statistics of every channel of frames 0..t
        channels = np.asarray(gamma).size
        if stream is None:
            frames = graph.op("Shape", x, start=2, end=3)
            ones = graph.op("ConstantOfShape", frames, value=_one(graph))
            count = graph.op("CumSum", ones, graph.ints(0))
            sums = [channel_mean(graph, y, channels) for y in (x, graph.op("Mul", x, x))]
        else:
            count = graph.op("Max", stream.frames_so_far, graph.const(1.0))
            kept = graph.op("Mul", x, stream.valid)
            sums = [channel_mean(graph, y, channels) for y in (kept, graph.op("Mul", kept, x))]
        axis = graph.ints(2)
        total, power = (graph.op("CumSum", y, axis) for y in sums)  # [B, 1, K]
        if stream is not None:
            previous = stream.state.read(f"{name}_sums", [2, 1])  # [B, 2, 1]
            before = graph.op("Split", previous, graph.ints(1, 1), axis=1, outputs=2)
            total, power = (
                graph.op("Add", y, b) for y, b in zip((total, power), before, strict=True)
            )
            last = graph.op("Concat", total, power, axis=1)
            stream.state.write(
                f"{name}_sums", graph.op("Slice", last, graph.ints(-1), graph.ints(2**62), axis)
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


def _one(graph: Graph):
    return graph.onnx.numpy_helper.from_array(np.ones(1, np.float32))


def depthwise(
    graph: Graph, x: str, kernel, bias, dilation: int, causal: bool, stream=None, name=""
):
    """Dilated depthwise convolution of ``x [B, H, K]`` with ``kernel [P, H]`` and zero
    padding as ``tcn_layers.depthwise_conv1d`` (all on the left when ``causal``). With
    ``stream``, the left context is the state part ``<name>_history`` (the last
    ``(P − 1)·d`` inputs) instead of zeros."""
    taps, hidden = np.asarray(kernel).shape
    total = (taps - 1) * dilation
    before = left_pad(taps, dilation, causal)
    weight, bias = graph.const(np.asarray(kernel).T[:, None, :]), graph.const(bias)
    options = {"group": hidden, "dilations": [dilation]}
    if stream is None or total == 0:
        return graph.op("Conv", x, weight, bias, pads=[before, total - before], **options)
    history = stream.state.read(f"{name}_history", [hidden, total])
    context = graph.op("Concat", history, graph.op("Mul", x, stream.valid), axis=2)
    stream.state.write(
        f"{name}_history",
        graph.op("Slice", context, graph.ints(-total), graph.ints(2**62), graph.ints(2)),
    )
    return graph.op("Conv", context, weight, bias, pads=[0, 0], **options)


def tcn(graph: Graph, x: str, params, config, streaming=None) -> str:
    """``TemporalConvNet`` of ``x [B, C_in, K]``: the skip sum ``[B, Sc, K]`` (or the residual
    stream ``[B, B_ch, K]`` without skip convs); ``streaming``: see :class:`_Stream`."""
    norm = config.norm_kind

    def normalise(y, layer, name):
        return sequence_norm(graph, y, norm, layer["gamma"], layer["beta"], streaming, name)

    x = normalise(x, params["input_norm"], "input_norm")
    stream = pointwise(graph, x, params["bottleneck"]["kernel"], params["bottleneck"]["bias"])
    skip_sum, bottleneck = None, config.bottleneck_channels
    for index in range(config.repeats * config.blocks):
        block = params[f"block_{index}"]
        h = pointwise(graph, stream, block["in_conv"]["kernel"], block["in_conv"]["bias"])
        h = prelu(graph, h, block["in_prelu"]["negative_slope"])
        h = normalise(h, block["in_norm"], f"block_{index}_in_norm")
        dilation = 2 ** (index % config.blocks)
        dw = block["depthwise"]
        h = depthwise(
            graph, h, dw["kernel"], dw["bias"], dilation, config.causal, streaming, f"block_{index}"
        )
        h = prelu(graph, h, block["depthwise_prelu"]["negative_slope"])
        h = normalise(h, block["out_norm"], f"block_{index}_out_norm")
        convs = [block["residual_conv"]] + ([block["skip_conv"]] if config.skip_channels else [])
        kernel = np.concatenate([np.asarray(conv["kernel"]) for conv in convs], axis=1)
        out = pointwise(graph, h, kernel, np.concatenate([conv["bias"] for conv in convs]))
        if config.skip_channels:  # residual and skip conv in one, as jaxspeech runs them
            residual, skip = graph.op(
                "Split", out, graph.ints(bottleneck, config.skip_channels), axis=1, outputs=2
            )
            skip_sum = skip if skip_sum is None else graph.op("Add", skip_sum, skip)
        else:
            residual = out
        stream = graph.op("Add", stream, residual)
    return skip_sum if config.skip_channels else stream


class _Stream:
    """What the streaming TCN layers share within one call: the flat ``state`` and, for the
    call's ``K`` frames, ``valid [B, 1, K]`` (1 for frames of the signal, 0 for the frame
    ``[−L/2, L/2)`` that the zero encoder history makes, which whole-file Conv-TasNet has not)
    and ``frames_so_far [B, 1, K]`` (signal frames seen up to each, inclusive)."""

    def __init__(self, graph: Graph, frames: int) -> None:
        self.state = FlatState(graph)
        # Encoder frames emitted before this call, the frame before the signal included;
        # float32 counts every frame exactly up to 2**24.
        emitted = graph.op("Unsqueeze", self.state.read("frames", [1]), graph.ints(2))  # [B,1,1]
        self.state.write("frames", graph.op("Add", emitted, graph.const(float(frames))))
        self.frames_so_far = graph.op(
            "Add", emitted, graph.const(np.arange(frames, dtype=np.float32)[None, None])
        )
        self.valid = graph.op(
            "Cast", graph.op("GreaterOrEqual", self.frames_so_far, graph.const(1.0)), to=1
        )


def _sources(graph: Graph, rep: str, params, config, streaming=None) -> str:
    """The decoded sources ``[B, n_src, (K + 1)·hop]`` of the encoder output ``rep [B, N, K]``
    before any trimming: TCN, PReLU, mask conv and activation, masking, decoder."""
    n_src, n_filters = config.n_src, config.n_filters
    features = tcn(graph, rep, params["tcn"], config.tcn, streaming)
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
    wav = graph.op(
        "ConvTranspose", masked, graph.const(decoder), strides=[config.filter_length // 2]
    )
    batch = graph.op("Shape", rep, start=0, end=1)
    return graph.op("Reshape", wav, graph.op("Concat", batch, graph.ints(n_src, -1), axis=0))


def _metadata(config, graph_kind: str, sample_rate: int) -> dict:
    return {
        "system": "separation",
        "model": "convtasnet",
        "graph": graph_kind,
        "sample_rate": sample_rate,
        "n_src": config.n_src,
        "causal": config.tcn.causal,
    }


def convtasnet_model(module: ConvTasNet, params, sample_rate: int):
    """The ``ModelProto`` of ``ConvTasNet.apply``: ``mixture [batch, samples]`` (float32, at
    least ``filter_length`` samples) ``-> sources [batch, n_src, samples]``."""
    config = module.config
    graph = Graph()
    hop = config.filter_length // 2
    wav = graph.op("Unsqueeze", "mixture", graph.ints(1))  # [B, 1, T]
    encoder = np.asarray(params["encoder_filters"]).T[:, None, :]  # [N, 1, L]
    rep = graph.op("Conv", wav, graph.const(encoder), strides=[hop])  # [B, N, K]
    sources = _sources(graph, rep, params, config)  # [B, S, (K + 1)·hop]
    # The decoder's output is right-padded with zeros to the input length (fewer than a hop).
    sources = graph.op("Pad", sources, graph.ints(0, 0, 0, 0, 0, hop))
    samples = graph.op("Shape", "mixture", start=1, end=2)
    graph.rename(graph.op("Slice", sources, graph.ints(0), samples, graph.ints(2)), "sources")
    return graph.model(
        [("mixture", ["batch", "samples"])],
        [("sources", ["batch", config.n_src, "samples"])],
        _metadata(config, "whole_file", sample_rate) | {"min_samples": config.filter_length},
    )


def convtasnet_streaming_model(module: ConvTasNet, params, sample_rate: int, hop_ms: float = 16.0):
    """The ``ModelProto`` of a causal Conv-TasNet run on ``hop_ms`` of audio at a time:
    ``(samples [batch, hop], state [batch, S]) -> (sources [batch, n_src, hop], state_out)``,
    ``hop`` a whole number of encoder strides (``L/2``). The state starts at zeros; its layout
    is in ``metadata_props["state_layout"]``: the frame count, the encoder's last ``L/2``
    samples, the running sums of every cLN, each depthwise conv's last ``(P − 1)·d`` inputs and
    the decoder's pending overlap. The output is the whole-file output delayed by ``L/2``
    samples (``delay_samples``). Raises ConfigError for a non-causal model.
    """
    config = module.config
    if not config.tcn.causal:
        raise ConfigError(
            f"this Conv-TasNet is not causal (norm {config.tcn.norm_kind}, centred convolutions), "
            "so it cannot stream; export it without --streaming, or train the causal variant"
        )
    stride = config.filter_length // 2
    frames = max(1, round(hop_ms * sample_rate / 1000 / stride))
    hop = frames * stride
    graph = Graph()
    streaming = _Stream(graph, frames)
    history = streaming.state.read("encoder_history", [stride])
    wav = graph.op("Unsqueeze", graph.op("Concat", history, "samples", axis=1), graph.ints(1))
    streaming.state.write(
        "encoder_history",
        graph.op("Slice", "samples", graph.ints(-stride), graph.ints(hop), graph.ints(1)),
    )
    encoder = np.asarray(params["encoder_filters"]).T[:, None, :]
    rep = graph.op("Conv", wav, graph.const(encoder), strides=[stride])  # [B, N, frames]
    rep = graph.op("Mul", rep, streaming.valid)  # the frame before the signal decodes to 0
    sources = _sources(graph, rep, params, config, streaming)  # [B, S, hop + stride]
    pending = streaming.state.read("decoder_pending", [config.n_src, stride])
    summed = graph.op("Add", sources, graph.op("Pad", pending, graph.ints(0, 0, 0, 0, 0, hop)))
    axis = graph.ints(2)
    graph.rename(graph.op("Slice", summed, graph.ints(0), graph.ints(hop), axis), "sources")
    streaming.state.write(
        "decoder_pending",
        graph.op("Slice", summed, graph.ints(hop), graph.ints(hop + stride), axis),
    )
    state = streaming.state
    state.finish()
    return graph.model(
        [("samples", ["batch", hop]), ("state", ["batch", state.size])],
        [("sources", ["batch", config.n_src, hop]), ("state_out", ["batch", state.size])],
        _metadata(config, "streaming", sample_rate)
        | state.metadata()
        | {"hop": hop, "delay_samples": stride, "latency_samples": hop + stride},
    )

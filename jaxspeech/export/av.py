"""ONNX graph of the audio-visual enhancement system (a loaded ``AVEnhancer``): Net 1's mask,
the lip net's band mask and the gate, over a whole recording.

``(noisy [batch, samples], lips [batch, frames, h, w], face [batch, frames]) -> enhanced
[batch, samples]``: ``noisy`` float32 at the model's rate; ``lips`` the mouth crops in [0, 1]
and ``face`` 1.0 where a face was found, else 0.0 (then Net 1's mask alone, and a zero crop),
one per STFT frame: the video frame shown at the frame's centre, as ``AVEnhancer.enhance``
prepares them from a video (``jaxspeech.avfile.frame_inputs``: the mouth track, resampled by
``jaxspeech.data.av.lip_frames``). Video decoding and mouth tracking stay outside the graph.

Framing, as ``AVEnhancer.enhance`` frames (``metadata_props["framing"]``):

* ``causal`` (a causal lip net and gate, as the recipes train them): the stream's framing
  (``jaxspeech.stream``), ``frames = ceil((samples + n_fft − hop) / hop)``, frame ``t``
  centred on input sample ``t·hop + hop − n_fft/2`` (``frame_centre_offset``); the output
  is ``stream.enhance_causal_av``'s, what ``AVEnhancer.enhance`` returns.
* ``centred`` (a bidirectional lip net or gate): the centred STFT, ``frames = 1 + samples //
  hop``, frame ``t`` centred on sample ``t·hop``; the output is ``AVMasking.enhance``'s.

A mismatch between ``frames`` and the recording's length is an ONNX Runtime shape error.
The whole-file graph only: a one-hop AV graph is not written.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxspeech import masks
from jaxspeech.export.enhancement import EnhancementSpec, istft, lstm_mask_net, times_mask
from jaxspeech.export.graph import Graph, centred_stft, dft_kernels, lstm_layer


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Flax's ``"SAME"`` padding (before, after) of one spatial axis."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def lip_logits(graph: Graph, lips: str, present: str, lip_net, params, crop_shape) -> str:
    """``LipNet`` (``lip_net`` with ``params``) on ``lips [B, N, h, w]`` with the flags
    ``present [B·N, 1]`` (bool): band logits ``[N, B, M]`` (time-major)."""
    height, width = crop_shape
    x = graph.op("Reshape", lips, graph.ints(-1, 1, height, width))  # [B·N, 1, h, w]
    x = graph.op("Sub", x, graph.const(0.5))
    for index in range(len(lip_net.config.channels)):
        conv = params[f"conv_{index}"]
        kernel = np.asarray(conv["kernel"])  # [3, 3, in, out]
        (top, bottom), (left, right) = (
            _same_pads(size, k, 2)
            for size, k in zip((height, width), kernel.shape[:2], strict=True)
        )
        weights, bias = graph.const(kernel.transpose(3, 2, 0, 1)), graph.const(conv["bias"])
        x = graph.op("Conv", x, weights, bias, strides=[2, 2], pads=[top, left, bottom, right])
        x = graph.op("Relu", x)
        height, width = -(-height // 2), -(-width // 2)
    x = graph.op("Transpose", x, perm=[0, 2, 3, 1])  # flax flattens [h', w', c]
    x = graph.op("Reshape", x, graph.ints(0, -1))
    embed = params["embed"]
    x = graph.op("Relu", graph.dense(x, embed["kernel"], embed["bias"]))
    x = graph.op("Where", present, x, graph.const(0.0))  # [B·N, E]
    batch_frames = graph.op("Shape", lips, start=0, end=2)
    x = graph.op("Reshape", x, graph.op("Concat", batch_frames, graph.ints(-1), axis=0))
    x = graph.op("Transpose", x, perm=[1, 0, 2])  # [N, B, E]
    for index in range(lip_net.config.layers):
        x, _, _ = lstm_layer(graph, x, params[f"temporal_{index}"])
    head = params["bands"]
    return graph.dense(x, head["kernel"], head["bias"])


def causal_stft(graph: Graph, wav: str, window: np.ndarray, hop: int) -> str:
    """The stream's STFT (``stream.causal_apply``) of ``wav [B, T]``: ``n_fft − hop`` zeros
    before it, ``ceil((T + n_fft − hop) / hop)`` frames, ``[B, 2F, frames]``."""
    delay = window.size - hop
    padded = graph.op("Unsqueeze", wav, graph.ints(1))  # [B, 1, T]
    padded = graph.op("Pad", padded, graph.ints(0, 0, delay, 0, 0, delay + hop))
    analysis, _ = dft_kernels(window)
    frames = graph.op("Conv", padded, graph.const(analysis.T[:, None]), strides=[hop])
    length = graph.op("Shape", wav, start=1, end=2)
    count = graph.op("Add", length, graph.ints(delay + hop - 1))
    n_frames = graph.op("Div", count, graph.ints(hop))
    return graph.op("Slice", frames, graph.ints(0), n_frames, graph.ints(2))


def av_mask(graph: Graph, model, audio_mask: str, face: str) -> str:
    """``models.av.av_mask`` of the gate stage ``model``: the output mask ``[N, B, F]`` from
    Net 1's mask ``audio_mask [N, B, F]``, the mouth crops ``lips`` and the flags ``face
    [B, N]`` (bool)."""
    present = graph.op("Reshape", face, graph.ints(-1, 1))
    logits = lip_logits(graph, "lips", present, model.lip_net, model.lips_params, model.crop_shape)
    lip_mask = graph.op("Sigmoid", logits)  # [N, B, M]
    n_freqs, n_bands = model.audio.n_freqs, model.n_bands
    bands = masks.band_of_bin(n_freqs, n_bands)
    membership = (bands[:, None] == np.arange(n_bands)) / np.bincount(bands, minlength=n_bands)
    audio_bands = graph.op("MatMul", audio_mask, graph.const(membership))
    product = graph.op("Mul", audio_bands, lip_mask)
    gate_in = graph.op("Concat", audio_bands, lip_mask, product, axis=-1)
    gate, _ = lstm_mask_net(graph, gate_in, model.gate_net.config, model.variables["params"])
    spread = lambda x: graph.op("Gather", x, graph.const(bands, np.int64), axis=-1)
    gate_bins = spread(gate) if model.config.model.gate_net.per_band else gate
    lip_audio = graph.op("Mul", spread(lip_mask), audio_mask)
    keep = graph.op("Sub", graph.const(1.0), gate_bins)
    mixed = graph.op(
        "Add", graph.op("Mul", gate_bins, lip_audio), graph.op("Mul", keep, audio_mask)
    )
    frame_face = graph.op("Unsqueeze", graph.op("Transpose", face, perm=[1, 0]), graph.ints(2))
    return graph.op("Where", frame_face, mixed, audio_mask)


def av_model(model):
    """The ``ModelProto`` of a loaded ``AVEnhancer`` ``model`` (module docstring)."""
    audio = EnhancementSpec(model.audio_model)
    causal = model.lip_net.config.causal and not model.gate_net.config.bidirectional
    graph = Graph()
    window, n_fft, hop = audio.window, audio.n_fft, audio.hop
    stft = causal_stft if causal else centred_stft
    frames = stft(graph, "noisy", window, hop)  # [B, 2F, N]
    real, imag = audio.split(graph, graph.op("Transpose", frames, perm=[2, 0, 1]))  # [N, B, F]
    audio_mask, _ = audio.mask(graph, real, imag)
    face = graph.op("Cast", "face", to=graph.onnx.TensorProto.BOOL)  # [B, N]
    mask = av_mask(graph, model, audio_mask, face)
    masked = graph.op("Transpose", times_mask(graph, real, imag, mask), perm=[1, 2, 0])
    start = n_fft - hop if causal else n_fft // 2
    istft(graph, masked, window, hop, start, "noisy", "enhanced")
    crop = list(model.crop_shape)
    metadata = audio.metadata("whole_file") | {
        "system": "av",
        "framing": "causal" if causal else "centred",
        "frames": "ceil((samples + n_fft - hop) / hop)" if causal else "1 + samples // hop",
        "frame_centre_offset": hop - n_fft // 2 if causal else 0,
        "lips": "mouth crops in [0, 1] of the video frame shown at STFT frame t's centre, "
        "sample t*hop + frame_centre_offset (jaxspeech.avfile.frame_inputs); zeros without "
        "a face",
        "face": "1 where a face was found, else 0 (Net 1's mask alone)",
        "crop_shape": crop,
        "n_bands": model.n_bands,
        "lip_net": dataclasses.asdict(model.lip_net.config),
        "gate_net": dataclasses.asdict(model.config.model.gate_net),
        "min_samples": 1 if causal else n_fft // 2 + 1,
    }
    return graph.model(
        [
            ("noisy", ["batch", "samples"]),
            ("lips", ["batch", "frames", *crop]),
            ("face", ["batch", "frames"]),
        ],
        [("enhanced", ["batch", "samples"])],
        metadata,
    )

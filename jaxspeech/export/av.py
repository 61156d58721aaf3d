"""ONNX graphs of the audio-visual enhancement system (a loaded ``AVEnhancer``): Net 1's mask,
the lip net's band mask and the gate, over a whole recording or (causal) hop by hop.

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
  hop``, frame ``t`` centred on sample ``t·hop``; the output is ``AVMasking.enhance_frames``'.

A mismatch between ``frames`` and the recording's length is an ONNX Runtime shape error.

:func:`streaming_model` (causal nets): one hop of ``AVStreamingEnhancer.process_hop``,
``(samples [batch, hop], lips [batch, h, w], face [batch], state [batch, S]) -> (enhanced
[batch, hop], state_out [batch, S])``; hop ``t`` takes the crop and flag of causal frame ``t``
above (the newest video frame's; the last one again until the next arrives). The state is
the enhancement stream's (``history``, ``pending``, Net 1's ``lstm_<i>_c``/``_h``) followed by
the lip net's ``lip_lstm_<i>_c``/``_h`` and the gate's ``gate_lstm_<i>_c``/``_h``, zeros at
the start; the output lags by ``delay_samples`` (feed zero hops to flush).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxspeech import masks
from jaxspeech.errors import ConfigError
from jaxspeech.export.enhancement import (
    EnhancementSpec,
    istft,
    lstm_mask_net,
    read_carry,
    stream_step,
    times_mask,
    write_carry,
)
from jaxspeech.export.graph import FlatState, Graph, centred_stft, dft_kernels, lstm_layer


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Flax's ``"SAME"`` padding (before, after) of one spatial axis."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def lip_logits(graph: Graph, lips: str, present: str, lip_net, params, crop_shape, carry=None):
    """``LipNet`` (``lip_net`` with ``params``) on ``lips [B, N, h, w]`` with the flags
    ``present [B·N, 1]`` (bool): band logits ``[N, B, M]`` (time-major) and each temporal
    layer's final ``(h, c)``; ``carry``: their initial ``(h, c)`` ``[1, B, H]`` (None: zeros)."""
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
    states = []
    for index in range(lip_net.config.layers):
        initial = None if carry is None else carry[index]
        x, h, c = lstm_layer(graph, x, params[f"temporal_{index}"], initial)
        states.append((h, c))
    head = params["bands"]
    return graph.dense(x, head["kernel"], head["bias"]), states


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


def av_mask(graph: Graph, model, audio_mask: str, lips: str, face: str, carry=(None, None)):
    """``models.av.av_mask`` of the gate stage ``model``: the output mask ``[N, B, F]`` from
    Net 1's mask ``audio_mask [N, B, F]``, the mouth crops ``lips [B, N, h, w]`` and the flags
    ``face [B, N]`` (bool), and the lip net's and gate's final LSTM ``(h, c)`` per layer;
    ``carry``: their initial ones (None: zeros)."""
    lip_carry, gate_carry = carry
    present = graph.op("Reshape", face, graph.ints(-1, 1))
    lip_net, lip_params = model.lip_net, model.lips_params
    logits, lip_states = lip_logits(
        graph, lips, present, lip_net, lip_params, model.crop_shape, lip_carry
    )
    lip_mask = graph.op("Sigmoid", logits)  # [N, B, M]
    n_freqs, n_bands = model.audio.n_freqs, model.n_bands
    bands = masks.band_of_bin(n_freqs, n_bands)
    membership = (bands[:, None] == np.arange(n_bands)) / np.bincount(bands, minlength=n_bands)
    audio_bands = graph.op("MatMul", audio_mask, graph.const(membership))
    product = graph.op("Mul", audio_bands, lip_mask)
    gate_in = graph.op("Concat", audio_bands, lip_mask, product, axis=-1)
    gate_net, gate_params = model.gate_net.config, model.variables["params"]
    gate, gate_states = lstm_mask_net(graph, gate_in, gate_net, gate_params, gate_carry)
    spread = lambda x: graph.op("Gather", x, graph.const(bands, np.int64), axis=-1)
    gate_bins = spread(gate) if model.config.model.gate_net.per_band else gate
    lip_audio = graph.op("Mul", spread(lip_mask), audio_mask)
    keep = graph.op("Sub", graph.const(1.0), gate_bins)
    mixed = graph.op(
        "Add", graph.op("Mul", gate_bins, lip_audio), graph.op("Mul", keep, audio_mask)
    )
    frame_face = graph.op("Unsqueeze", graph.op("Transpose", face, perm=[1, 0]), graph.ints(2))
    return graph.op("Where", frame_face, mixed, audio_mask), lip_states, gate_states


def is_causal(model) -> bool:
    """Whether the lip net and gate of the ``AVEnhancer`` ``model`` are causal (it streams)."""
    return model.lip_net.config.causal and not model.gate_net.config.bidirectional


def _metadata(model, audio: EnhancementSpec, graph: str, causal: bool) -> dict:
    n_fft, hop = audio.n_fft, audio.hop
    return audio.metadata(graph) | {
        "system": "av",
        "framing": "causal" if causal else "centred",
        "frames": "ceil((samples + n_fft - hop) / hop)" if causal else "1 + samples // hop",
        "frame_centre_offset": hop - n_fft // 2 if causal else 0,
        "lips": "mouth crops in [0, 1] of the video frame shown at STFT frame t's centre, "
        "sample t*hop + frame_centre_offset (jaxspeech.avfile.frame_inputs); zeros without "
        "a face",
        "face": "1 where a face was found, else 0 (Net 1's mask alone)",
        "crop_shape": list(model.crop_shape),
        "n_bands": model.n_bands,
        "lip_net": dataclasses.asdict(model.lip_net.config),
        "gate_net": dataclasses.asdict(model.config.model.gate_net),
    }


def av_model(model):
    """The whole-file ``ModelProto`` of a loaded ``AVEnhancer`` ``model`` (module docstring)."""
    audio = EnhancementSpec(model.audio_model)
    causal = is_causal(model)
    graph = Graph()
    window, n_fft, hop = audio.window, audio.n_fft, audio.hop
    stft = causal_stft if causal else centred_stft
    frames = stft(graph, "noisy", window, hop)  # [B, 2F, N]
    real, imag = audio.split(graph, graph.op("Transpose", frames, perm=[2, 0, 1]))  # [N, B, F]
    audio_mask, _ = audio.mask(graph, real, imag)
    face = graph.op("Cast", "face", to=graph.onnx.TensorProto.BOOL)  # [B, N]
    mask, _, _ = av_mask(graph, model, audio_mask, "lips", face)
    masked = graph.op("Transpose", times_mask(graph, real, imag, mask), perm=[1, 2, 0])
    start = n_fft - hop if causal else n_fft // 2
    istft(graph, masked, window, hop, start, "noisy", "enhanced")
    crop = list(model.crop_shape)
    return graph.model(
        [
            ("noisy", ["batch", "samples"]),
            ("lips", ["batch", "frames", *crop]),
            ("face", ["batch", "frames"]),
        ],
        [("enhanced", ["batch", "samples"])],
        _metadata(model, audio, "whole_file", causal)
        | {"min_samples": 1 if causal else n_fft // 2 + 1},
    )


def streaming_model(model):
    """The one-hop ``ModelProto`` of a loaded causal ``AVEnhancer`` ``model`` (module
    docstring); ConfigError for a bidirectional lip net or gate or a non-causal Net 1."""
    if not is_causal(model):
        raise ConfigError(
            "a bidirectional lip net or gate sees the whole recording, so it cannot stream; "
            "export it without --streaming"
        )
    audio = EnhancementSpec(model.audio_model)
    audio_net, lip_net, gate_net = audio.causal_lstm(), model.lip_net.config, model.gate_net.config
    graph = Graph()
    state = FlatState(graph)
    lips = graph.op("Unsqueeze", "lips", graph.ints(1))  # [B, 1, h, w]
    face = graph.op("Unsqueeze", "face", graph.ints(1))  # [B, 1]
    face = graph.op("Cast", face, to=graph.onnx.TensorProto.BOOL)

    def frame_mask(real: str, imag: str) -> str:
        audio_carry = read_carry(state, "lstm", audio_net.layers, audio_net.hidden)
        lip_carry = read_carry(state, "lip_lstm", lip_net.layers, lip_net.hidden)
        gate_carry = read_carry(state, "gate_lstm", gate_net.layers, gate_net.hidden)
        audio_mask, audio_states = audio.mask(graph, real, imag, audio_carry)
        mask, lip_states, gate_states = av_mask(
            graph, model, audio_mask, lips, face, (lip_carry, gate_carry)
        )
        write_carry(state, "lstm", audio_states)
        write_carry(state, "lip_lstm", lip_states)
        write_carry(state, "gate_lstm", gate_states)
        return mask

    stream_metadata = stream_step(audio, state, frame_mask)
    hop, crop = audio.hop, list(model.crop_shape)
    return graph.model(
        [
            ("samples", ["batch", hop]),
            ("lips", ["batch", *crop]),
            ("face", ["batch"]),
            ("state", ["batch", state.size]),
        ],
        [("enhanced", ["batch", hop]), ("state_out", ["batch", state.size])],
        _metadata(model, audio, "streaming", True) | stream_metadata,
    )

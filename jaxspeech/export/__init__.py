"""Export of trained models to ONNX graphs written from their params (the ``export`` extra:
``onnx`` and ``onnxruntime``).

``jaxspeech.export.enhancement``: the mask-based enhancement systems (LSTM and TCN mask nets),
whole-file and (causal LSTM) streaming; ``jaxspeech.export.separation``: Conv-TasNet,
whole-file and (causal) streaming; ``jaxspeech.export.dpcl``: deep clustering's embeddings;
``jaxspeech.export.speaker``: the speaker embedder; ``jaxspeech.export.bgm``: the music
matcher's towers and score head; ``jaxspeech.export.av``: audio-visual enhancement (mouth
crops and face flags as inputs), whole-file and (causal) streaming. Every graph carries its
input and output names and shapes, sample rate, hop and (streaming) state layout in
``metadata_props``. :func:`export_graph` picks the exporter of a loaded model
(``jaxspeech.load``).
"""

from __future__ import annotations

from jaxspeech.errors import ConfigError


def _cannot_stream(what: str) -> ConfigError:
    return ConfigError(f"{what}, so it cannot stream; export it without --streaming")


def export_graph(model, streaming: bool = False, hop_ms: float = 16.0):
    """The ONNX ``ModelProto`` of a model loaded by ``jaxspeech.load``: the whole-file graph,
    or with ``streaming`` the one-hop graph (``hop_ms``: Conv-TasNet's hop; the enhancement
    stream's is its STFT hop). Raises ConfigError for a system or model without an
    exporter, or one that cannot stream, and MissingExtraError without ``onnx``."""
    from jaxspeech.export import av, bgm, dpcl, enhancement, separation, speaker
    from jaxspeech.models.dpcl import DeepClustering
    from jaxspeech.models.speaker import SpeakerNet
    from jaxspeech.models.tasnet import ConvTasNet

    module = model.module
    if model.system == "enhancement":
        return (enhancement.streaming_model if streaming else enhancement.whole_file_model)(model)
    if model.system == "separation" and isinstance(module, ConvTasNet):
        params = model.variables["params"]
        if streaming:
            return separation.convtasnet_streaming_model(module, params, model.sample_rate, hop_ms)
        return separation.convtasnet_model(module, params, model.sample_rate)
    if model.system == "separation" and isinstance(module, DeepClustering):
        if streaming:
            raise _cannot_stream("deep clustering's BLSTM and k-means see the whole recording")
        return dpcl.embedding_model(model)
    if model.system == "speaker" and isinstance(module, SpeakerNet):
        if streaming:
            raise _cannot_stream("a speaker embedding pools the whole recording")
        return speaker.speaker_model(
            module, model.variables["params"], model.variables["batch_stats"], model.sample_rate
        )
    if model.system == "bgm":
        if streaming:
            raise _cannot_stream("the music matcher scores whole clips")
        return bgm.matcher_model(model)
    if model.system == "av":
        return (av.streaming_model if streaming else av.av_model)(model)
    raise ConfigError(
        f"no ONNX exporter for this {model.system} model ({type(module).__name__}); jaxspeech "
        "exports enhancement, separation, speaker-embedding, music-matching and audio-visual "
        "runs"
    )

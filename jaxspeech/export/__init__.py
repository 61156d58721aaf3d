"""Export of trained models to ONNX graphs written from their params (the ``export`` extra:
``onnx`` and ``onnxruntime``).

``jaxspeech.export.enhancement``: the LSTM enhancement systems, whole-file and streaming;
``jaxspeech.export.separation``: Conv-TasNet, whole-file and (causal) streaming;
``jaxspeech.export.speaker``: the speaker embedder. Every graph carries its input and output
names and shapes, sample rate, hop and (streaming) state layout in ``metadata_props``.
:func:`export_graph` picks the exporter of a loaded model (``jaxspeech.load``).
"""

from __future__ import annotations

from jaxspeech.errors import ConfigError


def export_graph(model, streaming: bool = False, hop_ms: float = 16.0):
    """The ONNX ``ModelProto`` of a loaded model (``system``, ``module``, ``variables``,
    ``config``, ``sample_rate`` and, for enhancement, ``model_state``): the whole-file graph,
    or with ``streaming`` the one-hop graph (``hop_ms``: Conv-TasNet's hop; the enhancement
    stream's is its STFT hop). Raises ConfigError for a system or model without an
    exporter, or one that cannot stream."""
    from jaxspeech.export import enhancement, separation, speaker
    from jaxspeech.models.masknet import LSTMMaskNet
    from jaxspeech.models.speaker import SpeakerNet
    from jaxspeech.models.tasnet import ConvTasNet

    module, params = model.module, model.variables["params"]
    kind = type(module).__name__
    if model.system == "enhancement" and isinstance(module, LSTMMaskNet):
        build = enhancement.streaming_model if streaming else enhancement.whole_file_model
        return build(module, params, model.model_state, model.config)
    if model.system == "separation" and isinstance(module, ConvTasNet):
        if streaming:
            return separation.convtasnet_streaming_model(module, params, model.sample_rate, hop_ms)
        return separation.convtasnet_model(module, params, model.sample_rate)
    if model.system == "speaker" and isinstance(module, SpeakerNet):
        if streaming:
            raise ConfigError(
                "a speaker embedding pools the whole recording, so it cannot stream; "
                "export it without --streaming"
            )
        return speaker.speaker_model(
            module, params, model.variables["batch_stats"], model.sample_rate
        )
    raise ConfigError(
        f"no ONNX exporter for this {model.system} model ({kind}); jaxspeech exports LSTM "
        "enhancement, Conv-TasNet and speaker-embedding runs"
    )

"""ONNX graph of the speech <-> background-music matcher (``jaxspeech.models.bgm``): the shared
tower on both sides and the score head, in one graph with named outputs::

    speech [speech_batch, speech_segments, features], music [batch, music_segments, features]
      -> speech_embedding [speech_batch, D], music_embedding [batch, D], score [batch]

Inputs are the descriptors of each recording's centred clip (``jaxspeech.dsp.descriptors``;
``MusicMatching.clip_descriptors``), unnormalised: the graph applies the trained statistics.
``speech_batch`` is 1 (one recording against ``batch`` tracks, as ranking a library) or
``batch`` (pairs). ``score`` is the fit in [0, 1]. The descriptors themselves stay outside the
graph: the roll-off and tempo columns are picks (first bin past a share, best lag), which
float32 rounding can move by a whole bin.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxspeech.export.graph import Graph

#: ``dsp.normalize``'s floor on the descriptor std.
_STD_FLOOR = 1e-5


def _tower(graph: Graph, descriptors: str, params, kernel_size: int, mean, inverse_std) -> str:
    """``Tower`` of ``descriptors [B, S, features]``: ``[B, D]``."""
    x = graph.op("Sub", descriptors, graph.const(mean))
    x = graph.op("Transpose", graph.op("Mul", x, graph.const(inverse_std)), perm=[0, 2, 1])
    before = (kernel_size - 1) // 2  # Flax's SAME padding
    for index in range(sum(name.startswith("Conv_") for name in params)):
        conv = params[f"Conv_{index}"]
        weight = np.asarray(conv["kernel"]).transpose(2, 1, 0)  # [out, in, k]
        x = graph.op(
            "Conv",
            x,
            graph.const(weight),
            graph.const(conv["bias"]),
            pads=[before, kernel_size - 1 - before],
        )
        x = graph.op("Relu", x)
    pooled = graph.op("ReduceMean", x, axes=[2], keepdims=0)  # [B, C]
    return graph.dense(pooled, params["Dense_0"]["kernel"], params["Dense_0"]["bias"])


def matcher_model(model):
    """The ``ModelProto`` of a loaded MusicMatcher (module docstring)."""
    params, config, core = model.variables["params"], model.config.model, model.core
    mean = np.asarray(model.model_state["feature_mean"], np.float32)
    inverse_std = 1.0 / np.maximum(np.asarray(model.model_state["feature_std"]), _STD_FLOOR)
    graph = Graph()
    embeddings = {
        side: graph.rename(
            _tower(graph, side, params["tower"], config.kernel_size, mean, inverse_std),
            f"{side}_embedding",
        )
        for side in ("speech", "music")
    }
    kernel = np.asarray(params["fuse"]["kernel"])
    half = kernel.shape[0] // 2
    fused = graph.op(
        "Add",
        graph.dense(embeddings["speech"], kernel[:half], params["fuse"]["bias"]),
        graph.dense(embeddings["music"], kernel[half:]),
    )
    x = graph.op("Relu", fused)
    for index in range(len(config.hidden) - 1):
        layer = params[f"layers_{index}"]
        x = graph.op("Relu", graph.dense(x, layer["kernel"], layer["bias"]))
    logit = graph.dense(x, params["out"]["kernel"], params["out"]["bias"])  # [B, 1]
    graph.rename(graph.op("Sigmoid", graph.op("Squeeze", logit, graph.ints(1))), "score")
    features, dim = len(core.names), config.embedding_dim
    return graph.model(
        [
            ("speech", ["speech_batch", "speech_segments", features]),
            ("music", ["batch", "music_segments", features]),
        ],
        [
            ("speech_embedding", ["speech_batch", dim]),
            ("music_embedding", ["batch", dim]),
            ("score", ["batch"]),
        ],
        {
            "system": "bgm",
            "graph": "matcher",
            "sample_rate": config.features.sample_rate,
            "hop": config.features.hop_length,
            "clip_samples": config.num_samples,
            "clip_segments": core.num_segments,
            "descriptors": dataclasses.asdict(config.features),
            "descriptor_names": list(core.names),
            "layout_fingerprint": core.fingerprint,
        },
    )

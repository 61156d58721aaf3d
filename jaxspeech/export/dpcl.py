"""ONNX graph of deep clustering's embedding network (``jaxspeech.models.dpcl``):
``mixture [batch, samples] -> (embeddings [batch, frames, freqs, D], weights [batch, frames,
freqs])``: the unit-norm embedding of every bin of the centred STFT, and its silence weight
(1 for bins within ``-silence_db`` dB of the loudest, else 0).

The separation itself stays outside the graph: k-means (k-means++ seeds drawn with JAX's
random generator, then ``kmeans_iters`` Lloyd steps) of the weighted embeddings into
``n_src`` clusters, one binary mask per cluster on the mixture STFT (mixture phase), and the
inverse STFT, as ``jaxspeech.models.dpcl.separate_dpcl`` does; ``metadata_props`` holds the
settings. Why: the seeds are draws of JAX's counter-based generator, for which ONNX has no
operators, and each bin's cluster is a nearest-centroid choice that float32 rounding flips.
Measured on the smoke-size net and a 2 s LibriSpeech two-talker mixture at 8 kHz, embeddings
moved by Gaussian noise of std 1e-6 moved the separated waveforms by up to 1.9e-3 of full
scale (1e-5: 4.9e-2), while this graph's embeddings differ from JAX's by about 2e-5: k-means
in the graph could not keep the export's 1e-4 bound.

The features ``log(|X| + 1e-8)`` are ill-conditioned where the mixture is nearly silent
(|X| ~ 1e-7, e.g. near Nyquist after resampling): there JAX's own embeddings differ by 3e-3
between its float32 FFT and a float64 one. With a noise floor 40 dB below the speech the graph
and JAX agree within 4e-5 (60 dB: 3e-3).
"""

from __future__ import annotations

from jaxspeech import dsp
from jaxspeech.export.graph import Graph, centred_stft, lstm_layer

#: ``dsp.log_magnitude``'s floor, ``dsp.cmvn``'s floor on the std, the norm's floor.
_LOG_FLOOR, _CMVN_FLOOR, _NORM_FLOOR = 1e-8, 1e-5, 1e-12


def embedding_model(model):
    """The ``ModelProto`` of a loaded deep-clustering Separator's embeddings and silence
    weights (module docstring); ``mixture`` float32 at the model's rate, more than
    ``n_fft / 2`` samples."""
    core, params = model.core, model.variables["params"]
    config = core.config
    n_freqs = core.n_fft // 2 + 1
    graph = Graph()
    spectrum = centred_stft(graph, "mixture", dsp.get_window("hann", core.n_fft), core.hop)
    spectrum = graph.op("Transpose", spectrum, perm=[0, 2, 1])  # [B, N, 2F]
    real, imag = graph.op("Split", spectrum, graph.ints(n_freqs, n_freqs), axis=2, outputs=2)
    power = graph.op("Add", graph.op("Mul", real, real), graph.op("Mul", imag, imag))
    log_mag = graph.op("Log", graph.op("Add", graph.op("Sqrt", power), graph.const(_LOG_FLOOR)))
    centred = graph.op("Sub", log_mag, graph.op("ReduceMean", log_mag, axes=[1]))
    mean_square = graph.op("ReduceMean", graph.op("Mul", centred, centred), axes=[1])
    scale = graph.op(
        "Reciprocal", graph.op("Sqrt", graph.op("Max", mean_square, graph.const(_CMVN_FLOOR**2)))
    )
    x = graph.op("Transpose", graph.op("Mul", centred, scale), perm=[1, 0, 2])  # [N, B, F]
    for index in range(config.layers):
        x, _, _ = lstm_layer(graph, x, params[f"blstm_{index}"])
    head = params["embedding"]
    x = graph.dense(x, head["kernel"], head["bias"])  # [N, B, F·D]
    if config.activation == "tanh":
        x = graph.op("Tanh", x)
    x = graph.op("Reshape", x, graph.ints(0, 0, n_freqs, config.embedding_dim))
    norm = graph.op("Sqrt", graph.op("ReduceSum", graph.op("Mul", x, x), graph.ints(3)))
    x = graph.op("Div", x, graph.op("Max", norm, graph.const(_NORM_FLOOR)))
    graph.rename(graph.op("Transpose", x, perm=[1, 0, 2, 3]), "embeddings")
    peak = graph.op("ReduceMax", power, axes=[1, 2])  # [B, 1, 1]
    threshold = graph.op("Mul", peak, graph.const(10.0 ** (config.silence_db / 10.0)))
    graph.rename(graph.op("Cast", graph.op("Greater", power, threshold), to=1), "weights")
    return graph.model(
        [("mixture", ["batch", "samples"])],
        [
            ("embeddings", ["batch", "frames", n_freqs, config.embedding_dim]),
            ("weights", ["batch", "frames", n_freqs]),
        ],
        {
            "system": "separation",
            "model": "deep_clustering",
            "graph": "embeddings",
            "sample_rate": model.sample_rate,
            "n_src": config.n_src,
            "n_fft": core.n_fft,
            "hop": core.hop,
            "window": "hann",
            "silence_db": config.silence_db,
            "kmeans_iters": config.kmeans_iters,
            "min_samples": core.n_fft // 2 + 1,
            "separation": "outside the graph: k-means of the embeddings (bins of weight 0 are "
            "assigned but neither seed nor move centroids) into n_src clusters, one binary "
            "mask per cluster on the mixture STFT, inverse STFT; see "
            "jaxspeech.models.dpcl.separate_dpcl",
        },
    )

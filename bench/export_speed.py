"""Cost of the exported graphs: real-time factor on ONE CPU thread in ONNX Runtime and in JAX.

Usage (the ``export`` extra installed):
    python bench/export_speed.py [--seconds 4] [--repeats 5] [--hops 500]

Models of the recipes' full-size configurations with random weights (cost does not depend on
the values): the streaming student and the BLSTM teacher of ``configs/enhancement/distill.py``
and the TCN student of its ``tcn`` variant (16 kHz, 32 ms window, 16 ms hop), the causal
Conv-TasNet of ``configs/separation/convtasnet.py:causal`` (8 kHz) and the embedding network of
``configs/separation/dpcl.py`` (8 kHz; k-means is outside the graph). The process is pinned
to one core, XLA runs single-threaded and ONNX Runtime with one intra-op and one inter-op
thread.

Whole-file: the median over ``--repeats`` calls on ``--seconds`` of audio (batch 1, after one
warm-up call), divided by the audio's duration. Streaming: the median time of one call over
``--hops`` consecutive 16 ms hops (ONNX Runtime: one ``session.run``; JAX: one
``StreamingEnhancer.process_hop``, jitted, result fetched), divided by the hop's duration; that
median is also the compute latency per hop, on top of the algorithmic latency. Parameters and
multiply-accumulates per second of audio count the mask nets' weight matrices
(``masknet.macs_per_frame``) times frames per second, as ``evaluate.py`` does; the STFT is
not counted.
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
).strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from jaxspeech import dsp  # noqa: E402
from jaxspeech.export import dpcl, enhancement, separation  # noqa: E402
from jaxspeech.inference import Enhancer, Separator  # noqa: E402
from jaxspeech.models.masknet import LSTMMaskNet, macs_per_frame, param_count  # noqa: E402
from jaxspeech.models.tasnet import ConvTasNet  # noqa: E402
from jaxspeech.train import stages  # noqa: E402
from jaxspeech.train.config import recipe_module  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options)


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up (compilation, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stream_seconds(step, state, hop: int, hops: int) -> float:
    """Median seconds of ``state, out = step(state, samples)`` over ``hops`` hops of noise."""
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal((hops + 1, 1, hop))).astype(np.float32)
    state, _ = step(state, samples[0])  # warm-up
    times = []
    for chunk in samples[1:]:
        start = time.perf_counter()
        state, out = step(state, chunk)
        np.asarray(out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def onnx_stepper(graph):
    """``(step(state, samples) -> (state, out), initial zero state [1, S])`` of a streaming
    graph in ONNX Runtime."""
    step_session = session(graph)
    size = json.loads({p.key: p.value for p in graph.metadata_props}["state_shape"])[1]

    def step(state, samples):
        out, state = step_session.run(None, {"samples": samples, "state": state})
        return state, out

    return step, np.zeros((1, size), np.float32)


def whole_file_rtfs(args, graph, jax_fn, wav: np.ndarray) -> dict:
    """ONNX Runtime's and JAX's real-time factors of the whole-file ``graph`` (one input) and
    ``jax_fn`` on ``wav [1, seconds · rate]``."""
    whole = session(graph)
    feed = {whole.get_inputs()[0].name: wav}
    onnx_seconds = median_seconds(lambda: whole.run(None, feed), args.repeats)
    jax_seconds = median_seconds(lambda: np.asarray(jax_fn(wav)), args.repeats)
    return {
        "ONNX whole-file RTF": onnx_seconds / args.seconds,
        "JAX whole-file RTF": jax_seconds / args.seconds,
    }


def enhancement_row(args, role: str, config) -> dict:
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, teacher=None))
    core = Enhancer(pathlib.Path("untrained"), config, 0, None, None).core
    params = core.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, core.n_freqs)))["params"]
    model_state = {"feature_mean": jnp.zeros(core.n_freqs), "feature_std": jnp.ones(core.n_freqs)}
    model = Enhancer(pathlib.Path("untrained"), config, 0, params, model_state)
    rate = core.sample_rate
    noisy = 0.1 * np.random.default_rng(1).standard_normal((1, round(args.seconds * rate)))
    noisy = noisy.astype(np.float32)
    enhance = jax.jit(lambda x: core.enhance(params, model_state, x))
    row = {
        "model": f"enhancement {role}",
        "params": param_count(params),
        "MMAC/s": macs_per_frame(params) * rate / core.hop / 1e6,
    } | whole_file_rtfs(args, enhancement.whole_file_model(model), enhance, noisy)
    if not isinstance(core.model, LSTMMaskNet) or core.model.config.bidirectional:
        return row  # whole-file only
    step, state = onnx_stepper(enhancement.streaming_model(model))
    enhancer = model.stream()
    onnx_hop = stream_seconds(step, state, core.hop, args.hops)
    jax_hop = stream_seconds(enhancer.process_hop, enhancer.init_state((1,)), core.hop, args.hops)
    return row | {
        "hop (ms)": 1000 * core.hop / rate,
        "ONNX stream ms/hop": 1000 * onnx_hop,
        "ONNX stream RTF": onnx_hop * rate / core.hop,
        "JAX stream ms/hop": 1000 * jax_hop,
        "JAX stream RTF": jax_hop * rate / core.hop,
    }


def convtasnet_row(args) -> dict:
    config = recipe_module(CONFIGS / "separation/convtasnet.py").get_config("causal")
    module, rate = ConvTasNet(config.model), config.data.mixture.sample_rate
    mixture = 0.1 * np.random.default_rng(2).standard_normal((1, round(args.seconds * rate)))
    mixture = mixture.astype(np.float32)
    params = module.init(jax.random.PRNGKey(0), mixture[:, :64])["params"]
    graph = separation.convtasnet_streaming_model(module, params, rate, hop_ms=16.0)
    hop = json.loads({p.key: p.value for p in graph.metadata_props}["hop"])
    onnx_hop = stream_seconds(*onnx_stepper(graph), hop, args.hops)
    separate = jax.jit(lambda x: module.apply({"params": params}, x))
    whole = separation.convtasnet_model(module, params, rate)
    return {
        "model": "causal Conv-TasNet (N 512, B 128, H 512, X 8, R 3, cLN)",
        "params": param_count(params),
        **whole_file_rtfs(args, whole, separate, mixture),
        "hop (ms)": 1000 * hop / rate,
        "ONNX stream ms/hop": 1000 * onnx_hop,
        "ONNX stream RTF": onnx_hop * rate / hop,
    }


def dpcl_row(args) -> dict:
    """Deep clustering's embedding graph against the same in JAX (STFT, features, BLSTM)."""
    config = recipe_module(CONFIGS / "separation/dpcl.py").get_config("")
    core = Separator(pathlib.Path("untrained"), config, 0, None, None).core
    params = core.init(jax.random.PRNGKey(0), jnp.zeros((1, 800)))
    model = Separator(pathlib.Path("untrained"), config, 0, params, None)
    rate = model.sample_rate
    mixture = 0.1 * np.random.default_rng(3).standard_normal((1, round(args.seconds * rate)))
    mixture = mixture.astype(np.float32)
    embed = jax.jit(
        lambda x: model.module.apply(
            model.variables, core.features(dsp.stft(x, core.n_fft, core.hop))
        )
    )
    return {
        "model": "deep clustering embeddings (BLSTM 4 × 300, D 40)",
        "params": param_count(params),
    } | whole_file_rtfs(args, dpcl.embedding_model(model), embed, mixture)


def table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.4f}" if value < 1 else f"{value:.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hops", type=int, default=500)
    args = parser.parse_args()
    print(
        f"JAX {jax.__version__}, ONNX Runtime {ort.__version__}, "
        f"pinned to CPU {sorted(os.sched_getaffinity(0))}"
    )
    recipe = stages.load_recipe(f"{CONFIGS}/enhancement/distill.py").stages
    tcn = stages.load_recipe(f"{CONFIGS}/enhancement/distill.py:tcn").stages
    rows = [
        enhancement_row(args, "student (causal LSTM 2 × 128)", recipe[1].config),
        enhancement_row(args, "teacher (BLSTM 2 × 384)", recipe[0].config),
        enhancement_row(args, "TCN student (causal, B 64, H 128, X 6, R 2, cLN)", tcn[1].config),
        convtasnet_row(args),
        dpcl_row(args),
    ]
    print(table(rows))


if __name__ == "__main__":
    main()

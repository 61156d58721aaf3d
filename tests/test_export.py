"""ONNX export: each graph run in ONNX Runtime equals JAX on real speech (LibriSpeech), within
1e-4 of full scale; the streaming graphs chained hop by hop equal the whole-file result."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech import audio, dsp, stream
from jaxspeech.errors import ConfigError
from jaxspeech.models.dpcl import DeepClustering
from jaxspeech.models.masknet import LSTMMaskNetConfig
from jaxspeech.models.speaker import SpeakerNet, SpeakerNetConfig, features
from jaxspeech.models.tasnet import ConvTasNet
from jaxspeech.train import stages
from jaxspeech.train.config import recipe_module
from jaxspeech.train.tasks.enhancement import Task

ort = pytest.importorskip("onnxruntime", reason='needs the "export" extra (onnxruntime)')
pytest.importorskip("onnx", reason='needs the "export" extra (onnx)')

from jaxspeech.export import enhancement, export_graph, separation, speaker  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
#: Largest allowed |ONNX − JAX| for signals in [-1, 1].
TOLERANCE = 1e-4
SPEAKERS = ("1998", "3005")


def speech(data_root: pathlib.Path, sample_rate: int, seconds: float) -> np.ndarray:
    """``[2, samples]``: the first ``seconds`` of one utterance of each of two speakers."""
    rows = []
    for reader in SPEAKERS:
        path = sorted((data_root / "librispeech/test-other" / reader).glob("*.flac"))[0]
        wav, _ = audio.load(path, sample_rate)
        rows.append(wav[: round(seconds * sample_rate)])
    return np.stack(rows)


def run(model, **inputs) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    return session.run(None, {name: np.asarray(x, np.float32) for name, x in inputs.items()})


def run_stream(step, signal: np.ndarray) -> np.ndarray:
    """Feeds ``signal [batch, T]`` through the streaming graph ``step`` hop by hop from a zero
    state (zero hops flush the delay); returns the output realigned by the delay, ``[..., T]``."""
    info = metadata(step)
    hop, delay, length = int(info["hop"]), int(info["delay_samples"]), signal.shape[1]
    n_hops = -(-(length + delay) // hop)
    padded = np.pad(signal, [(0, 0), (0, n_hops * hop - length)])
    state = np.zeros((signal.shape[0], json.loads(info["state_shape"])[1]), np.float32)
    outputs = []
    for index in range(n_hops):
        out, state = run(step, samples=padded[:, index * hop : (index + 1) * hop], state=state)
        outputs.append(out)
    return np.concatenate(outputs, axis=-1)[..., delay : delay + length]


def metadata(model) -> dict:
    return {prop.key: prop.value for prop in model.metadata_props}


def enhancement_run(estimator, noisy: np.ndarray):
    """``(task, params, model_state)`` of the smoke recipe's student with ``estimator``,
    random weights and the feature statistics of ``noisy``."""
    config = stages.load_recipe(f"{CONFIGS}/enhancement/distill.py:smoke").stages[1].config
    model = dataclasses.replace(config.model, estimator=estimator, teacher=None)
    task = Task(dataclasses.replace(config, model=model))
    params = task.model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, task.n_freqs)))["params"]
    log_mag = dsp.log_magnitude(task.spectrum(noisy), 1e-8).reshape(-1, task.n_freqs)
    model_state = {"feature_mean": log_mag.mean(0), "feature_std": log_mag.std(0)}
    return task, params, model_state


@pytest.fixture(scope="module")
def noisy(shared_data) -> np.ndarray:
    """Two real utterances at 16 kHz with white noise at about 10 dB SNR, 2.5 s (not whole hops)."""
    clean = speech(shared_data, 16000, 2.5)[:, :39_999]
    noise = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / 10) / noise.std()
    return (clean + noise).astype(np.float32)


def test_student_whole_file_and_stream_match_jax(noisy):
    task, params, model_state = enhancement_run(LSTMMaskNetConfig(hidden=32, layers=2), noisy)
    whole = enhancement.whole_file_model(task.model, params, model_state, task.config)
    (onnx_out,) = run(whole, noisy=noisy)
    jax_out = np.asarray(jax.jit(task.enhance)(params, model_state, noisy))
    assert onnx_out.shape == noisy.shape
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE
    assert np.abs(jax_out - noisy).max() > 1e-2  # the mask acts

    step = enhancement.streaming_model(task.model, params, model_state, task.config)
    info = metadata(step)
    hop, delay, layout = (
        int(info["hop"]),
        int(info["delay_samples"]),
        json.loads(info["state_layout"]),
    )
    assert (hop, delay, int(info["sample_rate"])) == (256, 256, 16000)
    assert layout["history"]["offset"] == [0, delay]
    assert layout["lstm_1_h"]["offset"][1] == 2 * delay + 4 * 32
    streamed = run_stream(step, noisy)
    causal = np.asarray(
        jax.jit(stream.enhance_causal, static_argnums=0)(task, params, model_state, noisy)
    )
    assert np.abs(streamed - causal).max() <= TOLERANCE
    # Away from the edges (zero history instead of reflection) the stream is the whole file.
    assert np.abs(streamed - jax_out)[:, 2048:-2048].max() <= 1e-2


def test_teacher_blstm_matches_jax_and_refuses_to_stream(noisy):
    estimator = LSTMMaskNetConfig(hidden=24, layers=2, bidirectional=True)
    task, params, model_state = enhancement_run(estimator, noisy)
    whole = enhancement.whole_file_model(task.model, params, model_state, task.config)
    (onnx_out,) = run(whole, noisy=noisy[:1])
    jax_out = np.asarray(task.enhance(params, model_state, noisy[:1]))
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE
    with pytest.raises(ConfigError, match="cannot stream"):
        enhancement.streaming_model(task.model, params, model_state, task.config)


@pytest.mark.parametrize("variant", ["smoke", "causal"])
def test_convtasnet_matches_jax(shared_data, variant):
    config = recipe_module(CONFIGS / "separation/convtasnet.py").get_config("smoke").model
    if variant == "causal":
        config = dataclasses.replace(
            config, tcn=dataclasses.replace(config.tcn, causal=True, norm="cLN")
        )
    module = ConvTasNet(config)
    mixture = speech(shared_data, 8000, 2.0).sum(0, keepdims=True)[:, :15_997]
    params = module.init(jax.random.PRNGKey(1), mixture[:, :64])["params"]
    model = separation.convtasnet_model(module, params, 8000)
    (onnx_out,) = run(model, mixture=mixture)
    jax_out = np.asarray(module.apply({"params": params}, mixture))
    assert onnx_out.shape == (1, 2, mixture.shape[1])
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE
    assert np.abs(jax_out).max() > 1e-3
    assert json.loads(metadata(model)["causal"]) is (variant == "causal")
    if variant != "causal":
        with pytest.raises(ConfigError, match="cannot stream"):
            separation.convtasnet_streaming_model(module, params, 8000)
        return
    step = separation.convtasnet_streaming_model(module, params, 8000, hop_ms=16.0)
    info = metadata(step)
    hop, delay = int(info["hop"]), int(info["delay_samples"])
    assert (hop, delay) == (128, config.filter_length // 2)
    streamed = run_stream(step, mixture)
    # Whole-file output ends with the last whole encoder frame; the stream goes on.
    frames = (mixture.shape[1] - config.filter_length) // delay + 1
    assert np.abs(streamed - jax_out)[..., : frames * delay].max() <= TOLERANCE


def test_speaker_embedder_matches_jax(shared_data):
    cfg = SpeakerNetConfig(blocks=(1, 1), width=8, embed_dim=32)  # a shallow smoke-width net
    net = SpeakerNet(cfg)
    wav = speech(shared_data, 16000, 1.5)[:, :23_993]
    lengths = jnp.full((2,), wav.shape[1])
    variables = jax.jit(
        lambda w: net.init(jax.random.PRNGKey(0), *features(w, lengths, cfg, 16000))
    )(wav)
    # Trained-like batch statistics, so that folding them into the convolutions is tested.
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 1000))
    stats = jax.tree.map(
        lambda x: x + 0.5 * jnp.abs(jax.random.normal(next(keys), x.shape)),
        variables["batch_stats"],
    )
    model = speaker.speaker_model(net, variables["params"], stats, 16000)
    (onnx_out,) = run(model, wav=wav)
    embed = jax.jit(
        lambda w: net.apply({**variables, "batch_stats": stats}, *features(w, lengths, cfg, 16000))
    )
    jax_out = np.asarray(embed(wav))
    assert onnx_out.shape == (2, cfg.embed_dim)
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE * max(1.0, np.abs(jax_out).max())


@pytest.mark.parametrize(
    ("system", "module", "streaming", "message"),
    [
        ("separation", DeepClustering(), False, "no ONNX exporter for this separation model"),
        ("speaker", SpeakerNet(SpeakerNetConfig()), True, "cannot stream"),
    ],
)
def test_unsupported_exports_are_one_clear_error(system, module, streaming, message):
    loaded = types.SimpleNamespace(
        system=system, module=module, variables={"params": {}}, sample_rate=16000, config=None
    )
    with pytest.raises(ConfigError, match=message):
        export_graph(loaded, streaming=streaming)

"""ONNX export: each graph of a loaded model (``jaxspeech.load``'s classes) run in ONNX Runtime
equals JAX on real recordings (LibriSpeech, GTZAN), within 1e-4 of full scale; the streaming
graphs chained hop by hop equal the whole-file result; ``jaxspeech export`` writes them from a
briefly trained workdir and refuses bad requests in one line."""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspeech
from jaxspeech import audio, avfile, cli, stream
from jaxspeech.errors import ConfigError
from jaxspeech.inference import Enhancer, MusicMatcher, Separator, Speaker
from jaxspeech.inference.av import AVEnhancer, AVMasking
from jaxspeech.inference.bgm import MusicMatching
from jaxspeech.models.bgm import BGMConfig
from jaxspeech.models.dpcl import DeepClusteringConfig, silence_weights
from jaxspeech.models.masknet import LSTMMaskNetConfig, TCNMaskNetConfig
from jaxspeech.models.speaker import features
from jaxspeech.models.tcn import TCNConfig
from jaxspeech.train import stages
from jaxspeech.train.config import recipe_module

ort = pytest.importorskip("onnxruntime", reason='needs the "export" extra (onnxruntime)')
onnx = pytest.importorskip("onnx", reason='needs the "export" extra (onnx)')

from test_cli import AV_CLIP, VIDEO_REASON  # noqa: E402
from test_cli import TRAIN_OVERRIDES as CLI_TRAIN_OVERRIDES  # noqa: E402

from jaxspeech.export import export_graph  # noqa: E402
from jaxspeech.export.graph import read_metadata  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
#: Largest allowed |ONNX − JAX| for signals in [-1, 1].
TOLERANCE = 1e-4
SPEAKERS = ("1998", "3005")
NOWHERE = pathlib.Path("untrained")  # the workdir of models built here rather than loaded


def speech(data_root: pathlib.Path, sample_rate: int, seconds: float) -> np.ndarray:
    """``[2, samples]``: the first ``seconds`` of one utterance of each of two speakers."""
    rows = []
    for reader in SPEAKERS:
        path = sorted((data_root / "librispeech/test-other" / reader).glob("*.flac"))[0]
        wav, _ = audio.load(path, sample_rate)
        rows.append(wav[: round(seconds * sample_rate)])
    return np.stack(rows)


def session(model):
    """An ONNX Runtime session of ``model`` on one thread; ``run`` it with ``feed(...)``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options)


def feed(**inputs) -> dict[str, np.ndarray]:
    return {name: np.asarray(x, np.float32) for name, x in inputs.items()}


def run(model, **inputs) -> list[np.ndarray]:
    return session(model).run(None, feed(**inputs))


def run_stream(step, signal: np.ndarray, **per_hop) -> np.ndarray:
    """Feeds ``signal [batch, T]`` through the streaming graph ``step`` hop by hop from a zero
    state (zero hops flush the delay), with ``per_hop`` inputs ``[batch, hops, ...]`` (one per
    hop, flush included); returns the output realigned by the delay, ``[..., T]``."""
    info = read_metadata(step)
    hop, delay, length = info["hop"], info["delay_samples"], signal.shape[1]
    n_hops = -(-(length + delay) // hop)
    padded = np.pad(signal, [(0, 0), (0, n_hops * hop - length)])
    state = np.zeros((signal.shape[0], info["state_shape"][1]), np.float32)
    outputs, stepper = [], session(step)
    for index in range(n_hops):
        frame = {name: x[:, index] for name, x in per_hop.items()}
        samples = padded[:, index * hop : (index + 1) * hop]
        out, state = stepper.run(None, feed(samples=samples, state=state, **frame))
        outputs.append(out)
    return np.concatenate(outputs, axis=-1)[..., delay : delay + length]


def random_variables(init, *inputs, seed: int = 0):
    """Variables shaped as ``init(key, *inputs)`` returns them (evaluated abstractly, so nothing
    is compiled), drawn with numpy: weight matrices and kernels ``N(0, 1/fan_in)``; batch-norm
    variances and norm gains ``1 + |N(0, 0.5²)|``; everything else ``N(0, 0.1²)``."""
    shapes = jax.eval_shape(lambda *x: init(jax.random.PRNGKey(0), *x), *inputs)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", "")
        x = rng.standard_normal(leaf.shape).astype(np.float32)
        if leaf.ndim >= 2:
            return x / np.sqrt(np.prod(leaf.shape[:-1]))
        if name in ("var", "scale", "gamma"):
            return 1.0 + 0.5 * np.abs(x)
        return 0.1 * x

    return jax.tree_util.tree_map_with_path(draw, shapes)


def enhancer(estimator, noisy: np.ndarray, config=None) -> Enhancer:
    """A loaded model of ``config`` (default: the smoke recipe's student) with ``estimator``,
    random weights and the feature statistics of ``noisy``."""
    if config is None:
        config = stages.load_recipe(f"{CONFIGS}/enhancement/distill.py:smoke").stages[1].config
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, estimator=estimator, teacher=None)
    )
    untrained = Enhancer(NOWHERE, config, 0, None, {})
    core = untrained.core
    params = random_variables(core.model.init, jnp.zeros((1, 4, core.n_freqs)))["params"]
    log_mag = np.asarray(core.features(core.spectrum(noisy), {"feature_mean": 0.0,
                                                              "feature_std": 1.0}))  # fmt: skip
    log_mag = log_mag.reshape(-1, core.n_freqs)
    model_state = {"feature_mean": log_mag.mean(0), "feature_std": log_mag.std(0)}
    return Enhancer(NOWHERE, config, 0, params, model_state)


def whole_file_matches_jax(model, noisy: np.ndarray) -> np.ndarray:
    """Checks the whole-file graph against ``core.enhance``; returns JAX's output."""
    (onnx_out,) = run(export_graph(model), noisy=noisy)
    jax_out = np.asarray(
        jax.jit(model.core.enhance)(model.variables["params"], model.model_state, noisy)
    )
    assert onnx_out.shape == noisy.shape
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE
    assert np.abs(jax_out - noisy).max() > 1e-2  # the mask acts
    return jax_out


@pytest.fixture(scope="module")
def noisy(shared_data) -> np.ndarray:
    """Two real utterances at 16 kHz with white noise at about 10 dB SNR, 2.5 s (not whole hops)."""
    clean = speech(shared_data, 16000, 2.5)[:, :39_999]
    noise = np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / 10) / noise.std()
    return (clean + noise).astype(np.float32)


def test_student_whole_file_and_stream_match_jax(noisy):
    model = enhancer(LSTMMaskNetConfig(hidden=32, layers=2), noisy)
    jax_out = whole_file_matches_jax(model, noisy)
    step = export_graph(model, streaming=True)
    info = read_metadata(step)
    hop, delay, layout = info["hop"], info["delay_samples"], info["state_layout"]
    assert (hop, delay, info["sample_rate"]) == (256, 256, 16000)
    assert layout["history"]["offset"] == [0, delay]
    assert layout["lstm_1_h"]["offset"][1] == 2 * delay + 4 * 32
    streamed = run_stream(step, noisy)
    causal = np.asarray(jax.jit(lambda x: stream.enhance_causal(model, x))(noisy))
    assert np.abs(streamed - causal).max() <= TOLERANCE
    # Away from the edges (zero history instead of reflection) the stream is the whole file.
    assert np.abs(streamed - jax_out)[:, 2048:-2048].max() <= 1e-2


def test_teacher_blstm_matches_jax_and_refuses_to_stream(noisy):
    model = enhancer(LSTMMaskNetConfig(hidden=24, layers=2, bidirectional=True), noisy)
    whole_file_matches_jax(model, noisy[:1])
    with pytest.raises(ConfigError, match="cannot stream"):
        export_graph(model, streaming=True)


def test_tcn_mask_net_matches_jax_and_refuses_to_stream(noisy):
    """The ``tcn`` variant's causal student (cLN), at smoke width."""
    tcn = TCNConfig(bottleneck_channels=16, hidden_channels=24, skip_channels=16, blocks=3,
                    repeats=1, norm="cLN", causal=True)  # fmt: skip
    model = enhancer(TCNMaskNetConfig(tcn=tcn), noisy)
    whole_file_matches_jax(model, noisy)
    assert read_metadata(export_graph(model))["mask_net"] == {
        "kind": "tcn",
        "norm": "cLN",
        "causal": True,
    }
    with pytest.raises(ConfigError, match="supports causal LSTM"):
        export_graph(model, streaming=True)


def separator(model_config) -> Separator:
    """A Separator of the Conv-TasNet smoke recipe with ``model_config`` and random weights."""
    config = recipe_module(CONFIGS / "separation/convtasnet.py").get_config("smoke")
    config = dataclasses.replace(config, model=model_config)
    core = Separator(NOWHERE, config, 0, None, None).core
    return Separator(NOWHERE, config, 0, random_variables(core.init, jnp.zeros((1, 800))), None)


@pytest.mark.parametrize("variant", ["smoke", "causal"])
def test_convtasnet_matches_jax(shared_data, variant):
    config = recipe_module(CONFIGS / "separation/convtasnet.py").get_config("smoke").model
    if variant == "causal":
        config = dataclasses.replace(
            config, tcn=dataclasses.replace(config.tcn, causal=True, norm="cLN")
        )
    model = separator(config)
    mixture = speech(shared_data, 8000, 2.0).sum(0, keepdims=True)[:, :15_997]
    graph = export_graph(model)
    (onnx_out,) = run(graph, mixture=mixture)
    jax_out = np.asarray(jax.jit(model.module.apply)(model.variables, mixture))
    assert onnx_out.shape == (1, 2, mixture.shape[1])
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE
    assert np.abs(jax_out).max() > 1e-3
    assert read_metadata(graph)["causal"] is (variant == "causal")
    if variant != "causal":
        with pytest.raises(ConfigError, match="cannot stream"):
            export_graph(model, streaming=True)
        return
    step = export_graph(model, streaming=True)
    info = read_metadata(step)
    hop, delay = info["hop"], info["delay_samples"]
    assert (hop, delay) == (128, config.filter_length // 2)
    streamed = run_stream(step, mixture)
    # Whole-file output ends with the last whole encoder frame; the stream goes on.
    frames = (mixture.shape[1] - config.filter_length) // delay + 1
    assert np.abs(streamed - jax_out)[..., : frames * delay].max() <= TOLERANCE


def test_deep_clustering_embeddings_match_jax_and_refuse_to_stream(shared_data):
    """The embeddings and silence weights of the smoke model (k-means stays outside) on a
    two-talker LibriSpeech mixture at 8 kHz with a noise floor 30 dB down. (Without one, the
    resampler leaves bins near 4 kHz at |X| ~ 1e-7, where the features log(|X| + 1e-8) turn
    float32 rounding into embedding changes of 3e-3; see jaxspeech.export.dpcl.)"""
    model = separator(DeepClusteringConfig(n_src=2, embedding_dim=20, hidden=32, layers=2))
    clean = speech(shared_data, 8000, 2.0).sum(0, keepdims=True)[:, :15_997]
    noise = np.random.default_rng(0).standard_normal(clean.shape)
    mixture = (clean + noise * np.sqrt(np.mean(clean**2) / 1e3)).astype(np.float32)
    graph = export_graph(model)
    embeddings, weights = run(graph, mixture=mixture)
    core = model.core
    spectrum = core._stft(jnp.asarray(mixture))
    expected = np.asarray(model.module.apply(model.variables, core.features(spectrum)))
    assert embeddings.shape == expected.shape == (1, 1 + 15_997 // 64, 129, 20)
    assert np.abs(embeddings - expected).max() <= TOLERANCE
    silent = np.asarray(silence_weights(jnp.abs(spectrum), model.config.model.silence_db))
    assert 0.1 < silent.mean() < 0.99
    assert np.mean(weights != silent) <= 1e-3  # a bin at the threshold may flip
    assert read_metadata(graph)["kmeans_iters"] == model.config.model.kmeans_iters
    with pytest.raises(ConfigError, match="cannot stream"):
        export_graph(model, streaming=True)


def test_speaker_embedder_matches_jax(shared_data):
    config = stages.load_recipe(f"{CONFIGS}/speaker/resnet_kd.py:smoke").stages[-1].config
    net = dataclasses.replace(config.model.net, blocks=(1, 1))  # the smoke net, shallower
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, net=net))
    model = Speaker(NOWHERE, config, 0, {"net": None}, {"batch_stats": None})
    wav = speech(shared_data, 16000, 1.5)[:, :23_993]
    lengths = jnp.full((2,), wav.shape[1])
    net, cfg = model.module, model.core.net_config
    # Batch statistics drawn too (not init's 0 and 1), so that folding them is tested.
    variables = random_variables(
        lambda key, w: net.init(key, *features(w, lengths, cfg, 16000)), wav
    )
    model = Speaker(NOWHERE, config, 0, {"net": variables["params"]}, variables)
    (onnx_out,) = run(export_graph(model), wav=wav)
    jax_out = np.asarray(model.embed(wav))
    assert onnx_out.shape == (2, cfg.embed_dim)
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE * max(1.0, np.abs(jax_out).max())
    with pytest.raises(ConfigError, match="cannot stream"):
        export_graph(model, streaming=True)


def test_music_matcher_matches_jax(shared_data):
    """Towers and score head of a smoke-recipe matcher (6 s clips, two hidden layers) on two
    LibriSpeech utterances and two GTZAN tracks; statistics of their own descriptors."""
    config = recipe_module(CONFIGS / "bgm/match.py").get_config("smoke")
    model_config = BGMConfig(clip_seconds=6.0, channels=(16, 16), embedding_dim=16,
                             hidden=(16, 8))  # fmt: skip
    config = dataclasses.replace(config, model=model_config)
    rate = model_config.features.sample_rate
    speech_wav = speech(shared_data, rate, 8.0)
    music_wav = np.stack(
        [audio.load(shared_data / f"gtzan/{name}.00000.ogg", rate)[0][: 8 * rate]
         for name in ("jazz", "rock")]
    )  # fmt: skip
    core = MusicMatching(model_config)
    described = {
        side: np.stack([core.clip_descriptors(row) for row in wav])
        for side, wav in (("speech", speech_wav), ("music", music_wav))
    }
    pooled = np.concatenate(list(described.values()), axis=1).reshape(-1, len(core.names))
    model_state = {
        "feature_mean": pooled.mean(0),
        "feature_std": pooled.std(0),
        "layout": np.asarray([core.fingerprint]),
    }
    params = random_variables(core.model.init, described["speech"], described["music"])
    model = MusicMatcher(NOWHERE, config, 0, params["params"], model_state)
    graph = export_graph(model)
    speech_out, music_out, scores = run(graph, **described)
    speech_jax, music_jax = model.embed(speech_wav), model.embed(music_wav)
    scale = max(1.0, np.abs(speech_jax).max())
    assert np.abs(speech_out - speech_jax).max() <= TOLERANCE * scale
    assert np.abs(music_out - music_jax).max() <= TOLERANCE * scale
    logits = model.module.apply(model.variables, *(model.core.normalize(described[s],
                                model_state) for s in ("speech", "music")))  # fmt: skip
    assert np.abs(scores - jax.nn.sigmoid(logits)).max() <= TOLERANCE
    # One recording against a library: speech batch 1 against the two tracks.
    _, _, ranked = run(graph, speech=described["speech"][:1], music=described["music"])
    assert np.abs(ranked - model.rank(speech_jax[0], music_jax)).max() <= TOLERANCE
    assert np.ptp(ranked) > 1e-4
    assert read_metadata(graph)["descriptor_names"] == list(core.names)
    with pytest.raises(ConfigError, match="cannot stream"):
        export_graph(model, streaming=True)


def av_enhancer(noisy: np.ndarray, cache: pathlib.Path, causal: bool = True) -> AVEnhancer:
    """The smoke AV recipe's gate stage with random weights (Net 1's feature statistics of
    ``noisy``), its mouth tracks cached in ``cache``; ``causal=False``: a bidirectional lip
    net and gate."""
    audio, lips, gate = (stage.config for stage in
                         stages.load_recipe(f"{CONFIGS}/av/lipgate.py:smoke").stages)  # fmt: skip
    mouth = dataclasses.replace(gate.data.mouth, detect_scale=0.25)
    data = dataclasses.replace(gate.data, cache_dir=str(cache), mouth=mouth)
    nets = {"lip_net": dataclasses.replace(gate.model.lip_net, causal=causal),
            "gate_net": dataclasses.replace(gate.model.gate_net, causal=causal)}  # fmt: skip
    lips, gate = (dataclasses.replace(c, data=data, model=dataclasses.replace(c.model, **nets))
                  for c in (lips, gate))  # fmt: skip
    audio_model = enhancer(audio.model.estimator, noisy, audio)
    model = AVEnhancer(NOWHERE, gate, 0, None, audio_model, (lips, None))
    size = gate.data.mouth.crop_size
    frames = jnp.zeros((1, 4, size, size))
    lips_params = random_variables(model.lip_net.init, frames, jnp.ones((1, 4), bool), seed=1)
    bands = jnp.zeros((1, 4, 3 * model.n_bands))
    params = random_variables(model.gate_net.init, bands, seed=2)["params"]
    return AVEnhancer(NOWHERE, gate, 0, params, audio_model, (lips, lips_params["params"]))


@pytest.fixture(scope="module")
def av_clip(shared_data) -> tuple[np.ndarray, pathlib.Path]:
    """A GRID talker's video and its speech at 16 kHz with white noise at about 10 dB SNR."""
    pytest.importorskip("av", reason=VIDEO_REASON)
    pytest.importorskip("cv2", reason=VIDEO_REASON)
    from jaxspeech.data.video import read_video_audio

    video = shared_data / AV_CLIP
    clean = read_video_audio(video, 16000)
    noise = np.random.default_rng(0).standard_normal(clean.shape)
    return (clean + noise * np.sqrt(np.mean(clean**2) / 10)).astype(np.float32), video


def test_av_system_matches_jax_with_and_without_a_face(av_clip, tmp_path):
    """The causal smoke system against ``AVEnhancer.enhance`` on a GRID clip (a face in every
    frame), and with the face flags off for the middle third against the same stream; the
    streaming graph chained hop by hop equals them."""
    noisy, video = av_clip
    model = av_enhancer(noisy, tmp_path)
    expected = model.enhance(noisy, video)
    n_fft, hop = model.n_fft, model.hop
    n_frames = stream.causal_frames(n_fft, hop, noisy.size)
    lips, face = avfile.frame_inputs(model, str(video), n_frames, hop - n_fft // 2)
    assert face.all()
    partial = face.copy()
    partial[n_frames // 3 : 2 * n_frames // 3] = False
    graph = export_graph(model)
    enhanced, fallback = run(graph, noisy=np.stack([noisy, noisy]), lips=np.stack([lips, lips]),
                             face=np.stack([face, partial]))[0]  # fmt: skip
    assert np.abs(enhanced - expected).max() <= TOLERANCE
    assert np.abs(expected - noisy).max() > 1e-2  # the mask acts
    assert np.abs(fallback - avfile.stream_blocks(model, noisy, lips, partial)).max() <= TOLERANCE
    # Causal: identical up to the first faceless frame's samples, different after it.
    first = (n_frames // 3) * hop - (n_fft - hop)
    assert np.abs(fallback - enhanced)[:first].max() <= TOLERANCE
    assert np.abs(fallback - enhanced)[first:].max() > 1e-3
    info = read_metadata(graph)
    assert (info["system"], info["framing"]) == ("av", "causal")
    assert info["frame_centre_offset"] == hop - n_fft // 2
    assert info["inputs"]["lips"] == ["batch", "frames", 32, 32]
    step = export_graph(model, streaming=True)
    layout = read_metadata(step)["state_layout"]
    assert list(layout)[-2:] == ["gate_lstm_0_c", "gate_lstm_0_h"]
    streamed = run_stream(step, np.stack([noisy, noisy]), lips=np.stack([lips, lips]),
                          face=np.stack([face, partial]))  # fmt: skip
    assert np.abs(streamed - np.stack([enhanced, fallback])).max() <= TOLERANCE


def test_non_causal_av_system_matches_jax(av_clip, tmp_path):
    """Bidirectional lip net and gate: the centred framing of ``AVMasking.enhance_frames``."""
    noisy, video = av_clip
    noisy = noisy[:16_001]
    model = av_enhancer(noisy, tmp_path, causal=False)
    n_frames = 1 + noisy.size // model.hop
    lips, face = avfile.frame_inputs(model, str(video), n_frames, 0)
    face[: n_frames // 2] = False
    params = model.variables["params"]
    expected = jax.jit(AVMasking.enhance_frames, static_argnums=0)(
        model, params, noisy[None], lips[None], face[None]
    )
    graph = export_graph(model)
    (enhanced,) = run(graph, noisy=noisy[None], lips=lips[None], face=face[None])
    assert np.abs(enhanced - np.asarray(expected)).max() <= TOLERANCE
    assert read_metadata(graph)["framing"] == "centred"
    with pytest.raises(ConfigError, match="cannot stream"):
        export_graph(model, streaming=True)


def test_a_system_without_exporter_is_one_clear_error():
    loaded = types.SimpleNamespace(system="separation", module=object(), variables={})
    with pytest.raises(ConfigError, match="no ONNX exporter for this separation model"):
        export_graph(loaded)


# --- the command ---------------------------------------------------------------------------

#: test_cli's 2-step run of the smoke recipe, causal.
TRAIN_OVERRIDES = (*CLI_TRAIN_OVERRIDES, "model.tcn.causal=True")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data) -> pathlib.Path:
    """A briefly trained causal Conv-TasNet run, on one device."""
    from jaxspeech.train import loop

    del shared_data  # the recipe reads the recordings; skip without them
    recipe = stages.apply_overrides(
        stages.load_recipe(f"{CONFIGS}/separation/convtasnet.py:smoke"), list(TRAIN_OVERRIDES)
    )
    path = tmp_path_factory.mktemp("convtasnet_run")
    loop.run(recipe, path, devices=jax.devices()[:1])
    return path


def export(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(["export", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_command_exports_a_trained_workdir(workdir, tmp_path, capsys, shared_data):
    whole, streaming = tmp_path / "model.onnx", tmp_path / "stream" / "model.onnx"
    status, out, _ = export(capsys, "--workdir", workdir, "-o", whole)
    assert status == 0
    assert out.splitlines()[:4] == [
        f"wrote {whole} (separation, whole_file graph, opset 17)",
        "  inputs:  mixture [batch, samples]",
        "  outputs: sources [batch, 2, samples]",
        "  sample rate: 8000 Hz",
    ]
    status, out, _ = export(capsys, "--workdir", workdir, "-o", whole, "--overwrite", "--quiet")
    assert (status, out) == (0, f"{whole}\n")
    status, out, _ = export(capsys, "--workdir", workdir, "-o", streaming, "--streaming")
    assert status == 0
    assert "inputs:  samples [batch, 128], state [batch, " in out
    assert "state: [batch, " in out and "output delay 8 samples" in out
    model = onnx.load(str(whole))
    onnx.checker.check_model(model, full_check=True)
    loaded = jaxspeech.load(workdir)
    mixture = speech(shared_data, 8000, 1.0).sum(0, keepdims=True)
    (onnx_out,) = run(model, mixture=mixture)
    jax_out = np.asarray(loaded.module.apply(loaded.variables, mixture))
    assert np.abs(onnx_out - jax_out).max() <= TOLERANCE
    assert np.abs(jax_out).max() > 1e-4
    streamed = run_stream(onnx.load(str(streaming)), mixture)
    valid = ((mixture.shape[1] - 16) // 8 + 1) * 8  # samples of whole encoder frames (L 16)
    assert np.abs(streamed - onnx_out)[..., :valid].max() <= TOLERANCE


def test_command_refusals_are_one_line(workdir, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"mine")
    refusals = {
        (workdir, existing): f"{existing} exists; pass --overwrite",
        (workdir, tmp_path / "model.wav"): "give the graph a .onnx file name",
        (tmp_path, tmp_path / "new.onnx"): "config.json not found",
    }
    for (folder, output), message in refusals.items():
        status, out, err = export(capsys, "--workdir", folder, "-o", output)
        assert (status, out) == (2, "")
        assert err.startswith("jaxspeech export: error: ") and message in err
        assert err.count("\n") == 1
    assert existing.read_bytes() == b"mine"
    assert not (tmp_path / "new.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnx", None)  # the export extra missing
    status, _, err = export(capsys, "--workdir", workdir, "-o", tmp_path / "x.onnx")
    assert status == 2 and 'pip install "jaxspeech[export]"' in err

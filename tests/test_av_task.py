"""Audio-visual task on synthetic clips: mixtures and their mouth frames, the split, the losses,
the no-face fallback through the whole system, the stream against the offline causal path,
the oracle-band and mismatched-video rows of the table, and where Net 1 is trained.

The clips are made here (audio, mouth crops, timestamps, face flags of the shapes
``jaxspeech.data.mouths.mouth_track`` returns), so no video decoder is needed."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from synthetic import random_params

from jaxspeech import avfile, stream
from jaxspeech.data.av import AVDataConfig, Clip, lip_frames, make_av_example
from jaxspeech.data.av_clips import ClipRef, split_clips
from jaxspeech.data.mixing import AudioCache
from jaxspeech.data.mouths import MouthConfig
from jaxspeech.data.pipeline import MixtureDataConfig
from jaxspeech.data.source import batch_examples
from jaxspeech.errors import ConfigError
from jaxspeech.inference.av import AVEnhancer
from jaxspeech.inference.enhancement import Enhancer
from jaxspeech.models.av import GateNetConfig, LipNetConfig
from jaxspeech.models.masknet import LSTMMaskNetConfig
from jaxspeech.train import stages
from jaxspeech.train.config import TrainConfig
from jaxspeech.train.task import TrainedRun
from jaxspeech.train.tasks import av, enhancement

RATE, HOP, FPS, CROP = 16000, 256, 25.0, 16
RECIPE = pathlib.Path(__file__).resolve().parents[1] / "configs/enhancement/distill.py"
AV_RECIPE = RECIPE.parents[1] / "av/lipgate.py"


def synthetic_clip(name: str, talker: str, seconds: float, video_seconds: float, seed: int):
    """A clip of harmonic "speech" with a mouth crop per video frame; frames 5–7 have no face."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    audio = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450), 1))
    n_frames = round(video_seconds * FPS)
    crops = rng.uniform(0, 1, (n_frames, CROP, CROP))
    face = np.ones(n_frames, bool)
    face[5:8] = False
    return Clip(
        ClipRef(name, talker),
        (0.1 * envelope * audio).astype(np.float32),
        crops.astype(np.float32),
        np.arange(n_frames) / FPS,
        face,
        FPS,
    )


@pytest.fixture(scope="module")
def clips():
    return [
        synthetic_clip("a.mpg", "s1", 1.0, 1.0, 0),
        synthetic_clip("b.mpg", "s1", 1.0, 0.6, 1),  # the video stops before the audio
        synthetic_clip("c.mpg", "t2", 1.2, 1.2, 2),
    ]


@pytest.fixture(scope="module")
def noises(tmp_path_factory):
    import soundfile as sf

    path = tmp_path_factory.mktemp("noise") / "hum.wav"
    sf.write(path, 0.1 * np.random.default_rng(3).standard_normal(RATE), RATE)
    return [str(path)]


DATA = AVDataConfig(segment_seconds=0.5, valid_size=2, mouth=MouthConfig(crop_size=CROP))


def example(clips, noises, condition, target=0, snr=3.0, seed=0, seconds=None):
    rng = np.random.default_rng(seed)
    cache = AudioCache(RATE)
    return make_av_example(
        rng, DATA, clips[target], clips, noises, cache, HOP,
        condition=condition, snr_db=snr, seconds=seconds,
    )  # fmt: skip


@pytest.mark.parametrize("condition", ["noise", "talker"])
def test_example_mixes_at_the_snr_with_aligned_mouth_frames(clips, noises, condition):
    ex = example(clips, noises, condition)
    samples, frames = DATA.num_samples, 1 + DATA.num_samples // HOP
    assert ex["mixture"].shape == ex["clean"].shape == ex["noise"].shape == (samples,)
    assert ex["lips"].shape == (frames, CROP, CROP) and ex["face"].shape == (frames,)
    np.testing.assert_allclose(ex["mixture"], ex["clean"] + ex["noise"], atol=1e-7)
    snr = 10 * np.log10(np.sum(ex["clean"] ** 2.0) / np.sum(ex["noise"] ** 2.0))
    assert snr == pytest.approx(3.0, abs=1e-3)
    assert ex["condition"] == ("noise", "talker").index(condition)
    if condition == "talker":  # the competing voice is the other talker's clip
        other = clips[2].audio
        best = max(
            abs(np.corrcoef(ex["noise"], other[s : s + samples])[0, 1])
            for s in range(0, len(other) - samples + 1, 1)
        )
        assert best > 0.999


def test_mouth_frames_follow_the_timestamps():
    crops = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    face = np.ones(10, bool)
    face[4] = False
    # 25 fps, 10 ms hop: every video frame covers 4 STFT frames; the video ends at 0.4 s.
    lips, present = lip_frames(crops, np.arange(10) / 25, face, 25.0, 48, 160, 16000)
    expected = np.minimum(np.arange(48) // 4, 10)
    assert np.array_equal(present, (expected < 10) & (expected != 4))
    assert np.array_equal(lips[present, 0, 0], expected[present])
    assert np.all(lips[~present] == 0)
    # a crop starting 0.1 s into the clip sees the video 0.1 s later
    shifted, _ = lip_frames(crops, np.arange(10) / 25, face, 25.0, 8, 160, 16000, 0.1)
    assert shifted[0, 0, 0] == 2


def test_split_is_by_sentence_and_by_talker():
    sentences = [f"s1/{k}.mpg" for k in range(20)]
    talkers = [f"talkers/t{k}.mpg" for k in range(10)]
    splits = split_clips(sentences, talkers, (0.6, 0.2, 0.2), seed=0)
    paths = {name: {r.path for r in refs} for name, refs in splits.items()}
    assert sum(map(len, paths.values())) == 30
    assert not (paths["train"] & paths["test"]) and not (paths["valid"] & paths["test"])
    test_talkers = {r.talker for r in splits["test"]} - {"s1"}
    train_talkers = {r.talker for r in splits["train"]}
    assert test_talkers and not (test_talkers & train_talkers)
    assert {r.talker for r in splits["test"]} >= {"s1"}  # unseen sentences of a seen talker
    assert splits == split_clips(sentences, talkers, (0.6, 0.2, 0.2), seed=0)


@pytest.fixture(scope="module")
def audio_run(shared_data):
    """A random causal LSTM Net 1 with fixed feature statistics (the smoke recipe's STFT)."""
    del shared_data  # the enhancement config names the real corpora (not read here)
    config = stages.load_recipe(f"{RECIPE}:smoke").stages[1].config
    model = dataclasses.replace(
        config.model, estimator=LSTMMaskNetConfig(hidden=8, layers=1), teacher=None
    )
    task = enhancement.Task(dataclasses.replace(config, model=model))
    params = random_params(task.model, np.zeros((1, 4, task.n_freqs), np.float32))
    rng = np.random.default_rng(1)
    state = {
        "feature_mean": rng.normal(-4.0, 1.0, task.n_freqs).astype(np.float32),
        "feature_std": rng.uniform(1.0, 3.0, task.n_freqs).astype(np.float32),
    }
    return TrainedRun(pathlib.Path("audio"), task, params, state, 0)


def av_config(net: str) -> av.AVConfig:
    return av.AVConfig(
        model=av.AVModelConfig(
            net=net,
            n_bands=8,
            lip_net=LipNetConfig(channels=(4, 8), embedding=8, hidden=8),
            gate_net=GateNetConfig(hidden=8),
        ),
        data=DATA,
        train=TrainConfig(batch_size=2),
    )


@pytest.fixture(scope="module")
def gate(audio_run):
    """``(gate task, gate params)`` over random lip-net params."""
    lips_task = av.Task(av_config("lips"), {"audio": audio_run})
    lips_params = random_params(lips_task.lip_net, *lips_inputs(lips_task))
    lips_run = TrainedRun(pathlib.Path("lips"), lips_task, lips_params, {}, 0)
    task = av.Task(av_config("gate"), {"audio": audio_run, "lips": lips_run})
    inputs = np.zeros((1, 4, 3 * task.n_bands), np.float32)
    return task, random_params(task.gate_net, inputs, seed=2, scale=1.0)


@pytest.fixture(scope="module")
def loaded_gate(gate, audio_run) -> AVEnhancer:
    """The gate system as ``jaxspeech.load`` gives it, from the same configs and params."""
    task, params = gate
    audio_model = Enhancer(
        audio_run.workdir, audio_run.task.config, 0, audio_run.params, audio_run.model_state
    )
    lips = (av_config("lips"), task.lips_params)
    return AVEnhancer(pathlib.Path("gate"), task.config, 0, params, audio_model, lips)


def lips_inputs(task):
    return np.zeros((1, 4, *task.crop_shape), np.float32), np.ones((1, 4), bool)


def test_lip_loss_is_bce_on_frames_with_a_face(gate, audio_run, clips, noises):
    task = av.Task(av_config("lips"), {"audio": audio_run})
    params = gate[0].lips_params
    batch = batch_examples([example(clips, noises, "noise", t) for t in (0, 1)], 2)[0]
    loss, (metrics, _) = jax.jit(task.loss_fn)(params, {}, batch, jax.random.PRNGKey(0))
    target = np.asarray(jax.jit(task.band_target)(batch["clean"]))
    logits = np.asarray(
        jax.jit(task.lip_net.apply)({"params": params}, batch["lips"], batch["face"])
    )
    bce = np.logaddexp(0, logits) - target * logits
    face = batch["face"].astype(bool)
    assert 0 < face.sum() < face.size  # clip b's video stops early
    np.testing.assert_allclose(loss, bce[face].mean(), rtol=1e-5)
    assert 0 <= metrics["band_accuracy"] <= 1 and task.valid_metric == "band_bce"


def test_gate_without_a_face_is_net1_bit_for_bit(gate, clips, noises):
    task, params = gate
    batch = batch_examples(
        [example(clips, noises, c, t) for c, t in (("talker", 0), ("noise", 1))], 2
    )[0]
    audio_params, audio_state = task.audio_variables
    spec = task.audio.spectrum(batch["mixture"])
    outputs = jax.jit(task.masks_from_spectrum)(params, spec, batch["lips"], batch["face"])
    face = batch["face"].astype(bool)
    mask, audio_mask = np.asarray(outputs["mask"]), np.asarray(outputs["audio"])
    assert np.array_equal(mask[~face], audio_mask[~face])  # frames and the video's end
    assert np.abs(mask[face] - audio_mask[face]).max() > 1e-3  # the gate acts elsewhere
    assert np.all(np.asarray(outputs["gate"])[~face] == 0)
    blank = jax.jit(
        lambda x: task.enhance_frames(
            params, x, np.zeros_like(batch["lips"]), np.zeros_like(batch["face"])
        )
    )
    alone = jax.jit(lambda x: task.audio.enhance(audio_params, audio_state, x))
    np.testing.assert_array_equal(blank(batch["mixture"]), alone(batch["mixture"]))  # a clip
    loss, (metrics, _) = jax.jit(task.loss_fn)(params, {}, batch, jax.random.PRNGKey(0))
    assert np.isfinite(loss) and loss == metrics["mask_mse"] and task.valid_metric == "si_sdr"
    # The gate's loss weighs each bin by the noisy energy, as Net 1's training did.
    clean, noisy = batch["clean"], batch["mixture"]
    ideal = np.asarray(task.audio.ideal_mask(clean, noisy - clean))
    energy = np.abs(np.asarray(spec)) ** 2
    per_clip = (energy * (mask - ideal) ** 2).sum((1, 2)) / energy.sum((1, 2))
    np.testing.assert_allclose(loss, per_clip.mean(), rtol=1e-4)


def test_av_stream_equals_offline_causal(loaded_gate, clips):
    task = loaded_gate
    enhancer = task.stream()
    assert enhancer.latency == 512 and enhancer.delay == 256
    noisy = clips[0].audio[:4000] + 0.05 * np.random.default_rng(4).standard_normal(4000)
    n_frames = stream.causal_frames(task.n_fft, task.hop, noisy.size)
    n_hops = -(-(noisy.size + enhancer.delay) // task.hop)
    assert n_frames == n_hops
    # frame t is centred on sample t·hop (n_fft = 2·hop); the video (25 fps) ends at 0.16 s
    centre = np.arange(n_hops) * task.hop / RATE
    index = np.where(centre < 0.16, np.floor(centre * FPS).astype(int), -1)
    face = index >= 0
    lips = np.where(face[:, None, None], clips[0].crops[np.maximum(index, 0)], 0.0)
    padded = np.pad(noisy, (0, n_hops * task.hop - noisy.size)).astype(np.float32)
    state, outputs = enhancer.init_state(), []
    for t in range(n_hops):
        hop = padded[t * task.hop : (t + 1) * task.hop]
        new_frame = t == 0 or index[t] != index[t - 1]
        args = (lips[t], face[t]) if new_frame else ()
        state, out = enhancer.process_hop(state, hop, *args)
        outputs.append(np.asarray(out))
    streamed = np.concatenate(outputs)[enhancer.delay : enhancer.delay + noisy.size]
    offline = jax.jit(lambda x, crops, f: stream.enhance_causal_av(task, x, crops, f))(
        noisy.astype(np.float32), lips.astype(np.float32), face
    )
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    assert enhancer._step._cache_size() == 1
    audio_only = stream.enhance_causal(task.audio_model, noisy)
    assert np.abs(np.asarray(offline) - np.asarray(audio_only)).max() > 1e-4  # video acts
    # files of any length: the stream in jitted blocks of hops (here 4 blocks of 5)
    blocks = avfile.stream_blocks(task, noisy.astype(np.float32), lips, face, 5)
    np.testing.assert_allclose(blocks, offline, atol=1e-5)


def test_task_config_errors(audio_run):
    with pytest.raises(ConfigError, match=r"model\.net"):
        av.Task(
            dataclasses.replace(av_config("lips"), model=av.AVModelConfig(net="ears")),
            {"audio": audio_run},
        )
    with pytest.raises(ConfigError, match="'lips'"):
        av.Task(av_config("gate"), {"audio": audio_run})
    with pytest.raises(ConfigError, match="sample_rate"):
        config = av_config("lips")
        av.Task(
            dataclasses.replace(config, data=dataclasses.replace(DATA, sample_rate=8000)),
            {"audio": audio_run},
        )


def test_oracle_bands_row_is_the_gate_over_the_clean_band_activity(gate, clips, noises):
    """The oracle row in numpy: band k of frame t is the clean band energy's level below the
    clip's loudest frame, mapped from −range…0 dB onto 0…1; the gate reads Net 1's band
    means, the bands and their product; the mask is g·(B⊙M) + (1−g)·M on face frames, M
    elsewhere."""
    task, params = gate
    batch = batch_examples(
        [example(clips, noises, c, t) for c, t in (("noise", 1), ("talker", 0))], 2
    )[0]
    noisy, clean, face = batch["mixture"], batch["clean"], batch["face"]
    power = np.abs(np.asarray(task.audio.spectrum(clean))) ** 2
    groups = np.array_split(np.arange(task.n_freqs), task.n_bands)
    band_power = np.stack([power[..., g].sum(-1) for g in groups], -1)
    loudest = power.sum(-1).max(-1)[:, None, None]
    level = 10 * np.log10(np.maximum(band_power, 1e-30) / loudest)
    bands = np.clip(1 + level / task.config.model.band_range_db, 0, 1) * (band_power > 0)
    assert 0 < bands.mean() < 1 and 0 < np.mean((bands > 0) & (bands < 1))
    audio_params, audio_state = task.audio_variables
    audio_mask, spec = map(np.asarray, task.audio.mask(audio_params, audio_state, noisy))
    audio_bands = np.stack([audio_mask[..., g].mean(-1) for g in groups], -1)
    inputs = np.concatenate([audio_bands, bands, audio_bands * bands], -1).astype(np.float32)
    g = np.asarray(task.gate_net.apply({"params": params}, inputs))
    spread = np.concatenate(
        [np.repeat(bands[..., [k]], len(b), -1) for k, b in enumerate(groups)], -1
    )
    expected = np.where(
        face[..., None] > 0, g * spread * audio_mask + (1 - g) * audio_mask, audio_mask
    )
    got = jax.jit(task.masks_from_bands)(params, spec, task.band_target(clean), face)["mask"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(expected - audio_mask).max() > 1e-3  # the bands act
    enhanced = jax.jit(task.enhance_with_oracle_bands)(params, noisy, clean, face)
    reference = task.audio.resynthesise(spec, expected.astype(np.float32), noisy.shape[-1])
    np.testing.assert_allclose(enhanced, reference, atol=1e-5)
    opened = jax.jit(task.masks_from_bands)(None, spec, task.band_target(clean), face)["mask"]
    np.testing.assert_allclose(
        opened, np.where(face[..., None] > 0, spread * audio_mask, audio_mask), atol=1e-6
    )


def test_mismatched_video_comes_from_another_clip():
    """Each example takes the mouths of the first example ``shift`` or more places on whose
    clip differs (by hand: clips a a b b c, shift 2 → donors 2 3 4 0 1)."""
    examples = [
        {"lips": np.full((2, 1, 1), i, np.float32), "face": np.full(2, i % 2, np.float32),
         "info": {"path": path}}
        for i, path in enumerate("aabbc")
    ]  # fmt: skip
    mismatched = av.with_other_video(examples, 2)
    assert [int(e["other_lips"][0, 0, 0]) for e in mismatched] == [2, 3, 4, 0, 1]
    assert [int(e["other_face"][0]) for e in mismatched] == [0, 1, 0, 0, 1]
    assert all(e["lips"] is x["lips"] for e, x in zip(mismatched, examples, strict=True))
    with pytest.raises(ConfigError, match="two clips"):
        av.with_other_video(examples[:2], 1)


@pytest.mark.parametrize("variant", ["smoke", "smoke-librispeech"])
def test_net1_hears_the_av_train_clips_or_other_speakers(variant):
    """By default Net 1 trains on the AV stages' own mixtures (the same data section, so the
    same clip splits: no valid or test clip is heard); "-librispeech" on LibriSpeech."""
    audio, lips, gate_stage = stages.load_recipe(f"{AV_RECIPE}:{variant}").stages
    assert lips.config.data == gate_stage.config.data
    if variant == "smoke":
        assert audio.config.data == lips.config.data
    else:
        assert isinstance(audio.config.data, MixtureDataConfig)
        assert "librispeech" in audio.config.data.speech
    assert audio.config.model.estimator == LSTMMaskNetConfig(hidden=48, layers=1)

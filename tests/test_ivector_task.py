"""The two-stage i-vector recipe (UBM, then T matrix with its back end) on a tiny synthetic
corpus: trained on 8 simulated devices, the UBM's EM agrees with a 1-device run, and the
i-vector workdir alone restores, embeds (the same alone and in a padded batch) and scores."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import soundfile as sf

from jaxspeech.data.utterances import UtteranceDataConfig
from jaxspeech.errors import ConfigError
from jaxspeech.models.ivector import UBMConfig
from jaxspeech.train import config as config_lib
from jaxspeech.train import stages
from jaxspeech.train.loop import run
from jaxspeech.train.restore import evaluate, restore_run
from jaxspeech.train.tasks import make_task
from jaxspeech.train.tasks.ivector import IVectorConfig, IVectorTaskConfig
from jaxspeech.train.tasks.ubm import EMConfig, UBMTaskConfig

RATE = 16000


def babble(rng, pitches, seconds):
    """Syllable-like bursts of harmonic tones on the speaker's pitches, with quiet gaps."""
    pieces = []
    while sum(map(len, pieces)) < seconds * RATE:
        n = int(rng.uniform(0.08, 0.2) * RATE)
        t = np.arange(n) / RATE
        f0 = rng.choice(pitches)
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        pieces.append(0.2 * np.hanning(n) * tone)
        pieces.append(1e-3 * rng.normal(size=int(rng.uniform(0.03, 0.1) * RATE)))
    return np.concatenate(pieces)[: round(seconds * RATE)].astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("babble")
    rng = np.random.default_rng(0)
    for s in range(8):
        folder = root / "speech" / f"spk{s}"
        folder.mkdir(parents=True)
        pitches = 110 * 2 ** (s / 8) * np.array([1.0, 1.25, 1.5])
        for k in range(4):
            sf.write(folder / f"{k}.wav", babble(rng, pitches, 1.5), RATE)
    return root


def data_config(root):
    return UtteranceDataConfig(
        root=str(root), speech=("speech",), crop_seconds=1.0, split_fractions=(0.5, 0.25, 0.25)
    )


def train_config(steps):
    return config_lib.TrainConfig(
        steps=steps, batch_size=8, checkpoint_every=steps, eval_every=steps, log_every=1
    )


def recipe(root) -> stages.MultiStage:
    ubm = UBMTaskConfig(
        model=UBMConfig(components=4, iterations_per_split=1),
        data=data_config(root),
        em=EMConfig(batches_per_step=2),
        train=train_config(3),
    )
    tv = IVectorTaskConfig(
        model=IVectorConfig(rank=4, em_iterations=2, plda_iterations=3),
        data=data_config(root),
        em=EMConfig(batches_per_step=2),
        train=train_config(4),
    )
    return stages.MultiStage(
        (stages.Stage("ubm", ubm), stages.Stage("ivector", tv, reads=("ubm",)))
    )


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ivector_recipe")
    stages.run(recipe(corpus), workdir)
    return workdir


@pytest.fixture(scope="module")
def ubm_run(trained):
    return restore_run(trained / "ubm")


def test_ubm_statistics_agree_on_one_and_eight_devices(ubm_run, corpus, tmp_path):
    eight = ubm_run
    assert int((np.asarray(eight.params["weights"]) > 0).sum()) == 4
    config = recipe(corpus).stages[0].config
    one = jax.device_get(run(config, tmp_path / "one", devices=jax.devices()[:1]))
    for key in ("weights", "means", "variances"):
        np.testing.assert_allclose(one.params[key], eight.params[key], rtol=2e-4, atol=1e-5)


def test_ivector_workdir_restores_embeds_and_scores(trained, corpus):
    restored = restore_run(trained / "ivector")
    task, params, state = restored.task, restored.params, restored.model_state
    assert task.ivector_dim == 4 and restored.step == 4
    wav = [sf.read(corpus / "speech" / f"spk{s}" / "0.wav", dtype="float32")[0] for s in (0, 7)]
    short = wav[0][:12000]
    batch = np.zeros((2, 24000), np.float32)
    batch[0, :12000], batch[1] = short, wav[1]
    embed = jax.jit(task.embed)
    together = np.asarray(embed(params, state, batch, np.array([12000, 24000], np.int32)))
    alone = np.asarray(embed(params, state, short[None], np.array([12000], np.int32)))
    assert together.shape == (2, 4) and together.dtype == np.float32
    np.testing.assert_allclose(together[0], alone[0], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    scores = np.asarray(jax.jit(task.score)(params, state, together, together[::-1]))
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    assert not np.allclose(np.asarray(params["plda"]["within"]), np.eye(4))
    evaluation, _, _ = evaluate(trained / "ivector", "test", "latest")
    rows = evaluation.table
    assert len(evaluation.items) == 2 * rows[0]["trials"]
    systems = {r["system"]: r for r in rows}
    assert set(systems) == {"i-vector + cosine", "i-vector + PLDA"}
    assert systems["i-vector + PLDA"]["trials"] == 28  # two speakers, eight utterances
    assert all(0.0 <= r["EER (%)"] <= 100.0 for r in systems.values())


def test_ivector_stage_checks_its_recipe(ubm_run, corpus):
    frozen = {"ubm": ubm_run}
    config = recipe(corpus).stages[1].config
    bad_steps = config_lib.apply_overrides(config, ["train.steps=9"])
    with pytest.raises(ConfigError, match="em_iterations \\+ 2 = 4"):
        make_task(bad_steps, frozen)
    with pytest.raises(ConfigError, match="add 'ubm' to the stage's reads"):
        make_task(config, {})
    params, _ = make_task(config, frozen).init_model(jax.random.PRNGKey(0))
    assert params["tv"]["T"].shape == (4, 60, 4)

"""Background-music matching: the split head against the full forward pass, ranking metrics
against brute force, the demonstration labelling, and a short training run end to end
(evaluation table, `jaxspeech match` with its library cache, refusing other descriptors)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

import jaxspeech
from jaxspeech import cli
from jaxspeech.data.bgm import (
    FIT,
    VOICES,
    DemonstrationConfig,
    demonstration_pairs,
    fixed_clip,
    write_pairs_csv,
)
from jaxspeech.data.pairs import read_pairs, split_pairs
from jaxspeech.dsp.descriptors import DescriptorConfig
from jaxspeech.errors import ConfigError, ShapeError, TrialError
from jaxspeech.metrics.ranking import ranking_metrics, roc_auc
from jaxspeech.models.bgm import BGMatcher, BGMConfig, project_audio, project_music, rank_library

RATE = 16000
FEATURES = DescriptorConfig(
    families=("logmel", "spectral", "rms"), sample_rate=RATE, n_fft=512, hop_length=256,
    n_mels=16, n_mfcc=8, segment_seconds=0.5, segment_hop_seconds=0.25,
)  # fmt: skip
MODEL = BGMConfig(
    features=FEATURES, clip_seconds=1.5, channels=(8,), embedding_dim=8, hidden=(8, 4)
)


def test_split_first_layer_ranks_as_the_full_forward_pass():
    model = BGMatcher(MODEL)
    rng = np.random.default_rng(0)
    speech = jnp.asarray(rng.standard_normal((1, 5, 12)), jnp.float32)
    music = jnp.asarray(rng.standard_normal((7, 4, 12)), jnp.float32)  # other segment count
    params = model.init(jax.random.key(0), music, music)["params"]
    full = jax.jit(model.apply)({"params": params}, jnp.repeat(speech, 7, 0), music)
    embed = jax.jit(lambda x: model.apply({"params": params}, x, method=BGMatcher.embed))
    fast = jax.jit(rank_library, static_argnums=0)(model, params, embed(speech)[0], embed(music))
    full = jax.nn.sigmoid(full)
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-6)
    # The halves are the first dense layer on [audio; music], computed by hand.
    a, m = embed(speech)[0], embed(music)
    concatenated = jnp.concatenate([jnp.broadcast_to(a, m.shape), m], -1)
    by_hand = concatenated @ params["fuse"]["kernel"] + params["fuse"]["bias"]
    np.testing.assert_allclose(project_audio(params, a) + project_music(params, m), by_hand,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    with pytest.raises(ShapeError, match="recompute them with this model"):
        project_music(params, m[:, :5])
    with pytest.raises(ConfigError, match="shorter than one segment"):
        dataclasses.replace(MODEL, clip_seconds=0.2)


def test_ranking_metrics_against_brute_force():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=(9, 11)).astype(float)  # many ties
    relevant = rng.random((9, 11)) < 0.3
    relevant[0] = False  # a row with nothing relevant is left out
    wins = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[relevant], scores[~relevant])
    ]
    assert roc_auc(scores, relevant) == pytest.approx(np.mean(wins))
    found = ranking_metrics(scores, relevant, ks=(1, 3))
    rows = [r for r in range(9) if relevant[r].any()]
    recall3, reciprocal = [], []
    for r in rows:
        order = sorted(range(11), key=lambda j: (-scores[r, j], j))
        recall3.append(sum(relevant[r, j] for j in order[:3]) / relevant[r].sum())
        reciprocal.append(1 / (1 + next(i for i, j in enumerate(order) if relevant[r, j])))
    assert found["rows"] == len(rows)
    assert found["recall@3"] == pytest.approx(np.mean(recall3))
    assert found["MRR"] == pytest.approx(np.mean(reciprocal))
    with pytest.raises(TrialError, match="positives and negatives"):
        roc_auc(scores, np.ones_like(relevant))
    with pytest.raises(TrialError, match="no row"):
        ranking_metrics(scores, np.zeros_like(relevant))


def test_fixed_clip_repeats_short_recordings_and_centres_long_ones():
    np.testing.assert_array_equal(fixed_clip(np.arange(3.0), 7), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(fixed_clip(np.arange(10.0), 4), [3, 4, 5, 6])


def test_demonstration_labelling_of_the_real_recordings(shared_data, tmp_path):
    cfg = DemonstrationConfig(utterances_per_speaker=1)
    pairs = demonstration_pairs(shared_data, cfg)
    assert pairs == demonstration_pairs(shared_data, cfg)  # deterministic
    speakers = {p.first_group for p in pairs}
    music = sorted({p.second for p in pairs})
    assert len(music) == 70 and len(pairs) == len({p.first for p in pairs}) * 70
    ages = {}
    with open(shared_data / "speechocean762" / "SPEAKERS.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            ages[row["speaker"]] = int(row["age"])
    ocean = {s.split("/")[1] for s in speakers if s.startswith("speechocean762/")}
    assert ocean == {s for s, a in ages.items() if a < 13 or a >= 18}
    assert sum(s.startswith("librispeech/") for s in speakers) == 10
    for p in pairs[::97]:
        corpus, speaker = p.first_group.split("/")
        child = corpus == "speechocean762" and ages[speaker] < 13
        genre = os.path.basename(p.second).split(".")[0]
        assert p.label == FIT[genre][VOICES.index("child" if child else "adult narration")]
    path = tmp_path / "pairs.csv"
    write_pairs_csv(pairs, path, shared_data)
    again = read_pairs(path, "speech_path", "music_path", "label", shared_data, True, "speaker")
    assert [(p.first, p.second, p.label, p.first_group) for p in again] == [
        (p.first, p.second, p.label, p.first_group) for p in pairs
    ]
    splits = split_pairs(pairs, (0.7, 0.1, 0.2), 0, disjoint="each")
    for a, b in itertools.combinations(splits.values(), 2):
        assert not {p.first_group for p in a} & {p.first_group for p in b}
        assert not {p.second for p in a} & {p.second for p in b}
    test_speakers = {p.first_group.split("/")[1] for p in splits["test"]}
    assert {ages.get(s, 99) < 13 for s in test_speakers} == {True, False}  # both voices


# --- a short training run on synthetic recordings -----------------------------------------


def _tone(freq, seconds, rng):
    t = np.arange(round(seconds * RATE)) / RATE
    return 0.3 * np.sin(2 * np.pi * freq * t * (1 + 0.01 * rng.standard_normal()))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``speech/{low,high}{k}.wav`` (tones of two "voices"), ``music/{noise,chirp}{j}.wav`` and
    ``pairs.csv``: low voices suit noise (0.9) more than chirps (0.1), high voices the reverse
    (0.2, 0.8)."""
    root = tmp_path_factory.mktemp("bgm")
    rng = np.random.default_rng(0)
    (root / "speech").mkdir()
    (root / "music").mkdir()
    for k in range(10):
        sf.write(root / f"speech/low{k}.wav", _tone(150 + 10 * k, 1.0, rng), RATE)
        sf.write(root / f"speech/high{k}.wav", _tone(2000 + 50 * k, 1.0, rng), RATE)
    for j in range(10):
        sf.write(root / f"music/noise{j}.wav", 0.1 * rng.standard_normal(2 * RATE), RATE)
        t = np.arange(2 * RATE) / RATE
        chirp = 0.3 * np.sin(2 * np.pi * (300 + 200 * j) * t * (1 + t))
        sf.write(root / f"music/chirp{j}.wav", chirp, RATE)
    table = {("low", "noise"): 0.9, ("low", "chirp"): 0.1, ("high", "noise"): 0.2,
             ("high", "chirp"): 0.8}  # fmt: skip
    with open(root / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("speech_path", "music_path", "label"))
        for voice, kind, k, j in itertools.product(("low", "high"), ("noise", "chirp"),
                                                   range(10), range(10)):  # fmt: skip
            label = table[voice, kind]
            writer.writerow((f"speech/{voice}{k}.wav", f"music/{kind}{j}.wav", label))
    return root


@pytest.fixture(scope="module")
def workdir(corpus, tmp_path_factory):
    from jaxspeech.data.bgm import BGMDataConfig
    from jaxspeech.train import config as config_lib
    from jaxspeech.train import loop
    from jaxspeech.train.tasks.bgm import BGMEvalConfig, BGMTaskConfig

    config = BGMTaskConfig(
        model=MODEL,
        data=BGMDataConfig(
            root=str(corpus), csv="pairs.csv", sample_rate=RATE, graded_labels=True,
            disjoint="each", split_fractions=(0.5, 0.2, 0.3), valid_size=32,
        ),
        eval=BGMEvalConfig(ks=(1, 3), random_draws=10),
        optim=config_lib.OptimConfig(learning_rate=3e-3),
        train=config_lib.TrainConfig(steps=150, batch_size=16, checkpoint_every=150,
                                     eval_every=150, log_every=50),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("bgm_run")
    loop.run(config, path)
    return path


def test_training_learns_the_fit_and_evaluates_against_the_baselines(workdir):
    from jaxspeech.train import restore

    run = restore.restore_run(workdir, "best")
    batch = run.task.valid_batches()[0]
    assert set(batch) == {"first", "second", "label"}  # descriptors and labels, no names
    evaluation, markdown, _ = restore.evaluate(workdir)
    rows = evaluation.table
    by_system = {r["system"]: r for r in rows}
    assert list(by_system) == ["model", "random order", "cosine of fused features"]
    model, random = by_system["model"], by_system["random order"]
    assert model["pairs"] == 36 and model["tracks"] == 6  # 6 test recordings x 6 tracks
    assert model["AUC"] > 0.9 > random["AUC"]
    assert model["MRR"] > random["MRR"]
    assert "recall@3" in markdown and (workdir / "eval" / "test.json").is_file()


def test_refuses_descriptors_of_other_families(workdir):
    from jaxspeech.train import restore
    from jaxspeech.train.tasks.bgm import Task

    run = restore.restore_run(workdir, "best")
    reordered = dataclasses.replace(FEATURES, families=("rms", "logmel", "spectral"))
    model = dataclasses.replace(MODEL, features=reordered)
    other = dataclasses.replace(run.task.config, model=model)

    with pytest.raises(ConfigError, match="trained on other descriptors"):
        Task(other).check_layout(run.model_state)
    with pytest.raises(ShapeError, match=r"\[\.\.\., segments, 58\]"):
        run.task.check_descriptors(np.zeros((1, 5, 12)))


def _match(capsys, *args):
    status = cli.main(["match", *map(str, args), "--quiet"])
    out, err = capsys.readouterr()
    return status, out, err


def test_match_ranks_a_library_with_its_cache(workdir, corpus, tmp_path, capsys):
    library = tmp_path / "library"
    library.mkdir()
    for name in ("noise0", "noise1", "chirp0", "chirp1"):
        (library / f"{name}.wav").write_bytes((corpus / f"music/{name}.wav").read_bytes())
    (library / "broken.wav").write_bytes(b"not audio at all")
    low = corpus / "speech/low0.wav"
    status, out, err = _match(
        capsys, low, "--library", library, "--workdir", workdir, "-k", "3", "--json"
    )
    assert status == 0, err
    assert "4 new, 0 changed, 0 removed, 1 unreadable (skipped)" in err
    assert f"skipped unreadable {library / 'broken.wav'}" in err
    ranked = json.loads(out)
    assert len(ranked) == 3 and [r["score"] for r in ranked] == sorted(
        (r["score"] for r in ranked), reverse=True
    )
    # One score equals the library's, computed alone.
    status, out, _ = _match(
        capsys, low, "--music", ranked[0]["path"], "--workdir", workdir, "--json"
    )
    assert json.loads(out)["score"] == pytest.approx(ranked[0]["score"], abs=1e-5)
    # jaxspeech.load's matcher is the command's: the same scores.
    loaded = jaxspeech.load(workdir)
    assert loaded.system == "bgm" and loaded.sample_rate == RATE
    speech = loaded.embed(sf.read(low, dtype="float32")[0])
    tracks = np.stack([loaded.embed_file(r["path"]) for r in ranked])
    np.testing.assert_allclose(loaded.rank(speech, tracks), [r["score"] for r in ranked], atol=1e-5)
    assert loaded.score(speech, tracks[0]) == pytest.approx(ranked[0]["score"], abs=1e-5)
    # Add, change and remove files: the cache says so and stays correct.
    (library / "chirp1.wav").unlink()
    (library / "noise1.wav").write_bytes((corpus / "music/chirp2.wav").read_bytes())
    (library / "copy.wav").write_bytes((corpus / "music/noise0.wav").read_bytes())
    status, out, err = _match(capsys, low, "--library", library, "--workdir", workdir, "-k", "9")
    assert "1 new, 1 changed, 1 removed" in err and status == 0
    lines = out.splitlines()[2:]  # below the header and its rule
    assert len(lines) == 4
    scores = {line.split("|")[3].strip(): float(line.split("|")[2]) for line in lines}
    assert scores[str(library / "copy.wav")] == pytest.approx(scores[str(library / "noise0.wav")])
    status, _, err = _match(capsys, tmp_path / "none.wav", "--music", low, "--workdir", workdir)
    assert status == 2 and "none.wav: no such file" in err
    status, _, err = _match(capsys, low, "--workdir", workdir)
    assert status == 2 and "--library MUSIC_DIR" in err

"""Speaker verification: the ResNet-ASP student against numpy references (features, pooling,
parameter count), padding invariance, the AAM and distillation losses on explicit target
arrays, AS-norm against a loop over trials, trial lists, and on a small synthetic corpus
data-parallel training (1 and 8 devices agree, batch norm synchronised), evaluation and the
``embed`` / ``verify`` commands."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from synthetic import write_tone_corpus

import jaxspeech
from jaxspeech import cli, dsp, parallel
from jaxspeech.data import UtteranceDataConfig
from jaxspeech.errors import ConfigError, TrialError
from jaxspeech.losses import aam_softmax
from jaxspeech.metrics.verification import adaptive_snorm
from jaxspeech.models.speaker import (
    RESNET34,
    AttentiveStatsPool,
    SpeakerNet,
    SpeakerNetConfig,
    features,
    param_count,
    valid_frames,
)
from jaxspeech.train import config as config_lib
from jaxspeech.train import restore
from jaxspeech.train.loop import run
from jaxspeech.train.task import TrainedRun
from jaxspeech.train.tasks import ivector, speaker

RATE = 16000
TINY = SpeakerNetConfig(blocks=(1, 1, 1), width=4, embed_dim=16, attention_dim=8)
#: the net of the training tests: one halving, the fewest compiled layers
SMALL = dataclasses.replace(TINY, blocks=(1, 1))


def _random_variables(net, feats, mask, seed=0):
    """Variables of ``net`` drawn at random (no init compiled), biases and batch-norm shifts
    included, so padding would leak into valid frames if it were not masked."""
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), feats, mask)
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(lambda x: 0.3 * rng.standard_normal(x.shape, np.float32), shapes)
    variables["batch_stats"] = jax.tree.map(lambda x: 1 + np.abs(x), variables["batch_stats"])
    return variables


def test_embedding_is_the_same_alone_and_in_a_padded_batch():
    net = SpeakerNet(TINY)
    rng = np.random.default_rng(0)
    lengths = [9001, 23457]  # odd frame counts at every stride: the halvings must line up
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in lengths]

    @jax.jit
    def embed(variables, wav, lens):
        feats, mask = features(wav, lens, TINY, RATE)
        return net.apply(variables, feats, mask)

    feats, mask = jnp.zeros((1, 101, TINY.n_mels)), jnp.ones((1, 101), bool)
    variables = _random_variables(net, feats, mask)
    batch = np.zeros((2, 30000), np.float32)
    for row, wav in enumerate(waves):
        batch[row, : len(wav)] = wav
    together = np.asarray(embed(variables, batch, np.array(lengths)))
    alone = np.asarray(embed(variables, waves[0][None], np.array(lengths[:1])))[0]
    np.testing.assert_allclose(together[0], alone, rtol=1e-4, atol=1e-4 * np.abs(alone).max())
    assert np.abs(together[0] - together[1]).max() > 1e-2  # the utterances differ


def test_features_are_mean_normalised_over_valid_frames():
    rng = np.random.default_rng(1)
    wav = 0.1 * rng.standard_normal(12345).astype(np.float32)
    padded = np.zeros((1, 20000), np.float32)
    padded[0, : len(wav)] = wav
    feats, mask = jax.jit(features, static_argnums=(2, 3))(
        padded, np.array([len(wav)]), RESNET34, RATE
    )
    n_valid = int(valid_frames(jnp.array([len(wav)]), RESNET34, RATE)[0])
    # frames whose 512-sample window ends inside the utterance: (12345 - 256) // 160 + 1
    assert n_valid == (len(wav) - 256) // 160 + 1 == int(mask.sum())
    reference = np.asarray(jax.jit(dsp.fbank, static_argnums=1)(wav, RATE), np.float64)[:n_valid]
    reference -= reference.mean(axis=0)
    np.testing.assert_allclose(np.asarray(feats[0, :n_valid]), reference, atol=2e-4)
    assert not np.any(np.asarray(feats[0, n_valid:]))


def test_attentive_statistics_pooling_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 7, 5)).astype(np.float32)
    mask = np.arange(7)[None] < np.array([[4], [7]])
    pool = AttentiveStatsPool(attention_dim=3)
    params = jax.jit(pool.init)(jax.random.PRNGKey(1), x, mask)["params"]
    out = np.asarray(jax.jit(pool.apply)({"params": params}, x, mask))
    w1, b1 = (np.asarray(params["Dense_0"][k], np.float64) for k in ("kernel", "bias"))
    w2, b2 = (np.asarray(params["Dense_1"][k], np.float64) for k in ("kernel", "bias"))
    for row in range(2):
        frames = x[row, mask[row]].astype(np.float64)  # [t, C]
        logits = np.tanh(frames @ w1 + b1) @ w2 + b2
        alpha = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
        mean = (alpha * frames).sum(0)
        std = np.sqrt((alpha * frames**2).sum(0) - mean**2)
        np.testing.assert_allclose(out[row], np.concatenate([mean, std]), rtol=1e-4, atol=1e-5)


def test_resnet34_has_the_wespeaker_layout_and_parameter_count():
    net = SpeakerNet(RESNET34)
    feats = jnp.zeros((1, 200, 80))
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), feats, jnp.ones((1, 200), bool))
    bn = 2  # scale and bias per channel

    def block(c_in, c_out):
        shortcut = c_in * c_out + bn * c_out if c_in != c_out else 0
        return 9 * c_in * c_out + 9 * c_out * c_out + 2 * bn * c_out + shortcut

    expected, c_in = 9 * 32 + bn * 32, 32
    for count, c_out in zip((3, 4, 6, 3), (32, 64, 128, 256), strict=True):
        expected += block(c_in, c_out) + (count - 1) * block(c_out, c_out)
        c_in = c_out
    pooled = 256 * 10  # channels × the 80 mels after three halvings
    expected += pooled * 128 + 128 + 128 * pooled + pooled  # attention
    expected += 2 * pooled * 256 + 256  # embedding layer
    assert param_count(shapes["params"]) == expected
    assert len([k for k in shapes["params"] if k.startswith("BasicBlock")]) == 16


def test_asnorm_matches_a_loop_over_trials():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal(6)
    enrol, test = rng.standard_normal((6, 9)), rng.standard_normal((6, 9))
    for top_k in (3, 50):
        expected = []
        for s, e, t in zip(scores, enrol, test, strict=True):
            e_top = sorted(e, reverse=True)[:top_k]
            t_top = sorted(t, reverse=True)[:top_k]
            expected.append(
                0.5 * ((s - np.mean(e_top)) / np.std(e_top) + (s - np.mean(t_top)) / np.std(t_top))
            )
        np.testing.assert_allclose(adaptive_snorm(scores, enrol, test, top_k), expected)
    with pytest.raises(TrialError, match="n_cohort"):
        adaptive_snorm(scores, enrol, test[:, :3])
    with pytest.raises(TrialError, match="equal"):
        adaptive_snorm(scores, np.ones((6, 9)), test)


def test_margin_warmup_and_distillation_mse():
    steps = jnp.array([0, 10, 15, 20, 30])
    np.testing.assert_allclose(
        speaker.margin_at(steps, 0.2, (10, 20)), [0.0, 0.0, 0.1, 0.2, 0.2], atol=1e-7
    )
    assert float(speaker.margin_at(jnp.array(0), 0.2, (0, 0))) == pytest.approx(0.2)
    a, b = np.random.default_rng(4).standard_normal((2, 3, 5))
    np.testing.assert_allclose(speaker.distillation_mse(a, b), ((a - b) ** 2).mean(-1), rtol=1e-6)


class ExplicitTargets(ivector.Task):
    """A frozen teacher whose i-vectors are given arrays (row ``i`` for batch row ``i``)."""

    ivector_dim = 6

    def __init__(self) -> None:  # no UBM stage: the targets stand for the i-vectors
        pass

    def embed(self, params, model_state, wav, lengths):
        del model_state, lengths
        return params["targets"][: wav.shape[0]]

    def score(self, params, model_state, enrol, test):
        del params, model_state
        return jnp.sum(enrol * test, axis=-1)


def _task_config(root=None, **model):
    data = UtteranceDataConfig(
        root=None if root is None else str(root),
        speech=("speech",),
        noise="noise",
        rir="rir",
        crop_seconds=0.5,
        speed_range=(0.9, 1.1),
        noise_snr_db_range=(5.0, 15.0),
        noise_prob=0.5,
        reverb_prob=0.5,
        split_fractions=(0.5, 0.25, 0.25),
    )
    return speaker.SpeakerConfig(
        model=speaker.SpeakerModelConfig(net=SMALL, num_speakers=4, margin_warmup=(1, 3), **model),
        data=data,
        eval=speaker.SpeakerEvalConfig(
            utterances_per_speaker=4,
            batch_size=4,
            max_seconds=1.0,
            cohort_utterances_per_speaker=2,
            valid_per_speaker=4,
        ),
        optim=config_lib.OptimConfig(name="sgd-nesterov", learning_rate=0.05),  # linear in grads
        train=config_lib.TrainConfig(
            steps=2, batch_size=8, checkpoint_every=2, eval_every=2, log_every=1
        ),
    )


def test_distillation_loss_on_explicit_targets():
    targets = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32)
    teacher = TrainedRun(None, ExplicitTargets(), {"targets": targets}, {}, 0)
    task = speaker.Task(_task_config(teacher="ivector", distill_weight=0.5), {"ivector": teacher})
    params, model_state = jax.jit(task.init_model)(jax.random.PRNGKey(0))
    wav = 0.1 * np.random.default_rng(6).standard_normal((4, 8000)).astype(np.float32)
    batch = {"audio": wav, "speaker": np.array([0, 1, 2, 3], np.int32)}
    mesh = parallel.make_mesh(jax.devices()[:1])

    def per_replica(p, s, b):
        loss, (metrics, _) = task.loss_fn(p, s, b, None)
        emb, _ = task.apply(p, s, b["audio"], jnp.full((4,), 8000), train=True)
        return loss, metrics, emb

    step = parallel.data_parallel(per_replica, mesh, sharded_argnums=(2,), num_args=3)
    loss, metrics, emb = step(params, model_state, batch)
    emb = np.asarray(emb, np.float64)
    kernel, bias = (np.asarray(params["projection"][k], np.float64) for k in ("kernel", "bias"))
    mse = np.mean((emb @ kernel + bias - targets) ** 2)
    assert float(metrics["distill_mse"]) == pytest.approx(mse, rel=1e-4)
    aam = aam_softmax(emb, params["classifier"], batch["speaker"], 0.0, 32.0).mean()
    assert float(metrics["aam"]) == pytest.approx(float(aam), rel=1e-4)  # margin 0 at step 0
    assert float(loss) == pytest.approx(float(aam) + 0.5 * mse, rel=1e-4)


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"needs model\.teacher"):
        speaker.Task(_task_config(distill_weight=1.0))
    with pytest.raises(ConfigError, match="num_speakers"):
        speaker.Task(dataclasses.replace(_task_config(), model=speaker.SpeakerModelConfig()))
    with pytest.raises(ConfigError, match="reads no earlier stage"):
        speaker.Task(_task_config(), {"ivector": None})


# --- a small synthetic corpus: training, evaluation, the commands ---------------------------

TONES = {f"s{k}": 220.0 * 1.3**k for k in range(8)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("speakers")
    return write_tone_corpus(root, TONES, (0.6, 0.9, 1.2, 0.7), RATE, {"hum": 20000})


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """The tiny student trained 2 steps on 1 device and on 8: ``(workdir of 8, states)``."""
    config = _task_config(corpus)
    states = {}
    for count in (1, 8):
        workdir = tmp_path_factory.mktemp(f"run{count}")
        states[count] = jax.device_get(run(config, workdir, devices=jax.devices()[:count]))
    return workdir, states


def test_one_and_eight_devices_train_alike(trained):
    _, states = trained
    one, eight = states[1], states[8]
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    # synchronised batch norm: the running statistics are those of the whole global batch
    for a, b in zip(
        jax.tree.leaves(one.model_state), jax.tree.leaves(eight.model_state), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert int(eight.model_state["step"]) == 2


@pytest.fixture(scope="module")
def evaluated(trained):
    """The 8-device workdir after ``evaluate`` (which stores the verification threshold):
    ``(workdir, rows)``."""
    workdir, _ = trained
    evaluation, _, _ = restore.evaluate(workdir, "test")
    rows = evaluation.table
    return workdir, rows


def test_evaluation_writes_trials_and_the_threshold(evaluated):
    workdir, rows = evaluated
    assert [r["system"] for r in rows] == ["ResNet-ASP + cosine", "ResNet-ASP + AS-norm"]
    lines = (workdir / "trials" / "test.txt").read_text().splitlines()
    assert len(lines) == rows[0]["trials"] == 28 and rows[0]["target trials"] == 12  # 2 × 4
    assert all(0.0 <= r["EER (%)"] <= 100.0 for r in rows)
    record = json.loads((workdir / "verification.json").read_text())
    assert -1.0 <= record["threshold"] <= 1.0 and record["checkpoint_step"] == 2
    again = restore.evaluate(workdir, "test", trials=str(workdir / "trials" / "test.txt"))[0].table
    assert again[0]["EER (%)"] == pytest.approx(rows[0]["EER (%)"])
    assert (workdir / "eval" / "test.md").is_file()


def test_embed_and_verify_commands(evaluated, corpus, tmp_path, capsys):
    workdir, _ = evaluated
    files = sorted((corpus / "speech" / "s0").glob("*.wav"))
    out = tmp_path / "emb.npz"
    argv = ["embed", str(files[2]), str(corpus / "speech" / "s1"), "--workdir", str(workdir)]
    assert cli.main([*argv, "-o", str(out), "--quiet"]) == 0
    saved = np.load(out)
    expected_paths = [str(files[2]), *map(str, sorted((corpus / "speech" / "s1").glob("*.wav")))]
    assert list(saved["paths"]) == expected_paths
    assert saved["embeddings"].shape == (5, SMALL.embed_dim)
    assert saved["embeddings"].dtype == np.float32
    model = restore.restore_run(workdir, "best", devices=jax.devices()[:1])
    wav, _ = sf.read(files[2], dtype="float32")
    alone = model.task.embed(model.params, model.model_state, wav[None], np.array([len(wav)]))
    np.testing.assert_allclose(saved["embeddings"][0], np.asarray(alone)[0], rtol=1e-4, atol=1e-5)
    assert cli.main([*argv, "-o", str(out)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err

    verify = ["verify", str(files[0]), str(files[1]), "--workdir", str(workdir)]
    assert cli.main(verify) == 0
    printed, said = capsys.readouterr()
    assert "speaker" in printed and "threshold" in printed and "chosen for" not in said
    record_path = workdir / "verification.json"
    record = record_path.read_text()
    try:  # a threshold chosen for another checkpoint is used, and said to be
        record_path.write_text(record.replace('"checkpoint_step": 2', '"checkpoint_step": 1'))
        assert cli.main(verify) == 0
        again, said = capsys.readouterr()
        assert again == printed and said.startswith(f"{record_path}: the threshold was chosen")
        assert "for checkpoint 1, not 2; python evaluate.py" in said and said.count("\n") == 1
        assert jaxspeech.load(workdir).threshold_step == 1
    finally:
        record_path.write_text(record)

    loaded = jaxspeech.load(workdir)  # the commands' model: the same embeddings and score
    assert loaded.system == "speaker" and loaded.sample_rate == RATE
    np.testing.assert_allclose(loaded.embed(wav), saved["embeddings"][0], rtol=1e-4, atol=1e-5)
    pair = [sf.read(path, dtype="float32")[0] for path in files[:2]]
    score = loaded.score(loaded.embed(pair[0]), loaded.embed(pair[1]))
    assert printed.startswith(f"{score:.4f} ") and f"(threshold {loaded.threshold:.4f})" in printed
    assert loaded.embed(np.stack([wav, wav])).shape == (2, SMALL.embed_dim)

    short = tmp_path / "short.wav"
    sf.write(short, np.full(4000, 0.1, np.float32), RATE)  # 0.25 s
    bad = tmp_path / "nan.wav"
    sf.write(bad, np.full(RATE, np.nan, np.float32), RATE, subtype="FLOAT")
    for path, message in ((short, "at least 0.5 s"), (bad, "NaN")):
        code = cli.main(["verify", str(path), str(files[0]), "--workdir", str(workdir)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_evaluate_on_a_voxceleb_tree_scores_its_official_trial_list(
    evaluated, shared_data, tmp_path, capsys
):
    from corpus_trees import build_voxceleb1

    import evaluate

    workdir, _ = evaluated
    before = (workdir / "eval" / "test.json").read_text()
    vox = build_voxceleb1(tmp_path / "voxceleb1", shared_data)
    official = (vox / "veri_test2.txt").read_text().splitlines()
    gone = official[0].split()[1]  # a recording lost from the copy: its trials are named
    (vox / "wav" / gone).unlink()
    evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest", "--corpus", str(vox)])
    assert f"name 1 missing files (first: {vox / 'wav' / gone})" in capsys.readouterr().err
    rows = json.loads((workdir / "eval" / "VoxCeleb1-veri_test2.json").read_text())
    naming = [line for line in official if gone in line.split()]
    assert [r["trials"] for r in rows] == [len(official)] * 2  # every trial line, both scorings
    assert [r["missing trials"] for r in rows] == [len(naming)] * 2
    scored = [line for line in official if line not in naming]
    assert rows[0]["target trials"] == sum(line.startswith("1 ") for line in scored)
    assert {"EER (%)", "minDCF (p=0.01)", "minDCF (p=0.05)"} <= set(rows[0])
    items = json.loads((workdir / "eval" / "VoxCeleb1-veri_test2_items.json").read_text())
    cosine = [item for item in items if item["system"] == rows[0]["system"]]
    assert [item["item"] for item in cosine] == list(range(1, len(official) + 1))
    for item, line in zip(cosine, official, strict=True):
        label, enrol, test = line.split()
        assert (item["label"], item["enrol"], item["test"]) == (
            int(label),
            str(vox / "wav" / enrol),
            str(vox / "wav" / test),
        )
        assert item["missing"] == (str(vox / "wav" / gone) if line in naming else "")
        assert np.isnan(item["score"]) == (line in naming)
    written = (workdir / "trials" / "VoxCeleb1-veri_test2.txt").read_text().splitlines()
    assert [line.split()[0] for line in written] == [line.split()[0] for line in official]
    assert (workdir / "eval" / "test.json").read_text() == before


def test_voxceleb_recipe_reads_voxceleb2_dev_and_scores_voxceleb1_o(shared_data, tmp_path):
    """The ``voxceleb`` variant's student on miniature VoxCeleb1 and VoxCeleb2 trees: VoxCeleb2
    dev's speakers train and validate (M4A files), and the test table scores every line of
    VoxCeleb1's veri_test2 (random weights: the plumbing, not the rates)."""
    import pathlib

    import corpus_trees
    from corpus_trees import build_voxceleb1, build_voxceleb2

    from jaxspeech.train import stages

    build_voxceleb1(tmp_path / "data" / "VoxCeleb1", shared_data)
    aac = build_voxceleb2(tmp_path / "data" / "VoxCeleb2", shared_data) / "dev" / "aac"
    for k, extra in ((4, "id00013"), (5, "id00014")):  # four dev speakers: 2 train, 2 validate
        for n, wav in enumerate(corpus_trees._speechocean(shared_data, k, 2)[1]):
            corpus_trees.write_m4a(aac / extra / "21Uxsk56VDQ" / f"{n + 1:05d}.m4a", wav, RATE)
    recipe = pathlib.Path(__file__).resolve().parents[1] / "configs/speaker/resnet_kd.py"
    plain = stages.load_recipe(f"{recipe}:voxceleb").stages[3].config
    assert plain.data.corpus == "." and plain.model.num_speakers == 5934
    config = dataclasses.replace(
        plain,
        model=dataclasses.replace(plain.model, net=SMALL, num_speakers=2),
        data=dataclasses.replace(
            plain.data,
            root=str(tmp_path / "data"),
            noise=None,
            rir=None,
            noise_snr_db_range=None,
            reverb_prob=0.0,
            split_fractions=(0.5, 0.5, 0.0),
        ),
        eval=dataclasses.replace(plain.eval, batch_size=4, max_seconds=1.0),
    )
    task = speaker.Task(config)
    assert {u.speaker for u in task.data.splits["train"]} <= {f"id0001{k}" for k in (2, 3, 4, 5)}
    params, model_state = task.init_model(jax.random.PRNGKey(0))
    workdir = tmp_path / "run"
    rows = task.evaluate(params, model_state, "test", workdir=workdir).table
    official = (tmp_path / "data" / "VoxCeleb1" / "veri_test2.txt").read_text().splitlines()
    assert [r["trial list"] for r in rows] == ["VoxCeleb1-veri_test2"] * 2
    assert [r["trials"] for r in rows] == [len(official)] * 2
    written = (workdir / "trials" / "VoxCeleb1-veri_test2.txt").read_text().splitlines()
    assert [line.split()[0] for line in written] == [line.split()[0] for line in official]

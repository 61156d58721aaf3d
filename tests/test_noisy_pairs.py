"""Noisy/clean pair corpora as a data source: aligned crops, held-out validation, whole test
pairs with their IDs, DNS mixtures made on the fly, on miniature VoiceBank-DEMAND and DNS
Challenge trees (tests/corpus_trees.py); and the ``voicebank`` distill variant trained a few
steps, evaluated on its test split and, with ``--corpus``, on a VoiceBank and a DNS tree."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from corpus_trees import VOICEBANK, build_dns, build_librimix, build_voicebank
from scipy.signal import resample_poly
from synthetic import take

import evaluate
import jaxspeech
from jaxspeech.audio import load
from jaxspeech.data import MixtureConfig, MixtureDataConfig, crosscorpus
from jaxspeech.data.noisy_pairs import NoisyPairData, NoisyPairDataConfig
from jaxspeech.data.premixed import PremixedDataConfig
from jaxspeech.errors import ConfigError, CorpusError, TooShortError
from jaxspeech.train import stages

TEST_IDS = list(VOICEBANK[1][1])  # p232_001, p257_001
DNS_IDS = ["no_reverb/fileid_158", "no_reverb/fileid_271"]


@pytest.fixture(scope="module")
def root(shared_data, tmp_path_factory):
    """A data root holding ``VoiceBank-DEMAND/`` and ``DNS-Challenge/`` (0.5 s files)."""
    root = tmp_path_factory.mktemp("root")
    build_voicebank(root / "VoiceBank-DEMAND", shared_data)
    build_dns(root / "DNS-Challenge", shared_data)
    return root


def _data(root, corpus="VoiceBank-DEMAND", batch_size=2, **overrides) -> NoisyPairData:
    fields = dict(root=str(root), corpus=corpus, segment_seconds=0.25, valid_size=4)
    return NoisyPairData(NoisyPairDataConfig(**{**fields, **overrides}), batch_size)


def _offset(crop: np.ndarray, whole: np.ndarray) -> int:
    """Where ``crop`` lies in ``whole`` (exactly), or -1."""
    starts = [
        s for s in range(len(whole) - len(crop) + 1) if np.array_equal(whole[s:][: len(crop)], crop)
    ]
    return starts[0] if starts else -1


def test_voicebank_crops_are_aligned_and_test_pairs_whole_with_ids(root):
    data = _data(root)
    assert {p.speaker for p in data.splits["train"]} == {"p227"}
    assert {p.speaker for p in data.splits["valid"]} == {"p226"}  # p287 is not in the tree
    folder = root / "VoiceBank-DEMAND"
    noisy, _ = load(folder / "noisy_trainset_28spk_wav" / "p227_001.wav", 16000)
    clean, _ = load(folder / "clean_trainset_28spk_wav" / "p227_001.wav", 16000)
    for batch in take(data.train_dataset(seed=1), 2):
        assert batch["mixture"].shape == (2, 4000) and batch["sources"].shape == (2, 1, 4000)
        for mixture, source, noise in zip(
            batch["mixture"], batch["sources"], batch["noise"], strict=True
        ):
            start = _offset(mixture, noisy)
            assert start >= 0 and _offset(source[0], clean) == start  # one place in both
            np.testing.assert_allclose(noise, mixture - source[0], atol=1e-7)
    valid = data.valid_batches()
    assert len(valid) == 2 and valid[0]["mixture"].shape == (2, 4000)
    assert all(
        np.array_equal(a["mixture"], b["mixture"])
        for a, b in zip(valid, data.valid_batches(), strict=True)
    )

    items = data.test_items("test")
    assert [i["id"] for i in items] == TEST_IDS
    assert [i["info"]["snr_db"] for i in items] == [2.5, 17.5]
    assert [i["info"]["noise"] for i in items] == ["bus", "living"]
    # whole, converted from 48 kHz: against scipy's polyphase resampler (another filter)
    wav, rate = sf.read(folder / "noisy_testset_wav" / "p232_001.wav", dtype="float64")
    reference = resample_poly(wav, 1, rate // 16000)
    assert items[0]["mixture"].shape == reference.shape == (8000,)
    inner = slice(100, -100)  # the two filters differ most at the edges
    assert np.corrcoef(items[0]["mixture"][inner], reference[inner])[0, 1] > 0.999
    assert [i["id"] for i in data.test_items("valid")] == ["p226_001", "p226_002"]


def test_dns_mixes_held_out_readers_and_noises_and_tests_on_the_synthetic_pairs(root):
    data = _data(root, "DNS-Challenge", valid_fraction=0.5, snr_db_range=(0.0, 10.0))
    train, valid = data.splits["train"], data.splits["valid"]
    assert len(train) == len(valid) == 1 and train[0].speaker != valid[0].speaker  # readers
    assert len(data.noises["train"]) == len(data.noises["valid"]) == 1
    assert set(data.noises["train"]).isdisjoint(data.noises["valid"])
    for batch in take(data.train_dataset(seed=0), 2):
        clean, noise = batch["sources"][:, 0], batch["noise"]
        np.testing.assert_allclose(batch["mixture"], clean + noise, atol=1e-6)
        snr = 10 * np.log10(
            np.sum(clean.astype(float) ** 2, -1) / np.sum(noise.astype(float) ** 2, -1)
        )
        np.testing.assert_allclose(snr, batch["snr_db"], atol=1e-3)
        assert np.all((batch["snr_db"] >= 0.0) & (batch["snr_db"] <= 10.0))
    assert len(data.valid_batches()) == 2
    items = data.test_items("test")
    assert [i["id"] for i in items] == DNS_IDS
    assert [i["info"]["snr_db"] for i in items] == [15.0, -5.0]
    synthetic = root / "DNS-Challenge" / "test_set" / "synthetic" / "no_reverb"
    clean, _ = load(synthetic / "clean" / "clean_fileid_158.wav")
    np.testing.assert_array_equal(items[0]["sources"][0], clean)  # 16 kHz: read as it is
    np.testing.assert_allclose(items[0]["noise"], items[0]["mixture"] - clean, atol=1e-7)
    assert [i["id"] for i in data.test_items("valid")] == [
        "valid-000000",
        "valid-000001",
        "valid-000002",
        "valid-000003",
    ]


def test_wrong_folders_are_one_clear_line(root, shared_data, tmp_path):
    build_librimix(tmp_path, shared_data, counts=(("test", 1),), types=("mix_clean",))
    with pytest.raises(ConfigError, match="not a noisy/clean pair corpus"):
        _data(tmp_path, "Libri2Mix")
    with pytest.raises(CorpusError, match="no such folder"):
        _data(root, "VoiceBank")
    with pytest.raises(ConfigError, match=r"no pairs of data.valid_speakers \['p999'\]"):
        _data(root, valid_speakers=("p999",)).splits  # noqa: B018
    with pytest.raises(ConfigError, match="valid_size=3 must be a multiple"):
        _data(root, valid_size=3)


def test_short_training_files_are_left_out_and_counted_once(root, tmp_path, capsys):
    corpus = shutil.copytree(root / "VoiceBank-DEMAND", tmp_path / "VoiceBank-DEMAND")
    for kind in ("clean", "noisy"):  # p226_002 becomes 0.3 s long
        path = corpus / f"{kind}_trainset_28spk_wav" / "p226_002.wav"
        wav, rate = sf.read(path)
        sf.write(path, wav[: round(0.3 * rate)], rate)
    data = _data(tmp_path, segment_seconds=0.4, valid_speakers=("p227",))
    take(data.train_dataset(), 1)
    take(data.train_dataset(seed=1), 1)
    out = capsys.readouterr().out
    said = "VoiceBank-DEMAND train: 1 of 2 training files shorter than 0.4 s left out of training"
    assert out.count(said) == 1
    with pytest.raises(TooShortError, match="every one of the 2 training files of VoiceBank"):
        _data(tmp_path, segment_seconds=0.6, valid_speakers=("p227",)).train_items  # noqa: B018


def test_enhancement_runs_read_pair_corpora_with_corpus(root, shared_data, tmp_path):
    made = MixtureDataConfig(speech=("librispeech",), mixture=MixtureConfig(16000, 1.0))
    data = crosscorpus.for_corpus(made, root / "VoiceBank-DEMAND")
    assert data == NoisyPairDataConfig(corpus=str(root / "VoiceBank-DEMAND"), segment_seconds=1.0)
    assert crosscorpus.table_name(data, "test") == "VoiceBank-DEMAND-test"
    dns = crosscorpus.for_corpus(data, root / "DNS-Challenge")
    assert crosscorpus.table_name(dns, "test") == "DNS_Challenge-test"
    librimix = build_librimix(tmp_path, shared_data, counts=(("test", 1),), types=("mix_clean",))
    assert isinstance(crosscorpus.for_corpus(made, librimix), PremixedDataConfig)  # separation


@pytest.mark.slow
def test_voicebank_variant_trains_then_evaluates_here_and_on_other_corpora(root, tmp_path):
    recipe = stages.load_recipe("configs/enhancement/distill.py:voicebank")
    overrides = [
        f"data.root={root}",
        "data.segment_seconds=0.25",
        "data.valid_size=8",
        "model.estimator.hidden=8",
        "model.estimator.layers=1",
        "model.features.stats_batches=1",
        "eval.rtf_repeats=1",
        "train.batch_size=8",
        "train.steps=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
    ]
    workdir = tmp_path / "run"
    stages.run(stages.apply_overrides(recipe, overrides), workdir)
    evaluate.main(["--workdir", str(workdir), "--checkpoint", "latest"])
    before = (workdir / "eval" / "test.json").read_text()
    corpora = {
        "VoiceBank-DEMAND-test": ("VoiceBank-DEMAND", TEST_IDS),
        "DNS_Challenge-test": ("DNS-Challenge", DNS_IDS),
    }
    for table, (folder, ids) in corpora.items():
        evaluate.main(
            ["--workdir", str(workdir), "--checkpoint", "latest", "--corpus", str(root / folder)]
        )
        rows = json.loads((workdir / "eval" / f"{table}.json").read_text())
        items = json.loads((workdir / "eval" / f"{table}_items.json").read_text())
        for stage in ("teacher", "student", "baseline"):
            assert sorted(
                i["id"] for i in items if i["stage"] == stage and i["system"] == stage
            ) == sorted(ids)
        overall = {r["system"]: r for r in rows if r["SNR (dB)"] == "all"}
        assert overall["noisy"]["utterances"] == len(ids)
        assert overall["noisy"]["SI-SDRi"] == pytest.approx(0.0, abs=1e-4)
        assert overall["oracle IRM"]["SI-SDRi"] > 3.0
        assert (workdir / "teacher" / "eval" / f"{table}.json").is_file()
    assert (workdir / "eval" / "test.json").read_text() == before
    rows = json.loads((workdir / "eval" / "VoiceBank-DEMAND-test.json").read_text())
    assert {r["SNR (dB)"] for r in rows} == {"all", "[0, 5)", "[15, 20)"}  # 2.5 and 17.5 dB
    groups = json.loads((workdir / "eval" / "VoiceBank-DEMAND-test_groups.json").read_text())
    assert {"bus", "living"} <= {str(v) for row in groups for v in row.values()}
    rows = json.loads((workdir / "eval" / "DNS_Challenge-test.json").read_text())
    assert {r["SNR (dB)"] for r in rows} == {"all", "[-inf, 0)", "[15, 20)"}  # -5 and 15 dB
    student = jaxspeech.load(workdir, checkpoint="latest")  # the corpus-trained model as a tool
    assert student.sample_rate == 16000 and student.chunk == 4000  # the 0.25 s crop
    noisy = np.asarray(load(root / "VoiceBank-DEMAND/noisy_testset_wav/p232_001.wav", 16000)[0])
    assert student.enhance(noisy).shape == noisy.shape

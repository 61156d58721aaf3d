"""Corpus readers on miniature trees in the official layouts (tests/corpus_trees.py), built
from the shared real recordings at test time."""

from __future__ import annotations

import csv
import pathlib

import corpus_trees
import numpy as np
import pytest
import soundfile as sf

from jaxspeech.cli import main
from jaxspeech.data.corpora import find_corpora, open_corpus, require_length
from jaxspeech.errors import AudioFileError, CorpusError, SampleRateError, TooShortError


def _csv_rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- LibriMix ---------------------------------------------------------------------------


@pytest.mark.parametrize("original_ids", [False, True])
def test_librimix_lists_every_csv_mixture_with_paths_resolved_below_the_copy(
    tmp_path, shared_data, original_ids
):
    variant = corpus_trees.build_librimix(tmp_path, shared_data, original_ids=original_ids)
    corpus = open_corpus(tmp_path)  # two folders up: Libri2Mix/wav8k/min is found
    assert corpus.name == "Libri2Mix wav8k/min mix_clean"
    assert corpus.root == variant and corpus.mixtures == ("mix_clean", "mix_both")
    rows = _csv_rows(variant / "metadata" / "mixture_test_mix_clean.csv")
    assert rows[0]["mixture_path"].startswith(corpus_trees.STALE_ROOT)
    items = corpus.items("test")
    assert [m.id for m in items] == [r["mixture_ID"] for r in rows]
    for mixture, row in zip(items, rows, strict=True):
        assert mixture.path == str(variant / "test" / "mix_clean" / f"{row['mixture_ID']}.wav")
        assert mixture.sources == tuple(
            str(variant / "test" / f"s{i}" / f"{row['mixture_ID']}.wav") for i in (1, 2)
        )
        assert mixture.noise is None and mixture.sample_rate == 8000
        assert mixture.num_samples == int(row["length"]) == sf.info(mixture.path).frames
        assert mixture.speakers == tuple(u.split("-")[0] for u in row["mixture_ID"].split("_"))
    assert len(corpus.items("dev")) == 2


def test_librimix_noisy_mixtures_carry_the_noise_and_the_metrics_snrs(tmp_path, shared_data):
    variant = corpus_trees.build_librimix(tmp_path, shared_data, types=("mix_both", "mix_single"))
    metrics = {
        r["mixture_ID"]: r for r in _csv_rows(variant / "metadata" / "metrics_test_mix_both.csv")
    }
    both = open_corpus(variant, mixture="mix_both").items("test")
    for mixture in both:
        assert mixture.noise == str(variant / "test" / "noise" / f"{mixture.id}.wav")
        row = metrics[mixture.id]
        assert mixture.snrs == (float(row["source_1_SNR"]), float(row["source_2_SNR"]))
        assert mixture.noise_snr == float(row["noise_SNR"])
        # the listed SNR is the files' own (up to the 16-bit rounding of the written WAVs)
        mix, _ = sf.read(mixture.path)
        noise, _ = sf.read(mixture.noise)
        expected = 10 * np.log10(np.mean(noise**2) / np.mean((mix - noise) ** 2))
        assert mixture.noise_snr == pytest.approx(expected, abs=0.1)
    single = open_corpus(variant, mixture="mix_single").items("test")
    assert all(len(m.sources) == 1 and len(m.speakers) == 1 for m in single)


def test_librimix_problems_are_one_line_each(tmp_path, shared_data):
    variant = corpus_trees.build_librimix(tmp_path, shared_data)
    corpus = open_corpus(variant)
    with pytest.raises(CorpusError, match=r"train-360: no mix_clean/, s1/, s2/ folder"):
        corpus.items("train-360")
    with pytest.raises(CorpusError, match="has no split 'train'"):
        corpus.items("train")
    (variant / "metadata" / "mixture_dev_mix_clean.csv").unlink()
    with pytest.raises(CorpusError, match=r"mixture_dev_mix_clean.csv: missing"):
        corpus.items("dev")
    first = corpus.items("test")[0]
    pathlib.Path(first.sources[1]).unlink()
    with pytest.raises(AudioFileError, match=rf"{first.sources[1]}: missing"):
        corpus.items("test")
    sf.write(first.sources[1], np.zeros(first.num_samples * 2, np.float32), 16000)
    with pytest.raises(SampleRateError, match="16000 Hz where the layout has 8000 Hz"):
        corpus.items("test")
    sf.write(variant / "test" / "mix_clean" / "stray.wav", np.zeros(8, np.float32), 8000)
    with pytest.raises(
        CorpusError, match=r"stray.wav: not listed in the CSV \(and 1 more problems"
    ):
        corpus.items("test")


# ---- wsj0-mix, WHAM! ---------------------------------------------------------------------


def test_wsj0_2mix_names_give_speakers_and_levels(tmp_path, shared_data):
    variant = corpus_trees.build_wsj0mix(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "wsj0-2mix wav8k/min mix" and corpus.splits == ("tr", "cv", "tt")
    assert [len(corpus.items(s)) for s in corpus.splits] == [2, 1, 2]
    first = corpus.items("tt")[0]
    utt1, level1, utt2, level2 = first.id.split("_")
    assert first.speakers == (utt1[:3], utt2[:3]) and first.snrs == (float(level1), float(level2))
    assert first.sources == tuple(str(variant / "tt" / s / f"{first.id}.wav") for s in ("s1", "s2"))
    # the levels are the sources' relative levels in dB, as the file names say
    s1, s2 = (sf.read(p)[0] for p in first.sources)
    ratio = 10 * np.log10(np.mean(s1**2) / np.mean(s2**2))
    assert first.snrs[0] - first.snrs[1] == pytest.approx(
        ratio - _level_ratio(shared_data), abs=1e-3
    )
    (variant / "tt" / "mix" / "not_a_wsj0_name.wav").write_bytes(b"")
    items, problems = corpus.scan("tt")
    assert len(items) == 2 and [str(p) for p in problems] == [
        f"{variant / 'tt' / 'mix' / 'not_a_wsj0_name.wav'}: not a wsj0-2mix name "
        "(<utt1>_<dB1>_..._<utt2>_<dB2>.wav, WSJ0 utterance ids of 8 characters)"
    ]


def _level_ratio(shared_data) -> float:
    """Level in dB of the first utterance of the trees' first speaker over the second's, before
    the wsj0-mix levels are applied (what build_wsj0mix starts from)."""
    a = corpus_trees.speech(shared_data, corpus_trees.LIBRI_SPEAKERS[0], 1, 8000)[0][1]
    b = corpus_trees.speech(shared_data, corpus_trees.LIBRI_SPEAKERS[1], 1, 8000)[0][1]
    return float(10 * np.log10(np.mean(a**2) / np.mean(b**2)))


def test_wsj0_3mix_and_wham(tmp_path, shared_data):
    corpus_trees.build_wsj0mix(tmp_path / "3mix", shared_data, family="wsj0-3mix", rate=16000)
    three = open_corpus(tmp_path / "3mix")
    assert three.name == "wsj0-3mix wav16k/min mix" and three.n_src == 3
    assert all(len(m.sources) == 3 and len(m.speakers) == 3 for m in three.items("cv"))
    corpus_trees.build_wsj0mix(tmp_path / "wham", shared_data, family="WHAM!")
    wham = open_corpus(tmp_path / "wham")
    assert wham.name == "WHAM! wav8k/min mix_clean"
    both = wham.with_mixture("mix_both").items("tt")
    assert [m.noise for m in both] == [m.path.replace("mix_both", "noise") for m in both]
    single = wham.with_mixture("mix_single").items("tt")
    assert [len(m.sources) for m in single] == [1, 1]
    with pytest.raises(CorpusError, match="no mixture 'mix'"):
        wham.with_mixture("mix")


def test_whamr_reads_anechoic_references_of_each_mixture(tmp_path, shared_data):
    variant = corpus_trees.build_wsj0mix(tmp_path, shared_data, family="WHAMR!", rate=16000)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "WHAMR! wav16k/min mix_clean_anechoic"
    assert corpus.mixtures == tuple(
        f"mix_{k}_{s}" for s in ("anechoic", "reverb") for k in ("clean", "both", "single")
    )
    noisy = corpus.with_mixture("mix_both_reverb").items("cv")[0]
    assert noisy.path == str(variant / "cv" / "mix_both_reverb" / f"{noisy.id}.wav")
    assert noisy.sources == tuple(
        str(variant / "cv" / f"s{i}_anechoic" / f"{noisy.id}.wav") for i in (1, 2)
    )
    assert noisy.noise == str(variant / "cv" / "noise" / f"{noisy.id}.wav")


def test_several_variants_are_chosen_by_rate_or_named(tmp_path, shared_data):
    corpus_trees.build_librimix(tmp_path, shared_data, counts=(("test", 1),))
    corpus_trees.build_librimix(tmp_path, shared_data, counts=(("test", 1),), rate=16000)
    assert [c.name for c in find_corpora(tmp_path)] == [
        "Libri2Mix wav16k/min mix_clean",
        "Libri2Mix wav8k/min mix_clean",
    ]
    assert open_corpus(tmp_path, sample_rate=16000).sample_rate == 16000
    with pytest.raises(CorpusError, match="holds several corpora: Libri2Mix wav16k/min"):
        open_corpus(tmp_path)


# ---- speaker corpora ---------------------------------------------------------------------


@pytest.mark.parametrize("meta", [True, False])
def test_voxceleb1_splits_genders_and_official_trials(tmp_path, shared_data, meta):
    corpus_trees.build_voxceleb1(tmp_path, shared_data, meta=meta)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "VoxCeleb1"
    dev, test = corpus.items("dev"), corpus.items("test")
    assert {r.speaker for r in dev} == {"id10001", "id10002"}
    assert {r.speaker for r in test} == {"id10270", "id10271"}  # from the meta, or the official ids
    assert len(dev) == len(test) == 8
    assert test[0].id == "id10270/vid20xxxxxx/00001"
    assert {r.gender for r in dev} == ({"M", "F"} if meta else {None})
    assert list(corpus.trial_lists()) == ["veri_test2"]
    trials = corpus.trials("veri_test2")
    lines = (tmp_path / "veri_test2.txt").read_text().split("\n")[:-1]
    assert len(trials) == len(lines) == 28
    for trial, line in zip(trials, lines, strict=True):
        label, enrol, test_path = line.split()
        assert trial.enrol == str(tmp_path / "wav" / enrol) and pathlib.Path(trial.test).is_file()
        assert trial.target == (label == "1") == (enrol.split("/")[0] == test_path.split("/")[0])


def test_voxceleb_trial_problems(tmp_path, shared_data):
    corpus_trees.build_voxceleb1(tmp_path, shared_data)
    with open(tmp_path / "veri_test2.txt", "a") as f:
        f.write("1 id10270/nope/00001.wav\n")
    with pytest.raises(
        CorpusError, match=r"veri_test2.txt line 29: .*; each line must be 'label a.wav b.wav'"
    ):
        open_corpus(tmp_path).trials("veri_test2")
    with pytest.raises(CorpusError, match="no trial list 'veri_test'"):
        open_corpus(tmp_path).trials("veri_test")


def test_voxceleb2_aac_folders_and_meta(tmp_path, shared_data):
    av = pytest.importorskip("av")
    corpus_trees.build_voxceleb2(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "VoxCeleb2" and corpus.trial_lists() == {}
    dev, test = corpus.items("dev"), corpus.items("test")
    assert [(r.id, r.gender) for r in dev] == [
        ("id00012/21Uxsk56VDQ/00001", "F"), ("id00012/21Uxsk56VDQ/00002", "F"),
        ("id00015/21Uxsk56VDQ/00001", "M"), ("id00015/21Uxsk56VDQ/00002", "M"),
    ]  # fmt: skip
    assert [r.speaker for r in test] == ["id00017", "id00017"]
    with av.open(test[0].path) as container:  # the header's length is the decoded one's
        decoded = sum(f.samples for f in container.decode(audio=0))
    assert test[0].sample_rate == 16000 and abs(test[0].num_samples - decoded) <= 1024
    assert abs(test[0].num_samples - round(corpus_trees.SECONDS * 16000)) <= 2048


def test_cnceleb1_genres_and_trials_from_the_enrolment_list(tmp_path, shared_data):
    corpus_trees.build_cnceleb1(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "CN-Celeb1" and corpus.splits == ("dev", "enroll", "test")
    dev = corpus.items("dev")
    assert [(r.speaker, r.genre) for r in dev] == [
        ("id00000", "interview"), ("id00000", "singing"), ("id00001", "live_broadcast"),
        ("id00001", "vlog"),
    ]  # fmt: skip
    assert [r.id for r in corpus.items("test")] == ["id00800-drama-01-001", "id00801-speech-02-004"]
    assert corpus.items("enroll")[0].speaker == "id00800"
    trials = corpus.trials("trials")  # the lists name .wav files; the FLAC release has .flac
    assert [(pathlib.Path(t.enrol).name, pathlib.Path(t.test).name, t.target) for t in trials] == [
        ("id00800-enroll.flac", "id00800-drama-01-001.flac", True),
        ("id00800-enroll.flac", "id00801-speech-02-004.flac", False),
    ]
    sf.write(tmp_path / "data" / "id00000" / "karaoke-01-001.flac", np.zeros(80, np.float32), 16000)
    with pytest.raises(CorpusError, match=r"karaoke-01-001\.flac: not named <genre>"):
        corpus.items("dev")


# ---- enhancement corpora ------------------------------------------------------------------


def test_voicebank_demand_pairs_with_logged_noise_and_snr(tmp_path, shared_data):
    corpus_trees.build_voicebank(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "VoiceBank-DEMAND" and corpus.sample_rate == 48000
    test = corpus.items("test")
    assert [(p.id, p.speaker, p.noise_type, p.snr) for p in test] == [
        ("p232_001", "p232", "bus", 2.5),
        ("p257_001", "p257", "living", 17.5),
    ]
    for pair in test:  # the logged SNR is the one the noisy file was made at
        clean, noisy = sf.read(pair.clean)[0], sf.read(pair.noisy)[0]
        snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
        assert snr == pytest.approx(pair.snr, abs=0.01)
    assert len(corpus.items("train")) == 3
    sf.write(tmp_path / "noisy_testset_wav" / "p232_001.wav", np.zeros(160, np.float32), 16000)
    with pytest.raises(
        SampleRateError, match=r"p232_001\.wav: 16000 Hz where the layout has 48000"
    ):
        corpus.items("test")
    (tmp_path / "logfiles" / "log_trainset_28spk.txt").write_text("p226_001 cafe 15\n")
    with pytest.raises(CorpusError, match=r"p226_002\.wav: not in the train log file"):
        corpus.items("train")


def test_dns_training_folders_and_synthetic_test_pairs(tmp_path, shared_data):
    corpus_trees.build_dns(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "DNS Challenge"
    clean = corpus.items("clean")
    assert [(r.id, r.speaker) for r in clean] == [
        ("book_00000_chp_0009_reader_06700_0", "06700"),
        ("book_00001_chp_0009_reader_06701_0", "06701"),
    ]
    assert len(corpus.items("noise")) == 2
    test = corpus.items("test")
    assert [(p.id, p.snr, pathlib.Path(p.clean).name) for p in test] == [
        ("no_reverb/fileid_158", 15.0, "clean_fileid_158.wav"),
        ("no_reverb/fileid_271", -5.0, "clean_fileid_271.wav"),
    ]
    (tmp_path / "test_set/synthetic/no_reverb/clean/clean_fileid_271.wav").unlink()
    with pytest.raises(AudioFileError, match=r"clean_fileid_271\.wav: missing"):
        corpus.items("test")


# ---- talking faces ------------------------------------------------------------------------


def test_grid_talker_clips_with_their_alignments(tmp_path, shared_data):
    pytest.importorskip("av")
    corpus_trees.build_grid(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    clips = corpus.items("all")
    assert [(c.id, c.speaker, c.text) for c in clips] == [
        ("s1/bbaf2n", "s1", "bin blue at f two now"),
        ("s1/bbaf3s", "s1", "bin blue at f three soon"),
    ]
    assert clips[0].sample_rate == 44100 and clips[0].seconds == pytest.approx(3.0, abs=0.1)
    (tmp_path / "align" / "s1" / "bbaf3s.align").unlink()
    with pytest.raises(CorpusError, match=r"bbaf3s.mpg: no bbaf3s.align in align/s1/"):
        corpus.items("all")


def test_lrs3_clips_with_their_transcripts(tmp_path, shared_data):
    pytest.importorskip("av")
    corpus_trees.build_lrs3(tmp_path, shared_data)
    corpus = open_corpus(tmp_path)
    assert corpus.name == "LRS3"
    for split, talk, clip, words in corpus_trees.LRS3_CLIPS:
        (item,) = corpus.items(split)
        assert (item.id, item.speaker, item.text) == (f"{talk}/{clip}", talk, words)
        assert item.sample_rate == 16000
    (tmp_path / "test" / "0Fi83BHQsMA" / "00002.txt").write_text("Conf:  4\n")
    with pytest.raises(CorpusError, match=r"00002.txt: missing, or its first line is not"):
        corpus.items("test")


# ---- shared checks ------------------------------------------------------------------------


def test_a_folder_of_no_layout_is_one_line_naming_the_layouts(tmp_path):
    (tmp_path / "speech").mkdir()
    with pytest.raises(CorpusError, match=r"matches no corpus layout; expected one of: LibriMix"):
        open_corpus(tmp_path)
    with pytest.raises(CorpusError, match="no such folder"):
        open_corpus(tmp_path / "absent")


def test_items_shorter_than_a_crop(tmp_path, shared_data):
    corpus_trees.build_wsj0mix(tmp_path, shared_data)
    items = open_corpus(tmp_path).items("tt")
    require_length(items, corpus_trees.SECONDS, "wsj0-2mix tt")
    with pytest.raises(
        TooShortError, match=r"2 of the 2 items of wsj0-2mix tt are shorter than the 4 s"
    ):
        require_length(items, 4.0, "wsj0-2mix tt")


def test_data_check_tables_and_problems(tmp_path, shared_data, capsys):
    corpus_trees.build_librimix(tmp_path, shared_data, types=("mix_clean",))
    assert main(["data", "check", "--quiet", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Libri2Mix wav8k/min mix_clean in" in out
    assert "train-360  absent" in out and "no problems found" in out
    test_row = next(line for line in out.splitlines() if line.startswith("test "))
    assert test_row.split() == ["test", "3", "0.000", "8000", "0"]
    variant = tmp_path / "Libri2Mix" / "wav8k" / "min"
    next((variant / "dev" / "s2").iterdir()).unlink()
    assert main(["data", "check", "--quiet", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "1 problems:" in captured.out and "s2/" in captured.out
    assert captured.err.strip().startswith("jaxspeech data: error: 1 problems in")

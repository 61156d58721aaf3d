"""Corpus scanning and speaker splits, on small synthetic folders and the real recordings."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import soundfile as sf
from synthetic import assert_stratified, tone, write_video

from jaxspeech.data.corpus import (
    SpeakerInfo,
    Utterance,
    age_group,
    audio_files,
    data_path,
    group_by_speaker,
    load_audio,
    resolve_data_root,
    scan_corpus,
    speaker_metadata,
    speaker_subset,
    split_speakers,
)
from jaxspeech.data.mixing import AudioCache
from jaxspeech.data.video import read_video_audio
from jaxspeech.errors import AudioFileError, ConfigError, MissingExtraError

VIDEO_REASON = 'needs the video extra: pip install -e ".[video]"'


def _write(path, seconds=0.1, sample_rate=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(round(seconds * sample_rate), 0.1, np.float32), sample_rate)


def test_layouts_speakers_labels_and_headers(tmp_path):
    nested = tmp_path / "nested"
    _write(nested / "alice" / "ch1" / "a1.flac", 0.25, 16000)
    _write(nested / "alice" / "a2.wav", 0.5)
    _write(nested / "bob" / "b1.wav", 0.1)
    (nested / "bob" / "notes.txt").write_text("not audio")
    libri_parent = tmp_path / "LibriSpeech"
    _write(libri_parent / "dev-clean" / "84" / "121123" / "84-121123-0000.flac")
    flat = tmp_path / "flat"
    _write(flat / "7_george_12.wav", 0.3)
    _write(flat / "0_jackson_0.wav")

    utts = scan_corpus(nested)
    assert [(u.speaker, u.label) for u in utts] == [("alice", None)] * 2 + [("bob", None)]
    a1 = next(u for u in utts if u.path.endswith("a1.flac"))
    assert (a1.num_samples, a1.sample_rate, a1.seconds) == (4000, 16000, 0.25)
    assert scan_corpus(libri_parent)[0].speaker == "84"  # from the LibriSpeech file name
    flat_utts = scan_corpus(str(flat))
    assert [(u.speaker, u.label, u.num_samples) for u in flat_utts] == [
        ("jackson", "0", 800),
        ("george", "7", 2400),
    ]
    arctic = tmp_path / "arctic"
    _write(arctic / "cmu_arctic_us_aew_a0001.wav")
    _write(arctic / "cmu_arctic_us_axb_b0002.wav")
    _write(arctic / "arctic_a0010.wav")  # a prompt without a speaker: left out
    assert [u.speaker for u in scan_corpus(arctic)] == ["aew", "axb"]
    (arctic / "cmu_arctic_us_aew_a0001.wav").rename(arctic / "cmu_arctic_aew.wav")
    with pytest.raises(ConfigError, match="cmu_arctic_us_<speaker>_<utterance>"):
        scan_corpus(arctic)
    both = scan_corpus([flat, nested])
    assert both == sorted(flat_utts + utts)
    assert list(group_by_speaker(both)) == ["alice", "bob", "george", "jackson"]


def test_bad_folders(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        scan_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioFileError, match="no audio files"):
        audio_files(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no corpus folder"):
        scan_corpus([])
    _write(tmp_path / "misnamed" / "hello.wav")
    with pytest.raises(ConfigError, match="<label>_<speaker>_<n>"):
        scan_corpus(tmp_path / "misnamed")
    (tmp_path / "broken" / "spk").mkdir(parents=True)
    (tmp_path / "broken" / "spk" / "x.wav").write_bytes(b"not a wav file")
    with pytest.raises(AudioFileError, match=r"x\.wav"):
        scan_corpus(tmp_path / "broken")


def _fake(n_speakers, per_speaker=2):
    return [
        Utterance(f"/{s:03d}/{k}.wav", f"spk{s:03d}", None, 100, 8000)
        for s in range(n_speakers)
        for k in range(per_speaker)
    ]


@pytest.mark.parametrize(
    ("n_speakers", "fractions", "sizes"),
    [
        (10, (0.8, 0.1, 0.1), (8, 1, 1)),
        (3, (0.8, 0.1, 0.1), (1, 1, 1)),
        (20, (0.5, 0.25, 0.25), (10, 5, 5)),
        (4, (0.02, 0.49, 0.49), (1, 1, 2)),
        (2, (0.5, 0.5, 0.0), (1, 1, 0)),
    ],
)
def test_split_sizes_cover_all_speakers(n_speakers, fractions, sizes):
    splits = split_speakers(_fake(n_speakers), fractions, seed=3)
    speakers = {k: {u.speaker for u in v} for k, v in splits.items()}
    assert tuple(len(speakers[k]) for k in ("train", "valid", "test")) == sizes
    assert set().union(*speakers.values()) == {f"spk{s:03d}" for s in range(n_speakers)}
    assert sum(len(v) for v in splits.values()) == 2 * n_speakers  # utterances follow speakers


def test_split_gives_every_split_its_share_of_each_gender():
    genders = ["F"] * 5 + ["M"] * 5 + [None] * 6
    utts = [
        Utterance(f"/{s:03d}/0.wav", f"spk{s:03d}", None, 100, 8000, g)
        for s, g in enumerate(genders)
    ]
    for seed in range(5):
        splits = split_speakers(utts, (0.6, 0.2, 0.2), seed)
        counts = {k: sorted(str(u.gender) for u in v) for k, v in splits.items()}
        assert counts["valid"] == counts["test"] == ["F", "M", "None"]
        assert counts["train"] == ["F"] * 3 + ["M"] * 3 + ["None"] * 4
    shuffled = {
        seed: {u.speaker for u in split_speakers(utts, (0.6, 0.2, 0.2), seed)["test"]}
        for seed in range(5)
    }
    assert len({frozenset(v) for v in shuffled.values()}) > 1  # the seed still shuffles


def test_speaker_genders_from_a_table_above_the_root(tmp_path):
    (tmp_path / "LibriSpeech" / "dev" / "84" / "121").mkdir(parents=True)
    (tmp_path / "LibriSpeech" / "SPEAKERS.TXT").write_text(
        ";ID |SEX| SUBSET |MINUTES| NAME\n84   | F | dev-clean | 8.02 | Christie Nowak\n"
        "174  | M | dev-clean | 8.04 | Peter Eastman\n"
    )
    sf.write(
        tmp_path / "LibriSpeech" / "dev" / "84" / "121" / "84-121-0000.flac", np.zeros(800), 8000
    )
    assert speaker_metadata(tmp_path / "LibriSpeech" / "dev") == {
        "84": SpeakerInfo("F", None),
        "174": SpeakerInfo("M", None),
    }
    (utt,) = scan_corpus(tmp_path / "LibriSpeech" / "dev")
    assert (utt.speaker, utt.gender) == ("84", "F")


def test_split_errors():
    with pytest.raises(ConfigError, match="cannot fill 3"):
        split_speakers(_fake(2))
    for bad in [(0.5, 0.5), (0.9, 0.2, 0.1), (1.2, -0.1, -0.1)]:
        with pytest.raises(ConfigError, match="summing to 1"):
            split_speakers(_fake(5), bad)


@pytest.fixture(scope="module")
def real_corpus(shared_data):
    return scan_corpus(
        [shared_data / "librispeech" / "test-other", shared_data / "fsdd" / "recordings"]
    )


def test_real_scan(shared_data, real_corpus):
    libri = [u for u in real_corpus if u.label is None]
    fsdd = [u for u in real_corpus if u.label is not None]
    assert len(libri) == 100 and len(fsdd) == 3000
    assert {u.speaker for u in libri} == {
        *"1998 3080 3331 367 533 1688 2033 2414 2609 3005".split()
    }
    assert {u.speaker for u in fsdd} == {*"george jackson lucas nicolas theo yweweler".split()}
    assert {u.label for u in fsdd} == set("0123456789")
    assert {u.sample_rate for u in libri} == {16000} and {u.sample_rate for u in fsdd} == {8000}
    first = libri[0]
    assert first.num_samples == sf.info(first.path).frames
    assert all(u.path.split("/")[-2] == u.speaker for u in libri)
    assert real_corpus == sorted(real_corpus)
    assert {u.speaker for u in libri if u.gender == "F"} == {*"1998 3080 3331 367 533".split()}
    assert {u.speaker for u in libri if u.gender == "M"} == {*"1688 2033 2414 2609 3005".split()}
    assert {u.gender for u in fsdd} == {None}
    assert scan_corpus(shared_data / "fsdd" / "recordings") == fsdd


def test_real_arctic_speakers(shared_data):
    utts = scan_corpus(shared_data / "arctic")
    assert [u.speaker for u in utts] == ["aew"] * 3 + ["axb"] * 3


def test_real_split_disjoint_and_deterministic(real_corpus):
    splits = split_speakers(real_corpus, seed=0)
    speakers = {k: {u.speaker for u in v} for k, v in splits.items()}
    assert all(speakers.values())
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    assert sorted(u for v in splits.values() for u in v) == real_corpus
    assert split_speakers(list(reversed(real_corpus)), seed=0) == splits
    assert split_speakers(real_corpus, seed=1) != splits


def test_speechocean_table_gives_genders_and_ages(tmp_path):
    root = tmp_path / "speechocean762"
    for speaker in ("SPEAKER0001", "SPEAKER0002", "SPEAKER0003"):
        _write(root / speaker / "000010011.flac", 0.1, 16000)
    (root / "SPEAKERS.tsv").write_text(
        "speaker\tgender\tage\nSPEAKER0001\tm\t6\nSPEAKER0002\tf\t21\nSPEAKER0003\tF\t15\n"
    )
    utts = scan_corpus(root)
    assert [(u.speaker, u.gender, u.age) for u in utts] == [
        ("SPEAKER0001", "M", 6),
        ("SPEAKER0002", "F", 21),
        ("SPEAKER0003", "F", 15),
    ]
    (root / "SPEAKERS.tsv").write_text("speaker\tsex\tage\nSPEAKER0001\tm\t6\n")
    with pytest.raises(ConfigError, match=r"SPEAKERS\.tsv: no gender column"):
        scan_corpus(root)
    (root / "SPEAKERS.tsv").write_text(
        "speaker\tgender\tage\nSPEAKER0001\tm\t6\nSPEAKER0002\tx\t7\n"
    )
    with pytest.raises(ConfigError, match=r"SPEAKERS\.tsv line 3: gender 'x'.*m or f"):
        scan_corpus(root)
    (root / "SPEAKERS.tsv").write_text("speaker\tgender\tage\nSPEAKER0001\tm\tsix\n")
    with pytest.raises(ConfigError, match=r"line 2.*whole years"):
        scan_corpus(root)


def test_age_groups():
    assert [age_group(a) for a in (None, 0, 12, 13, 17, 18, 80)] == [
        None, "child", "child", "teen", "teen", "adult", "adult",
    ]  # fmt: skip


def test_split_gives_every_split_its_share_of_each_age_group():
    """Ages stratify within genders: 10 F children, 10 M children, 10 F adults, 10 M adults."""
    ages = [8] * 10 + [30] * 10
    utts = [
        Utterance(f"/{g}{s:03d}/0.wav", f"{g}{s:03d}", None, 100, 8000, g, age)
        for g in "FM"
        for s, age in enumerate(ages)
    ]
    for seed in range(4):
        splits = split_speakers(utts, (0.5, 0.25, 0.25), seed)
        for name, share in {"train": 5.0, "valid": 2.5, "test": 2.5}.items():  # of 10 each
            counts = {
                (g, group): sum(u.gender == g and age_group(u.age) == group for u in splits[name])
                for g in "FM"
                for group in ("child", "adult")
            }
            assert all(abs(c - share) <= 0.5 for c in counts.values()), (name, counts)


def test_split_of_corpora_without_ages_is_unchanged():
    """Splits of gender-only corpora are those stratified by gender alone (reference order)."""
    genders = ["F"] * 7 + ["M"] * 4 + [None] * 3
    utts = [
        Utterance(f"/{s:03d}/0.wav", f"spk{s:03d}", None, 100, 8000, g)
        for s, g in enumerate(genders)
    ]
    for seed in range(3):
        rng = np.random.default_rng(seed)
        positions = np.empty(len(genders))
        for rank, key in enumerate(("F", "M", None)):
            members = np.flatnonzero([g == key for g in genders])
            shuffled = members[rng.permutation(len(members))]
            positions[shuffled] = (np.arange(len(members)) + 0.5) / len(members) + rank * 1e-9
        order = np.argsort(positions, kind="stable")
        splits = split_speakers(utts, (0.6, 0.2, 0.2), seed)
        assert [u.speaker for u in splits["test"]] == sorted(f"spk{i:03d}" for i in order[-3:])


def test_resolve_data_root_order_and_errors(tmp_path, monkeypatch):
    explicit, env_root = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env_root.mkdir()
    workdir = tmp_path / "project" / "checkout"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("JAXSPEECH_DATA", str(env_root))
    assert resolve_data_root(str(explicit)) == explicit
    assert resolve_data_root() == env_root
    monkeypatch.delenv("JAXSPEECH_DATA")
    with pytest.raises(ConfigError) as err:
        resolve_data_root()
    message = str(err.value)
    for hint in ("--config.data.root=DIR", "export JAXSPEECH_DATA=DIR", "../shared/data"):
        assert hint in message
    assert str(workdir) in message and "not set" in message
    (tmp_path / "project" / "shared" / "data").mkdir(parents=True)
    assert resolve_data_root() == tmp_path / "project" / "checkout" / ".." / "shared" / "data"
    assert resolve_data_root().resolve() == tmp_path / "project" / "shared" / "data"
    with pytest.raises(ConfigError, match=r"missing is not a folder.*data\.root="):
        resolve_data_root(str(tmp_path / "missing"))  # a given root is never skipped
    monkeypatch.setenv("JAXSPEECH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"nowhere is not a folder.*JAXSPEECH_DATA="):
        resolve_data_root()


def test_data_path_needs_the_root_only_for_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXSPEECH_DATA", str(tmp_path / "nowhere"))
    assert data_path(tmp_path / "noise", None) == tmp_path / "noise"
    assert data_path("noise", str(tmp_path)) == tmp_path / "noise"
    with pytest.raises(ConfigError, match="no data root"):
        data_path("noise", None)


def test_real_speechocean_genders_ages_and_stratified_split(shared_data):
    utts = scan_corpus(shared_data / "speechocean762")
    speakers = {u.speaker: (u.gender, u.age) for u in utts}
    assert len(utts) == 1200 and len(speakers) == 200
    assert all(len(v) == 6 for v in group_by_speaker(utts).values())
    with open(shared_data / "speechocean762" / "SPEAKERS.tsv") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    assert speakers == {spk: (g.upper(), int(age)) for spk, g, age in rows}
    assert sum(g == "F" for g, _ in speakers.values()) == 100
    assert sum(age < 13 for _, age in speakers.values()) == 85
    assert sum(age >= 18 for _, age in speakers.values()) == 100
    assert_stratified(utts, split_speakers(utts, (0.6, 0.2, 0.2), seed=0), (0.6, 0.2, 0.2))


def test_speaker_subset_is_stratified_nested_and_checked():
    utts = [
        Utterance(f"/c/{g}{a}{i}/u.wav", f"{g}{a}{i}", None, 8000, 8000, g, age)
        for g in "FM"
        for a, age in (("c", 9), ("a", 30))
        for i in range(10)
    ]
    small, large = speaker_subset(utts, 8, seed=3), speaker_subset(utts, 20, seed=3)
    assert {u.speaker for u in small} <= {u.speaker for u in large}
    strata = [(u.gender, age_group(u.age)) for u in small]
    assert all(strata.count(key) == 2 for key in set(strata)) and len(set(strata)) == 4
    assert speaker_subset(utts, 40) == sorted(utts)
    for bad in (0, 41):
        with pytest.raises(ConfigError, match="1 to 40"):
            speaker_subset(utts, bad)


def test_arctic_names_give_their_speakers_and_unlabelled_files_are_left_out(tmp_path):
    for name in ("cmu_arctic_us_aew_a0001", "cmu_arctic_us_aew_b0002", "arctic_a0010"):
        _write(tmp_path / f"{name}.wav")
    _write(tmp_path / "cmu_arctic_us_axb_a0004.wav")
    utts = scan_corpus(tmp_path)
    assert [(pathlib.Path(u.path).stem, u.speaker) for u in utts] == [
        ("cmu_arctic_us_aew_a0001", "aew"),
        ("cmu_arctic_us_aew_b0002", "aew"),
        ("cmu_arctic_us_axb_a0004", "axb"),
    ]


def _write_clip(path, freq, seconds=0.3):
    """A GRID-like clip: three frames and a ``freq`` Hz tone as its MP2 track at 44.1 kHz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.zeros((3, 16, 16), np.uint8), [0, 40, 80], tone(freq, seconds, 44100))


def test_grid_talker_folders_give_their_speakers_and_clips_outside_are_left_out(tmp_path):
    pytest.importorskip("av", reason=VIDEO_REASON)
    grid = tmp_path / "grid"
    for name, freq in {"s1/bbaf2n": 220.0, "s1/lwbsza": 330.0, "s12/pbai1n": 440.0}.items():
        _write_clip(grid / f"{name}.mpg", freq)
    _write_clip(grid / "talkers" / "sbwe5n.mpg", 550.0)  # no talker folder: left out
    utts = scan_corpus(grid)
    assert [(u.speaker, u.label) for u in utts] == [
        ("grid_s1", "bbaf2n"),
        ("grid_s1", "lwbsza"),
        ("grid_s12", "pbai1n"),
    ]
    for utt in utts:  # the header counts the decoded track at its own rate
        assert utt.sample_rate == 44100
        assert utt.num_samples == read_video_audio(utt.path, 44100).size
        assert 0.3 * 44100 <= utt.num_samples < 0.3 * 44100 + 3 * 1152
    assert scan_corpus(grid / "s1") == utts[:2]  # the talker folder as the root
    with pytest.raises(ConfigError, match="talker's folder s<N>"):
        scan_corpus(grid / "talkers")
    wav = load_audio(utts[0].path, 16000)
    np.testing.assert_array_equal(wav, read_video_audio(utts[0].path, 16000))
    np.testing.assert_array_equal(AudioCache(16000)(utts[0].path), wav)
    spectrum = np.abs(np.fft.rfft(wav))
    assert np.argmax(spectrum) * 16000 / wav.size == pytest.approx(220.0, abs=16000 / wav.size)


def test_grid_clips_without_pyav_name_the_extra(tmp_path, monkeypatch):
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "bbaf2n.mpg").write_bytes(b"\0" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[video\]"'):
        scan_corpus(tmp_path)
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[video\]"'):
        load_audio(tmp_path / "s1" / "bbaf2n.mpg", 16000)

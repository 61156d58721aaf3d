"""grain mixture pipelines, fixed mixture sets and their files, on the real recordings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from synthetic import batches_equal, take

from jaxspeech.audio import load
from jaxspeech.data.corpus import audio_files, group_by_speaker, scan_corpus, split_files
from jaxspeech.data.mixing import MixtureConfig
from jaxspeech.data.pipeline import (
    MixtureData,
    MixtureDataConfig,
    fixed_mixture_set,
    mixture_dataset,
)
from jaxspeech.data.source import StreamOptions, batch_examples
from jaxspeech.errors import ConfigError

CFG = MixtureConfig(
    sample_rate=8000, segment_seconds=0.5, noise_snr_db_range=(-5.0, 20.0), reverb_prob=0.3
)


@pytest.fixture(scope="module")
def data(shared_data):
    """10 real utterances: 2 of each of 3 LibriSpeech (16 kHz) and 2 FSDD (8 kHz) speakers."""
    groups = group_by_speaker(
        scan_corpus(
            [shared_data / "librispeech" / "test-other", shared_data / "fsdd" / "recordings"]
        )
    )
    utts = [u for s in ("1688", "367", "533", "george", "theo") for u in groups[s][:2]]
    return utts, audio_files(shared_data / "noise"), audio_files(shared_data / "rir")


def test_batches_determinism_and_shapes(data):
    utts, noises, rirs = data
    first = take(mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4, seed=3), n_src=2), 2)
    assert {k: v.shape for k, v in first[0].items()} == {
        "mixture": (4, 4000),
        "sources": (4, 2, 4000),
        "noise": (4, 4000),
        "snr_db": (4,),
        "gains_db": (4, 2),
    }
    assert all(v.dtype == np.float32 for v in first[0].values())
    for batch in first:
        np.testing.assert_array_equal(batch["mixture"], batch["sources"].sum(1) + batch["noise"])
        assert np.abs(batch["mixture"]).max() <= 0.9 + 1e-6
    shuffled = list(reversed(utts))
    again = take(mixture_dataset(CFG, shuffled, noises, rirs, StreamOptions(4, 3), n_src=2), 2)
    assert all(batches_equal(a, b) for a, b in zip(first, again, strict=True))
    other = take(mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4, 4), n_src=2), 1)
    assert not np.array_equal(first[0]["mixture"], other[0]["mixture"])


def test_state_restore_gives_the_same_next_batch(data):
    utts, noises, rirs = data
    ds = mixture_dataset(CFG, utts, noises, rirs, StreamOptions(2), n_src=2)
    it = iter(ds)
    for _ in range(6):  # crosses the end of the first epoch (10 utterances, 2 per batch)
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    fresh = mixture_dataset(CFG, utts, noises, rirs, StreamOptions(2), n_src=2)
    resumed = take(fresh, 2, state=state)
    assert all(batches_equal(a, b) for a, b in zip(expected, resumed, strict=True))


def test_process_shards_partition_the_global_stream(data):
    utts, noises, rirs = data
    whole = take(mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4, 1), n_src=2), 2)
    shards = [
        take(
            mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4, 1, p, 2), n_src=2),
            2,
        )
        for p in range(2)
    ]
    for step in range(2):
        for p in range(2):
            for key, value in shards[p][step].items():
                assert value.shape[0] == 2
                np.testing.assert_array_equal(value, whole[step][key][p::2])
    rows = [b["mixture"][i] for shard in shards for b in shard for i in range(2)]
    assert len({r.tobytes() for r in rows}) == len(rows)  # disjoint examples


def _signature(x):
    """Invariant to gain and zero padding: sum(x^4) / sum(x^2)^2."""
    x = np.asarray(x, np.float64)
    return np.sum(x**4) / np.sum(x**2) ** 2


def test_each_epoch_uses_every_utterance_once_as_first_source(shared_data):
    """FSDD digits (8 kHz, < 2.4 s) are never cropped, so each source identifies its file."""
    fsdd = scan_corpus(shared_data / "fsdd" / "recordings")
    utts = [u for u in fsdd if u.path.endswith("_3.wav")][:8]
    cfg = MixtureConfig(sample_rate=8000, segment_seconds=2.4)
    batches = list(mixture_dataset(cfg, utts, [], [], StreamOptions(2, num_epochs=2), n_src=1))
    assert len(batches) == 8
    known = np.array([_signature(load(u.path)[0]) for u in utts])
    firsts = [
        int(np.argmin(np.abs(known - _signature(src))))
        for batch in batches
        for src in batch["sources"][:, 0]
    ]
    for src, i in zip((s for b in batches for s in b["sources"][:, 0]), firsts, strict=True):
        assert _signature(src) == pytest.approx(known[i], rel=1e-4)
    assert sorted(firsts[:8]) == sorted(firsts[8:]) == list(range(8))
    assert firsts[:8] != firsts[8:]  # each epoch in a fresh order


def test_fixed_set_snr_grid_and_determinism(data):
    utts, noises, rirs = data
    grid = [-5.0, 0.0, 5.0, 10.0]
    examples = fixed_mixture_set(CFG, utts, noises, rirs, n=6, seed=7, snrs=grid, n_src=2)
    for i, ex in enumerate(examples):
        assert ex["snr_db"] == grid[i % 4]
        snr = 10 * np.log10(np.sum(ex["sources"].sum(0) ** 2) / np.sum(ex["noise"] ** 2))
        assert snr == pytest.approx(grid[i % 4], abs=1e-3)
        assert len(set(ex["info"]["speakers"])) == 2
    same = fixed_mixture_set(CFG, utts, noises, rirs, n=6, seed=7, snrs=grid, n_src=2)
    assert all(batches_equal(_arrays(a), _arrays(b)) for a, b in zip(examples, same, strict=True))
    other = fixed_mixture_set(CFG, utts, noises, rirs, n=6, seed=8, snrs=grid, n_src=2)
    assert not np.array_equal(examples[0]["mixture"], other[0]["mixture"])


def test_clean_set_batches(data):
    utts, noises, rirs = data
    cfg = MixtureConfig(sample_rate=16000, segment_seconds=0.25)
    back = fixed_mixture_set(cfg, utts, noises, rirs, n=4, seed=0, n_src=3)
    examples = back
    assert back[0]["snr_db"] == np.inf and back[0]["sources"].shape == (3, 4000)
    batches = batch_examples(back, 2)
    assert len(batches) == 2 and "info" not in batches[0]
    np.testing.assert_array_equal(batches[1]["sources"][0], examples[2]["sources"])
    assert batches[0]["gains_db"].shape == (2, 3)
    with pytest.raises(ConfigError, match="multiple of the batch size"):
        batch_examples(back, 3)
    with pytest.raises(ConfigError, match="multiple of the batch size"):
        batch_examples([], 1)


def test_bad_pipeline_inputs(data):
    utts, noises, rirs = data
    with pytest.raises(ConfigError, match="multiple of process_count"):
        mixture_dataset(CFG, utts, noises, rirs, StreamOptions(3, process_count=2), n_src=2)
    with pytest.raises(ConfigError, match="process_index 2"):
        mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4, 0, 2, 2), n_src=2)
    with pytest.raises(ConfigError, match="no utterances"):
        mixture_dataset(CFG, [], noises, rirs, StreamOptions(4), n_src=2)
    with pytest.raises(ConfigError, match="sampling='speakers'"):
        mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4), sampling="speakers", n_src=2)
    with pytest.raises(ConfigError, match="seed"):
        mixture_dataset(CFG, utts, noises, rirs, StreamOptions(4, -1), n_src=2)
    with pytest.raises(ConfigError, match="n must be"):
        fixed_mixture_set(CFG, utts, noises, rirs, 0, 0, n_src=2)
    with pytest.raises(ConfigError, match="snrs is empty"):
        fixed_mixture_set(CFG, utts, noises, rirs, 2, 0, snrs=[], n_src=2)


def _arrays(example):
    return {k: v for k, v in example.items() if k != "info"}


def test_mixture_data_splits_sets_and_errors(shared_data):
    speech = ("librispeech/test-other", str(shared_data / "fsdd"))  # relative and absolute
    mixture = MixtureConfig(sample_rate=8000, segment_seconds=0.25)
    cfg = MixtureDataConfig(
        root=str(shared_data), speech=speech, mixture=mixture, split_fractions=(0.6, 0.2, 0.2)
    )
    data = MixtureData(cfg, batch_size=4, n_src=2)
    speakers = {k: {u.speaker for u in v} for k, v in data.splits.items()}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["valid"] & speakers["test"])
    test_set = data.test_items("test", 3, seconds=0.5)
    assert all(e["mixture"].shape == (4000,) for e in test_set) and data.sample_rate == 8000
    assert [e["id"] for e in test_set] == ["test-000000", "test-000001", "test-000002"]
    assert all(set(e["info"]["speakers"]) <= speakers["test"] for e in test_set)
    perturbed = dataclasses.replace(mixture, speed_range=(0.8, 1.2))  # training-only
    again = MixtureData(dataclasses.replace(cfg, mixture=perturbed), 4, 2).test_items(
        "test", 3, seconds=0.5
    )
    assert all(
        batches_equal(_arrays_of(a), _arrays_of(b)) for a, b in zip(test_set, again, strict=True)
    )
    valid = data.valid_batches()
    assert len(valid) == cfg.valid_size // 4 and valid[0]["sources"].shape == (4, 2, 2000)
    batch = next(iter(data.train_dataset(seed=0)))
    assert batch["mixture"].shape == (4, 2000)
    with pytest.raises(ConfigError, match="unknown split"):
        data.test_items("train", 2)
    with pytest.raises(ConfigError, match="multiple of"):
        MixtureData(cfg, batch_size=5, n_src=2)
    with pytest.raises(ConfigError, match=r"data\.speech is empty"):
        MixtureData(MixtureDataConfig(), batch_size=4, n_src=2)
    noisy = dataclasses.replace(mixture, noise_snr_db_range=(0.0, 5.0))
    with pytest.raises(ConfigError, match=r"data\.noise is not"):
        MixtureData(dataclasses.replace(cfg, mixture=noisy), batch_size=4, n_src=2)
    reverberant = dataclasses.replace(mixture, reverb_prob=0.5)
    with pytest.raises(ConfigError, match=r"data\.rir with"):
        MixtureData(dataclasses.replace(cfg, mixture=reverberant), batch_size=4, n_src=2)


def _arrays_of(example):
    return {k: v for k, v in example.items() if k != "info"}


@pytest.mark.parametrize(("sampling", "expected"), [("utterance", 48), ("speaker", None)])
def test_sampling_weighs_speakers_or_utterances(shared_data, sampling, expected):
    """12 files of one speaker and 1 of each of four others, 4 epochs of 16 mixtures."""
    groups = group_by_speaker(scan_corpus(shared_data / "fsdd" / "recordings"))
    heavy = groups["george"][:12]
    utts = heavy + [groups[s][0] for s in ("jackson", "lucas", "nicolas", "theo")]
    cfg = MixtureConfig(sample_rate=8000, segment_seconds=2.4)
    options = StreamOptions(4, num_epochs=4)
    ds = mixture_dataset(cfg, utts, [], [], options, sampling=sampling, n_src=1)
    heavy_signatures = np.array([_signature(load(u.path)[0]) for u in heavy])
    firsts = [src for batch in ds for src in batch["sources"][:, 0]]
    assert len(firsts) == 64
    n_heavy = sum(np.min(np.abs(heavy_signatures / _signature(x) - 1)) < 1e-4 for x in firsts)
    if expected is not None:
        assert n_heavy == expected
    else:  # one speaker in five: 12.8 expected, far below the 48 of utterance sampling
        assert 4 <= n_heavy <= 24


def _noisy_data_config(shared_data, **mixture) -> MixtureDataConfig:
    """LibriSpeech test-other in short noisy mixtures, the noise files dealt 5 / 1 / 2."""
    return MixtureDataConfig(
        root=str(shared_data),
        speech=("librispeech/test-other",),
        noise="noise",
        mixture=MixtureConfig(
            sample_rate=8000, segment_seconds=0.25, noise_snr_db_range=(0, 5), **mixture
        ),
        split_fractions=(0.6, 0.2, 0.2),
        noise_split_fractions=(0.625, 0.125, 0.25),
    )


def test_noise_split_keeps_the_test_noises_out_of_training(shared_data):
    cfg = _noisy_data_config(shared_data)
    data = MixtureData(cfg, batch_size=4, n_src=1)
    sizes = {split: len(files) for split, files in data.noises.items()}
    assert sizes == {"train": 5, "valid": 1, "test": 2}
    assert not set(data.noises["train"]) & set(data.noises["test"] + data.noises["valid"])
    assert sorted(f for files in data.noises.values() for f in files) == audio_files(
        shared_data / "noise"
    )
    assert {e["info"]["noise_file"] for e in data.test_items("test", 6)} <= set(data.noises["test"])
    assert split_files(audio_files(shared_data / "noise"), (0.625, 0.125, 0.25)) == data.noises
    shared = MixtureData(dataclasses.replace(cfg, noise_split_fractions=None), 4, 1)
    assert all(files == audio_files(shared_data / "noise") for files in shared.noises.values())
    with pytest.raises(ConfigError, match="cannot fill"):
        split_files(["a.wav", "b.wav"], (0.5, 0.25, 0.25))


def test_train_noise_and_noise_augmentations_reach_training_only(shared_data):
    cfg = dataclasses.replace(
        _noisy_data_config(shared_data, babble_prob=0.3, colored_noise_prob=0.3),
        train_noise=("rir",),  # any folder of recordings: here the 4 impulse responses
    )
    data = MixtureData(cfg, batch_size=4, n_src=1)
    rirs = audio_files(shared_data / "rir")
    assert data.noises["train"][-len(rirs) :] == rirs and len(data.noises["train"]) == 5 + 4
    assert not set(rirs) & set(data.noises["valid"] + data.noises["test"])
    for split in ("valid", "test"):
        files = {e["info"]["noise_file"] for e in data.test_items(split, 24)}
        assert files <= set(data.noises[split])  # never babble, coloured noise or train_noise
    lone = MixtureData(
        dataclasses.replace(
            cfg,
            noise=None,
            train_noise=(),
            mixture=dataclasses.replace(
                cfg.mixture, noise_snr_db_range=None, lone_speaker_prob=0.9
            ),
        ),
        4,
        2,
    )
    assert all(np.any(e["sources"][1]) for e in lone.test_items("test", 8))  # never alone
    with pytest.raises(ConfigError, match="train_noise is set but"):
        MixtureData(dataclasses.replace(cfg, noise=None), 4, 1)

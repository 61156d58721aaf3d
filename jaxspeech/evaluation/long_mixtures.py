"""Long real mixtures: what ``jaxspeech separate`` gives on whole utterances of speakers a
separation run never heard (``evaluate.py --long-mixtures``).

The files (:func:`long_mixtures`) are made from whole utterances (never crops) of the run's own
held-out speakers (its data source's speaker split), each longer than two of the model's
training crops, so the model works well beyond the length it learned on:

* ``count`` files of ``n_src`` different speakers: the longest utterance sets the length, each
  shorter one is zero-padded around it at an offset drawn uniformly (so a voice may start or
  stop in the middle); the levels are the run's training levels (``MixtureConfig``: the first
  speaker's active RMS drawn from ``level_db_range``, every other one's relative to it from
  ``gain_db_range``); clean (no noise, no reverberation);
* ``max(1, count // 4)`` files of one speaker alone, at a level drawn the same way.

Every file is a pure function of the run's split seed, the split and its index. Each file goes
through ``separate`` (the loaded model's ``Separator.separate`` with its default chunking, as
``jaxspeech separate``) and is scored (:func:`score_mixture`, :func:`score_single`): SI-SNRi by
whole-file PIT and the windowed track measures of ``jaxspeech.metrics.tracks``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from jaxspeech.data.corpus import Utterance, group_by_speaker
from jaxspeech.data.mixing import AudioCache, MixtureConfig, draw_levels_db, draw_speakers, rms
from jaxspeech.data.pipeline import MixtureData, MixtureDataConfig, fixed_set_seed
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation.tables import Evaluation
from jaxspeech.losses import reorder, si_snr
from jaxspeech.metrics import tracks

#: Seed stream of the long mixtures, apart from those of the data source's fixed sets.
_STREAM = 7
#: Windows of the track measures (seconds).
WINDOW_SECONDS = 0.5


def long_mixtures(
    utterances: Sequence[Utterance],
    cfg: MixtureConfig,
    *,
    n_src: int,
    count: int,
    seed: int,
    min_samples: int,
) -> list[dict]:
    """``count`` mixtures of ``n_src`` speakers, then ``max(1, count // 4)`` files of one
    speaker (see the module docstring), from the utterances longer than ``min_samples`` at
    ``cfg.sample_rate``.

    Returns:
      Dicts with ``id`` (``mix<i>`` or ``one<i>``), ``mixture [T]``, ``sources [k, T]``
      (float32, ``mixture == sources.sum(0)``) and ``info``: ``speakers``, ``files``,
      ``offsets`` (samples) and ``gains_db`` (levels relative to the first speaker).

    Raises:
      ConfigError: fewer than ``n_src`` speakers have an utterance that long.
    """
    long_enough = [u for u in utterances if u.seconds * cfg.sample_rate > min_samples]
    speakers = group_by_speaker(long_enough)
    if len(speakers) < n_src:
        raise ConfigError(
            f"long mixtures: {len(speakers)} speaker(s) of the split have an utterance longer "
            f"than {min_samples / cfg.sample_rate:.2f} s; "
            f"{n_src} are needed"
        )
    audio = AudioCache(cfg.sample_rate)
    layout = [("mix", n_src)] * count + [("one", 1)] * max(1, count // 4)
    examples = []
    for index, (kind, talkers) in enumerate(layout):
        rng = np.random.default_rng((seed, _STREAM, index))
        chosen = draw_speakers(rng, speakers, talkers, None)
        waves = [audio(u.path) for u in chosen]
        length = max(len(wave) for wave in waves)
        offsets = [int(rng.integers(0, length - len(wave) + 1)) for wave in waves]
        gains_db, levels_db = draw_levels_db(rng, cfg, talkers)
        sources = np.zeros((talkers, length))
        for row, wave, offset, level in zip(sources, waves, offsets, levels_db, strict=True):
            row[offset : offset + len(wave)] = wave * (10.0 ** (level / 20.0) / rms(wave))
        peak = max(np.abs(sources.sum(axis=0)).max(), np.abs(sources).max())
        sources = (sources * min(1.0, cfg.max_peak / peak)).astype(np.float32)
        number = index if kind == "mix" else index - count
        examples.append(
            {
                "id": f"{kind}{number}",
                "mixture": sources.sum(axis=0),
                "sources": sources,
                "info": {
                    "speakers": [u.speaker for u in chosen],
                    "files": [pathlib.Path(u.path).name for u in chosen],
                    "offsets": offsets,
                    "gains_db": [float(g) for g in gains_db],
                },
            }
        )
    return examples


def score_mixture(est: np.ndarray, sources: np.ndarray, window: int) -> dict:
    """Scores of the tracks ``est [S, T]`` separated from ``sources.sum(0)``
    (``sources [S, T]``): ``SI-SNRi (dB)`` (mean over speakers, whole-file PIT), its worst
    speaker's, and the counts of :func:`jaxspeech.metrics.tracks.track_swaps` (active,
    decided and off-track windows, switches) with ``on tracks``: no decided window off the
    whole file's permutation."""
    aligned = np.asarray(reorder(est, tracks.file_permutation(est, sources)))
    mixture = np.broadcast_to(sources.sum(axis=0), sources.shape)
    improvement = np.asarray(si_snr(aligned, sources) - si_snr(mixture, sources), np.float64)
    swaps = tracks.track_swaps(est, sources, window)
    return {
        "SI-SNRi (dB)": float(improvement.mean()),
        "worst speaker SI-SNRi (dB)": float(improvement.min()),
        "active windows": swaps["active"],
        "decided windows": swaps["decided"],
        "off-track windows": swaps["off_track"],
        "switches": swaps["switches"],
        "on tracks": swaps["off_track"] == 0,
    }


def score_single(est: np.ndarray, speech: np.ndarray, window: int) -> dict:
    """Scores of the tracks ``est [S, T]`` separated from one speaker ``speech [T]``
    (:func:`jaxspeech.metrics.tracks.one_speaker_tracks`)."""
    where = tracks.one_speaker_tracks(est, speech, window)
    return {
        "louder track (dB)": where["louder_db"],
        "quieter track (dB)": where["quieter_db"],
        "quieter below louder (dB)": where["gap_db"],
        "active windows": where["active"],
        "split windows": where["split_windows"],
        "split": where["split"],
    }


def summary(items: Sequence[dict]) -> dict:
    """The table's row from the per-file rows: over the mixtures, the median and minimum
    SI-SNRi, the share below 0 dB, the share on their tracks and the share of their active
    windows decided; over the one-speaker files, the median gap between the tracks and the
    share split (gap below ``tracks.SPLIT_DB``)."""
    mixed = [item for item in items if item["talkers"] > 1]
    alone = [item for item in items if item["talkers"] == 1]
    improvement = np.array([item["SI-SNRi (dB)"] for item in mixed])
    active = sum(item["active windows"] for item in mixed)
    return {
        "mixtures": len(mixed),
        "SI-SNRi median (dB)": float(np.median(improvement)),
        "SI-SNRi min (dB)": float(improvement.min()),
        "below 0 dB": float(np.mean(improvement < 0)),
        "no swap": float(np.mean([item["on tracks"] for item in mixed])),
        "windows decided": sum(item["decided windows"] for item in mixed) / max(active, 1),
        "one-speaker files": len(alone),
        "gap median (dB)": float(np.median([item["quieter below louder (dB)"] for item in alone])),
        "one-speaker split": float(np.mean([item["split"] for item in alone])),
    }


def check_run(config, workdir: str | pathlib.Path, count: int) -> None:
    """ConfigError unless ``config`` is a separation run trained on mixtures of speech folders
    and ``count`` (mixtures to make) is positive."""
    if count < 1:
        raise ConfigError(f"--long-mixtures {count}: give a positive number of mixtures")
    if config.task != "separation":
        raise ConfigError(
            f"--long-mixtures: {workdir} is a {config.task!r} run; it measures separation runs "
            "(configs/separation/*.py)"
        )
    if not isinstance(config.data, MixtureDataConfig):
        raise ConfigError(
            f"--long-mixtures mixes whole utterances of a run's speech folders (data.speech); "
            f"the run in {workdir} reads a pre-mixed corpus: evaluate it without --long-mixtures"
        )


def measure(model, split: str, count: int) -> Evaluation:
    """The long-mixture evaluation of ``model`` (a ``Separator`` from ``jaxspeech.load`` of a
    run that :func:`check_run` accepts) on the speakers of its data's ``split`` ("test" or
    "valid"): ``count`` mixtures and their one-speaker files (:func:`long_mixtures`), each
    separated by ``model.separate`` with its default chunking; one item row per file (its
    speakers, files, length, offsets, levels and scores) and the :func:`summary` row (with the
    checkpoint step, the chunking and the window)."""
    config = model.config
    source = MixtureData(config.data, config.train.batch_size, model.n_src)
    rate, window = model.sample_rate, round(WINDOW_SECONDS * model.sample_rate)
    examples = long_mixtures(
        source.splits[split],
        config.data.mixture,
        n_src=model.n_src,
        count=count,
        seed=fixed_set_seed(config.data.split_seed, split),
        min_samples=2 * config.data.mixture.num_samples,
    )
    items = []
    for example in tqdm(examples, desc=f"long mixtures ({split})", unit="file"):
        info, sources = example["info"], example["sources"]
        est = np.asarray(model.separate(example["mixture"]), np.float64)
        row = {
            "system": model.core.name,
            "item": example["id"],
            "talkers": len(sources),
            "speakers": "+".join(info["speakers"]),
            "files": "+".join(info["files"]),
            "seconds": sources.shape[-1] / rate,
            "offsets (s)": "+".join(f"{o / rate:.2f}" for o in info["offsets"]),
            "gains (dB)": "+".join(f"{g:.1f}" for g in info["gains_db"]),
        }
        if len(sources) > 1:
            row.update(score_mixture(est, sources.astype(np.float64), window))
        else:
            row.update(score_single(est, sources[0].astype(np.float64), window))
        items.append(row)
    table = {
        "checkpoint_step": model.step,
        "split": split,
        "chunk (s)": model.chunk / rate,
        "overlap (s)": model.overlap / rate,
        "window (s)": WINDOW_SECONDS,
        **summary(items),
    }
    return Evaluation([table], items)

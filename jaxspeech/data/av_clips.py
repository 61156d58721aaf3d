"""Which talking-face clips an audio-visual run reads: the video files of a folder, the
demonstration GRID clips dealt into train, valid and test by sentence or by talker, and the
clips of the GRID or LRS3 corpus in their official layouts dealt by talker (or talk)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxspeech.data.corpus import split_sizes
from jaxspeech.errors import ConfigError

VIDEO_EXTENSIONS = (".mpg", ".mp4", ".avi", ".mov", ".mkv")


class ClipRef(NamedTuple):
    """One video file and its talker."""

    path: str
    talker: str


def video_files(folder: pathlib.Path) -> list[str]:
    """Sorted video files directly in ``folder``; ConfigError when there are none."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; point data.*_clips at the GRID videos")
    paths = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not paths:
        raise ConfigError(f"{folder}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return paths


def split_clips(
    sentence_paths: Sequence[str],
    talker_paths: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    sentence_talker: str = "s1",
) -> dict[str, list[ClipRef]]:
    """``{"train", "valid", "test"}`` clip lists: the sentences of ``sentence_talker`` dealt
    out by sentence, the other talkers (one per file, named by the file stem) by talker, each
    shuffled with ``seed`` and cut in the numbers of ``corpus.split_sizes``."""
    rng = np.random.default_rng(seed)
    splits = {"train": [], "valid": [], "test": []}
    groups = (
        [ClipRef(p, sentence_talker) for p in sentence_paths],
        [ClipRef(p, pathlib.Path(p).stem) for p in talker_paths],
    )
    for what, refs in zip(("sentences", "talkers"), groups, strict=True):
        if refs:
            for name, dealt in _deal([[r] for r in refs], fractions, rng, what).items():
                splits[name].extend(dealt)
    return {name: sorted(refs) for name, refs in splits.items()}


def _deal(
    groups: Sequence[Sequence[ClipRef]], fractions: Sequence[float], rng, what: str
) -> dict[str, list[ClipRef]]:
    """``groups`` of clips shuffled with ``rng`` and dealt whole into train, valid and test in
    the numbers of ``corpus.split_sizes``."""
    sizes = split_sizes(len(groups), fractions, "split_clips", what)
    order = rng.permutation(len(groups))
    bounds = np.cumsum([0, *sizes])
    return {
        name: [ref for i in order[bounds[k] : bounds[k + 1]] for ref in groups[i]]
        for k, name in enumerate(("train", "valid", "test"))
    }


def corpus_clips(
    folder: str | os.PathLike, fractions: Sequence[float], seed: int
) -> dict[str, list[ClipRef]]:
    """``{"train", "valid", "test"}`` clip lists of the GRID or LRS3 corpus at ``folder``
    (``jaxspeech.data.corpora``), each clip's talker its GRID talker or LRS3 talk: GRID's
    talkers dealt by talker in the shares ``fractions``; LRS3's ``pretrain`` and ``trainval``
    talks dealt into train and valid in the ratio of the first two shares, its ``test`` split
    (talks of their own) testing."""
    from jaxspeech.data.corpora import open_corpus
    from jaxspeech.data.corpora.audiovisual import LRS3, Grid

    corpus = open_corpus(folder)
    if not isinstance(corpus, Grid | LRS3):
        raise ConfigError(f"data.corpus: {corpus.name} in {corpus.root} is not GRID or LRS3")

    def by_talker(splits: Sequence[str]) -> list[list[ClipRef]]:
        talkers: dict[str, list[ClipRef]] = {}
        for split in splits:
            for item in corpus.items(split, progress=True):
                talkers.setdefault(item.speaker, []).append(ClipRef(item.path, item.speaker))
        return [talkers[t] for t in sorted(talkers)]

    rng = np.random.default_rng(seed)
    if isinstance(corpus, Grid):
        dealt = _deal(by_talker(["all"]), fractions, rng, "GRID talkers")
    else:
        train, valid = fractions[0], fractions[1]
        shares = (train / (train + valid), valid / (train + valid), 0.0)
        seen = [s for s in ("pretrain", "trainval") if corpus.split_present(s)]
        dealt = _deal(by_talker(seen), shares, rng, "LRS3 talks")
        dealt["test"] = [ref for talk in by_talker(["test"]) for ref in talk]
    return {name: sorted(refs) for name, refs in dealt.items()}

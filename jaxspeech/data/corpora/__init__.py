"""Readers of the field's standard corpora in their official layouts.

:func:`find_corpora` names every layout found at or below a folder; :func:`open_corpus` picks
the one to read. Each reader (a :class:`Corpus`) lists the items of a split with their
metadata (:mod:`jaxspeech.data.corpora.records`) and its official trial lists. The layouts:
:mod:`~jaxspeech.data.corpora.mixtures` (LibriMix, wsj0-2mix/3mix, WHAM!, WHAMR!),
:mod:`~jaxspeech.data.corpora.speakers` (VoxCeleb1/2, CN-Celeb1/2),
:mod:`~jaxspeech.data.corpora.enhancement` (VoiceBank-DEMAND, DNS Challenge),
:mod:`~jaxspeech.data.corpora.audiovisual` (GRID, LRS3).
"""

from __future__ import annotations

import os
import pathlib

from jaxspeech.data.corpora import audiovisual, enhancement, mixtures, speakers
from jaxspeech.data.corpora.base import Corpus, require_length
from jaxspeech.data.corpora.records import Item, Mixture, NoisyPair, Recording, Trial
from jaxspeech.errors import CorpusError

LAYOUTS = (
    "LibriMix (Libri2Mix|Libri3Mix/wav8k|wav16k/min|max/<split>/ + metadata/)",
    "wsj0-2mix/3mix, WHAM!, WHAMR! (wav8k|wav16k/min|max/{tr,cv,tt}/)",
    "VoxCeleb1 (wav/<speaker>/<video>/*.wav), VoxCeleb2 ([dev|test/]aac/.../*.m4a)",
    "CN-Celeb (data/<speaker>/ with dev/dev.lst and eval/, or spk.lst)",
    "VoiceBank-DEMAND ({clean,noisy}_{trainset_28spk,testset}_wav/)",
    "DNS Challenge (clean/, noise/, test_set/synthetic/)",
    "GRID (s<N>/*.mpg with align/s<N>/*.align)",
    "LRS3 (pretrain|trainval|test/<talk>/*.mp4 + .txt)",
)


def find_corpora(path: str | os.PathLike) -> list[Corpus]:
    """Every corpus in an official layout at ``path`` or below it (each family looks a few
    levels down); CorpusError naming the layouts expected when there is none."""
    root = pathlib.Path(path).expanduser().absolute()
    if not root.is_dir():
        raise CorpusError(f"{path}: no such folder")
    found = [
        c for family in (mixtures, speakers, enhancement, audiovisual) for c in family.find(root)
    ]
    if not found:
        raise CorpusError(
            f"{path} matches no corpus layout; expected one of: " + "; ".join(LAYOUTS)
        )
    return found


def open_corpus(
    path: str | os.PathLike, sample_rate: int | None = None, mixture: str | None = None
) -> Corpus:
    """The corpus at ``path``: the only one :func:`find_corpora` finds, or among several the
    one at ``sample_rate`` (a separation corpus's ``wav8k``/``wav16k``), preferring ``min``
    mixtures. ``mixture`` picks a separation corpus's mixture folder (``mix_both``, ...)."""
    found = find_corpora(path)
    if sample_rate is not None and len(found) > 1:
        found = [c for c in found if c.sample_rate == sample_rate] or found
    if len(found) > 1 and all(isinstance(c, mixtures.MixtureCorpus) for c in found):
        found = [c for c in found if c.mode == "min"] or found
    if len(found) > 1:
        names = ", ".join(f"{c.name} ({c.root})" for c in found)
        raise CorpusError(f"{path} holds several corpora: {names}; give the folder of one")
    corpus = found[0]
    if mixture is not None:
        if not isinstance(corpus, mixtures.MixtureCorpus):
            raise CorpusError(
                f"{corpus.name} is not a separation corpus; it has no mixture folders"
            )
        corpus = corpus.with_mixture(mixture)
    return corpus


__all__ = [
    "Corpus",
    "Item",
    "Mixture",
    "NoisyPair",
    "Recording",
    "Trial",
    "find_corpora",
    "open_corpus",
    "require_length",
]

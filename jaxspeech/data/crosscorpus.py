"""Evaluating a trained run on the test split of another corpus (``evaluate.py --corpus``).

:func:`for_corpus` turns a run's data section into one that reads the corpus at a path, in
any supported layout, at the run's rate (files at other rates are resampled): a separation
run (trained on made or pre-mixed mixtures) reads a pre-mixed corpus's test split whole, an
enhancement run a noisy/clean pair corpus's (VoiceBank-DEMAND, DNS Challenge). A
speaker-verification run keeps its data (its score normalisation uses its training
speakers) and scores the corpus's official trial list instead (:func:`write_trial_list`).
The tables are written under the corpus's own name (:func:`table_name`), never over the
training corpus's ``test`` tables.
"""

from __future__ import annotations

import os
import pathlib
import re

from jaxspeech.data import noisy_pairs
from jaxspeech.data.pipeline import MixtureDataConfig
from jaxspeech.data.premixed import PremixedDataConfig, open_mixture_corpus
from jaxspeech.data.utterances import UtteranceDataConfig, official_trials
from jaxspeech.errors import ConfigError
from jaxspeech.evaluation.verification import write_trials


def for_corpus(data, path: str | os.PathLike):
    """The data section ``data`` of a trained run, pointed at the corpus at ``path``."""
    path = str(pathlib.Path(path).expanduser().absolute())
    if _reads_noisy_pairs(data, path):
        return noisy_pairs.for_corpus(data, path)
    if isinstance(data, MixtureDataConfig | PremixedDataConfig):
        return PremixedDataConfig(
            corpus=path,
            sample_rate=data.sample_rate,
            segment_seconds=data.num_samples / data.sample_rate,
        )
    raise ConfigError(
        f"--corpus: a run whose data section is a {type(data).__name__} cannot be evaluated on "
        "another corpus; separation and enhancement runs can"
    )


def _reads_noisy_pairs(data, path: str) -> bool:
    """Whether a run with the data section ``data`` reads the corpus at ``path`` as noisy/clean
    pairs: an enhancement run's (made mixtures or pairs) pointed at a pair corpus."""
    if isinstance(data, noisy_pairs.NoisyPairDataConfig):
        return True
    if not isinstance(data, MixtureDataConfig):
        return False
    from jaxspeech.data.corpora import find_corpora
    from jaxspeech.data.corpora.enhancement import DNSChallenge, VoiceBankDemand

    return any(isinstance(c, VoiceBankDemand | DNSChallenge) for c in find_corpora(path))


def table_name(data, split: str) -> str:
    """``<corpus layout name>-<corpus split>`` of a data section made by :func:`for_corpus`,
    in letters, digits, ``-`` and ``_`` (e.g. ``wsj0-2mix_wav8k_min_mix-tt``)."""
    from jaxspeech.data.premixed import role_splits

    if isinstance(data, noisy_pairs.NoisyPairDataConfig):
        return _slug(f"{noisy_pairs.open_pair_corpus(data.corpus).name}-{split}")
    corpus = open_mixture_corpus(data.corpus, data.sample_rate, data.mixture)
    return _slug(f"{corpus.name}-{role_splits(corpus, data.splits)[split]}")


def scores_trial_lists(data) -> bool:
    """Whether a run with the data section ``data`` scores a corpus's trial lists (speaker
    verification) rather than reading its test split."""
    return isinstance(data, UtteranceDataConfig)


def write_trial_list(path: str | os.PathLike, folder: pathlib.Path) -> pathlib.Path:
    """Writes the first official trial list of the corpora at ``path``
    (``utterances.official_trials``: VoxCeleb1's ``veri_test2``, CN-Celeb's ``trials``; every
    line) as ``label enrol test`` lines with absolute paths to ``folder/<corpus>-<list>.txt``,
    and returns that file."""
    name, trials = official_trials(path)
    out = folder / f"{_slug(name)}.txt"
    write_trials(out, trials)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text.replace("/", "_")).strip("_")

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
from jaxspeech.data.utterances import UtteranceDataConfig
from jaxspeech.errors import AudioFileError, ConfigError


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
    """Writes the first official trial list of the corpus at ``path`` (VoxCeleb1's
    ``veri_test2`` when present, CN-Celeb's ``trials``) as ``label enrol test`` lines with
    absolute paths to ``folder/<corpus>-<list>.txt``, and returns that file. Every trial is
    written, those naming a missing file too; a line that does not parse is a CorpusError."""
    from jaxspeech import files
    from jaxspeech.data.corpora import open_corpus
    from jaxspeech.data.corpora.base import raise_first

    corpus = open_corpus(path)
    lists = corpus.trial_lists()
    if not lists:
        raise ConfigError(
            f"--corpus: {corpus.name} in {corpus.root} has no official trial list; give one "
            "with --trials"
        )
    preferred = [n for n in ("veri_test2", "trials") if n in lists]
    name = (preferred or list(lists))[0]
    trials, problems = corpus.scan_trials(name)
    # a trial naming a missing file is kept: the evaluation counts and names it
    raise_first([p for p in problems if not isinstance(p, AudioFileError)], corpus.root)
    lines = [f"{int(t.target)} {t.enrol} {t.test}\n" for t in trials]
    out = folder / f"{_slug(corpus.name)}-{name}.txt"
    folder.mkdir(parents=True, exist_ok=True)
    files.write_text(out, "".join(lines))
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text.replace("/", "_")).strip("_")

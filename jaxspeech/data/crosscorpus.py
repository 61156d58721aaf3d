"""Evaluating a trained run on the test split of another corpus (``evaluate.py --corpus``).

:func:`for_corpus` turns a run's data section into one that reads the corpus at a path, in
any supported layout, at the run's rate (files at other rates are resampled): a separation
run (trained on made or pre-mixed mixtures) reads a pre-mixed corpus's test split whole. The
tables are written under the corpus's own name (:func:`table_name`), never over the training
corpus's ``test`` tables.
"""

from __future__ import annotations

import os
import pathlib
import re

from jaxspeech.data.pipeline import MixtureDataConfig
from jaxspeech.data.premixed import PremixedDataConfig, open_mixture_corpus
from jaxspeech.errors import ConfigError


def for_corpus(data, path: str | os.PathLike):
    """The data section ``data`` of a trained run, pointed at the corpus at ``path``."""
    path = str(pathlib.Path(path).expanduser().absolute())
    if isinstance(data, MixtureDataConfig | PremixedDataConfig):
        return PremixedDataConfig(
            corpus=path,
            sample_rate=data.sample_rate,
            segment_seconds=data.num_samples / data.sample_rate,
        )
    raise ConfigError(
        f"--corpus: a run whose data section is a {type(data).__name__} cannot be evaluated on "
        "another corpus; separation runs can"
    )


def table_name(data, split: str) -> str:
    """``<corpus layout name>-<corpus split>`` of a data section made by :func:`for_corpus`,
    in letters, digits, ``-`` and ``_`` (e.g. ``wsj0-2mix_wav8k_min_mix-tt``)."""
    from jaxspeech.data.premixed import role_splits

    corpus = open_mixture_corpus(data.corpus, data.sample_rate, data.mixture)
    name = f"{corpus.name}-{role_splits(corpus, data.splits)[split]}"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name.replace("/", "_")).strip("_")

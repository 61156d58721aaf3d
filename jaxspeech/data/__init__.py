"""Input pipelines: corpora on disk, on-the-fly mixtures, labelled utterance crops, labelled
pairs from a CSV, grain datasets, fixed evaluation sets."""

from jaxspeech.data.corpus import (
    Utterance,
    audio_files,
    data_path,
    group_by_speaker,
    resolve_data_root,
    scan_corpus,
    split_speakers,
)
from jaxspeech.data.mixing import AudioCache, MixtureConfig, make_mixture
from jaxspeech.data.pairs import Pair, PairData, PairDataConfig, read_pairs, split_pairs
from jaxspeech.data.pipeline import (
    MixtureData,
    MixtureDataConfig,
    batch_examples,
    fixed_mixture_set,
    mixture_dataset,
)
from jaxspeech.data.utterances import (
    UtteranceData,
    UtteranceDataConfig,
    make_crop,
    utterance_dataset,
)

__all__ = [
    "AudioCache",
    "MixtureConfig",
    "MixtureData",
    "MixtureDataConfig",
    "Pair",
    "PairData",
    "PairDataConfig",
    "Utterance",
    "UtteranceData",
    "UtteranceDataConfig",
    "audio_files",
    "batch_examples",
    "data_path",
    "fixed_mixture_set",
    "group_by_speaker",
    "make_crop",
    "make_mixture",
    "mixture_dataset",
    "read_pairs",
    "resolve_data_root",
    "scan_corpus",
    "split_pairs",
    "split_speakers",
    "utterance_dataset",
]

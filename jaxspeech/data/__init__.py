"""Input pipelines behind one data-source interface (``source.DataSource``): corpora on disk,
on-the-fly mixtures, pre-mixed corpora, labelled utterance crops, labelled pairs from a CSV."""

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
    fixed_mixture_set,
    mixture_dataset,
)
from jaxspeech.data.source import DataSource, StreamOptions, batch_examples, training_stream
from jaxspeech.data.utterances import (
    UtteranceData,
    UtteranceDataConfig,
    make_crop,
    utterance_dataset,
)

__all__ = [
    "AudioCache",
    "DataSource",
    "MixtureConfig",
    "MixtureData",
    "MixtureDataConfig",
    "Pair",
    "PairData",
    "PairDataConfig",
    "StreamOptions",
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
    "training_stream",
    "utterance_dataset",
]

"""Input pipelines: corpora on disk, on-the-fly mixtures, grain datasets, fixed mixture sets."""

from jaxspeech.data.corpus import (
    Utterance,
    audio_files,
    group_by_speaker,
    scan_corpus,
    split_speakers,
)
from jaxspeech.data.mixing import AudioCache, MixtureConfig, make_mixture
from jaxspeech.data.pipeline import (
    MixtureData,
    MixtureDataConfig,
    batch_examples,
    fixed_mixture_set,
    mixture_dataset,
    read_mixture_set,
    write_mixture_set,
)

__all__ = [
    "AudioCache",
    "MixtureConfig",
    "MixtureData",
    "MixtureDataConfig",
    "Utterance",
    "audio_files",
    "batch_examples",
    "fixed_mixture_set",
    "group_by_speaker",
    "make_mixture",
    "mixture_dataset",
    "read_mixture_set",
    "scan_corpus",
    "split_speakers",
    "write_mixture_set",
]

"""What a corpus reader lists: recordings, mixtures with their sources, noisy/clean pairs and
verification trials. Paths are absolute; lengths are at the file's own rate."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recording:
    """One recording of one talker (speaker corpora, clean speech, noise, talking faces).

    Attributes:
      id: stable identifier, unique within the corpus (e.g. ``id10270/x6uYqmx31kE/00001``).
      path: the audio file, or the video whose audio track is the speech (GRID, LRS3).
      num_samples, sample_rate: length and rate of the audio (track).
      speaker: speaker id when the corpus names it, else None (noise recordings).
      gender: "F" or "M" when the corpus metadata says, else None.
      genre: CN-Celeb's genre (``singing``, ``interview``, ...), else None.
      text: the words said when the corpus transcribes them (GRID, LRS3), else None.
    """

    id: str
    path: str
    num_samples: int
    sample_rate: int
    speaker: str | None = None
    gender: str | None = None
    genre: str | None = None
    text: str | None = None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


@dataclasses.dataclass(frozen=True)
class Mixture:
    """One pre-mixed mixture and its reference signals (LibriMix, wsj0-mix, WHAM!, WHAMR!).

    Attributes:
      id: the mixture ID (LibriMix's ``mixture_ID``, else the file name without ``.wav``).
      path: the mixture file.
      sources: ``[n_src]`` reference source files, in the corpus's order.
      noise: the noise file of a noisy mixture, else None.
      num_samples, sample_rate: length and rate of the mixture (every file has both).
      speakers: ``[n_src]`` speaker ids of the sources.
      snrs: ``[n_src]`` per-source levels in dB from the corpus (wsj0-mix's file name,
        LibriMix's metrics CSV), else None.
      noise_snr: the noise level in dB when the corpus gives it, else None.
    """

    id: str
    path: str
    sources: tuple[str, ...]
    noise: str | None
    num_samples: int
    sample_rate: int
    speakers: tuple[str, ...]
    snrs: tuple[float, ...] | None = None
    noise_snr: float | None = None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


@dataclasses.dataclass(frozen=True)
class NoisyPair:
    """A noisy recording and its clean reference (VoiceBank-DEMAND, DNS's synthetic test set).

    Attributes:
      id: stable identifier (``p232_001``, ``no_reverb/fileid_158``).
      noisy, clean: the two files, of equal length and rate.
      num_samples, sample_rate: their length and rate.
      speaker: the talker when the corpus names it, else None.
      noise_type: the noise when the corpus names it (VoiceBank's log files), else None.
      snr: the signal-to-noise ratio in dB the corpus mixed at, else None.
    """

    id: str
    noisy: str
    clean: str
    num_samples: int
    sample_rate: int
    speaker: str | None = None
    noise_type: str | None = None
    snr: float | None = None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


@dataclasses.dataclass(frozen=True)
class Trial:
    """One line of a verification trial list: is ``test`` spoken by the enrolled speaker?

    Attributes:
      enrol: the enrolment recording (absolute path).
      test: the test recording (absolute path).
      target: True when both are the same speaker.
    """

    enrol: str
    test: str
    target: bool


Item = Recording | Mixture | NoisyPair


def parse_trial_line(line: str) -> tuple[int, str, str] | None:
    """``(label, enrol, test)`` of a VoxCeleb-format trial line ``<1|0> <path> <path>``, None
    for a blank line; ValueError (naming the expected form) for anything else."""
    fields = line.split()
    if not fields:
        return None
    if len(fields) != 3 or fields[0] not in ("0", "1"):
        raise ValueError(
            f"{line!r}; each line must be 'label a.wav b.wav' with label 1 (same speaker) or 0"
        )
    return int(fields[0]), fields[1], fields[2]

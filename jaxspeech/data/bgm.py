"""Data of the background-music matcher: the demonstration labelling and fixed-length clips.

No public corpus rates how well music suits a spoken recording, so the recipe ships a
*demonstration* labelling built from real recordings and their metadata below the data root
(a stand-in to show the system learning from audio, not ground truth). The speech side is a
child's voice (speechocean762 speakers under 13, ages in its ``SPEAKERS.tsv``) or an adult's
read narration (speechocean762 speakers aged 18 or more, and LibriSpeech); the music side is
a GTZAN clip, its genre read from the file name. The fit of a pair is ``FIT[genre][voice]``:

| genre | blues | classical | country | disco | hiphop | jazz | metal | pop | reggae | rock |
|---|---|---|---|---|---|---|---|---|---|---|
| child | 0.2 | 0.5 | 0.5 | 0.8 | 0.2 | 0.2 | 0.0 | 1.0 | 0.8 | 0.2 |
| adult narration | 0.7 | 1.0 | 0.5 | 0.1 | 0.1 | 0.9 | 0.0 | 0.3 | 0.3 | 0.2 |

Every chosen recording is paired with every clip; the pairs carry the speaker as the group
of their first file, so ``PairDataConfig(disjoint="each")`` keeps the test split's speakers
and clips out of training on both sides. The metadata only make the labels and the splits:
the model sees the descriptors of the audio and nothing else.

``python -m jaxspeech.data.bgm OUT.csv [--root DIR] [--utterances-per-speaker N]`` writes the
same pairs as a CSV (``speech_path,music_path,label,speaker``, paths relative to the data root), a
template for labelling one's own.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import pathlib
import sys

import numpy as np

from jaxspeech import files
from jaxspeech.data.corpus import data_path, resolve_data_root, scan_corpus
from jaxspeech.data.pairs import Pair, PairDataConfig
from jaxspeech.errors import ConfigError, EmptyAudioError, run_command

VOICES = ("child", "adult narration")
#: Demonstration fit of each GTZAN genre for (child, adult narration).
FIT = {
    "blues": (0.2, 0.7),
    "classical": (0.5, 1.0),
    "country": (0.5, 0.5),
    "disco": (0.8, 0.1),
    "hiphop": (0.2, 0.1),
    "jazz": (0.2, 0.9),
    "metal": (0.0, 0.0),
    "pop": (1.0, 0.3),
    "reggae": (0.8, 0.3),
    "rock": (0.2, 0.2),
}
CSV_COLUMNS = ("speech_path", "music_path", "label", "speaker")


@dataclasses.dataclass(frozen=True)
class DemonstrationConfig:
    """Which recordings the demonstration labelling uses (folders below the data root).

    Attributes:
      speechocean: speechocean762 (``SPEAKERxxxx/*.flac`` and ``SPEAKERS.tsv`` with ages).
      librispeech: LibriSpeech folder (adult narration), or "" for none.
      gtzan: GTZAN clips named ``<genre>.000NN.<ext>``.
      utterances_per_speaker: the first N utterances of each speaker (sorted), 0 for all.
      child_below_age, adult_from_age: the age bounds of the two voices (teens are left out).
    """

    speechocean: str = "speechocean762"
    librispeech: str = "librispeech"
    gtzan: str = "gtzan"
    utterances_per_speaker: int = 0
    child_below_age: int = 13
    adult_from_age: int = 18

    def __post_init__(self):
        if self.utterances_per_speaker < 0 or self.child_below_age > self.adult_from_age:
            raise ConfigError(
                "data.demonstration: utterances_per_speaker must be >= 0 and "
                "child_below_age <= adult_from_age"
            )


@dataclasses.dataclass(frozen=True)
class BGMDataConfig(PairDataConfig):
    """The pairs (``PairDataConfig``, here with columns ``speech_path,music_path,label``,
    graded labels, 22.05 kHz and ``disjoint="each"``; ``sample_rate`` must be the
    descriptors') plus ``demonstration`` (make the pairs from the data root instead of
    ``csv``; None: read ``csv``)."""

    first_column: str = "speech_path"
    second_column: str = "music_path"
    graded_labels: bool = True
    sample_rate: int = 22050
    disjoint: str = "each"
    demonstration: DemonstrationConfig | None = None


def genre_of(path: str | os.PathLike) -> str:
    """The GTZAN genre in a file name ``<genre>.000NN.<ext>``; ConfigError otherwise."""
    genre = pathlib.Path(path).name.split(".")[0]
    if genre not in FIT:
        raise ConfigError(
            f"{path}: no GTZAN genre in the name; name the clip <genre>.000NN.ogg with a genre "
            f"of {sorted(FIT)}"
        )
    return genre


def _voices(root: pathlib.Path, cfg: DemonstrationConfig) -> list[tuple[str, str, str]]:
    """``(path, speaker, voice)`` of the chosen recordings, sorted by path."""
    chosen = []
    corpora = [("speechocean762", cfg.speechocean)]
    if cfg.librispeech:
        corpora.append(("librispeech", cfg.librispeech))
    for corpus, folder in corpora:
        per_speaker: dict[str, int] = {}
        for utt in scan_corpus(data_path(folder, root)):
            if corpus == "librispeech":
                voice = VOICES[1]
            elif utt.age is None:
                raise ConfigError(
                    f"{utt.path}: speaker {utt.speaker} has no age in SPEAKERS.tsv; the "
                    "demonstration labelling needs every speechocean762 speaker's age"
                )
            elif utt.age < cfg.child_below_age:
                voice = VOICES[0]
            elif utt.age >= cfg.adult_from_age:
                voice = VOICES[1]
            else:
                continue
            count = per_speaker.get(utt.speaker, 0)
            if cfg.utterances_per_speaker and count >= cfg.utterances_per_speaker:
                continue
            per_speaker[utt.speaker] = count + 1
            chosen.append((os.path.abspath(utt.path), f"{corpus}/{utt.speaker}", voice))
    return sorted(chosen)


def demonstration_pairs(root: str | os.PathLike | None, cfg: DemonstrationConfig) -> list[Pair]:
    """Every chosen recording against every GTZAN clip, labelled by ``FIT`` (module
    docstring); absolute, normalised paths, sorted, the same on every machine. ``line``
    counts rows as the CSV would."""
    root = resolve_data_root(root)
    music = sorted(
        os.path.abspath(p)
        for p in data_path(cfg.gtzan, root).glob("*.*")
        if p.name.split(".")[0] in FIT
    )
    if not music:
        raise ConfigError(f"{data_path(cfg.gtzan, root)}: no GTZAN clips <genre>.000NN.ogg found")
    speech = _voices(root, cfg)
    if not {voice for _, _, voice in speech} == set(VOICES):
        raise ConfigError("the demonstration labelling found recordings of one voice only")
    pairs = []
    for path, speaker, voice in speech:
        for track in music:
            label = FIT[genre_of(track)][VOICES.index(voice)]
            pairs.append(Pair(path, track, label, len(pairs) + 2, speaker))
    return pairs


def write_pairs_csv(pairs: list[Pair], path: str | os.PathLike, root: str | os.PathLike) -> None:
    """Writes ``pairs`` as ``CSV_COLUMNS`` rows, paths relative to ``root``, atomically."""
    root = pathlib.Path(root)
    with files.atomic_output(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for p in pairs:
            first, second = (os.path.relpath(x, root) for x in (p.first, p.second))
            writer.writerow((first, second, f"{p.label:g}", p.first_group))


def fixed_clip(wav: np.ndarray, num_samples: int, source: str = "audio") -> np.ndarray:
    """The centred ``num_samples`` of ``wav`` ``[samples]``; a shorter recording is repeated
    end to end from its start to fill them (so that it still sounds like itself, not like
    silence)."""
    wav = np.asarray(wav, np.float32)
    if wav.size == 0:
        raise EmptyAudioError(f"{source}: audio has no samples; pass a non-empty recording")
    if wav.size < num_samples:
        return np.tile(wav, -(-num_samples // wav.size))[:num_samples]
    start = (wav.size - num_samples) // 2
    return wav[start : start + num_samples]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jaxspeech.data.bgm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("output", help="the CSV to write")
    parser.add_argument("--root", help="the data root (default: $JAXSPEECH_DATA, ../shared/data)")
    parser.add_argument("--utterances-per-speaker", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    args = parser.parse_args(argv)
    if os.path.exists(args.output) and not args.overwrite:
        raise ConfigError(f"{args.output} exists; pass --overwrite to replace it")
    root = resolve_data_root(args.root)
    cfg = DemonstrationConfig(utterances_per_speaker=args.utterances_per_speaker)
    pairs = demonstration_pairs(root, cfg)
    write_pairs_csv(pairs, args.output, root)
    print(f"wrote {len(pairs)} pairs to {args.output}")


if __name__ == "__main__":
    sys.exit(run_command("python -m jaxspeech.data.bgm", main, None))

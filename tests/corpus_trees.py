"""Miniature copies of the standard corpora in their official layouts, built at test time
from the real recordings of the shared data folder (LibriSpeech and speechocean762 speech,
the noise recordings, GRID's videos). Every builder writes a few short files at the layout's
rate and returns the corpus folder, so tests stay fast (a fraction of a second each).

The metadata files are written as the official scripts write them; LibriMix's CSVs hold
absolute paths under ``STALE_ROOT``, a folder of another machine, as a copied corpus has.
"""

from __future__ import annotations

import csv
import pathlib
import shutil
from collections.abc import Sequence

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

STALE_ROOT = "/mnt/other-machine/corpora"
SECONDS = 0.5


def speech(shared_data: pathlib.Path, speaker: str, n: int, rate: int, seconds=SECONDS):
    """``n`` LibriSpeech test-other utterances of ``speaker``: ``[(utterance id, audio)]``,
    the first ``seconds`` of each at ``rate``."""
    paths = sorted((shared_data / "librispeech" / "test-other" / speaker).glob("*.flac"))[:n]
    return [(p.stem, _at_rate(p, rate, seconds)) for p in paths]


def noise(shared_data: pathlib.Path, k: int, rate: int, seconds=SECONDS) -> np.ndarray:
    paths = sorted((shared_data / "noise").glob("*.wav"))
    return _at_rate(paths[k % len(paths)], rate, seconds, start=k)


def _at_rate(path, rate, seconds, start=0) -> np.ndarray:
    wav, file_rate = sf.read(path, dtype="float32", always_2d=True)
    wav = wav[:, 0]
    offset = start * file_rate // 4
    wav = wav[offset : offset + round(seconds * file_rate)]
    if file_rate != rate:
        wav = resample_poly(wav, rate, file_rate).astype(np.float32)
    return wav[: round(seconds * rate)]


def _write(path: pathlib.Path, wav: np.ndarray, rate: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, rate)
    return str(path)


LIBRI_SPEAKERS = ("1688", "1998", "2033", "2414", "2609", "3005")


def build_librimix(dest: pathlib.Path, shared_data: pathlib.Path, *, n_src=2, rate=8000,
                   counts=(("test", 3), ("dev", 2)), types=("mix_clean", "mix_both"),
                   original_ids=False) -> pathlib.Path:  # fmt: skip
    """``dest/Libri<n>Mix/wav<R>k/min`` with ``counts`` mixtures per split of each mixture
    type and ``metadata/{mixture,metrics}_<split>_<type>.csv`` (create_librimix_from_metadata
    columns; ``original_ids`` adds the newer ``original_mixture_ID`` column). Returns the
    ``wav<R>k/min`` folder."""
    variant = dest / f"Libri{n_src}Mix" / f"wav{rate // 1000}k" / "min"
    stale = f"{STALE_ROOT}/Libri{n_src}Mix/wav{rate // 1000}k/min"
    for split, count in counts:
        for m in range(count):
            utterances = [
                speech(shared_data, LIBRI_SPEAKERS[(m + i) % 6], m + 1, rate)[m]
                for i in range(n_src)
            ]
            mixture_id = "_".join(u for u, _ in utterances)
            sources = [w * (0.5 + 0.25 * i) for i, (_, w) in enumerate(utterances)]
            noise_wav = 0.1 * noise(shared_data, m, rate)
            source_paths = [f"{stale}/{split}/s{i + 1}/{mixture_id}.wav" for i in range(n_src)]
            for i, source in enumerate(sources):
                _write(variant / split / f"s{i + 1}" / f"{mixture_id}.wav", source, rate)
            _write(variant / split / "noise" / f"{mixture_id}.wav", noise_wav, rate)
            for kind in types:
                parts = sources + [noise_wav] * (kind == "mix_both")
                if kind == "mix_single":
                    parts = [sources[0], noise_wav]
                mix = np.sum(parts, axis=0)
                _write(variant / split / kind / f"{mixture_id}.wav", mix, rate)
                row = {"mixture_ID": mixture_id}
                if original_ids:
                    row["original_mixture_ID"] = mixture_id
                row["mixture_path"] = f"{stale}/{split}/{kind}/{mixture_id}.wav"
                n_listed = 1 if kind == "mix_single" else n_src
                for i in range(n_listed):
                    row[f"source_{i + 1}_path"] = source_paths[i]
                if kind != "mix_clean":
                    row["noise_path"] = f"{stale}/{split}/noise/{mixture_id}.wav"
                row["length"] = len(mix)
                metrics = {"mixture_ID": mixture_id}
                for i, part in enumerate(parts[:n_listed]):
                    metrics[f"source_{i + 1}_SNR"] = _snr(part, mix - part)
                if kind != "mix_clean":
                    metrics["noise_SNR"] = _snr(noise_wav, mix - noise_wav)
                _append_csv(variant / "metadata" / f"mixture_{split}_{kind}.csv", row)
                _append_csv(variant / "metadata" / f"metrics_{split}_{kind}.csv", metrics)
    return variant


def _snr(x, y) -> float:
    return float(10 * np.log10(np.mean(x**2) / (np.mean(y**2) + 1e-10)))


def _append_csv(path: pathlib.Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def wsj0_utterance(speaker: int, k: int) -> str:
    """A WSJ0-style utterance id: 3-character speaker, then 5 characters."""
    return f"{speaker:03x}c{k:04d}"[:8]


def build_wsj0mix(dest: pathlib.Path, shared_data: pathlib.Path, *, family="wsj0-2mix", rate=8000,
                  counts=(("tr", 2), ("cv", 1), ("tt", 2))) -> pathlib.Path:  # fmt: skip
    """``dest/wav<R>k/min/{tr,cv,tt}/`` as create_wav_2speakers.m (``wsj0-2mix``,
    ``wsj0-3mix``) or the WHAM! and WHAMR! scripts (``WHAM!``, ``WHAMR!``) write it:
    ``<utt1>_<dB1>_<utt2>_<dB2>.wav`` in the mixture and source folders. Returns the
    ``wav<R>k/min`` folder."""
    n_src = 3 if family == "wsj0-3mix" else 2
    variant = dest / f"wav{rate // 1000}k" / "min"
    for split, count in counts:
        for m in range(count):
            levels = [0.97482, -0.97482, 0.5][:n_src]
            speakers = [(m + i) % 6 for i in range(n_src)]
            utterances = [
                (
                    wsj0_utterance(0x40A + s, m),
                    speech(shared_data, LIBRI_SPEAKERS[s], 1, rate)[0][1],
                )
                for s in speakers
            ]
            name = "_".join(
                f"{u}_{level:g}" for (u, _), level in zip(utterances, levels, strict=True)
            )
            sources = [
                w * 10 ** (level / 20) for (_, w), level in zip(utterances, levels, strict=True)
            ]
            for i, source in enumerate(sources):
                _write(variant / split / f"s{i + 1}" / f"{name}.wav", source, rate)
            if family == "WHAMR!":
                noise_wav = 0.1 * noise(shared_data, m, rate)
                _write(variant / split / "noise" / f"{name}.wav", noise_wav, rate)
                for space in ("anechoic", "reverb"):  # no room here: the layout is what is tested
                    for i, source in enumerate(sources):
                        _write(variant / split / f"s{i + 1}_{space}" / f"{name}.wav", source, rate)
                    mixes = {"clean": sum(sources), "both": sum(sources) + noise_wav,
                             "single": sources[0] + noise_wav}  # fmt: skip
                    for kind, mix in mixes.items():
                        _write(variant / split / f"mix_{kind}_{space}" / f"{name}.wav", mix, rate)
            elif family == "WHAM!":
                noise_wav = 0.1 * noise(shared_data, m, rate)
                _write(variant / split / "noise" / f"{name}.wav", noise_wav, rate)
                _write(variant / split / "mix_clean" / f"{name}.wav", sum(sources), rate)
                _write(variant / split / "mix_both" / f"{name}.wav", sum(sources) + noise_wav, rate)
                _write(variant / split / "mix_single" / f"{name}.wav", sources[0] + noise_wav, rate)
            else:
                _write(variant / split / "mix" / f"{name}.wav", sum(sources), rate)
    return variant


SPEECHOCEAN_SPEAKERS = ("SPEAKER0001", "SPEAKER0003", "SPEAKER0005", "SPEAKER0008")


def _speechocean(shared_data, k: int, n: int, rate=16000, seconds=SECONDS):
    speaker = sorted(p.name for p in (shared_data / "speechocean762").glob("SPEAKER*"))[k]
    paths = sorted((shared_data / "speechocean762" / speaker).glob("*.flac"))[:n]
    return speaker, [_at_rate(p, rate, seconds) for p in paths]


VOXCELEB_SPEAKERS = {"id10001": "dev", "id10002": "dev", "id10270": "test", "id10271": "test"}


def build_voxceleb1(dest: pathlib.Path, shared_data: pathlib.Path, *, meta=True) -> pathlib.Path:
    """``dest/wav/<id>/<video>/0000<n>.wav`` (two videos of two recordings per speaker, each
    speaker a speechocean762 talker), ``veri_test2.txt`` pairing the test speakers' files and,
    with ``meta``, ``vox1_meta.csv``. Returns ``dest``."""
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    for k, (speaker, split) in enumerate(VOXCELEB_SPEAKERS.items()):
        _, wavs = _speechocean(shared_data, k, 4)
        for n, wav in enumerate(wavs):
            video = f"vid{k}{n // 2}xxxxxxx"[:11]
            _write(dest / "wav" / speaker / video / f"{n % 2 + 1:05d}.wav", wav, 16000)
        rows.append(f"{speaker}\tName_{k}\t{'mf'[k % 2]}\tUSA\t{split}")
    if meta:
        (dest / "vox1_meta.csv").write_text("\n".join(rows) + "\n")
    test_files = sorted(
        p.relative_to(dest / "wav").as_posix() for s, split in VOXCELEB_SPEAKERS.items()
        if split == "test" for p in (dest / "wav" / s).rglob("*.wav")
    )  # fmt: skip
    lines = [
        f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
        for i, a in enumerate(test_files) for b in test_files[i + 1 :]
    ]  # fmt: skip
    (dest / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    return dest


CNCELEB_FILES = (("id00000", "singing-01-001"), ("id00000", "interview-02-003"),
                 ("id00001", "live_broadcast-01-002"), ("id00001", "vlog-03-001"))  # fmt: skip


def build_cnceleb1(dest: pathlib.Path, shared_data: pathlib.Path) -> pathlib.Path:
    """``dest/`` as CN-Celeb1 ships: ``data/<id>/<genre>-<session>-<n>.flac`` of two
    training speakers listed in ``dev/dev.lst``, ``eval/enroll/id00800-enroll.flac``, two
    ``eval/test/`` files and ``eval/lists/{enroll,test,trials}.lst``. Returns ``dest``."""
    for k, (speaker, name) in enumerate(CNCELEB_FILES):
        _write(
            dest / "data" / speaker / f"{name}.flac",
            _speechocean(shared_data, k // 2, 2)[1][k % 2],
            16000,
        )
    (dest / "dev").mkdir()
    (dest / "dev" / "dev.lst").write_text("id00000\nid00001\n")
    _, enrol = _speechocean(shared_data, 2, 3)
    _, other = _speechocean(shared_data, 3, 1)
    _write(dest / "eval" / "enroll" / "id00800-enroll.flac", enrol[0], 16000)
    _write(dest / "eval" / "test" / "id00800-drama-01-001.flac", enrol[1], 16000)
    _write(dest / "eval" / "test" / "id00801-speech-02-004.flac", other[0], 16000)
    lists = dest / "eval" / "lists"
    lists.mkdir()
    (lists / "enroll.lst").write_text("id00800-enroll enroll/id00800-enroll.wav\n")
    (lists / "test.lst").write_text(
        "test/id00800-drama-01-001.wav\ntest/id00801-speech-02-004.wav\n"
    )
    (lists / "trials.lst").write_text(
        "id00800-enroll test/id00800-drama-01-001.wav 1\n"
        "id00800-enroll test/id00801-speech-02-004.wav 0\n"
    )
    return dest


#: The VoiceBank-DEMAND sets built: folder name, file ids, logged noises and SNRs.
VOICEBANK = (
    ("trainset_28spk", ("p226_001", "p226_002", "p227_001"), ("cafe", "car", "office"), (15, 5, 0)),
    ("testset", ("p232_001", "p257_001"), ("bus", "living"), (2.5, 17.5)),
)


def build_voicebank(dest: pathlib.Path, shared_data: pathlib.Path) -> pathlib.Path:
    """``dest/{clean,noisy}_{trainset_28spk,testset}_wav/`` at 48 kHz (noisy = clean + a noise
    recording at the logged SNR) and ``logfiles/log_<set>.txt``. Returns ``dest``."""
    for folder, ids, noises, snrs in VOICEBANK:
        for k, (id_, snr) in enumerate(zip(ids, snrs, strict=True)):
            clean = speech(shared_data, LIBRI_SPEAKERS[k], 1, 48000)[0][1]
            n = noise(shared_data, k, 48000)
            n *= np.sqrt(np.mean(clean**2) / np.mean(n**2) / 10 ** (snr / 10))
            _write(dest / f"clean_{folder}_wav" / f"{id_}.wav", clean, 48000)
            _write(dest / f"noisy_{folder}_wav" / f"{id_}.wav", clean + n, 48000)
        log = "".join(f"{i} {n} {s:g}\n" for i, n, s in zip(ids, noises, snrs, strict=True))
        (dest / "logfiles").mkdir(exist_ok=True)
        (dest / "logfiles" / f"log_{folder}.txt").write_text(log)
    return dest


def build_dns(dest: pathlib.Path, shared_data: pathlib.Path) -> pathlib.Path:
    """``dest/`` as the DNS Challenge (Interspeech 2020) ships its ``datasets/``: ``clean/``
    (LibriVox-named book files), ``noise/`` and ``test_set/synthetic/no_reverb/{clean,
    noisy}/`` pairs (noise at the SNR of the name). Returns ``dest``."""
    for k in range(2):
        wav = speech(shared_data, LIBRI_SPEAKERS[k], 1, 16000)[0][1]
        _write(dest / "clean" / f"book_0000{k}_chp_0009_reader_0670{k}_0.wav", wav, 16000)
        _write(dest / "noise" / f"Door_{k}xyz.wav", noise(shared_data, k, 16000), 16000)
    synthetic = dest / "test_set" / "synthetic" / "no_reverb"
    for fileid, snr in ((158, 15), (271, -5)):
        clean = speech(shared_data, LIBRI_SPEAKERS[0], 2, 16000)[fileid % 2][1]  # speech, no pause
        _write(synthetic / "clean" / f"clean_fileid_{fileid}.wav", clean, 16000)
        n = noise(shared_data, fileid % 3, 16000)
        noisy = clean + n * np.sqrt(np.mean(clean**2) / np.mean(n**2) / 10 ** (snr / 10))
        _write(
            synthetic / "noisy" / f"clnsp1_train_69005_1_snr{snr}_tl-21_fileid_{fileid}.wav",
            noisy,
            16000,
        )
    return dest


def build_grid(dest: pathlib.Path, shared_data: pathlib.Path, n: int = 2) -> pathlib.Path:
    """``dest/s1/<sentence>.mpg`` (GRID's own clips of talker 1) with ``dest/align/s1/``
    holding their alignments, as the talker's video zip and align tar unpack. Returns ``dest``."""
    clips = sorted((shared_data / "grid" / "s1").glob("*.mpg"))[:n]
    (dest / "s1").mkdir(parents=True)
    (dest / "align" / "s1").mkdir(parents=True)
    for clip in clips:
        shutil.copy(clip, dest / "s1" / clip.name)
        shutil.copy(clip.with_suffix(".align"), dest / "align" / "s1" / f"{clip.stem}.align")
    return dest


def _aac_stream(out, rate: int):
    """A mono AAC stream added to the open PyAV container ``out`` (before anything is muxed)."""
    stream = out.add_stream("aac", rate=rate)
    stream.layout = "mono"
    return stream


def _mux_audio(out, stream, wav: np.ndarray) -> None:
    import av

    frame = av.AudioFrame.from_ndarray(wav[None].astype(np.float32), format="fltp", layout="mono")
    frame.sample_rate = stream.rate
    for packet in [*stream.encode(frame), *stream.encode(None)]:
        out.mux(packet)


def write_m4a(path: pathlib.Path, wav: np.ndarray, rate: int) -> None:
    """An M4A (AAC in MPEG-4) file as VoxCeleb2 ships, encoded with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="ipod") as out:
        _mux_audio(out, _aac_stream(out, rate), wav)


def write_mp4(path: pathlib.Path, wav: np.ndarray, rate: int, frames: Sequence[np.ndarray]) -> None:
    """An MP4 talking-face clip: ``frames`` ``[H, W, 3]`` uint8 at 25 fps (MPEG-4 part 2) and
    ``wav`` as AAC, encoded with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = _aac_stream(out, rate)
        for picture in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        _mux_audio(out, audio, wav)


def build_voxceleb2(dest: pathlib.Path, shared_data: pathlib.Path) -> pathlib.Path:
    """``dest/{dev,test}/aac/<id>/<video>/0000<n>.m4a`` (two recordings of one video per
    speaker, speechocean762 talkers) and ``vox2_meta.csv`` as VoxCeleb2 writes it (comma
    separated, padded with spaces). Returns ``dest``."""
    rows = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "]
    for k, (speaker, split) in enumerate(
        (("id00012", "dev"), ("id00015", "dev"), ("id00017", "test"))
    ):
        _, wavs = _speechocean(shared_data, k, 2)
        for n, wav in enumerate(wavs):
            write_m4a(
                dest / split / "aac" / speaker / "21Uxsk56VDQ" / f"{n + 1:05d}.m4a", wav, 16000
            )
        rows.append(f"{speaker} ,n00000{k} ,{'fm'[k % 2]} ,{split} ")
    (dest / "vox2_meta.csv").write_text("\n".join(rows) + "\n")
    return dest


#: The LRS3 clips built: split, talk id, clip, transcript.
LRS3_CLIPS = (
    ("pretrain", "0af00UcTOSc", "00001", "SO WHAT IS IT"),
    ("trainval", "0akiEFwtkyA", "00002", "THANK YOU"),
    ("test", "0Fi83BHQsMA", "00002", "WE KNOW THAT"),
)


def build_lrs3(dest: pathlib.Path, shared_data: pathlib.Path) -> pathlib.Path:
    """``dest/{pretrain,trainval,test}/<talk>/<clip>.mp4`` (a flat grey picture, a
    LibriSpeech utterance as its 16 kHz AAC track) with ``<clip>.txt`` transcripts in LRS3's
    format. Returns ``dest``."""
    for k, (split, talk, clip, words) in enumerate(LRS3_CLIPS):
        wav = speech(shared_data, LIBRI_SPEAKERS[k], 1, 16000)[0][1]
        pictures = [np.full((32, 32, 3), 16 * i, np.uint8) for i in range(12)]
        write_mp4(dest / split / talk / f"{clip}.mp4", wav, 16000, pictures)
        conf = "Conf:  4\n\n" if split != "pretrain" else "Conf:  3\n\nWORD START END ASDSCORE\n"
        (dest / split / talk / f"{clip}.txt").write_text(f"Text:  {words}\n{conf}")
    return dest

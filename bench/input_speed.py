"""Input pipeline throughput: training examples per second of the LibriMix and VoxCeleb
sources (decode, resample, crop, mix, batch, grain threads), against what a training step
consumes.

Usage:
    python bench/input_speed.py [--mixtures 200] [--batches 24] [--threads 1 2 4]

Builds, in a temporary folder, a Libri2Mix ``wav8k/min`` tree (``--mixtures`` training
mixtures of 6 s at 8 kHz: pairs of LibriSpeech test-other utterances of the shared data
folder, ``mix_clean`` and ``mix_both`` with a real noise recording) and a VoxCeleb1 tree
(``wav/<speaker>/<video>/<n>.wav`` at 16 kHz, the same utterances), then times
``--batches`` batches of each source's training stream after one warm-up batch, for every
``--threads`` (grain's ``num_threads``), with a fresh decoded-audio cache each time (every file
is decoded once per run, as in a first epoch):

* LibriMix, ``PremixedData``: 4 s crops of mixture and sources (batch 8), and with dynamic
  mixing (sources of different mixtures remixed at drawn levels);
* VoxCeleb, ``UtteranceData`` (the speaker recipe's source, which reads the VoxCeleb folder
  as one folder per speaker): 2 s crops with speed perturbation, noise at 0–15 dB and
  reverberation in half of them (batch 64).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import tempfile
import time

import grain
import numpy as np
import soundfile as sf

from jaxspeech.audio import load
from jaxspeech.data.corpus import resolve_data_root
from jaxspeech.data.premixed import PremixedData, PremixedDataConfig
from jaxspeech.data.utterances import UtteranceData, UtteranceDataConfig


def _utterances(shared: pathlib.Path, rate: int) -> list[tuple[str, np.ndarray]]:
    """Every LibriSpeech test-other utterance of the shared folder at ``rate``."""
    paths = sorted((shared / "librispeech" / "test-other").rglob("*.flac"))
    return [(p.stem, load(p, sample_rate=rate)[0]) for p in paths]


def build_librimix(dest: pathlib.Path, shared: pathlib.Path, mixtures: int) -> pathlib.Path:
    rate, length = 8000, 6 * 8000
    utterances = [(u, w) for u, w in _utterances(shared, rate) if len(w) >= length]
    noise = load(sorted((shared / "noise").glob("*.wav"))[0], sample_rate=rate)[0]
    noise = np.resize(noise, length) * 0.05
    variant = dest / "Libri2Mix" / "wav8k" / "min"
    rng = np.random.default_rng(0)
    for split, count in (("train-100", mixtures), ("dev", 8), ("test", 8)):
        rows = {"mix_clean": [], "mix_both": []}
        for m in range(count):
            a, b = rng.choice(len(utterances), 2, replace=False)
            (ua, wa), (ub, wb) = utterances[a], utterances[b]
            mixture_id = f"{ua}_{ub}_{m}"
            sources = [wa[:length], wb[:length] * 0.7]
            for k, wav in enumerate([*sources, noise]):
                folder = variant / split / ("noise" if k == 2 else f"s{k + 1}")
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{mixture_id}.wav", wav, rate)
            for kind, mix in (("mix_clean", sum(sources)), ("mix_both", sum(sources) + noise)):
                (variant / split / kind).mkdir(parents=True, exist_ok=True)
                sf.write(variant / split / kind / f"{mixture_id}.wav", mix, rate)
                row = {"mixture_ID": mixture_id, "mixture_path": f"/x/{kind}/{mixture_id}.wav"}
                row |= {f"source_{k + 1}_path": f"/x/s{k + 1}/{mixture_id}.wav" for k in range(2)}
                row |= {"noise_path": f"/x/noise/{mixture_id}.wav"} if kind == "mix_both" else {}
                rows[kind].append({**row, "length": length})
        (variant / "metadata").mkdir(parents=True, exist_ok=True)
        for kind, table in rows.items():
            with open(variant / "metadata" / f"mixture_{split}_{kind}.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)
    return dest


def build_voxceleb(dest: pathlib.Path, shared: pathlib.Path) -> pathlib.Path:
    for k, (utterance, wav) in enumerate(_utterances(shared, 16000)):
        speaker = f"id1{utterance.split('-')[0]:0>4}"
        folder = dest / "wav" / speaker / f"video{k % 3:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{k:05d}.wav", wav, 16000)
    return dest


def items_per_second(make_stream, batches: int, threads: int) -> float:
    stream = make_stream(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2))
    iterator = iter(stream)
    first = next(iterator)
    size = len(next(iter(first.values())))
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", type=int, default=200)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    shared = resolve_data_root()
    with tempfile.TemporaryDirectory() as tmp:
        root = build_librimix(pathlib.Path(tmp), shared, args.mixtures)
        build_voxceleb(pathlib.Path(tmp) / "voxceleb1", shared)
        cases = {}
        for dynamic in (False, True):
            cfg = PremixedDataConfig(
                root=str(root), corpus="Libri2Mix", mixture="mix_both", dynamic_mixing=dynamic
            )

            def premixed(read, cfg=cfg):
                return PremixedData(cfg, batch_size=8, n_src=2).train_dataset(read_options=read)

            name = f"LibriMix 4 s crops{' + dynamic mixing' if dynamic else ''}, batch 8"
            cases[name] = premixed
        vox = UtteranceDataConfig(
            root=str(root / "voxceleb1"),
            speech=("wav",),
            noise=str(shared / "noise"),
            rir=str(shared / "rir"),
            speed_range=(0.9, 1.1),
            noise_snr_db_range=(0.0, 15.0),
            reverb_prob=0.5,
            split_fractions=(1.0, 0.0, 0.0),
        )

        def voxceleb(read):
            return UtteranceData(vox, batch_size=64).train_dataset(read_options=read)

        cases["VoxCeleb 2 s augmented crops, batch 64"] = voxceleb
        print("| source | grain threads | examples/s |\n|---|---|---|")
        for name, make in cases.items():
            for threads in args.threads:
                rate = items_per_second(make, args.batches, threads)
                print(f"| {name} | {threads} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""Speaker verification: trial lists (VoxCeleb format), embedding many recordings, cosine
scores, the error rates of a table row and the per-trial rows of an evaluation."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from jaxspeech import files
from jaxspeech.data.corpora.records import parse_trial_line
from jaxspeech.errors import TrialError
from jaxspeech.metrics.verification import eer, min_dcf

#: Priors of the minimum detection costs tabulated: 0.01 (NIST SRE 2008-2010, WeSpeaker's
#: VoxCeleb results) and 0.05 (the VoxCeleb Speaker Recognition Challenge).
P_TARGETS = (0.01, 0.05)


def pair_trials(speakers: Sequence[str]) -> list[tuple[int, int, int]]:
    """Every pair ``(label, i, j)``, ``i < j``, of items with ``speakers``; label 1 when the
    speakers are equal."""
    return [
        (int(speakers[i] == speakers[j]), i, j)
        for i in range(len(speakers))
        for j in range(i + 1, len(speakers))
    ]


def write_trials(path: pathlib.Path, trials: Sequence[tuple[int, str, str]]) -> None:
    """``label a b`` lines (VoxCeleb format), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(path, "".join(f"{label} {a} {b}\n" for label, a, b in trials))


def read_trials(path: str | pathlib.Path) -> list[tuple[int, str, str]]:
    """``[(label, a, b)]`` of a VoxCeleb-format trial list; TrialError naming the bad line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise TrialError(f"{path}: no such trial list; give a file of 'label a.wav b.wav' lines")
    trials = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            parsed = parse_trial_line(line)
        except ValueError as err:
            raise TrialError(f"{path} line {number}: {err}") from None
        if parsed is not None:
            trials.append(parsed)
    if not trials:
        raise TrialError(f"{path}: no trials; give 'label a.wav b.wav' lines")
    return trials


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x [..., D]`` scaled to unit length (float64; all-zero rows stay zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_scores(enrol: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Row-wise cosine ``[N]`` of ``enrol [N, D]`` and ``test [N, D]``."""
    return np.sum(unit(enrol) * unit(test), axis=-1)


def error_rates(scores, labels, p_targets: Sequence[float] = P_TARGETS) -> dict[str, float]:
    """``{"EER (%)": ..., "minDCF (p=0.01)": ..., ...}`` of trial ``scores [N]`` and binary
    ``labels [N]``: the equal error rate in percent and the minimum normalised detection cost
    at each prior of ``p_targets`` (unit costs)."""
    rates = {"EER (%)": 100.0 * eer(scores, labels)[0]}
    for p in p_targets:
        rates[f"minDCF (p={p:g})"] = min_dcf(scores, labels, p)[0]
    return rates


def missing_files(trials: Sequence[tuple[int, str, str]]) -> list[str]:
    """The files named by ``trials`` that do not exist, sorted."""
    paths = {p for _, a, b in trials for p in (a, b)}
    return sorted(p for p in paths if not pathlib.Path(p).is_file())


def trial_items(
    system: str,
    trials: Sequence[tuple[int, str, str]],
    scores: np.ndarray,
    missing: Sequence[str] = (),
) -> list[dict]:
    """One row per trial of ``system``, in the list's order: ``item`` (its line number among
    the trials), ``label``, the two recordings (``enrol``, ``test``: paths as listed),
    ``score`` (float; NaN for a trial that names a file of ``missing``) and ``missing`` (its
    missing files, space-separated; empty when it was scored)."""
    absent = set(missing)
    return [
        {
            "system": system,
            "item": number,
            "label": label,
            "enrol": a,
            "test": b,
            "score": float(score),
            "missing": " ".join(p for p in dict.fromkeys((a, b)) if p in absent),
        }
        for number, ((label, a, b), score) in enumerate(zip(trials, scores, strict=True), 1)
    ]


def embed_waveforms(
    embed: Callable[[np.ndarray, np.ndarray], jax.Array],
    waveforms: Sequence[np.ndarray],
    batch_size: int,
    bucket: int,
    desc: str | None = None,
    max_batch_samples: int | None = None,
) -> np.ndarray:
    """Embeddings ``[N, D]`` float32 of recordings of any lengths, in their order.

    Recordings are sorted by length and embedded ``batch_size`` at a time by ``embed(wav [B,
    S], lengths [B])``, zero-padded to a multiple of ``bucket`` samples (a short last batch is
    filled with copies of its first recording), so few shapes are compiled. With
    ``max_batch_samples``, batches of long recordings hold fewer rows (at least one) so that
    ``rows · padded length`` stays within it. ``desc``: show a progress bar with this label.
    """
    order = [int(i) for i in np.argsort([len(w) for w in waveforms], kind="stable")]
    out: list[np.ndarray | None] = [None] * len(waveforms)
    bar = tqdm(total=len(order), desc=desc, unit="utt", disable=desc is None, leave=False)
    while order:
        width = -(-len(waveforms[order[min(batch_size, len(order)) - 1]]) // bucket) * bucket
        rows = batch_size
        if max_batch_samples is not None and rows * width > max_batch_samples:
            rows = max(1, max_batch_samples // width)
            width = -(-len(waveforms[order[min(rows, len(order)) - 1]]) // bucket) * bucket
        members, order = order[:rows], order[rows:]
        chosen = [*members, *[members[0]] * (rows - len(members))]
        lengths = np.asarray([len(waveforms[i]) for i in chosen], np.int32)
        batch = np.zeros((rows, width), np.float32)
        for row, index in enumerate(chosen):
            batch[row, : lengths[row]] = waveforms[index]
        vectors = np.asarray(embed(batch, lengths), np.float32)
        for row, index in enumerate(members):
            out[index] = vectors[row]
        bar.update(len(members))
    bar.close()
    return np.stack(out)

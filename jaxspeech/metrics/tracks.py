"""Whether separated speakers stay on their tracks through a long recording (host, numpy).

A separator run in chunks may keep each speaker on one track within a chunk and still swap
them from one chunk to the next, which a whole-file score blurs into a low number. These
measures look at the output in short windows:

* two or more speakers (:func:`track_swaps`): in every window where each reference is active
  (:func:`active_windows`), the permutation of the tracks with the best mean SI-SNR against
  the references, decided only where it beats every other permutation by ``clear_db``; a
  decided window whose permutation is not the whole file's is off its track;
* one speaker (:func:`one_speaker_tracks`): each track's energy relative to the input, and,
  in every window where the speaker is active, whether the file's louder track holds the
  speaker with every other track at least ``split_db`` below it.

Windows are the whole ``window``-sample stretches from the start (a shorter rest is left out).
"""

from __future__ import annotations

import itertools

import numpy as np

from jaxspeech.errors import ShapeError
from jaxspeech.losses import pairwise_neg_si_snr, pit

#: A window is active for a signal whose energy there is at most this far below the energy of
#: the signal's loudest window (dB): speech, not the pauses between words.
ACTIVE_DB = 20.0
#: A window's best permutation counts when its mean SI-SNR beats every other's by this (dB).
CLEAR_DB = 3.0
#: A lone speaker is kept whole when every other track is at least this far below the
#: speaker's track (dB): a faint residue rather than the voice heard on two tracks.
SPLIT_DB = 15.0
#: Energy ratios are floored here (dB), so that an exactly silent track has a finite level.
FLOOR_DB = -150.0


def window_energies(x: np.ndarray, window: int) -> np.ndarray:
    """Energy of every whole window: ``[..., T]`` → ``[..., T // window]`` (float64)."""
    count = x.shape[-1] // window
    frames = np.asarray(x[..., : count * window], np.float64)
    return np.sum(np.square(frames.reshape(*x.shape[:-1], count, window)), axis=-1)


def active_windows(signals: np.ndarray, window: int, active_db: float = ACTIVE_DB) -> np.ndarray:
    """``[W]`` bool: the windows in which every signal of ``signals [..., T]`` is active (at
    most ``active_db`` below its own loudest window)."""
    energy = window_energies(signals, window)
    loudest = np.max(energy, axis=-1, keepdims=True)
    active = (energy > 0) & (energy >= loudest * 10.0 ** (-active_db / 10.0))
    return np.all(active.reshape(-1, energy.shape[-1]), axis=0)


def _level_db(energy: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``10·log10(energy / reference)``, floored at :data:`FLOOR_DB`."""
    floor = 10.0 ** (FLOOR_DB / 10.0)
    return 10.0 * np.log10(np.maximum(energy / np.maximum(reference, 1e-300), floor))


def _check_pair(est: np.ndarray, ref: np.ndarray) -> None:
    if est.ndim != 2 or est.shape != ref.shape:
        raise ShapeError(
            f"est {est.shape} and ref {ref.shape}: expected the same shape [sources, samples]"
        )


def file_permutation(est: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``[S]`` the track assigned to each reference over the whole file (PIT by SI-SNR), so
    that ``est[permutation]`` is aligned with ``ref``."""
    _check_pair(est, ref)
    _, permutation = pit(pairwise_neg_si_snr, est, ref)
    return np.asarray(permutation)


def window_permutations(
    est: np.ndarray, ref: np.ndarray, window: int, clear_db: float = CLEAR_DB
) -> tuple[np.ndarray, np.ndarray]:
    """Best track per reference in every window, and whether that choice is clear.

    Args:
      est, ref: ``[S, T]`` tracks and references; window: samples per window.

    Returns:
      ``(permutations [W, S], clear [W])``: ``permutations[w, j]`` the track of reference
      ``j`` in window ``w`` by the best mean SI-SNR; ``clear[w]`` whether that mean beats every
      other permutation's by at least ``clear_db``.
    """
    _check_pair(est, ref)
    count, n_src = est.shape[-1] // window, est.shape[0]
    if count == 0:
        return np.zeros((0, n_src), np.int64), np.zeros(0, bool)

    def windows(x):  # [S, T] -> [W, S, window]
        return x[:, : count * window].reshape(n_src, count, window).swapaxes(0, 1)

    si_snr = -np.asarray(pairwise_neg_si_snr(windows(est), windows(ref)), np.float64)
    orders = np.array(list(itertools.permutations(range(n_src))))  # [P, S]
    means = si_snr[:, orders, np.arange(n_src)].mean(axis=-1)  # [W, P]
    ranked = np.sort(means, axis=-1)
    margin = ranked[:, -1] - ranked[:, -2] if len(orders) > 1 else np.full(count, np.inf)
    return orders[np.argmax(means, axis=-1)], margin >= clear_db


def track_swaps(
    est: np.ndarray,
    ref: np.ndarray,
    window: int,
    clear_db: float = CLEAR_DB,
    active_db: float = ACTIVE_DB,
) -> dict[str, int]:
    """How well ``est [S, T]`` keeps the speakers of ``ref [S, T]`` on their tracks.

    Returns:
      ``active``: windows in which every reference is active; ``decided``: those with a clear
      best permutation (:func:`window_permutations`); ``off_track``: decided windows whose
      permutation is not the whole file's (:func:`file_permutation`); ``switches``: changes of
      permutation between consecutive decided windows.
    """
    permutations, clear = window_permutations(est, ref, window, clear_db)
    active = active_windows(ref, window, active_db)
    decided = permutations[clear & active]
    off_track = np.any(decided != file_permutation(est, ref), axis=-1)
    switches = np.any(decided[1:] != decided[:-1], axis=-1)
    return {
        "active": int(active.sum()),
        "decided": len(decided),
        "off_track": int(off_track.sum()),
        "switches": int(switches.sum()),
    }


def one_speaker_tracks(
    est: np.ndarray,
    speech: np.ndarray,
    window: int,
    split_db: float = SPLIT_DB,
    active_db: float = ACTIVE_DB,
) -> dict[str, float | int | bool]:
    """Where a separator puts one speaker: ``est [S, T]`` separated from ``speech [T]`` alone.

    Returns:
      ``louder_db`` and ``quieter_db``: the energy of the loudest track and of the next one
      relative to ``speech`` (dB, floored at :data:`FLOOR_DB`); ``gap_db``: their difference;
      ``split``: whether the gap is below ``split_db`` (the voice heard on two tracks);
      ``active``: windows in which the speaker is active; ``split_windows``: the share of them
      in which the louder track of the file is not ahead of every other track by ``split_db``.
    """
    if est.ndim != 2 or est.shape[0] < 2 or est.shape[-1] != speech.shape[-1] or speech.ndim != 1:
        raise ShapeError(
            f"est {est.shape} and speech {speech.shape}: expected tracks [S >= 2, T] of a "
            "speech [T]"
        )
    energies = np.sum(np.square(est, dtype=np.float64), axis=-1)
    levels = _level_db(energies, np.sum(np.square(speech, dtype=np.float64)))
    louder = int(np.argmax(levels))
    quieter = float(np.max(np.delete(levels, louder)))
    active = active_windows(speech, window, active_db)
    energy = window_energies(est, window)[:, active]  # [S, active windows]
    others = np.max(np.delete(energy, louder, axis=0), axis=0)
    held = (energy[louder] > 0) & (_level_db(others, energy[louder]) <= -split_db)
    gap = float(levels[louder]) - quieter
    return {
        "louder_db": float(levels[louder]),
        "quieter_db": quieter,
        "gap_db": gap,
        "split": gap < split_db,
        "active": int(active.sum()),
        "split_windows": float(1.0 - held.mean()) if held.size else 0.0,
    }

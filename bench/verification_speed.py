"""Wall time of EER and minDCF on a large trial list (the sorted-score sweep of
`jaxspeech.metrics.verification`).

Usage: python bench/verification_speed.py [--trials 1000000] [--repeats 5]

Prints the median and fastest wall time of `eer` and `min_dcf` on `--trials` synthetic trials
(1 % targets, unit Gaussians two apart, whose EER is Φ(−1) = 0.1587) and the EER found.
"""

import argparse
import statistics
import time

import numpy as np

from jaxspeech.metrics import eer, min_dcf


def trials(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(count) < 0.01
    return rng.standard_normal(count) + 2.0 * labels, labels


def wall_times(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    scores, labels = trials(args.trials)
    for name, fn in (("eer", eer), ("min_dcf", min_dcf)):
        times = wall_times(lambda fn=fn: fn(scores, labels), args.repeats)
        print(
            f"{name} on {args.trials:,} trials: median {statistics.median(times):.3f} s, "
            f"fastest {min(times):.3f} s over {args.repeats}"
        )
    print(f"EER {eer(scores, labels)[0]:.4f} (expected about 0.1587)")


if __name__ == "__main__":
    main()

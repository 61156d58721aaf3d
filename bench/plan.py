"""The wall-clock budget of a benchmark run: shares per benchmark, repeats that fit, skips.

Each benchmark gets a share of the time that is left when it starts (its weight against the
weights of the benchmarks still to run), so time one benchmark does not use passes to the next.
A benchmark first warms up (compiles and runs each call once), which measures what one timed
repeat costs; `Budget.repeats` then fits the timed repeats into its share.
"""

import math
import os
import time
from collections.abc import Callable


def seconds_since_process_start() -> float:
    """How long this process has run, its start-up included (Linux; the process start survives
    `exec`, so an allocator restart counts too); 0 where /proc cannot tell."""
    try:
        with open("/proc/self/stat") as stat:  # field 22, counted after the ")" of field 2
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            since_boot = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, since_boot - start_ticks / os.sysconf("SC_CLK_TCK"))


class Budget:
    """Seconds left of a run's budget, on `clock` (seconds, monotonic)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.deadline = clock() + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def share(self, weight: float, weights_to_come: float) -> float:
        """Seconds for a benchmark of `weight`; it and those after it weigh `weights_to_come`."""
        return self.left() * weight / weights_to_come

    def fits(self, seconds: float) -> bool:
        """Whether `seconds` of work still fits in what is left."""
        return seconds <= self.left()

    def repeats(self, seconds_per_repeat: float, allotted: float, most: int, least: int) -> int:
        """Timed repeats: as many as fit in `allotted` seconds, at most `most`; at least `least`
        while the whole budget has room for them; 0 when it has not (skip the timing)."""
        fit = math.floor(allotted / seconds_per_repeat) if seconds_per_repeat > 0 else most
        count = min(most, max(least, fit))
        return count if self.fits(count * seconds_per_repeat) else 0


class Allotment:
    """One benchmark's share of a `Budget`: `seconds` from now."""

    def __init__(self, budget: Budget, seconds: float):
        self.budget = budget
        self.end = budget.clock() + seconds

    def repeats_for(self, most: int, least: int, part: float = 1.0) -> Callable[[float], int]:
        """`seconds per repeat -> repeats` for a part of the benchmark that may use `part` of
        the allotment's time left when it asks (the last part: 1)."""

        def repeats(seconds_per_repeat: float) -> int:
            allotted = part * max(0.0, self.end - self.budget.clock())
            return self.budget.repeats(seconds_per_repeat, allotted, most, least)

        return repeats

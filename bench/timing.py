"""One timer for the benchmarks: a call's result and its wall time (perf_counter) or its CPU time
(process_time), and `Timing`, one printed row of a benchmark's figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(what `fn()` returned, the seconds it took)."""
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def cpu_best(fn: Callable[[], T], repeat: int = 3) -> tuple[T, float]:
    """(what the last `fn()` returned, the least CPU seconds of the process, every thread, over `repeat` calls)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        value = fn()
        best = min(best, time.process_time() - started)
    return value, best


@dataclass
class Timing:
    """One row of a benchmark's report: what was timed, its seconds, and what it did."""

    label: str
    seconds: float
    detail: str
    width: int = 44  # of the label column

    def __str__(self) -> str:
        return f"  {self.label:<{self.width}} {self.seconds:8.2f} s   {self.detail}"

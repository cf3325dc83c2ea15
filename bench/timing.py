"""One timer for the benchmarks: a call's result and its wall time, measured with perf_counter."""

from __future__ import annotations

import time
from collections.abc import Callable
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

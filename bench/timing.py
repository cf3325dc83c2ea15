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

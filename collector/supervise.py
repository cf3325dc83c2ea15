"""Supervision of the collector's long-lived asyncio tasks: nothing dies or stops silently.

A supervised task that raises is logged with its traceback, reported through `on_crash` (the app
writes an `error` event for the instruments it serves) and restarted after a capped exponential
backoff with full jitter; the backoff starts over once a run has lasted `healthy_after_s`. A task
that returns is restarted the same way: every supervised task is meant to run until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from l2_lake.logs import log_event

log = logging.getLogger("collector.supervise")


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Capped exponential backoff with full jitter (attempt 0 is the first retry)."""
    return random.uniform(0, min(cap, initial * 2 ** min(attempt, 30)))


async def supervise(name: str, run: Callable[[], Awaitable[None]], on_crash: Callable[[str, str], None], *,
                    backoff_initial: float = 1.0, backoff_max: float = 60.0, healthy_after_s: float = 60.0) -> None:
    """Run `run()` until cancelled, restarting it whenever it raises or returns."""
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            await run()
            problem = "returned although it should run until stopped"
            log_event(log, logging.ERROR, "task_crashed", None, f"task {name} {problem}", task=name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            log.error("task %s crashed (%s); restarting it", name, problem, exc_info=True,
                      extra={"event": "task_crashed", "task": name})
        if time.monotonic() - started >= healthy_after_s:
            attempt = 0
        delay = backoff_delay(attempt, backoff_initial, backoff_max)
        attempt += 1
        on_crash(name, problem)
        log_event(log, logging.WARNING, "task_restart", None, f"restarting task {name} in {delay:.1f} s",
                  task=name, attempt=attempt)
        await asyncio.sleep(delay)

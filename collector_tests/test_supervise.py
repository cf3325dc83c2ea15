"""Supervision: a crashing or returning task is reported and restarted with backoff, never lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from collector.supervise import backoff_delay, supervise
from l2_lake import logs


def test_crashing_task_is_logged_reported_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    crashes: list[tuple[str, str]] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        if len(runs) == 3:
            return  # a long-lived task that returns is restarted too
        await asyncio.sleep(3600)

    async def scenario() -> None:
        task = asyncio.create_task(supervise("flaky", flaky, lambda name, err: crashes.append((name, err)),
                                             backoff_initial=0.01, backoff_max=0.02))
        while len(runs) < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    logs.configure("INFO")
    root = logging.getLogger("collector")
    root.propagate = True  # let caplog see the records
    try:
        with caplog.at_level(logging.INFO, logger="collector"):
            asyncio.run(scenario())
    finally:
        root.propagate = False
    assert crashes == [("flaky", "RuntimeError: boom 1"), ("flaky", "RuntimeError: boom 2"),
                       ("flaky", "returned although it should run until stopped")]
    crashed = [r for r in caplog.records if getattr(r, "event", None) == "task_crashed"]
    assert len(crashed) == 3 and crashed[0].exc_info is not None  # the traceback is in the log
    assert len([r for r in caplog.records if getattr(r, "event", None) == "task_restart"]) == 3


def test_backoff_is_capped_with_full_jitter() -> None:
    delays = [backoff_delay(attempt, 1.0, 60.0) for attempt in range(40) for _ in range(20)]
    assert all(0.0 <= d <= 60.0 for d in delays) and max(delays[:20]) <= 1.0

"""Event-loop stall monitor: how late the loop wakes a sleeper, the proof that no work blocks it.

Every `interval_s` a task sleeps and measures how much later than asked it woke up. The largest
lateness since the last status line is printed there (`loop_lag_max`); one of `STALL_EVENT_S` or
more is logged at once as a `loop_stall` event, so a stall is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from l2_lake.logs import log_event

log = logging.getLogger("collector.loop")
STALL_EVENT_S = 1.0


class LoopMonitor:
    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._max_lag_s = 0.0

    def take_max_lag_s(self) -> float:
        """The largest lateness since the previous call."""
        lag, self._max_lag_s = self._max_lag_s, 0.0
        return lag

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = time.monotonic() - started - self.interval_s
            self._max_lag_s = max(self._max_lag_s, lag)
            if lag >= STALL_EVENT_S:
                log_event(log, logging.WARNING, "loop_stall", None,
                          f"the event loop was blocked for {lag:.2f} s", lag_ms=round(lag * 1000))

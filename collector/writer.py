"""The live process's sink: the event loop queues lines, one daemon thread writes the lake.

No disk work runs on the event loop: repairing torn tails, the dedup scan that may decompress an
archived hour, fsync at an hour rollover, and a slow or full disk all happen in the writer thread,
in the order the engine produced the lines. A job that raises is logged and the thread goes on;
`watch()` (a supervised task) restarts the thread should it ever die, and reports a job that has
been running longer than `STALL_S` as a `writer_stall` (a hung disk must not be silent). The thread
is a daemon, so a disk that hangs forever cannot keep the process from exiting on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from l2_lake.logs import log_event
from l2_lake.store.hour_files import LakeWriter
from l2_lake.threads import settle_from_thread

log = logging.getLogger("collector.writer")
T = TypeVar("T")
STALL_S = 10.0
WATCH_INTERVAL_S = 1.0


class BackgroundWriter:
    """Implements the engine's `Sink` by queueing `LakeWriter` calls for the writer thread."""

    def __init__(self, store: LakeWriter, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self._clock_ms = clock_ms
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._job_started: float | None = None  # monotonic start of the job in progress
        self._batch: list[tuple[str, int, dict[str, Any]]] | None = None  # records of a `batch()` block

    # -- Sink ----------------------------------------------------------------------------------

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        if self._batch is not None:
            self._batch.append((inst_id, ts_ms, record))
        else:
            self._jobs.put(partial(self.store.record, inst_id, ts_ms, record))

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        self._jobs.put(partial(self.store.event, inst_id, event_type, at_ms=self._clock_ms(), **details))

    def tape(self, inst_id: str, hour: datetime, lines: bytes) -> None:
        self._jobs.put(partial(self.store.tape, inst_id, hour, lines))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Records queued within go to the writer thread as one job, in order, at the end of the block:
        one wake-up of the thread (and one handover of the GIL) for a cadence pass, not one per record."""
        self._batch = []
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            if batch:
                self._jobs.put(partial(self._write_records, batch))

    # -- control -------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="lake-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run `fn` in the writer thread after every line queued before it (errors are logged)."""
        self._jobs.put(fn)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the writer thread, after every line queued before it; returns its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(partial(settle_from_thread, loop, future, fn))
        return await future

    async def watch(self) -> None:
        """Keep the writer thread alive and report stalls (run supervised)."""
        if self._thread is None or not self._thread.is_alive():
            self.start()
        stalled = False
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if not self._thread.is_alive():
                log_event(log, logging.ERROR, "writer_restart", None, "the lake writer thread died; restarting it")
                self.start()
            started = self._job_started
            busy = 0.0 if started is None else time.monotonic() - started
            if busy >= STALL_S and not stalled:
                log_event(log, logging.ERROR, "writer_stall", None,
                          f"a lake write has been blocked for {busy:.0f} s ({self.backlog} lines queued); "
                          f"is the disk under {self.store.data_dir} hung?", backlog=self.backlog)
            elif stalled and busy < STALL_S:
                log_event(log, logging.WARNING, "writer_recovered", None, "lake writes are moving again",
                          backlog=self.backlog)
            stalled = busy >= STALL_S

    async def close(self, timeout_s: float) -> bool:
        """Write what is queued, fsync and close every file; False if that took longer than `timeout_s`."""
        self._jobs.put(self.store.close)
        self._jobs.put(None)
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._thread.is_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- the thread ----------------------------------------------------------------------------

    def _write_records(self, batch: list[tuple[str, int, dict[str, Any]]]) -> None:
        for inst_id, ts_ms, record in batch:
            try:
                self.store.record(inst_id, ts_ms, record)
            except Exception:  # as in `_work`: one failed record must not lose the others
                log.exception("a lake write failed unexpectedly; the writer goes on", extra={"event": "writer_error"})

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._job_started = time.monotonic()
            try:
                job()
            except Exception:
                log.exception("a lake write failed unexpectedly; the writer goes on", extra={"event": "writer_error"})
            finally:
                self._job_started = None

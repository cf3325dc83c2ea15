"""`l2-collector run`: wires config, metadata, engine, feed connections, cadence and store together.

Start-up order matters: validate config, lock the data directory (one collector per lake), prove
it is writable, check every instrument against OKX REST (unknown ones are a startup error, exit 2),
then connect. From then on every long-lived task (feeds, cadence, status, metadata refresh, the
writer, the loop monitor and, with `--lake-url`, the shipper to object storage) runs supervised: a
crash is logged with its traceback, written as an `error` event and the task restarted with
backoff. The process ends only on a configuration error (2) or SIGINT/SIGTERM (0), which stop the
connections, fsync and close every file within 5 s.
Under systemd (`Type=notify`, collector/systemd.py) it sends READY=1 once connecting starts,
STOPPING=1 on the way out, and WATCHDOG=1 from a supervised task while the loop and writer move.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import IO

from collector import systemd
from collector.cadence import CadenceSchedule
from collector.config import CollectorConfig, ConfigError
from collector.feed import ConnectionPacer, FeedConnection, wall_ms
from collector.loop_monitor import LoopMonitor
from collector.ship import GRACE, ShipConflict, Shipper, WriterGate
from collector.status import StatusReporter
from collector.supervise import supervise
from collector.writer import BackgroundWriter
from l2_lake.book.engine import InstrumentSync, State, write_due_snapshots
from l2_lake.book.tape import TapeRecorder
from l2_lake.format import layout
from l2_lake.logs import log_event
from l2_lake.store import instrument_meta as meta
from l2_lake.store.collector_lock import COLLECTOR_LOCK
from l2_lake.store.home import StoreError
from l2_lake.store.hour_files import LakeWriter
from l2_lake.threads import settle_from_thread
from l2_lake.venues import rest
from l2_lake.venues.registry import DEFAULT_VENUE

log = logging.getLogger("collector.app")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DATA = 1  # an offline command (replay, export, plot) met data or a store it cannot read
METADATA_STARTUP_ATTEMPTS = 3
METADATA_RETRY_S = 60.0  # first retry after a failed refresh; doubles up to the refresh period
CLOSE_TIMEOUT_S = 3.0
CLAIM_TIMEOUT_S = 10.0  # the start waits this long for the bucket to say whether another collector ships there


def check_data_dir(data_dir: Path) -> None:
    """Create the data directory and prove we can write there, or raise ConfigError."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data_dir: cannot write to {data_dir} ({exc.strerror or exc}); "
                          "choose a writable --data-dir or fix its permissions") from None


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data directory for the life of the process (released by the OS
    even after kill -9); ConfigError naming the holder's PID if another collector has it."""
    path = data_dir / COLLECTOR_LOCK
    handle = open(path, "a+")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(f"data_dir: {data_dir} is in use by another l2-collector (PID {holder}, lock {path}); "
                          "stop that one or choose another --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def shard(instruments: tuple[str, ...], per_connection: int) -> list[tuple[str, ...]]:
    return [instruments[i:i + per_connection] for i in range(0, len(instruments), per_connection)]


class Collector:
    """The running process: one engine per instrument, one feed per shard, one writer thread."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.writer = BackgroundWriter(LakeWriter(cfg.data_dir, clock_ms=wall_ms), clock_ms=wall_ms)
        self.rest = rest.RestClient(DEFAULT_VENUE, cfg.rest_url, cfg.rest_timeout)
        self.syncs = {i: InstrumentSync(i, cfg.depth, self.writer) for i in cfg.instruments}
        self.tape = TapeRecorder(self.writer, clock_ms=wall_ms) if cfg.tape else None
        for sync in self.syncs.values():
            sync.tape = self.tape
        pacer = ConnectionPacer(DEFAULT_VENUE.connections_per_second)
        self.feeds = [
            FeedConnection(f"conn{n}", cfg, {i: self.syncs[i] for i in group}, self.rest,
                           self._unknown_instrument, pacer)
            for n, group in enumerate(shard(cfg.instruments, cfg.channels_per_connection))
        ]
        self.loop_monitor = LoopMonitor()
        # with --lake-url the data dir is a spool: closed hours go to object storage (collector.ship)
        self.shipper = None if not cfg.lake_url else Shipper(
            cfg.data_dir, cfg.lake_url, writer=self.writer, collector_id=cfg.collector_id,
            scan_interval_s=cfg.status_interval,  # the status line's backlog is at most one interval old
            backoff_initial=cfg.backoff_initial, backoff_max=cfg.backoff_max)
        self.status = StatusReporter(self.syncs, self.writer, self.loop_monitor, shipper=self.shipper)
        self.exit_code = EXIT_OK
        self._metadata_validated = False
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _unknown_instrument(self, inst_id: str, detail: str) -> bool:
        """OKX answered 60018 for `inst_id`. Before anything was validated or received that is a
        configuration error (exit 2, returns True); later it is a delisting the feed retries."""
        if self._metadata_validated or self.syncs[inst_id].messages:
            return False
        log_event(log, logging.ERROR, "unknown_instrument", inst_id,
                  f"OKX rejected instrument {inst_id} ({detail}); fix --instruments. Exiting with code 2")
        self.exit_code = EXIT_CONFIG
        self.stop()
        return True

    # -- metadata ------------------------------------------------------------------------------

    async def refresh_metadata(self, *, startup: bool) -> None:
        """Fetch the SWAP list and store every configured instrument's object (in the writer thread).

        At start-up an instrument OKX does not list raises UnknownInstruments; later it is logged
        and its last stored files are kept.
        """
        listed = await meta.fetch_swap_instruments(self.rest)
        if startup:
            meta.require_listed(listed, self.cfg.instruments)
            self._metadata_validated = True
        now = wall_ms()
        for inst_id in self.cfg.instruments:
            instrument = listed.get(inst_id)
            if instrument is None:
                log_event(log, logging.ERROR, "metadata_missing", inst_id,
                          f"OKX no longer lists {inst_id}; keeping its last metadata files")
                continue
            changed = await self.writer.call(lambda i=instrument: meta.store_instrument(self.cfg.data_dir, i, now))
            if changed:
                log_event(log, logging.WARNING, "metadata_changed", inst_id,
                          f"instrument metadata changed: {', '.join(changed)}")

    async def _startup_metadata(self) -> bool:
        """True when metadata was fetched and stored; unknown instruments raise; otherwise warn."""
        for attempt in range(1, METADATA_STARTUP_ATTEMPTS + 1):
            try:
                await self.refresh_metadata(startup=True)
                return True
            except meta.UnknownInstruments:
                raise
            except (rest.RestError, OSError) as exc:
                log_event(log, logging.WARNING, "metadata_error", None,
                          f"instrument metadata fetch failed (attempt {attempt}): {exc}")
            except Exception:  # a bug in metadata handling must not keep the books from being collected
                log.exception("instrument metadata fetch crashed (attempt %d)", attempt,
                              extra={"event": "task_crashed", "task": "metadata"})
            await asyncio.sleep(min(2.0 * attempt, 5.0))
        log_event(log, logging.WARNING, "metadata_error", None,
                  "starting without instrument metadata; it is retried in the background")
        return False

    async def _metadata_loop(self, first_delay_s: float) -> None:
        """Refresh every `metadata_refresh_hours`; after a failure retry sooner, keeping the last good files."""
        period = self.cfg.metadata_refresh_hours * 3600
        delay, retry = first_delay_s, METADATA_RETRY_S
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh_metadata(startup=False)
                delay, retry = period, METADATA_RETRY_S
            except (rest.RestError, OSError) as exc:
                log_event(log, logging.ERROR, "metadata_error", None,
                          f"metadata refresh failed ({exc}); last good files kept, retrying in {retry:.0f} s")
                delay, retry = min(retry, period), min(period, retry * 2)

    # -- periodic work -------------------------------------------------------------------------

    async def _cadence_loop(self) -> None:
        """Each instrument's record at its own offset within the cadence (collector.cadence), a few at a time,
        handed to the writer thread as one job per pass."""
        schedule = CadenceSchedule(self.syncs, self.cfg.cadence)
        last_ms = wall_ms()
        while True:
            await asyncio.sleep(max(0, schedule.next_tick_ms(last_ms) - wall_ms()) / 1000)
            now_ms = wall_ms()
            due = schedule.due(last_ms, now_ms)  # none if the wall clock went back; ticks go on from there
            if due:
                with self.writer.batch():
                    write_due_snapshots({inst_id: self.syncs[inst_id] for inst_id in due}, self.writer)
            last_ms = now_ms

    async def _status_loop(self) -> None:
        # without a shipper (which does it before each pass), ended hours that stopped growing are
        # closed here: an open file keeps its hour locked against the pipeline's archive step
        gate = WriterGate(self.writer) if self.shipper is None else None
        while True:
            await asyncio.sleep(self.cfg.status_interval)
            self.status.report(time.monotonic(), wall_ms())
            if gate is not None:
                ended_before = layout.hour_floor(wall_ms() - int(GRACE.total_seconds() * 1000))
                await self.writer.call(partial(gate.release_ended, ended_before))

    def _systemd_status(self) -> str:
        synced = sum(s.state is State.SYNCED and not s.delisted for s in self.syncs.values())
        return f"{synced}/{len(self.syncs)} instruments synced, {self.writer.backlog} lines queued for the writer"

    def _task_crashed(self, instruments: tuple[str, ...]) -> Callable[[str, str], None]:
        def report(task: str, error: str) -> None:
            for inst_id in instruments:
                self.writer.event(inst_id, "error", source="collector", task=task, error=error)
        return report

    def _supervised(self, name: str, run: Callable[[], Awaitable[None]],
                    instruments: tuple[str, ...] | None = None) -> asyncio.Task[None]:
        on_crash = self._task_crashed(tuple(self.syncs) if instruments is None else instruments)
        return asyncio.create_task(supervise(name, run, on_crash, backoff_initial=self.cfg.backoff_initial,
                                             backoff_max=self.cfg.backoff_max), name=name)

    # -- lifecycle -----------------------------------------------------------------------------

    async def _claim_lake_url(self, shipper: Shipper) -> bool:
        """False, after one error line, if another live collector with this collector id ships to the same
        URL (`Shipper.claim`). A store that does not answer within CLAIM_TIMEOUT_S does not hold up the
        start: the shipper claims again before every pass, and ships nothing while the conflict lasts."""
        loop = asyncio.get_running_loop()
        claimed: asyncio.Future[None] = loop.create_future()
        threading.Thread(target=settle_from_thread, args=(loop, claimed, shipper.claim), name="lake-claim",
                         daemon=True).start()
        try:
            await asyncio.wait_for(claimed, CLAIM_TIMEOUT_S)
        except ShipConflict as exc:
            log_event(log, logging.ERROR, "ship_refused", None, str(exc))
            return False
        except (StoreError, TimeoutError) as exc:
            log_event(log, logging.WARNING, "ship_claim_deferred", None,
                      f"could not yet check {shipper.url} for another collector ({exc or 'no answer'}); "
                      "checked again before every pass")
        return True

    async def run(self) -> int:
        self.writer.start()
        self.writer.submit(lambda: self.writer.store.repair_recent(self.cfg.instruments))  # before any append
        if self.shipper is not None:
            self.shipper.warm_up()  # the S3 client, while nothing is being captured yet
            if not await self._claim_lake_url(self.shipper):
                await self.writer.close(CLOSE_TIMEOUT_S)
                return EXIT_CONFIG
        startup = asyncio.create_task(self._startup_metadata())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait([startup, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not startup.done():  # SIGINT/SIGTERM while OKX REST is slow: stop now, nothing to flush
            startup.cancel()
            systemd.notify("STOPPING=1")
            log_event(log, logging.INFO, "stop", None, "stopped during start-up")
            await self.writer.close(CLOSE_TIMEOUT_S)
            return self.exit_code
        if isinstance(startup.exception(), meta.UnknownInstruments):
            log_event(log, logging.ERROR, "unknown_instrument", None, str(startup.exception()))
            await self.writer.close(CLOSE_TIMEOUT_S)
            return EXIT_CONFIG
        metadata_ok = startup.result()
        log_event(log, logging.INFO, "start", None,
                  f"collecting {len(self.syncs)} instrument(s) over {len(self.feeds)} connection(s) into "
                  f"{self.cfg.data_dir} every {self.cfg.cadence} s"
                  + (f" as replica {self.cfg.collector_id}" if self.cfg.collector_id else ""),
                  ws_url=self.cfg.ws_url, collector_id=self.cfg.collector_id or "-")
        first_refresh = self.cfg.metadata_refresh_hours * 3600 if metadata_ok else METADATA_RETRY_S
        tasks = [self._supervised(feed.name, feed.run, tuple(feed.syncs)) for feed in self.feeds]
        tasks += [
            self._supervised("cadence", self._cadence_loop),
            self._supervised("status", self._status_loop),
            self._supervised("metadata", lambda: self._metadata_loop(first_refresh)),
            self._supervised("writer", self.writer.watch),
            self._supervised("loop_monitor", self.loop_monitor.run),
        ]
        if self.shipper is not None:
            tasks.append(self._supervised("ship", self.shipper.run))
        if systemd.enabled():  # WATCHDOG=1 only while the loop runs and the writer thread gets through its queue
            tasks.append(self._supervised("systemd", lambda: systemd.keepalive(
                lambda: self.writer.call(lambda: None), self._systemd_status)))
        systemd.notify("READY=1", f"STATUS=collecting {len(self.syncs)} instrument(s) into {self.cfg.data_dir}")
        try:
            await self._stop.wait()
        finally:
            systemd.notify("STOPPING=1", "STATUS=stopping: closing connections, fsyncing the lake")
            if self.shipper is not None:  # an upload in flight is abandoned; its spool files stay
                self.shipper.stop()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=1)
            if self.tape is not None:
                self.tape.flush()
            closed = await self.writer.close(CLOSE_TIMEOUT_S)
            self.status.report(time.monotonic(), wall_ms())
            log_event(log, logging.INFO, "stop", None, "stopped; all files fsynced and closed" if closed else
                      f"stopped; the lake writer did not finish within {CLOSE_TIMEOUT_S:.0f} s (disk hung?)")
        return self.exit_code


async def run_collector(cfg: CollectorConfig) -> int:
    check_data_dir(cfg.data_dir)
    lock = lock_data_dir(cfg.data_dir)
    try:
        collector = Collector(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, collector.stop)
        return await collector.run()
    finally:
        lock.close()

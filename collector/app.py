"""`l2-collector run`: wires config, metadata, engine, feed connections, cadence and store together.

Start-up order matters: validate config, prove the data directory is writable, check every
instrument against OKX REST (unknown ones are a startup error, exit 2), then connect. SIGINT and
SIGTERM stop the connections, fsync and close every file and exit 0 well within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from collector import meta, rest
from collector.config import CollectorConfig, ConfigError
from collector.engine import InstrumentSync, write_due_snapshots
from collector.feed import ConnectionPacer, FeedConnection, wall_ms
from collector.logs import log_event
from collector.status import StatusReporter
from collector.store import LakeWriter

log = logging.getLogger("collector.app")

EXIT_OK = 0
EXIT_CONFIG = 2
METADATA_STARTUP_ATTEMPTS = 3


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


def shard(instruments: tuple[str, ...], per_connection: int) -> list[tuple[str, ...]]:
    return [instruments[i:i + per_connection] for i in range(0, len(instruments), per_connection)]


class Collector:
    """The running process: one engine per instrument, one feed per shard, shared store."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.store = LakeWriter(cfg.data_dir, clock_ms=wall_ms)
        self.syncs = {i: InstrumentSync(i, cfg.depth, self.store) for i in cfg.instruments}
        pacer = ConnectionPacer()
        self.feeds = [
            FeedConnection(f"conn{n}", cfg, {i: self.syncs[i] for i in group}, self._unknown_instrument, pacer)
            for n, group in enumerate(shard(cfg.instruments, cfg.channels_per_connection))
        ]
        self.status = StatusReporter(self.syncs, self.store)
        self.exit_code = EXIT_OK
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _unknown_instrument(self, inst_id: str, detail: str) -> None:
        sync = self.syncs[inst_id]
        if sync.messages == 0:
            log_event(log, logging.ERROR, "unknown_instrument", inst_id,
                      f"OKX rejected instrument {inst_id} ({detail}); fix --instruments. Exiting with code 2")
            self.exit_code = EXIT_CONFIG
            self.stop()

    async def refresh_metadata(self) -> None:
        fetched = await meta.fetch_instruments(self.cfg.rest_url, self.cfg.instruments, self.cfg.rest_timeout)
        now = wall_ms()
        for inst_id, instrument in fetched.items():
            changed = meta.store_instrument(self.cfg.data_dir, instrument, now)
            if changed:
                log_event(log, logging.WARNING, "metadata_changed", inst_id,
                          f"instrument metadata changed: {', '.join(changed)}")

    async def _startup_metadata(self) -> None:
        """Unknown instruments end the run (exit 2); an unreachable REST only warns."""
        for attempt in range(1, METADATA_STARTUP_ATTEMPTS + 1):
            try:
                await self.refresh_metadata()
                return
            except rest.RestError as exc:
                log_event(log, logging.WARNING, "metadata_error", None,
                          f"instrument metadata fetch failed (attempt {attempt}): {exc}")
                await asyncio.sleep(min(2.0 * attempt, 5.0))
        log_event(log, logging.WARNING, "metadata_error", None,
                  "starting without instrument metadata; unknown instIds will surface as OKX error 60018")

    async def _metadata_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.metadata_refresh_hours * 3600)
            try:
                await self.refresh_metadata()
            except (rest.RestError, meta.UnknownInstruments) as exc:
                log_event(log, logging.ERROR, "metadata_error", None, f"metadata refresh failed: {exc}")

    async def _cadence_loop(self) -> None:
        cadence = self.cfg.cadence
        while True:
            now = time.time()
            await asyncio.sleep(cadence - now % cadence)  # ticks on wall-clock multiples of cadence
            write_due_snapshots(self.syncs, self.store)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.status_interval)
            self.status.report(time.monotonic(), wall_ms())

    async def run(self) -> int:
        startup = asyncio.create_task(self._startup_metadata())
        stopped = asyncio.create_task(self._stop.wait())
        await asyncio.wait([startup, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not startup.done():  # SIGINT/SIGTERM while OKX REST is slow: stop now, nothing to flush
            startup.cancel()
            log_event(log, logging.INFO, "stop", None, "stopped during start-up")
            return self.exit_code
        if isinstance(startup.exception(), meta.UnknownInstruments):
            log_event(log, logging.ERROR, "unknown_instrument", None, str(startup.exception()))
            return EXIT_CONFIG
        startup.result()
        log_event(log, logging.INFO, "start", None,
                  f"collecting {len(self.syncs)} instrument(s) over {len(self.feeds)} connection(s) into "
                  f"{self.cfg.data_dir} every {self.cfg.cadence} s", ws_url=self.cfg.ws_url)
        tasks = [asyncio.create_task(feed.run(), name=feed.name) for feed in self.feeds]
        tasks += [asyncio.create_task(loop()) for loop in
                  (self._cadence_loop, self._status_loop, self._metadata_loop)]
        stopper = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in [stopper, *tasks]:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=3)
            self.store.close()
            self.status.report(time.monotonic(), wall_ms())
            log_event(log, logging.INFO, "stop", None, "stopped; all files fsynced and closed")
        return self.exit_code


async def run_collector(cfg: CollectorConfig) -> int:
    check_data_dir(cfg.data_dir)
    collector = Collector(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, collector.stop)
    return await collector.run()

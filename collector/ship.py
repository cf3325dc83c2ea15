"""Shipping closed hours from the local spool to object storage (`--lake-url` / `L2_LAKE_URL`).

With `L2_LAKE_URL=s3://bucket/prefix` the data directory becomes a spool: the collector keeps
writing the open hour there exactly as before, and one supervised task (`Shipper.run`) moves every
closed hour to the same relative path under the URL (docs/CONTRACT.md §1):

| local (spool)                                  | object                                   | local copy |
|---|---|---|
| `raw/okx/l2_perps/{instId}/{day}/{HH}.jsonl`    | `…/{HH}.jsonl.gz` (the pipeline's gzip) | removed |
| `raw/okx/l2_perps/{instId}/{day}/{HH}.jsonl.gz` (already archived) | `…/{HH}.jsonl.gz`, the file as it is | removed |
| `raw/okx/l2_perps/{instId}/{day}/{HH}.events.jsonl` | the same name, as it is          | removed |
| `raw/okx/l2_tape/{instId}/{day}/{HH}.jsonl` (`--tape`) | the same name, as it is (see below) | removed |
| `raw/okx/l2_tape/{instId}/{day}/{HH}.parquet` (already archived) | `…/{HH}.parquet`, the file as it is | removed |
| `meta/okx/instruments/*`                        | the same name, whenever it changed      | kept |

The tape goes as it is because its Parquet form (l2_lake.format.tape_columns) costs about 110x the CPU of
hashing, uploading and reading back the raw hour (`bench.ship --tape`: 8.66 s against 0.08 s on a
20 MB hour): a collector with `--tape` on a few hundred instruments would need a core for that alone,
and the capture host's CPU is the hot path's. The pipeline's `book_tape_archive` makes the
`.parquet` in the bucket after 6 h, as it does on a local lake (docs/TAPE.md).

An hour is closed once its end plus `grace` (2 min) has passed and the writer no longer has its file
open. Before each pass the writer thread closes the files of ended hours that did not grow since the
previous pass (an instrument that went quiet, an events file), so no hour waits for the next line.

Every object is verified before its spool copy goes (nothing is removed locally before it is known
to be in the store):
1. a gzip is made in memory and decompressed again: sha256 and line count must equal the original's
   (an already-archived `.jsonl.gz` must decompress, its content digest is taken; an archived tape
   hour's columns are decoded, likewise; a tape `.jsonl` goes as it is, with its digest);
2. PutObject carries the body's sha256 as `ChecksumSHA256` (S3 rejects a body that does not match)
   and in the user metadata (`sha256`, plus `content-sha256`, `lines`, `bytes` of the decompressed
   content);
3. the object is read back (GET) and its sha256 compared with the body's;
4. the local file is removed in the writer thread, only if the writer does not hold it and its size
   and mtime are what was read in step 1 (a late line keeps it: the next pass ships the longer file).
If the object already exists with other content (lines that arrived after the hour was shipped, or
a pass that died after its PUT), the two are merged: a local file that extends the object replaces
it, one the object already contains is just removed, anything else is appended to the object's
content. Lines are never dropped. Every such write replaces only the version read, or creates the
object only where there was none (`If-Match` / `If-None-Match`): a merge can never overwrite what the
pipeline or another writer put there in between (it fails, and the next pass merges again).

Metadata files are shared, not owned: the pipeline and the collectors fetch the same instruments, so
the object keeps the object fetched last and the union of every writer's history lines
(`l2_lake.store.instrument_meta`), whoever wrote it before.

A store that is down or slow never blocks capture: each pass runs in its own daemon thread, boto3's
timeouts bound every request, and a failed pass is retried after a capped exponential backoff with
jitter (`--backoff-initial` … `--backoff-max`); otherwise a pass runs every `--status-interval`.
Work that would hold the GIL for long is done in chunks (line counts, comparisons; zlib and sha256
release it themselves), and the client is made while the collector starts (`warm_up`: boto3's import
and model loading hold the GIL for up to ~150 ms). Meanwhile the spool grows; the backlog (hours,
files and bytes waiting, the oldest waiting hour, the last error) is in the status line and in
`{data_dir}/.l2-ship-backlog.json` (written atomically, for the pipeline and for operators), and it
drains when the store is back. On SIGTERM an upload in flight is abandoned; its local files stay.
Local files that can never be shipped (an archive that does not decompress, or an object written by
another collector: replicas with `--collector-id` stamp their objects and must each have their own
`--lake-url` prefix) are kept, logged once (`ship_bad_file`) and listed as `stuck` in the backlog file.

Log events: `ship_start`, `shipped` (one per instrument-hour), `ship_error` (a failed pass, with the
retry delay), `ship_recovered`, `ship_verify_failed`, `ship_merge`, `ship_changed`, `ship_bad_file`,
`ship_stale_archive`, `ship_stale_removed` (an archive moved aside 7 days ago, removed), `ship_remote_damaged`,
`ship_state_error`, `ship_release_error`.

Client: boto3 (`l2_lake.store.s3`, where the measurement that chose it is summarised).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from collector.supervise import backoff_delay
from l2_lake.format import layout
from l2_lake.format.backlog import STATE_NAME
from l2_lake.format.digests import (
    BadLocalFile,
    Digest,
    count_lines,
    digest_archive,
    digest_bytes,
    digest_parts,
    gzip_verified,
    same_at,
    unarchive,
)
from l2_lake.format.record import format_ts_ms
from l2_lake.logs import log_event
from l2_lake.store import instrument_meta, lake_walk
from l2_lake.store.files import atomic_write, fsync_dir, remove_stale
from l2_lake.store.home import ABSENT, Changed, Entry, Home, StoreError, VerifyFailed, sha256_file
from l2_lake.store.s3 import LakeUrl, parse_lake_url
from l2_lake.threads import settle_from_thread

if TYPE_CHECKING:
    from collector.writer import BackgroundWriter

log = logging.getLogger("collector.ship")
T = TypeVar("T")

GRACE = timedelta(minutes=2)
SCAN_INTERVAL_S = 30.0
WRITER_TIMEOUT_S = 30.0
SHIPPED_DATASETS = (layout.RAW_PREFIX, layout.TAPE_PREFIX)  # the snapshots, and the tape (`--tape`)
WRITERS_PREFIX = "_writers"  # one claim object per collector id under the URL (`Shipper.claim`)
CLAIM_FRESH_S = 600.0  # a claim refreshed within this is a live collector's
CLAIM_EVERY_S = 60.0  # a pass refreshes the claim at most this often
STALE_MAX_AGE_S = 7 * 86400  # an archive moved aside is kept this long for an operator to look at
STATE_EVERY_S = 1.0  # the backlog file is rewritten at most this often while a pass drains
GZIP_TYPE = "application/gzip"
PARQUET_TYPE = "application/vnd.apache.parquet"
JSONL_TYPE = "application/x-ndjson"
JSON_TYPE = "application/json"


class ShipDeferred(RuntimeError):
    """A pass could not finish for a reason on our side (the writer thread is busy, a tape hour could not be
    encoded); retried like a store error."""


class ShipConflict(RuntimeError):
    """The object exists and was written by another collector (`collector-id` metadata): two replicas
    must not ship to one URL. Nothing is merged or overwritten; the spool file stays."""


def archive_verified(parts: Sequence[bytes], name: str) -> tuple[bytes, Digest]:
    """The archive called `name` of the concatenated `parts` (`{HH}.jsonl.gz`: `gzip_verified`; the
    tape's `{HH}.parquet`: its columns, which prove they decode to the content, made in a child process
    so that the collector's event loop never waits for the GIL) with the content's digest."""
    if layout.is_tape_archive(name):
        from l2_lake.format import tape_columns  # pyarrow: loaded only by a collector that ships a tape

        try:
            return tape_columns.encode_isolated(b"".join(parts)), digest_parts(parts)
        except tape_columns.TapeColumnsError as exc:  # the pass is retried (backoff), the error in the backlog
            raise ShipDeferred(f"{name}: {exc}") from exc
    return gzip_verified(parts, name.removesuffix(".gz"))


def _archive_type(name: str) -> str:
    return PARQUET_TYPE if layout.is_tape_archive(name) else GZIP_TYPE


# -- the backlog ---------------------------------------------------------------------------------------------


def _iso_hour(hour: datetime | None) -> str | None:
    return None if hour is None else hour.strftime("%Y-%m-%dT%H:00Z")


@dataclass(frozen=True)
class Backlog:
    """What is waiting to be shipped, as of the last scan (replaced whole, so any thread may read it)."""

    pending_hours: int = 0
    pending_files: int = 0
    pending_bytes: int = 0
    oldest_hour: datetime | None = None
    stuck: tuple[str, ...] = ()
    in_flight: str | None = None
    failures: int = 0  # consecutive failed passes
    last_error: str | None = None
    last_error_ms: int | None = None
    shipped_files: int = 0
    shipped_bytes: int = 0
    last_shipped_ms: int | None = None
    scanned: bool = False

    def summary(self) -> str:
        if not self.scanned:
            return "ship backlog not scanned yet"
        text = (f"ship backlog {self.pending_hours} hours ({self.pending_files} files, "
                f"{self.pending_bytes / 1e6:.1f} MB)")
        if self.oldest_hour is not None:
            text += f" oldest {_iso_hour(self.oldest_hour)}"
        if self.stuck:
            text += f", {len(self.stuck)} stuck"
        if self.failures:
            text += f", failing ({self.failures}): {self.last_error}"
        return text

    def fields(self) -> dict[str, Any]:
        return {"ship_pending_hours": self.pending_hours, "ship_pending_files": self.pending_files,
                "ship_pending_bytes": self.pending_bytes, "ship_oldest_hour": _iso_hour(self.oldest_hour) or "-",
                "ship_failures": self.failures, "ship_stuck": len(self.stuck)}

    def as_json(self, lake_url: LakeUrl, now_ms: int) -> dict[str, Any]:
        def ts(ms: int | None) -> str | None:
            return None if ms is None else format_ts_ms(ms)

        return {
            "lake_url": str(lake_url), "updated_at": ts(now_ms), "pid": os.getpid(),
            "pending_hours": self.pending_hours, "pending_files": self.pending_files,
            "pending_bytes": self.pending_bytes, "oldest_pending_hour": _iso_hour(self.oldest_hour),
            "stuck_files": list(self.stuck), "in_flight": self.in_flight,
            "consecutive_failures": self.failures, "last_error": self.last_error,
            "last_error_at": ts(self.last_error_ms), "shipped_files": self.shipped_files,
            "shipped_bytes": self.shipped_bytes, "last_shipped_at": ts(self.last_shipped_ms),
        }


@dataclass
class HourUnit:
    """The closed files of one instrument-hour in the spool, by kind (records, archive, events)."""

    inst_id: str
    hour: datetime
    files: dict[str, Path]
    sizes: dict[Path, int] = field(default_factory=dict)  # at scan time

    def measure(self) -> HourUnit:
        for path in self.files.values():
            with contextlib.suppress(OSError):
                self.sizes[path] = path.stat().st_size
        return self


@dataclass
class _Pending:
    """Running totals of what a pass has still to ship (kept, not recounted, as files go)."""

    hours: int = 0
    files: int = 0
    bytes: int = 0


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def closed_until(now_ms: int, grace: timedelta) -> datetime:
    """The newest hour that is closed at `now_ms`: it ended at least `grace` ago."""
    return layout.hour_floor(now_ms - int(grace.total_seconds() * 1000)) - layout.HOUR


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


# -- the writer thread's side ----------------------------------------------------------------------------


class WriterGate:
    """What the shipper asks of the lake writer thread, so no file is shipped or removed while it is
    being written: which files it holds open, closing ended hours' files that stopped growing, and
    removing a shipped file (in that thread, so no line can be appended in between)."""

    def __init__(self, writer: BackgroundWriter) -> None:
        self.writer = writer
        self._seen: dict[tuple[str, str], tuple[Path, int]] = {}

    def _open_files(self) -> dict[tuple[str, str], Any]:
        return self.writer.store.open_files()

    def release_ended(self, ended_before: datetime) -> frozenset[Path]:
        """(writer thread) fsync and close every file of an hour that ended before `ended_before` and
        did not grow since the previous call; the paths still open."""
        files = self._open_files()
        for key, f in files.items():
            if f.hour + layout.HOUR > ended_before:
                continue
            if self._seen.get(key) == (f.path, f.size):
                try:
                    self.writer.store.close_file(key)
                except OSError as exc:
                    log_event(log, logging.WARNING, "ship_release_error", key[0],
                              f"closing {f.path.name} for shipping failed ({exc})")
                self._seen.pop(key, None)
            else:
                self._seen[key] = (f.path, f.size)
        for key in set(self._seen) - set(files):
            self._seen.pop(key, None)
        return frozenset(f.path for f in self._open_files().values())

    def remove_if_unchanged(self, path: Path, stamp: tuple[int, int]) -> bool:
        """(writer thread) Remove `path` if the writer does not hold it and it is still as it was read."""
        if any(f.path == path for f in self._open_files().values()):
            return False
        return _remove_unchanged(path, stamp)

    def call_sync(self, fn: Callable[[], T], timeout: float) -> T:
        """Run `fn` in the writer thread (after every line queued before) from another thread."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.writer.submit(job)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ShipDeferred(f"the lake writer did not answer within {timeout:.0f} s (disk hung?)") from None


def _remove_unchanged(path: Path, stamp: tuple[int, int]) -> bool:
    """`WriterGate.remove_if_unchanged` for a spool no writer is writing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    if _stamp(st) != stamp:
        return False
    path.unlink()
    fsync_dir(path.parent)
    return True


# -- the shipper ---------------------------------------------------------------------------------------------


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Shipper:
    """Moves closed hours from the spool to the store; `run()` is the supervised task, `ship_once()` one
    pass (blocking; the task runs it in a daemon thread)."""

    def __init__(self, data_dir: Path, lake_url: str, *, writer: BackgroundWriter | None = None,
                 collector_id: str = "", store_factory: Callable[[LakeUrl], Home] | None = None,
                 grace: timedelta = GRACE,
                 scan_interval_s: float = SCAN_INTERVAL_S, backoff_initial: float = 1.0, backoff_max: float = 60.0,
                 clock_ms: Callable[[], int] = _wall_ms) -> None:
        self.data_dir = Path(data_dir)
        self.url = parse_lake_url(lake_url)
        self.collector_id = collector_id
        self.gate = WriterGate(writer) if writer is not None else None
        self._store_factory = store_factory
        self._store: Home | None = None
        self._store_lock = threading.Lock()
        self.grace = grace
        self.scan_interval_s = scan_interval_s
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock_ms = clock_ms
        self.backlog = Backlog()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt = 0
        self._announced = False
        self._stuck: dict[Path, str] = {}
        self._meta_done: dict[Path, tuple[int, int]] = {}
        self._state_written = 0.0
        self._swept_ms: int | None = None
        self._claimed_ms: int | None = None  # when `claim` last succeeded

    # -- control ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop after the file in flight (whose upload may be abandoned; local files stay)."""
        self._stopping.set()

    async def run(self) -> None:
        """Pass after pass until cancelled: every `scan_interval_s`, or after a backoff when one failed."""
        if not self._announced:
            self._announced = True
            log_event(log, logging.INFO, "ship_start", None,
                      f"shipping closed hours from {self.data_dir} to {self.url} (grace {self.grace})",
                      lake_url=str(self.url))
        while True:
            while self._thread is not None and self._thread.is_alive():  # never two passes at once
                await asyncio.sleep(0.1)
            try:
                now_ms = self._clock_ms()
                open_paths = await self._open_paths(now_ms)
                await self._in_thread(partial(self.ship_once, now_ms, open_paths))
            except (StoreError, ShipDeferred) as exc:
                delay = backoff_delay(self._attempt, self.backoff_initial, self.backoff_max)
                self._attempt += 1
                log_event(log, logging.ERROR if self._attempt == 1 else logging.WARNING, "ship_error", None,
                          f"shipping failed: {exc}; {self.backlog.summary()}; the spool keeps everything; "
                          f"retrying in {delay:.1f} s", error=str(exc), attempt=self._attempt,
                          retry_in_s=round(delay, 1), **self.backlog.fields())
            else:
                if self._attempt:
                    log_event(log, logging.WARNING, "ship_recovered", None,
                              f"shipping to {self.url} works again after {self._attempt} failed attempts; "
                              f"{self.backlog.summary()}", attempts=self._attempt, **self.backlog.fields())
                self._attempt = 0
                delay = self.scan_interval_s
            await asyncio.sleep(delay)

    async def _open_paths(self, now_ms: int) -> frozenset[Path]:
        if self.gate is None:
            return frozenset()
        ended_before = layout.hour_floor(now_ms - int(self.grace.total_seconds() * 1000))  # ended + grace
        try:
            return await asyncio.wait_for(self.gate.writer.call(partial(self.gate.release_ended, ended_before)),
                                          WRITER_TIMEOUT_S)
        except TimeoutError:
            raise ShipDeferred(f"the lake writer did not answer within {WRITER_TIMEOUT_S:.0f} s (disk hung?)") \
                from None

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """Run `work` in a daemon thread (a hung store can neither block the loop nor the exit)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._thread = threading.Thread(target=settle_from_thread, args=(loop, future, work),
                                        name="lake-shipper", daemon=True)
        self._thread.start()
        return await future

    # -- one pass (blocking) ------------------------------------------------------------------------------

    def store(self) -> Home:
        """The client, made on first use (StoreError if it cannot be made; tried again next pass)."""
        with self._store_lock:
            if self._store is None:
                if self._store_factory is not None:
                    self._store = self._store_factory(self.url)
                else:
                    from l2_lake.store.s3 import S3Store

                    self._store = S3Store(self.url)
            return self._store

    def warm_up(self) -> None:
        """Make the client now, in a daemon thread. Importing boto3 and loading its S3 model holds the
        GIL for up to ~150 ms at a stretch: better while the collector is still starting than while it
        captures (once made, a whole pass keeps the loop's lateness in the tens of ms)."""

        def make() -> None:
            with contextlib.suppress(StoreError):
                self.store()

        threading.Thread(target=make, name="lake-shipper-init", daemon=True).start()

    def claim(self, now_ms: int | None = None) -> None:
        """Be the one writer of this collector id under the URL: `{url}/_writers/{id}.json` names this host,
        data directory and pid, refreshed before every pass. ShipConflict if another collector with the same
        id (two hosts given one config, both without `--collector-id`) refreshed it within CLAIM_FRESH_S:
        shipping both would append each other's hours, so every record would appear twice. The same host
        and data directory is this collector restarted, never a conflict. Passes refresh it at most every
        CLAIM_EVERY_S."""
        now_ms = self._clock_ms() if now_ms is None else now_ms
        store = self.store()
        key = f"{WRITERS_PREFIX}/{self.collector_id or 'default'}.json"
        ours = {"host": socket.gethostname(), "data_dir": str(self.data_dir.resolve()), "pid": os.getpid(),
                "collector_id": self.collector_id, "seen_ms": now_ms}
        try:
            theirs = orjson.loads(store.read(key) or b"{}")
        except orjson.JSONDecodeError:
            theirs = {}
        same = (theirs.get("host"), theirs.get("data_dir")) == (ours["host"], ours["data_dir"])
        age_s = (now_ms - int(theirs.get("seen_ms") or 0)) / 1000
        if theirs and not same and age_s < CLAIM_FRESH_S:
            who = f"--collector-id {self.collector_id}" if self.collector_id else "no --collector-id"
            raise ShipConflict(f"{self.url} is shipped to by another collector with {who} on {theirs.get('host')} "
                               f"({theirs.get('data_dir')}, pid {theirs.get('pid')}, seen {age_s:.0f} s ago): give "
                               "each collector its own --collector-id and --lake-url prefix, or stop the other one")
        store.write_verified(key, orjson.dumps(ours), {}, JSON_TYPE)
        self._claimed_ms = now_ms

    def ship_once(self, now_ms: int | None = None, open_paths: frozenset[Path] = frozenset()) -> None:
        """Ship every closed hour and changed metadata file, oldest hour first; raises StoreError (or
        ShipDeferred) at the first failure, after recording it in the backlog. Nothing is shipped while
        another live collector with the same id ships to the URL (`claim`): the spool keeps every hour."""
        now_ms = self._clock_ms() if now_ms is None else now_ms
        self._sweep_stale(now_ms)
        units = self.scan(now_ms, open_paths)
        meta = {path: size for path in self._changed_meta() if (size := _size(path)) is not None}
        pending = _Pending(len(units), sum(len(u.files) for u in units) + len(meta),
                           sum(sum(u.sizes.values()) for u in units) + sum(meta.values()))
        left_oldest: datetime | None = None  # the oldest hour a pass could not finish (busy, late line)
        self._publish(pending, units[0].hour if units else None, force=True)
        try:
            store = self.store()
            if self._claimed_ms is None or now_ms - self._claimed_ms >= CLAIM_EVERY_S * 1000:
                try:
                    self.claim(now_ms)
                except ShipConflict as exc:
                    raise ShipDeferred(str(exc)) from exc
            for path, size in meta.items():
                if self._stopping.is_set():
                    return
                if self._ship_meta(store, path):
                    pending.files, pending.bytes = pending.files - 1, pending.bytes - size
                    self._publish(pending, units[0].hour if units else None)
            for i, unit in enumerate(units):
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                shipped = self._ship_unit(store, unit)
                done = set(shipped) | {path for path in unit.files.values() if path in self._stuck}
                pending.files -= len(done)  # a stuck file is listed as stuck, not as waiting
                pending.bytes -= sum(unit.sizes.get(path, 0) for path in done)
                if len(done) == len(unit.files):
                    pending.hours -= 1
                elif left_oldest is None:
                    left_oldest = unit.hour
                if shipped:
                    log_event(log, logging.INFO, "shipped", unit.inst_id,
                              f"shipped {unit.inst_id} {_iso_hour(unit.hour)} ({', '.join(p.name for p in shipped)}) "
                              f"to {self.url} in {time.monotonic() - started:.1f} s", hour=_iso_hour(unit.hour))
                self._publish(pending, left_oldest or (units[i + 1].hour if i + 1 < len(units) else None))
        except (StoreError, ShipDeferred) as exc:
            self.backlog = replace(self.backlog, failures=self.backlog.failures + 1, last_error=str(exc),
                                   last_error_ms=self._clock_ms(), in_flight=None)
            self._write_state(force=True)
            raise
        self.backlog = replace(self.backlog, failures=0, in_flight=None)
        self._publish(pending, left_oldest, force=True)

    def scan(self, now_ms: int, open_paths: frozenset[Path] = frozenset()) -> list[HourUnit]:
        """Closed hours in the spool (oldest first), without files the writer holds or that are stuck."""
        units: dict[tuple[Path, str, datetime], HourUnit] = {}
        until = closed_until(now_ms, self.grace)
        for prefix in SHIPPED_DATASETS:
            for hour_file in lake_walk.iter_hour_files(self.data_dir, until=until, prefix=prefix,
                                                       on_unreadable=lake_walk.log_unreadable(log)):
                if hour_file.path in open_paths or hour_file.path in self._stuck:
                    continue
                key = (prefix, hour_file.inst_id, hour_file.hour)
                units.setdefault(key, HourUnit(hour_file.inst_id, hour_file.hour, {})).files[hour_file.kind] = \
                    hour_file.path
        return sorted((u.measure() for u in units.values()), key=lambda u: (u.hour, u.inst_id))

    # -- publishing the backlog ---------------------------------------------------------------------------

    def _publish(self, pending: _Pending, oldest: datetime | None, *, force: bool = False) -> None:
        self.backlog = replace(
            self.backlog, scanned=True, pending_hours=pending.hours, pending_files=pending.files,
            pending_bytes=pending.bytes, oldest_hour=oldest,
            stuck=tuple(sorted(self._relative(p) for p in self._stuck)),
        )
        self._write_state(force=force)

    def _write_state(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._state_written < STATE_EVERY_S:
            return
        self._state_written = time.monotonic()
        try:
            atomic_write(self.data_dir / STATE_NAME,
                         orjson.dumps(self.backlog.as_json(self.url, self._clock_ms()), option=orjson.OPT_INDENT_2))
        except OSError as exc:
            log_event(log, logging.WARNING, "ship_state_error", None,
                      f"cannot write {STATE_NAME} ({exc.strerror or exc}); shipping goes on")

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.data_dir).as_posix()

    def _mark_stuck(self, path: Path, reason: str) -> None:
        if path not in self._stuck:
            self._stuck[path] = reason
            log_event(log, logging.ERROR, "ship_bad_file", None,
                      f"cannot ship {self._relative(path)}: {reason}; it stays in the spool (not retried until "
                      "restart)", path=self._relative(path))

    # -- one instrument-hour ------------------------------------------------------------------------------

    def _ship_unit(self, store: Home, unit: HourUnit) -> list[Path]:
        """Ship the unit's files; returns those shipped (a busy or changed file waits for the next pass;
        a `.jsonl.gz` beside a shipped `.jsonl` goes with it)."""
        shipped: list[Path] = []
        records, archive, events = (unit.files.get(k) for k in ("records", "archive", "events"))
        try:
            if records is not None:
                if self._guard(records, partial(self._ship_records, store, records, archive)):
                    shipped += [records] if archive is None else [records, archive]
            elif archive is not None and self._guard(archive, partial(self._ship_archive, store, archive)):
                shipped.append(archive)
            if (events is not None and not self._stopping.is_set()
                    and self._guard(events, partial(self._ship_events, store, events))):
                shipped.append(events)
        finally:
            self.backlog = replace(self.backlog, in_flight=None)
        return shipped

    def _guard(self, path: Path, ship: Callable[[], bool]) -> bool:
        """A file that can never be shipped as it is stays in the spool, logged once; the others go on."""
        try:
            return ship()
        except (BadLocalFile, ShipConflict) as exc:
            self._mark_stuck(path, str(exc))
            return False
        except OSError as exc:  # the spool itself (permissions, I/O error): that file waits, the rest goes on
            if isinstance(exc, FileNotFoundError):
                return False
            self._mark_stuck(path, f"{type(exc).__name__}: {exc}")
            return False

    def _begin(self, path: Path) -> None:
        self.backlog = replace(self.backlog, in_flight=self._relative(path))

    def _ship_records(self, store: Home, path: Path, archive: Path | None) -> bool:
        try:
            src = open(path, "rb")  # noqa: SIM115 - held open (and locked) until the copy is removed
        except FileNotFoundError:
            return False  # archived by the pipeline meanwhile: the next scan finds the .gz
        with src:
            try:  # the pipeline's archive step takes the same lock: never both on one hour
                fcntl.flock(src.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log_event(log, logging.DEBUG, "ship_busy", None, f"{self._relative(path)} is being archived")
                return False
            if not path.exists():
                return False
            self._begin(path)
            stamp = _stamp(os.fstat(src.fileno()))
            content = src.read()
            if _stamp(os.fstat(src.fileno())) != stamp or len(content) != stamp[0]:
                return self._changed(path)
            if layout.in_tape(path):  # as it is: the pipeline makes its columns, off the capture host's CPU
                target, body, digest, content_type = path, content, digest_bytes(content), JSONL_TYPE
            else:
                target = layout.archive_of(path)
                body, digest = archive_verified((content,), target.name)
                content_type = GZIP_TYPE
            self._put_verified(store, self._relative(target), content, body, content_type, source=path,
                               content_digest=digest)
            if not self._remove(path, stamp):
                return self._changed(path)
            self._count(path, len(body))
        if archive is not None:
            self._drop_duplicate_archive(archive, digest)
        return True

    def _sweep_stale(self, now_ms: int) -> None:
        """At most once an hour: remove archives moved aside (`.{HH}.jsonl.gz.stale`,
        `_drop_duplicate_archive`) more than STALE_MAX_AGE_S ago, each reported."""
        if self._swept_ms is not None and now_ms - self._swept_ms < layout.HOUR_MS:
            return
        self._swept_ms = now_ms
        aside = (path for dataset in SHIPPED_DATASETS for path in (self.data_dir / dataset).glob("*/*/.*.stale"))
        for path in remove_stale(aside, STALE_MAX_AGE_S, now_ms / 1000):
            log_event(log, logging.WARNING, "ship_stale_removed", None,
                      f"removed {self._relative(path)}: moved aside more than {STALE_MAX_AGE_S // 86400} days ago",
                      path=self._relative(path))

    def _drop_duplicate_archive(self, archive: Path, shipped: Digest) -> None:
        """Both `{HH}.jsonl` and `{HH}.jsonl.gz` were in the spool (the pipeline's archive step died
        before its last unlink); the `.jsonl` was shipped. Remove the archive if it holds the same
        lines, else move it out of the layout (kept, never shipped over the good object)."""
        try:
            same = digest_archive(archive) == shipped
        except (BadLocalFile, FileNotFoundError):
            same = False
        if same:
            stamp = _stamp(archive.stat())
            _remove_unchanged(archive, stamp)
            return
        with contextlib.suppress(FileNotFoundError):
            aside = archive.with_name(f".{archive.name}.stale")
            os.replace(archive, aside)
            fsync_dir(archive.parent)
            log_event(log, logging.ERROR, "ship_stale_archive", None,
                      f"{self._relative(archive)} differs from the {archive.name.split('.')[0]}.jsonl shipped for the "
                      f"same hour; moved aside to {aside.name}", path=self._relative(archive))

    def _ship_archive(self, store: Home, path: Path) -> bool:
        """An hour the pipeline already compressed: shipped as it is, once it decompresses."""
        self._begin(path)
        try:
            stamp = _stamp(path.stat())
            digest = digest_archive(path)
            sha = sha256_file(path)
        except FileNotFoundError:
            return False
        if _stamp(path.stat()) != stamp:
            return self._changed(path)
        self._put_verified(store, self._relative(path), None, path, _archive_type(path.name),
                           source=path, content_digest=digest, body_sha=sha)
        if not self._remove(path, stamp):
            return self._changed(path)
        self._count(path, stamp[0])
        return True

    def _ship_events(self, store: Home, path: Path) -> bool:
        self._begin(path)
        try:
            with open(path, "rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                content = f.read()
                if _stamp(os.fstat(f.fileno())) != stamp or len(content) != stamp[0]:
                    return self._changed(path)
        except FileNotFoundError:
            return False
        self._put_verified(store, self._relative(path), content, content, JSONL_TYPE, source=path)
        if not self._remove(path, stamp):
            return self._changed(path)
        self._count(path, len(content))
        return True

    def _changed(self, path: Path) -> bool:
        log_event(log, logging.WARNING, "ship_changed", None,
                  f"{self._relative(path)} changed while it was shipped (a late line); kept, shipped again on "
                  "the next pass", path=self._relative(path))
        return False

    def _remove(self, path: Path, stamp: tuple[int, int]) -> bool:
        if self.gate is None:
            return _remove_unchanged(path, stamp)
        return self.gate.call_sync(partial(self.gate.remove_if_unchanged, path, stamp), WRITER_TIMEOUT_S)

    def _count(self, path: Path, object_bytes: int) -> None:
        self.backlog = replace(self.backlog, shipped_files=self.backlog.shipped_files + 1,
                               shipped_bytes=self.backlog.shipped_bytes + object_bytes,
                               last_shipped_ms=self._clock_ms())

    # -- metadata files (copied; the local ones stay) ---------------------------------------------------

    def _meta_files(self) -> list[Path]:
        directory = self.data_dir / layout.META_PREFIX
        return [p for p in lake_walk.list_dir(directory, lake_walk.log_unreadable(log))
                if not p.name.startswith(".") and p.is_file()]

    def _changed_meta(self) -> list[Path]:
        changed = []
        for path in self._meta_files():
            with contextlib.suppress(FileNotFoundError):
                if path not in self._stuck and self._meta_done.get(path) != _stamp(path.stat()):
                    changed.append(path)
        return changed

    def _ship_meta(self, store: Home, path: Path) -> bool:
        """Merge one changed metadata file into the store's copy; False if it must wait. Metadata is
        shared, not owned: the pipeline and every collector fetch the same instruments, so the object
        keeps the newest `fetched_at` (`.json`) and the union of every writer's lines (`.history.jsonl`,
        `instrument_meta.merged_history`), written only over the version read (`expect`)."""
        self._begin(path)
        try:
            with open(path, "rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                content = f.read()
            if len(content) != stamp[0] or _stamp(path.stat()) != stamp:
                return False  # being rewritten: the next pass takes it
        except FileNotFoundError:
            return False
        relative = self._relative(path)
        remote = store.stat(relative)
        existing = store.read(relative) if remote is not None else None
        if path.name.endswith(".jsonl"):
            body = instrument_meta.merged_history(existing or b"", content)
            ship = body != existing
        else:
            body = content
            ship = existing is None or instrument_meta.fetched_later(content, existing)
        if ship:
            metadata = {"source": relative, **({"collector-id": self.collector_id} if self.collector_id else {})}
            content_type = JSONL_TYPE if path.suffix == ".jsonl" else JSON_TYPE
            try:
                store.write_verified(relative, body, metadata, content_type,
                                     expect=remote.version if remote is not None else ABSENT)
            except Changed:
                return False  # another writer's copy landed meanwhile: merged with it on the next pass
            self._count(path, len(body))
        self._meta_done[path] = stamp
        self.backlog = replace(self.backlog, in_flight=None)
        return True

    # -- put + verify -----------------------------------------------------------------------------------

    def _put_verified(self, store: Home, relative: str, content: bytes | None, body: bytes | Path,
                      content_type: str, *, source: Path, content_digest: Digest | None = None,
                      body_sha: str | None = None) -> None:
        """Make `relative` hold `content` (and whatever the object already held that the spool lacks),
        verified by reading it back. `content` None: the decompressed `body` file (read only if needed)."""
        archived = layout.is_archive(relative)
        if content_digest is None:
            content_digest = digest_bytes(content if content is not None else b"")
        if body_sha is None:
            body_sha = hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else sha256_file(body)
        remote = store.stat(relative)
        if remote is not None and remote.metadata.get("collector-id", "") != self.collector_id:
            raise self._conflict(relative, remote)
        if remote is not None:
            same = remote.metadata.get("content-sha256") == content_digest.sha256 and "sha256" in remote.metadata
            if same and self._verified(store, relative, remote.metadata["sha256"]):
                return  # a pass that died (or failed to verify) before removing the spool copy
            if not same:  # (the same content that reads back wrong is simply uploaded again)
                parts = self._merge(store, relative, remote, content, body, archived)
                if parts is None:
                    return
                if archived:
                    body, content_digest = archive_verified(parts, Path(relative).name)
                else:
                    body = b"".join(parts)  # an events file or a tape hour, shipped as they are
                    content_digest = digest_bytes(body)
                body_sha = hashlib.sha256(body).hexdigest()
        metadata = {"content-sha256": content_digest.sha256, "lines": str(content_digest.lines),
                    "bytes": str(content_digest.size), "source": self._relative(source)}
        if self.collector_id:
            metadata["collector-id"] = self.collector_id
        try:
            store.write_verified(relative, body, metadata, content_type, sha256_hex=body_sha,
                                 expect=remote.version if remote is not None else ABSENT)
        except VerifyFailed as exc:
            log_event(log, logging.ERROR, "ship_verify_failed", None,
                      f"{exc}; the spool copy is kept and the upload retried", path=relative)
            raise

    def _merge(self, store: Home, relative: str, remote: Entry, content: bytes | None,
               body: bytes | Path, archived: bool) -> list[bytes] | None:
        """The object already holds other content than the spool file: the parts of what it must hold so
        that no line of either is lost, or None when it already holds every line of the spool file."""
        local = content if content is not None else unarchive(Path(body).read_bytes(), Path(body).name, str(body))
        raw = store.read(relative)
        if raw is None:
            raise StoreError(f"{self.url.key(relative)} was removed while this pass merged into it")
        recorded = remote.metadata.get("sha256")
        if recorded and hashlib.sha256(raw).hexdigest() != recorded:
            raise StoreError(f"GET {self.url.key(relative)} read back other bytes than its recorded sha256")
        try:
            existing = unarchive(raw, relative, f"the object {self.url.key(relative)}") if archived else raw
        except BadLocalFile as exc:  # never ours (gzips are verified before upload): nothing to keep of it
            log_event(log, logging.ERROR, "ship_remote_damaged", None,
                      f"{exc}; replacing it with the spool's verified copy", path=relative)
            existing = b""
        if existing and (same_at(existing, 0, local) or same_at(existing, len(existing) - len(local), local)):
            return None  # just read back: the object already holds every line of the spool copy
        parts = [local] if same_at(local, 0, existing) else [existing, local]
        if existing:
            how = "replaced by the longer spool copy" if len(parts) == 1 else "the spool copy appended"
            before, after = count_lines(existing), sum(count_lines(p) for p in parts)
            log_event(log, logging.WARNING, "ship_merge", None,
                      f"{self.url.key(relative)} already held {before} lines: {how} ({after} lines)", path=relative,
                      lines_before=before, lines_after=after)
        return parts

    def _conflict(self, relative: str, remote: Entry) -> ShipConflict:
        theirs = remote.metadata.get("collector-id") or "a collector without --collector-id"
        ours = self.collector_id or "no --collector-id"
        return ShipConflict(f"{self.url.key(relative)} was written by {theirs} (this one has {ours}): give each "
                            "replica its own --lake-url prefix")

    def _verified(self, store: Home, relative: str, sha256_hex: str) -> bool:
        """GET the whole object: True if its bytes and its `sha256` metadata are `sha256_hex`."""
        got, size, metadata = store.read_digest(relative)
        if got == sha256_hex and metadata.get("sha256") == sha256_hex:
            return True
        log_event(log, logging.ERROR, "ship_verify_failed", None,
                  f"{self.url.key(relative)} read back with sha256 {got[:16]}… ({size} bytes), expected "
                  f"{sha256_hex[:16]}…; the spool copy is kept and the upload retried", path=relative)
        return False

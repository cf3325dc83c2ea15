"""Lake writer: append-only hourly JSONL record and event files (docs/CONTRACT.md §1–§4).

Records go to the UTC hour of their exchange event time, events to the hour of their local time,
tape lines (`--tape`, `l2_lake.book.tape`) to the hour the tape recorder names (section 7).
Guarantees, each tested:
- one `os.write` per line on an O_APPEND descriptor, so a killed process leaves at most one torn
  line, and a failed or short write (disk full) is truncated back, so no torn line is left at all;
- every file is repaired (cut back to its last complete line, logged as a `repair` event) before
  this process first appends to it, and at start every record and event file of the last 48 h is
  (`repair_recent`), so no closed hour keeps a torn tail from a crash;
- never two records with the same `timestamp_utc` per instrument, also across restarts: a record is
  written only when its event time is later than the last record already in the lake; no record
  stamped more than a day after the local clock is written or believed;
- files are fsynced (with their directory when created) on hour close and on `close()`;
- every file held open carries a shared `flock`, so the archive step (which takes it exclusively)
  never archives an hour a live collector still holds, whatever either host's clock says. If the
  file is locked exclusively at that moment (being archived or shipped), the line is written anyway:
  those steps remove a file only if it is unchanged since they read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from l2_lake.format import layout
from l2_lake.format.hour_content import open_content
from l2_lake.format.record import build_event, encode_line, format_ts_ms, parse_ts_ms
from l2_lake.logs import log_event
from l2_lake.store import lake_walk
from l2_lake.store.files import fsync_dir

log = logging.getLogger("l2_lake.store.hour_files")
_TAIL_CHUNK = 1 << 16
MAX_FUTURE_MS = 86_400_000  # no record (and no dedup high-water mark) beyond local now + 1 day
REPAIR_WINDOW_HOURS = 48


_PATH_OF = {"records": layout.records_path, "events": layout.events_path, "tape": layout.tape_path}


@dataclass(slots=True)
class _OpenFile:
    hour: datetime
    path: Path
    fd: int
    size: int


def repair_torn_tail(path: Path) -> int:
    """Truncate `path` to its last complete line; returns the number of bytes dropped."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def _complete_lines_newest_first(path: Path) -> list[bytes]:
    """The complete lines of the file's last stretch (whole file for an archive), newest first."""
    if layout.is_archive(path):
        with open_content(path) as f:
            lines = f.read().split(b"\n")
    else:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 4 * _TAIL_CHUNK))
            lines = f.read().split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is torn or empty
    return [line for line in reversed(complete) if line]


def last_record_ts_ms(data_dir: Path, inst_id: str, not_after_ms: int) -> int | None:
    """Event time of the newest record in the lake for `inst_id` (records or archive files).

    Records stamped after `not_after_ms` are not believed (a garbage far-future `ts` must not become
    the dedup high-water mark and silence every later record), so neither are their hours.
    """
    newest_hour = layout.hour_floor(not_after_ms)
    files = [f for f in lake_walk.iter_hour_files(data_dir, inst_id, until=newest_hour)
             if f.kind in ("records", "archive")]
    for hour_file in sorted(files, key=lambda f: f.hour, reverse=True):
        for line in _complete_lines_newest_first(hour_file.path):
            try:
                ts_ms = parse_ts_ms(orjson.loads(line)["timestamp_utc"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if ts_ms <= not_after_ms:
                return ts_ms
    return None


def repair_recent_hours(data_dir: Path, since: datetime) -> list[tuple[layout.HourFile, int]]:
    """Cut the torn tail of every record and event file of an hour at or after `since`.

    A crash can leave a half line in an hour the restarted collector never appends to again (the
    hour rolled over meanwhile); without this that hour's `schema_valid` would fail forever.
    Returns (file, bytes dropped) for each file that was repaired.
    """
    repaired = []
    hour_files = (hour_file for prefix in (layout.RAW_PREFIX, layout.TAPE_PREFIX)
                  for hour_file in lake_walk.iter_hour_files(data_dir, after=since - layout.HOUR, prefix=prefix))
    for hour_file in hour_files:
        if hour_file.kind in ("records", "events"):
            dropped = repair_torn_tail(hour_file.path)
            if dropped:
                repaired.append((hour_file, dropped))
    return repaired


class LakeWriter:
    """Appends records and events to the lake; implements the engine's `Sink`."""

    def __init__(self, data_dir: Path, clock_ms: Any) -> None:
        self.data_dir = Path(data_dir)
        self._clock_ms = clock_ms
        self._files: dict[tuple[str, str], _OpenFile] = {}
        self._last_ts: dict[str, int | None] = {}
        self.records_written: Counter[str] = Counter()
        self.duplicates_skipped: Counter[str] = Counter()
        self.write_failures = 0
        self.write_lags_ms: dict[str, list[int]] = {}  # event time → on disk, drained by the status line
        self._failing_since_ms: int | None = None
        self._lost_lines: Counter[str] = Counter()

    # -- Sink ----------------------------------------------------------------------------------

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        if ts_ms > self._clock_ms() + MAX_FUTURE_MS:
            log_event(log, logging.ERROR, "bad_ts", inst_id, f"refused a record stamped {ts_ms}, more than a day "
                      "after the local clock: check the host clock (NTP)")
            return
        last = self.last_ts(inst_id)
        if last is not None and ts_ms <= last:
            self.duplicates_skipped[inst_id] += 1
            return
        if self._write(inst_id, "records", layout.hour_floor(ts_ms), encode_line(record)):
            self._last_ts[inst_id] = ts_ms
            self.records_written[inst_id] += 1
            self.write_lags_ms.setdefault(inst_id, []).append(self._clock_ms() - ts_ms)

    def event(self, inst_id: str, event_type: str, *, at_ms: int | None = None, **details: Any) -> None:
        """One sidecar line, stamped `at_ms` (local time the event happened; default now)."""
        now = self._clock_ms() if at_ms is None else at_ms
        self._write(inst_id, "events", layout.hour_floor(now), encode_line(build_event(
            inst_id, event_type, now, **details)))

    def tape(self, inst_id: str, hour: datetime, lines: bytes) -> None:
        """Whole lines of the instrument's tape (`l2_lake.book.tape`) for the tape file of `hour`, in one
        write (a failed or short write is truncated back: all of them or none)."""
        self._write(inst_id, "tape", hour, lines)

    # -- lifecycle -----------------------------------------------------------------------------

    def last_ts(self, inst_id: str) -> int | None:
        """The dedup high-water mark: newest record event time, never beyond now + 1 day."""
        if inst_id not in self._last_ts:
            self._last_ts[inst_id] = last_record_ts_ms(self.data_dir, inst_id, self._clock_ms() + MAX_FUTURE_MS)
        return self._last_ts[inst_id]

    def repair_recent(self, inst_ids: Iterable[str], hours: int = REPAIR_WINDOW_HOURS) -> int:
        """At start: cut torn tails left by a crash in the last `hours` (a `repair` event each)."""
        since = layout.hour_floor(self._clock_ms()) - hours * layout.HOUR
        repaired = repair_recent_hours(self.data_dir, since)
        wanted = set(inst_ids)
        for hour_file, dropped in repaired:
            self._report_repair(hour_file.inst_id, hour_file.path, dropped, as_event=hour_file.inst_id in wanted)
        return len(repaired)

    def close(self) -> None:
        for key in list(self._files):
            self._close(key)

    # -- internals -----------------------------------------------------------------------------

    def _write(self, inst_id: str, kind: str, hour: datetime, line: bytes) -> bool:
        try:
            f = self._file(inst_id, kind, hour)
            self._append(f, line)
        except OSError as exc:
            self.write_failures += 1
            self._lost_lines[inst_id] += 1
            if self._failing_since_ms is None:
                self._failing_since_ms = self._clock_ms()
                log_event(log, logging.ERROR, "write_error", inst_id,
                          f"cannot write to the lake ({exc}); lines are dropped until writes succeed, "
                          "books stay in sync. Free disk space or fix permissions under "
                          f"{self.data_dir}", kind=kind, error=exc.strerror or str(exc))
            return False
        if self._failing_since_ms is not None:
            since, self._failing_since_ms = self._failing_since_ms, None
            lost, self._lost_lines = self._lost_lines, Counter()
            log_event(log, logging.WARNING, "write_recovered", inst_id,
                      f"writes to the lake succeed again after {sum(lost.values())} lost lines")
            for lost_inst, count in lost.items():  # the sidecar must say why these records are missing
                self.event(lost_inst, "write_error", lost_lines=count, since=format_ts_ms(since))
        return True

    def _append(self, f: _OpenFile, line: bytes) -> None:
        written = 0
        try:
            while written < len(line):  # a short write is retried: a full disk then raises ENOSPC
                written += os.write(f.fd, line[written:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(f.fd, f.size)  # never leave a torn line behind
            raise
        f.size += written

    def _file(self, inst_id: str, kind: str, hour: datetime) -> _OpenFile:
        key = (inst_id, kind)
        current = self._files.get(key)
        if current is not None:
            if current.hour == hour:
                return current
            self._close(key)  # hour rolled over (or the local clock jumped)
        path = _PATH_OF[kind](self.data_dir, inst_id, hour)
        created = not path.exists()
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        dropped = 0 if created else repair_torn_tail(path)
        if created:
            fsync_dir(path.parent)
        opened = self._files[key] = _OpenFile(hour, path, fd, os.fstat(fd).st_size)
        if dropped:
            self._report_repair(inst_id, path, dropped)
        return opened

    def _report_repair(self, inst_id: str, path: Path, dropped: int, *, as_event: bool = True) -> None:
        relative = path.relative_to(self.data_dir)
        log_event(log, logging.WARNING, "repair", inst_id,
                  f"dropped a torn last line of {dropped} bytes from {relative} (left by a crash)")
        if as_event:
            self.event(inst_id, "repair", path=str(relative), dropped_bytes=dropped)

    def open_files(self) -> dict[tuple[str, str], _OpenFile]:
        """(writer thread) (instId, kind) → the file held open for it now (a copy of the mapping)."""
        return dict(self._files)

    def close_file(self, key: tuple[str, str]) -> None:
        """(writer thread) fsync and close the file held for `key` (instId, kind); the next line reopens it."""
        self._close(key)

    def _close(self, key: tuple[str, str]) -> None:
        f = self._files.pop(key)
        try:
            os.fsync(f.fd)
        finally:
            os.close(f.fd)

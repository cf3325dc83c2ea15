"""Lake writer: append-only hourly JSONL record and event files (DESIGN.md §2–§4).

Records go to the UTC hour of their exchange event time, events to the hour of their local time.
Guarantees, each tested:
- one `os.write` per line on an O_APPEND descriptor, so a killed process leaves at most one torn
  line, and a failed or short write (disk full) is truncated back, so no torn line is left at all;
- every file is repaired (cut back to its last complete line, logged as a `repair` event) before
  this process first appends to it;
- never two records with the same `timestamp_utc` per instrument, also across restarts: a record is
  written only when its event time is later than the last record already in the lake;
- files are fsynced (with their directory when created) on hour close and on `close()`.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from collector import layout
from collector.logs import log_event
from collector.record import build_event, encode_line, format_ts_ms, parse_ts_ms

log = logging.getLogger("collector.store")
_TAIL_CHUNK = 1 << 16


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


def _last_complete_line(path: Path) -> bytes | None:
    if path.name.endswith(layout.ARCHIVE_SUFFIX):
        last = None
        with gzip.open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    last = line
        return last
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 4 * _TAIL_CHUNK))
        lines = f.read().split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is torn or empty
    return complete[-1] + b"\n" if complete and complete[-1] else None


def last_record_ts_ms(data_dir: Path, inst_id: str) -> int | None:
    """Event time of the newest record in the lake for `inst_id` (records or archive files)."""
    files = [f for f in layout.iter_hour_files(data_dir, inst_id) if f.kind in ("records", "archive")]
    for hour_file in sorted(files, key=lambda f: f.hour, reverse=True):
        line = _last_complete_line(hour_file.path)
        if line is None:
            continue
        try:
            return parse_ts_ms(orjson.loads(line)["timestamp_utc"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return None


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
        last = self.last_ts(inst_id)
        if last is not None and ts_ms <= last:
            self.duplicates_skipped[inst_id] += 1
            return
        if self._write(inst_id, "records", layout.hour_floor(ts_ms), encode_line(record)):
            self._last_ts[inst_id] = ts_ms
            self.records_written[inst_id] += 1
            self.write_lags_ms.setdefault(inst_id, []).append(self._clock_ms() - ts_ms)

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        now = self._clock_ms()
        self._write(inst_id, "events", layout.hour_floor(now), encode_line(build_event(
            inst_id, event_type, now, **details)))

    # -- lifecycle -----------------------------------------------------------------------------

    def last_ts(self, inst_id: str) -> int | None:
        if inst_id not in self._last_ts:
            self._last_ts[inst_id] = last_record_ts_ms(self.data_dir, inst_id)
        return self._last_ts[inst_id]

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
        path_of = layout.records_path if kind == "records" else layout.events_path
        path = path_of(self.data_dir, inst_id, hour)
        created = not path.exists()
        dropped = 0
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            dropped = repair_torn_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(path.parent)
        opened = self._files[key] = _OpenFile(hour, path, fd, os.fstat(fd).st_size)
        if dropped:
            log_event(log, logging.WARNING, "repair", inst_id,
                      f"dropped a torn last line of {dropped} bytes from {path} (left by a crash)")
            self.event(inst_id, "repair", path=str(path.relative_to(self.data_dir)), dropped_bytes=dropped)
        return opened

    def _close(self, key: tuple[str, str]) -> None:
        f = self._files.pop(key)
        try:
            os.fsync(f.fd)
        finally:
            os.close(f.fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

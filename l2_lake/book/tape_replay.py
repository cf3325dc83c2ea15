"""Replaying the tape (`l2_lake.book.tape`): each instrument's taped engine inputs through a fresh
`InstrumentSync`, which rebuilds the book after every message exactly as the live engine had it.

Records come out at the live cadence (each `tick` line writes the record the live tick wrote, byte
for byte, and gap / checksum markers come out where the live engine wrote them), or at any cadence
and depth on exchange time (`cadence_ms`: before the first message at or after each boundary, a
record of the book if it changed since the last one, as the live cadence decides). The engine only
trusts a book it synced itself (a WS snapshot, or a REST snapshot aligned with the buffered
updates), so a stretch the tape marks as lost, or a hole in the tape (lines a full disk dropped),
never yields a record: replay never bridges a gap.

Every hour file begins with the live engine's state at that moment (`book` line): replay takes it,
so an hour replays on its own and a replay of many hours starts each hour from the live state.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from l2_lake.book.engine import InstrumentSync, Sink
from l2_lake.book.inputs import message_from
from l2_lake.format import layout
from l2_lake.format.hour_content import open_content
from l2_lake.format.tape_lines import FRAME_AT, LINE_KINDS, WS_PREFIX
from l2_lake.logs import log_event
from l2_lake.store.hour_files import LakeWriter
from l2_lake.venues.messages import BadFrame, BookMessage
from l2_lake.venues.registry import DEFAULT_VENUE

TAPE_FILE_SUFFIXES = (layout.RECORDS_SUFFIX, layout.TAPE_ARCHIVE_SUFFIX)

log = logging.getLogger("l2_lake.book.tape_replay")

OnMessage = Callable[[InstrumentSync, BookMessage], None]


@dataclass
class TapeStats:
    lines: int = 0
    frames: int = 0
    messages: int = 0
    bad_lines: int = 0
    hours: int = 0
    records: int = 0


class TapeReplayer:
    """One instrument's tape lines, in order, through a fresh engine writing to `sink`."""

    def __init__(self, inst_id: str, depth: int, sink: Sink, *, cadence_ms: int | None = None,
                 on_message: OnMessage | None = None, clock: list[int] | None = None) -> None:
        self.sync = InstrumentSync(layout.validate_inst_id(inst_id), depth, sink)
        self.sink = sink
        self.cadence_ms = cadence_ms
        self.on_message = on_message
        self.stats = TapeStats()
        self._next_tick: int | None = None
        self._clock = clock if clock is not None else [0]  # the line's time, for the sink's event stamps

    def feed(self, line: bytes) -> None:
        self.stats.lines += 1
        if line.startswith(WS_PREFIX):  # the hot case: slice the frame out, parse it once
            at, end = line.find(FRAME_AT, len(WS_PREFIX)), line.rfind(b"}")
            try:
                self._clock[0] = int(line[len(WS_PREFIX):at])
            except ValueError:
                at = -1
            if at < 0 or end < at:
                self._bad(line, "not a ws line in the tape's form (receive time, then the frame)")
                return
            self._frame(line[at + len(FRAME_AT):end], self._clock[0])
            return
        try:
            obj = orjson.loads(line)
            kind, self._clock[0] = obj["t"], obj["r"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._bad(line, "not a tape line")
            return
        try:
            self._other(kind, obj)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a damaged line: counted, replay goes on
            self._bad(line, f"a {kind!r} line without what it needs ({type(exc).__name__}: {exc})")

    def _frame(self, frame: bytes, recv_ms: int) -> None:
        self.stats.frames += 1
        try:
            decoded = DEFAULT_VENUE.decode(frame)
        except BadFrame as exc:
            self._bad(frame, str(exc))
            return
        sync = self.sync
        for msg in decoded if isinstance(decoded, list) else ():
            if msg.inst_id != sync.inst_id:
                continue
            self._advance(msg.ts_ms)
            self.stats.messages += 1
            sync.on_book(msg, recv_ms)  # what to do next (resubscribe, REST) is on the tape already
            if self.on_message is not None:
                self.on_message(sync, msg)

    def _other(self, kind: str, obj: dict[str, Any]) -> None:
        sync = self.sync
        if kind == "book":
            self.stats.hours += 1
            sync.restore(obj)
        elif kind == "tick":
            if self.cadence_ms is None:
                self._record()
        elif kind == "rest":
            msg, recv_ms = message_from(sync.inst_id, obj)
            sync.on_rest_snapshot(msg, recv_ms)
        elif kind == "sub":
            sync.subscribed()
        elif kind == "drop":
            sync.drop(obj.get("reason", "tape"))
        elif kind == "rest_failed":
            sync.rest_failed()
        elif kind not in LINE_KINDS or kind == "ws":  # `lost`/`synced`: the engine finds those by itself
            self._bad(orjson.dumps(obj), f"unknown line kind {kind!r}")

    def _advance(self, ts_ms: int) -> None:
        if self.cadence_ms is None:
            return
        if self._next_tick is None:
            self._next_tick = (ts_ms // self.cadence_ms + 1) * self.cadence_ms
        elif ts_ms >= self._next_tick:
            self._record()
            self._next_tick = (ts_ms // self.cadence_ms + 1) * self.cadence_ms

    def _record(self) -> None:
        record = self.sync.snapshot_record()
        if record is not None:
            self.sink.record(self.sync.inst_id, self.sync.ts_ms, record)

    def finish(self) -> TapeStats:
        """The last cadence boundary's record (resampling only: live ticks are all on the tape)."""
        if self.cadence_ms is not None:
            self._record()
        return self.stats

    def _bad(self, line: bytes, why: str) -> None:
        self.stats.bad_lines += 1
        if self.stats.bad_lines == 1:
            log_event(log, logging.WARNING, "bad_tape_line", self.sync.inst_id,
                      f"tape line {self.stats.lines} skipped ({why}): {line[:80]!r}; further ones are only counted")


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a tape hour file (`.jsonl`, or `.parquet` once archived), without newlines."""
    with open_content(path) as f:
        for line in f:
            if line.strip():
                yield line.rstrip(b"\r\n")


def tape_files(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """instId → its tape hour files in hour order, from files and directories (searched for hour files);
    ValueError naming a file that is not a tape hour file."""
    found: dict[str, dict[Any, Path]] = defaultdict(dict)
    for given in paths:
        candidates = (sorted(p for p in Path(given).rglob("*") if p.name.endswith(TAPE_FILE_SUFFIXES))
                      if Path(given).is_dir() else [Path(given)])
        for path in candidates:
            parsed = layout.parse_hour_file(path)
            if parsed is None or parsed.kind == "events":
                raise ValueError(f"{path} is not a tape hour file (raw/okx/l2_tape/{{instId}}/{{YYYY-MM-DD}}/{{HH}}"
                                 ".jsonl or .parquet)")
            found[parsed.inst_id].setdefault(parsed.hour, path)  # a .jsonl and its archive: the first seen
    return {inst_id: [hours[h] for h in sorted(hours)] for inst_id, hours in sorted(found.items())}


def replay_tape(paths: Iterable[Path], data_dir: Path, *, cadence_s: float | None, depth: int = 400
                ) -> dict[str, TapeStats]:
    """Rebuild records from tape files into the lake at `data_dir`: at the live cadence (`cadence_s`
    None) or at `cadence_s` on exchange time, `depth` levels per side. Stats per instrument."""
    clock = [0]
    store = LakeWriter(data_dir, clock_ms=lambda: clock[0])
    cadence_ms = None if cadence_s is None else max(1, round(cadence_s * 1000))
    out = {}
    try:
        for inst_id, files in tape_files(paths).items():
            replayer = TapeReplayer(inst_id, depth, store, cadence_ms=cadence_ms, clock=clock)
            for path in files:
                for line in read_lines(path):
                    replayer.feed(line)
            out[inst_id] = replayer.finish()
            out[inst_id].records = store.records_written[inst_id]
    finally:
        store.close()
    return out

"""Figures of one hour of the full-resolution tape (`l2_lake.book.tape`), from one replay of it through
a fresh engine (`l2_lake.book.tape_replay.TapeReplayer`, into a sink that only counts), no Dagster.

These are `book_tape`'s partition metadata and everything its checks decide on
(`l2_lake.quality.verdicts.evaluate_tape`). Counting rules:

- `lines`: the non-blank lines; `raw_bytes` their bytes (decompressed), `bytes` the file's size;
  `ws_frames` the `ws` lines, `messages` the book messages of the instrument in them;
  `trusted_messages` those the engine applied to a book it trusts (in sync after the message, at
  its seqId); `drops` / `ticks` the `drop` / `tick` lines; `replayed_records` the records the replay
  wrote at the live cadence (the live records of the tape's hour, gap and checksum markers included).
- `gaps`, `checksum_failures`, `engine_resyncs`: the engine's own counters after the replay (it
  finds gaps by itself and never bridges them); `resyncs` the `lost` markers, `resyncs_by_reason`
  them by reason.
- `trusted_seconds`: the time the engine trusted its book, from each sync to the next loss (or to
  the last line of the file), clipped to the hour, on exchange time: a message's time is its `ts`;
  any other line's is its local time `r` shifted by the latest message's `ts - r` (the tape's clock
  offset). A file that begins with the book in sync is trusted from the hour's start.
  `coverage_pct` = trusted_seconds ÷ 3600 × 100; `message_coverage_pct` = trusted_messages ÷
  messages × 100 (100 without a message); `messages_per_second` = messages ÷ the seconds from the
  first message's ts to the last's.
- schema problems (`schema_problems` is their sum): `unparsable_lines` (not a JSON object with a
  kind `t` and a local time `r`), `unknown_kinds`, `bad_frames` (`ws` lines whose frame does not
  decode as a books push, or that have no receive time), `invalid_lines` (lines of a known kind
  the engine cannot take: a `book` or `rest` line missing fields), `first_line_not_book` (1 when
  the file does not begin with a `book` line) and `torn_tail` (1 when its last line has no newline).

Given a `figure` drawer (`l2_lake.pictures.tape_figure.tape_hour_figure`), the same replay also keeps
every message's best bid and ask (`TopOfBook`) for the hour's picture, drawn once and kept as PNG bytes
in `figure`. Statistics never import the pictures: the caller hands the drawer down.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from l2_lake.book.engine import InstrumentSync
from l2_lake.book.tape_replay import TapeReplayer, TapeStats
from l2_lake.format import layout
from l2_lake.format.tape_lines import LINE_KINDS, WS_PREFIX
from l2_lake.quality.hour_stats import MAX_EXAMPLES, scan_source
from l2_lake.venues.messages import BookMessage

SCHEMA_PROBLEMS = ("unparsable_lines", "unknown_kinds", "bad_frames", "invalid_lines", "first_line_not_book",
                   "torn_tail")
COUNTING_DEPTH = 1  # the figures do not depend on the records' depth: the cheapest records to build


class CountingSink:
    """An engine sink that only counts the records it is given (the engine counts its events itself)."""

    def __init__(self) -> None:
        self.records = 0

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        self.records += 1

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        pass


def applied_to_trusted_book(sync: InstrumentSync, msg: BookMessage) -> bool:
    """Whether the engine, just after taking `msg`, trusts its book at that message (in sync, at its seqId)."""
    return sync.in_sync and sync.seq_id == msg.seq_id


TapeFigureDrawer = Callable[["TopOfBook", str, datetime], bytes]  # a tape hour's picture as PNG


@dataclass
class TopOfBook:
    """Every book message of a replay as the hour's picture needs it: its exchange time, whether the
    engine trusted its book after it (`applied_to_trusted_book`), and the best bid and ask then
    (NaN when not trusted, or that side is empty)."""

    ts_ms: list[int] = field(default_factory=list)
    trusted: list[bool] = field(default_factory=list)
    bid: list[float] = field(default_factory=list)
    ask: list[float] = field(default_factory=list)

    def add(self, sync: InstrumentSync, msg: BookMessage) -> None:
        trusted = applied_to_trusted_book(sync, msg)
        self.ts_ms.append(msg.ts_ms)
        self.trusted.append(trusted)
        for side, prices in ((sync.book.bids, self.bid), (sync.book.asks, self.ask)):
            best = side.top(1) if trusted else ()
            prices.append(float(best[0][0]) if best else math.nan)


@dataclass
class TrustClock:
    """The stretches of an hour in which the engine trusted its book, on exchange time (see the module
    docstring): times only move forward and stay inside [start_ms, start_ms + 1 h]."""

    start_ms: int
    now_ms: int = 0
    offset_ms: int | None = None  # exchange time minus local time, from the latest message
    since_ms: int | None = None  # the current trusted stretch's start
    trusted_ms: int = 0

    def __post_init__(self) -> None:
        self.now_ms = self.start_ms

    def at(self, exchange_ms: int) -> None:
        self.now_ms = min(max(self.now_ms, exchange_ms), self.start_ms + layout.HOUR_MS)

    def message(self, ts_ms: int, recv_ms: int) -> None:
        self.offset_ms = ts_ms - recv_ms
        self.at(ts_ms)

    def local(self, r_ms: int) -> None:
        """A line stamped only with the local time `r_ms`."""
        if self.offset_ms is not None:
            self.at(r_ms + self.offset_ms)

    def trusted(self, in_sync: bool) -> None:
        if in_sync and self.since_ms is None:
            self.since_ms = self.now_ms
        elif not in_sync and self.since_ms is not None:
            self.trusted_ms += self.now_ms - self.since_ms
            self.since_ms = None


@dataclass
class TapeScan:
    """What one replay of a tape hour found."""

    lines: int = 0
    raw_bytes: int = 0
    sha256: str = ""
    replay: TapeStats = field(default_factory=TapeStats)  # frames, messages, records (of the live cadence)
    trusted_messages: int = 0
    gaps: int = 0
    checksum_failures: int = 0
    engine_resyncs: int = 0
    lost: Counter[str] = field(default_factory=Counter)  # `lost` markers by reason
    drops: int = 0
    ticks: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    trusted_ms: int = 0
    problems: Counter[str] = field(default_factory=Counter)  # schema problem (`SCHEMA_PROBLEMS`) → count
    examples: list[str] = field(default_factory=list)
    top: TopOfBook | None = None  # kept only when asked for (`scan_tape(top=True)`)

    @property
    def schema_problems(self) -> int:
        return sum(self.problems.values())

    def problem(self, name: str, example: str) -> None:
        self.problems[name] += 1
        self.note(example)

    def problem_counts(self) -> dict[str, int]:
        """Every kind of schema problem (`SCHEMA_PROBLEMS`) → how many were found (0 included)."""
        return {name: self.problems[name] for name in SCHEMA_PROBLEMS}

    def note(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)


class TapeScanner:
    """Feeds one tape hour's lines to a `TapeReplayer` and keeps its figures in `scan`."""

    def __init__(self, inst_id: str, hour: datetime, top: bool = False) -> None:
        self.scan = TapeScan(top=TopOfBook() if top else None)
        self.sink = CountingSink()
        self.clock = [0]  # the replayer's: the local time `r` of the line being fed
        self.trust = TrustClock(int(hour.timestamp() * 1000))
        self.replayer = TapeReplayer(inst_id, COUNTING_DEPTH, self.sink, on_message=self._message, clock=self.clock)
        self._digest = hashlib.sha256()

    def _message(self, sync: InstrumentSync, msg: BookMessage) -> None:
        scan = self.scan
        scan.first_ts_ms = msg.ts_ms if scan.first_ts_ms is None else scan.first_ts_ms
        scan.last_ts_ms = msg.ts_ms
        if applied_to_trusted_book(sync, msg):
            scan.trusted_messages += 1
        if scan.top is not None:
            scan.top.add(sync, msg)
        self.trust.message(msg.ts_ms, self.clock[0])
        self.trust.trusted(sync.in_sync)

    def _kind(self, n: int, line: bytes) -> tuple[str | None, dict[str, Any] | None]:
        """The line's kind and, for other lines than frames, its fields; (None, None) when it is not
        a tape line of a known kind (counted here)."""
        if line.startswith(WS_PREFIX):
            return "ws", None
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("t"), str) or not isinstance(obj.get("r"), int):
            self.scan.problem("unparsable_lines",
                              f"line {n}: not a tape line (a JSON object with t and r): {line[:60]!r}")
            return None, None
        kind = obj["t"]
        if kind not in LINE_KINDS or kind == "ws":  # a frame's line is written only one way
            self.scan.problem("unknown_kinds", f"line {n}: unknown line kind {kind!r}" if kind != "ws" else
                              f"line {n}: a ws line not in the tape's form: {line[:60]!r}")
            return None, None
        return kind, obj

    def feed(self, n: int, raw: bytes) -> None:
        """Line `n` of the file, with its newline (none on a torn last line)."""
        scan = self.scan
        scan.raw_bytes += len(raw)
        self._digest.update(raw)
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            return
        scan.lines += 1
        if not raw.endswith(b"\n"):
            scan.problem("torn_tail", f"line {n}: the last line has no newline (torn write): {line[:60]!r}")
        kind, obj = self._kind(n, line)
        if scan.lines == 1 and kind != "book":
            scan.problem("first_line_not_book", f"line {n}: the file does not begin with a book line")
        if kind is None:
            return
        if obj is not None and not (kind == "book" and scan.lines == 1):  # the first book line: the hour's start
            self.trust.local(obj["r"])
        bad = self.replayer.stats.bad_lines
        self.replayer.feed(line)  # a line it cannot take is counted in its bad_lines, and skipped
        if self.replayer.stats.bad_lines > bad:
            if kind == "ws":
                scan.problem("bad_frames", f"line {n}: a ws line whose frame does not decode: {line[:60]!r}")
            else:
                scan.problem("invalid_lines", f"line {n}: a {kind} line the engine cannot take: {line[:60]!r}")
            return
        if kind == "lost":
            scan.lost[str(obj.get("reason")) if obj else "?"] += 1
        scan.drops += kind == "drop"
        scan.ticks += kind == "tick"
        self.trust.trusted(self.replayer.sync.in_sync)

    def finish(self) -> TapeScan:
        scan, sync = self.scan, self.replayer.sync
        self.trust.trusted(False)  # the last stretch ends with the file
        scan.replay = self.replayer.finish()
        scan.replay.records = self.sink.records
        scan.gaps, scan.checksum_failures, scan.engine_resyncs = sync.gaps, sync.checksum_failures, sync.resyncs
        scan.trusted_ms = self.trust.trusted_ms
        scan.sha256 = self._digest.hexdigest()
        return scan


def scan_tape(lines: Iterable[bytes], inst_id: str, hour: datetime, top: bool = False) -> TapeScan:
    """One replay of a tape hour file's lines (with their newlines); `top`: keep `TopOfBook` too."""
    scanner = TapeScanner(inst_id, hour, top)
    for n, raw in enumerate(lines, 1):
        scanner.feed(n, raw)
    return scanner.finish()


@dataclass
class TapeHourStats:
    """Everything the pipeline knows about one instrument-hour of the tape."""

    inst_id: str
    hour: datetime
    source: Path | None
    source_kind: str  # "records" (the `.jsonl`) | "archive" | "none"
    source_bytes: int
    scan: TapeScan
    source_label: str = ""  # where `source` is for users when it was read from a staged copy (an s3:// URL)
    figure: bytes | None = None  # the hour's picture as PNG (`compute_tape_stats(figure=drawer)`)

    @property
    def trusted_seconds(self) -> float:
        return self.scan.trusted_ms / 1000

    @property
    def coverage_pct(self) -> float:
        return 100.0 * self.scan.trusted_ms / layout.HOUR_MS

    @property
    def message_coverage_pct(self) -> float:
        """The share of the hour's messages applied to a trusted book (100 for an hour without one)."""
        messages = self.scan.replay.messages
        return 100.0 * self.scan.trusted_messages / messages if messages else 100.0

    @property
    def messages_per_second(self) -> float:
        first, last = self.scan.first_ts_ms, self.scan.last_ts_ms
        span_s = (last - first) / 1000 if first is not None and last is not None else 0.0
        return self.scan.replay.messages / span_s if span_s > 0 else 0.0

    @property
    def resyncs(self) -> int:
        return sum(self.scan.lost.values())

    def metadata(self) -> dict[str, Any]:
        """Plain-value metadata (numbers first: the UI plots numeric metadata over partitions)."""
        scan = self.scan
        meta: dict[str, Any] = {
            "coverage_pct": round(self.coverage_pct, 3),
            "message_coverage_pct": round(self.message_coverage_pct, 3),
            "trusted_seconds": round(self.trusted_seconds, 3),
            "messages": scan.replay.messages,
            "trusted_messages": scan.trusted_messages,
            "messages_per_second": round(self.messages_per_second, 3),
            "ws_frames": scan.replay.frames,
            "lines": scan.lines,
            "bytes": self.source_bytes,
            "raw_bytes": scan.raw_bytes,
            "gaps": scan.gaps,
            "checksum_failures": scan.checksum_failures,
            "resyncs": self.resyncs,
            "engine_resyncs": scan.engine_resyncs,
            "drops": scan.drops,
            "ticks": scan.ticks,
            "replayed_records": scan.replay.records,
            "schema_problems": scan.schema_problems,
            **scan.problem_counts(),
            "resyncs_by_reason": dict(sorted(scan.lost.items())),
        }
        if scan.first_ts_ms is not None and scan.last_ts_ms is not None:
            meta["first_ts"] = scan.first_ts_ms / 1000
            meta["last_ts"] = scan.last_ts_ms / 1000
        meta["source"] = (self.source_label or str(self.source)) if self.source else ""
        meta["source_kind"] = self.source_kind
        meta["sha256"] = scan.sha256
        return meta


def compute_tape_stats(data_dir: Path, inst_id: str, hour: datetime,
                       figure: TapeFigureDrawer | None = None) -> TapeHourStats:
    """Figures of one tape hour as the lake holds it now (`{HH}.jsonl`, or its archive); `figure`:
    with its picture, drawn by it from the same replay."""
    found = scan_source(data_dir, inst_id, hour, lambda f: scan_tape(f, inst_id, hour, top=figure is not None),
                        prefix=layout.TAPE_PREFIX)
    if found is None:
        return TapeHourStats(inst_id, hour, None, "none", 0, TapeScan(sha256=hashlib.sha256().hexdigest()))
    source, kind, size, scan = found
    png = None
    if scan.top is not None and figure is not None:
        png = figure(scan.top, inst_id, hour)
        scan.top = None  # the picture is drawn: the hour's messages need not stay in memory
    return TapeHourStats(inst_id, hour, source, kind, size, scan, figure=png)

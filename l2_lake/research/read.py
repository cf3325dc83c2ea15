"""Research access without Dagster: any range of one instrument's books in one call.

    from l2_pipeline import read_books, book_at
    table = read_books("BTC-USDT-SWAP", "2026-11-20T00:00Z", "2026-11-20T06:00Z", depth=25, lake="./data")

`read_books` returns a `pyarrow.Table` with the curated schema (`l2_lake.tiers.curated.PARQUET_SCHEMA`,
docs/CONTRACT.md §5): one row per snapshot record with `start <= timestamp_utc < end`, oldest first.
Each hour is read from its curated Parquet file when there is one, else from its `.jsonl` or
`.jsonl.gz` (converted by the same code that writes the Parquet), so the result is the same
whichever tier serves an hour. Records that are not the exchange's book (gap markers,
`checksum_ok=false`) are left out unless `include_flagged=True`. `depth` keeps the best N levels
per side; `columns` selects columns.

`cadence=0.25` (seconds) serves a finer cadence than the 2 s snapshots from the tape (`--tape`):
each hour's tape is replayed through the engine (`l2_lake.tiers.tape_books`) into the records the
collector would have written at that cadence (a record when the book changed, stamped with the
event time of its last message; never across a gap). Hours without a tape give no records.

`book_at` returns the last record at or before a time that is not flagged, as a one-row table.
Errors say what was wrong: an unknown instrument, `start > end`, a lake path that does not exist,
an empty range (no record in it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from l2_lake.format import layout
from l2_lake.format.hours import parse_utc, utc
from l2_lake.tiers.curated import PARQUET_SCHEMA
from l2_lake.tiers.source import HomeLake, LakeSourceError, open_lake

LOOKBACK = timedelta(hours=6)  # how far back `book_at` looks for the last exact book
TimeLike = datetime | str


class ReadError(ValueError):
    """A request `read_books` / `book_at` cannot serve; the message says what to change."""


def lake_source(lake: str | os.PathLike | None) -> HomeLake:
    """`lake_source.open_lake(lake)`, a lake it cannot open as a ReadError."""
    try:
        return open_lake(lake)
    except LakeSourceError as exc:
        raise ReadError(str(exc)) from None


def _time(value: TimeLike, name: str) -> datetime:
    if isinstance(value, datetime):
        return utc(value)
    try:
        return parse_utc(value)
    except ValueError:
        raise ReadError(f"{name}={value!r} is not a time: use a datetime or ISO-8601, e.g. 2026-11-20T00:00Z") from None


def _instrument(source: HomeLake, inst_id: str) -> str:
    try:
        layout.validate_inst_id(inst_id)
    except layout.InvalidInstrumentId as exc:
        raise ReadError(str(exc)) from None
    known = source.instruments()
    if inst_id not in known:
        holds = ", ".join(sorted(known)) or "none"
        raise ReadError(f"unknown instrument {inst_id} in lake {source}; it holds: {holds}")
    return inst_id


def _truncate(table: pa.Table, depth: int) -> pa.Table:
    for side in ("bids", "asks"):
        sliced = pc.list_slice(table[side], 0, depth)
        table = table.set_column(table.schema.get_field_index(side), side, sliced.cast(PARQUET_SCHEMA.field(side).type))
    return table


@dataclass(frozen=True)
class BookRange:
    """A checked request for the records of one instrument in [begin, end), served hour by hour."""

    source: HomeLake
    inst_id: str
    begin: datetime
    end: datetime
    depth: int | None = None
    include_flagged: bool = False
    columns: tuple[str, ...] | None = None
    cadence_ms: int | None = None  # from the tape at this cadence; None: the snapshots

    def hours(self) -> list[datetime]:
        """The hours the range touches, oldest first."""
        hour, out = layout.hour_floor(int(self.begin.timestamp() * 1000)), []
        while hour < self.end:
            out.append(hour)
            hour += layout.HOUR
        return out

    def hour_table(self, hour: datetime) -> pa.Table:
        """The range's records in one of its hours (possibly none), in time order."""
        if self.cadence_ms is None:
            table = self.source.hour_books(self.inst_id, hour)
        else:
            table = self.source.hour_tape(self.inst_id, hour, self.cadence_ms, self.depth or layout.MAX_DEPTH)
        if table is None:
            return self.schema().empty_table()
        ts_type = PARQUET_SCHEMA.field("timestamp_utc").type
        ts = table["timestamp_utc"]
        keep = pc.and_(pc.greater_equal(ts, pa.scalar(self.begin, ts_type)), pc.less(ts, pa.scalar(self.end, ts_type)))
        if not self.include_flagged:
            keep = pc.and_(keep, pc.invert(flagged(table)))
        if not pc.all(keep).as_py():  # filtering copies every nested level: only when something goes
            table = table.filter(keep)
        if self.depth is not None:
            table = _truncate(table, self.depth)
        if not _increasing(table["timestamp_utc"]):  # the collector writes in order; a hand-made file may not be
            table = table.sort_by("timestamp_utc")
        return table.select(list(self.columns)) if self.columns else table

    def schema(self) -> pa.Schema:
        return pa.schema([PARQUET_SCHEMA.field(c) for c in self.columns]) if self.columns else PARQUET_SCHEMA

    def nothing_found(self) -> ReadError:
        tape = "" if self.cadence_ms is None else " on the tape (the collector writes one with --tape)"
        return ReadError(f"no {'' if self.include_flagged else 'exact '}record of {self.inst_id} in "
                         f"[{self.begin:%Y-%m-%dT%H:%M:%SZ}, {self.end:%Y-%m-%dT%H:%M:%SZ}) in lake {self.source}"
                         + tape)


def book_range(
    inst_id: str,
    start: TimeLike,
    end: TimeLike,
    *,
    depth: int | None = None,
    lake: str | os.PathLike | None = None,
    include_flagged: bool = False,
    columns: Sequence[str] | None = None,
    cadence: float | None = None,
) -> BookRange:
    """Check a request (arguments as `read_books`); ReadError says what to change."""
    source = lake_source(lake)
    begin, finish = _time(start, "start"), _time(end, "end")
    if begin > finish:
        raise ReadError(f"start {begin:%Y-%m-%dT%H:%M:%SZ} is after end {finish:%Y-%m-%dT%H:%M:%SZ}")
    if depth is not None and depth < 1:
        raise ReadError(f"depth={depth}: ask for at least 1 level per side (or None for all)")
    if cadence is not None and not 0.001 <= cadence <= 3600:
        raise ReadError(f"cadence={cadence}: give seconds between records from 0.001 to 3600 (or None for the "
                        "2 s snapshots)")
    unknown = sorted(set(columns or ()) - set(PARQUET_SCHEMA.names))
    if unknown:
        raise ReadError(f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(PARQUET_SCHEMA.names)}")
    _instrument(source, inst_id)
    return BookRange(source, inst_id, begin, finish, depth, include_flagged, tuple(columns) if columns else None,
                     None if cadence is None else round(cadence * 1000))


def read_books(
    inst_id: str,
    start: TimeLike,
    end: TimeLike,
    *,
    depth: int | None = None,
    lake: str | os.PathLike | None = None,
    include_flagged: bool = False,
    columns: Sequence[str] | None = None,
    cadence: float | None = None,
) -> pa.Table:
    """Snapshot records of `inst_id` with start <= timestamp_utc < end (see the module docstring)."""
    request = book_range(inst_id, start, end, depth=depth, lake=lake, include_flagged=include_flagged, columns=columns,
                         cadence=cadence)
    tables = [t for hour in request.hours() if (t := request.hour_table(hour)).num_rows]
    if not tables:
        raise request.nothing_found()
    return pa.concat_tables(tables)


def _increasing(ts: pa.ChunkedArray) -> bool:
    values = pc.cast(ts, pa.int64()).combine_chunks()
    return len(values) < 2 or pc.all(pc.greater_equal(values.slice(1), values.slice(0, len(values) - 1))).as_py()


def flagged(table: pa.Table) -> pa.ChunkedArray:
    """True for records that are not the exchange's book: gap markers and `checksum_ok=false`."""
    bad_checksum = pc.equal(pc.fill_null(table["checksum_ok"], True), False)
    return pc.or_(pc.fill_null(table["gap_detected"], False), bad_checksum)


def book_at(inst_id: str, ts: TimeLike, *, depth: int | None = None,
            lake: str | os.PathLike | None = None) -> pa.Table:
    """The last exact book of `inst_id` at or before `ts` (one row), looking back at most 6 hours."""
    at = _time(ts, "ts")
    table = read_books(inst_id, at - LOOKBACK, at + timedelta(milliseconds=1), depth=depth, lake=lake)
    return table.slice(table.num_rows - 1)

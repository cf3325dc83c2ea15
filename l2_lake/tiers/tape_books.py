"""Books at any cadence and depth from the tape (`l2_lake.book.tape`): one tape hour replayed through the
engine (`l2_lake.book.tape_replay.TapeReplayer`), its records as a table in the curated schema.

The records are what the live cadence would have written at `cadence_ms` of exchange time (a record
only when the book changed since the previous one, stamped with the event time of the last message
it absorbed; gap and checksum markers where the engine found them), so they read like the 2 s
snapshots, only denser. Each tape hour starts from the live engine's state, so an hour is replayed
on its own. No Dagster.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from l2_lake.book.tape_replay import TapeReplayer, TapeStats
from l2_lake.format.record import encode_line
from l2_lake.tiers.curated import PARQUET_SCHEMA, table_from_bytes

CHUNK_RECORDS = 5000  # records converted to a table at a time: a fine cadence at full depth makes many


class TableSink:
    """A replay sink that turns the records into a curated-schema table, as the lake would hold them:
    each record encoded as the collector writes its line and converted as a raw hour is (the same
    table either way), never two with the same event time (a later one at or before the last kept is
    dropped, as the lake writer does). Events are dropped."""

    def __init__(self) -> None:
        self._lines: list[bytes] = []
        self._tables: list[pa.Table] = []
        self._last_ts: int | None = None

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        if self._last_ts is None or ts_ms > self._last_ts:
            self._lines.append(encode_line(record))
            self._last_ts = ts_ms
            if len(self._lines) >= CHUNK_RECORDS:
                self._flush()

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        pass

    def _flush(self) -> None:
        if self._lines:
            self._tables.append(table_from_bytes(b"".join(self._lines))[0].cast(PARQUET_SCHEMA))
            self._lines = []

    def table(self) -> pa.Table:
        self._flush()
        return pa.concat_tables(self._tables) if self._tables else PARQUET_SCHEMA.empty_table()


def resample_hour(lines: Iterable[bytes], inst_id: str, cadence_ms: int, depth: int) -> tuple[pa.Table, TapeStats]:
    """(records of the tape hour `lines` at `cadence_ms`, `depth` levels per side, as a curated-schema
    table; the replay's counts). Blank lines are skipped, newlines stripped."""
    sink = TableSink()
    replayer = TapeReplayer(inst_id, depth, sink, cadence_ms=cadence_ms)
    for line in lines:
        if line.strip():
            replayer.feed(line.rstrip(b"\r\n"))
    stats = replayer.finish()  # first: it writes the last boundary's record
    return sink.table(), stats

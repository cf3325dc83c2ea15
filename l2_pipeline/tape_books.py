"""Books at any cadence and depth from the tape (`collector.tape`): one tape hour replayed through the
engine (`collector.tape_replay.TapeReplayer`), its records as a table in the curated schema.

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

from collector.record import encode_line
from collector.tape_replay import TapeReplayer, TapeStats
from l2_pipeline.curated import PARQUET_SCHEMA, table_from_bytes


class RecordList:
    """A replay sink that keeps the records as the lake writer would (never two with the same event
    time: a later one at or before the last kept is dropped) and drops the events."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._last_ts: int | None = None

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        if self._last_ts is None or ts_ms > self._last_ts:
            self.records.append(record)
            self._last_ts = ts_ms

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        pass


def resample_hour(lines: Iterable[bytes], inst_id: str, cadence_ms: int, depth: int) -> tuple[pa.Table, TapeStats]:
    """(records of the tape hour `lines` at `cadence_ms`, `depth` levels per side, as a curated-schema
    table; the replay's counts)."""
    sink = RecordList()
    replayer = TapeReplayer(inst_id, depth, sink, cadence_ms=cadence_ms)
    for line in lines:
        replayer.feed(line)
    stats = replayer.finish()
    if not sink.records:
        return PARQUET_SCHEMA.empty_table(), stats
    # the lines the collector would have written, converted as a raw hour is: the same table either way
    return table_from_bytes(b"".join(map(encode_line, sink.records)))[0].cast(PARQUET_SCHEMA), stats

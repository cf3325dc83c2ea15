"""Books resampled from the full-resolution tape at a cadence and depth of one's choosing, as
Parquet in the curated schema (`l2_lake.tiers.curated.PARQUET_SCHEMA`), no Dagster.

One tape hour (`raw/okx/l2_tape/{instId}/{YYYY-MM-DD}/{HH}.jsonl`, or its `.jsonl.gz`) is replayed
through a fresh engine (`l2_lake.book.tape_replay.TapeReplayer` with `cadence_ms`): before the first
message at or after each cadence boundary of exchange time, a record of the book (`depth` levels
per side) if it changed since the last one, stamped with the last message the book absorbed; gap
and checksum marker records where the engine found them; nothing while the engine does not trust
its book (replay never bridges a gap). The hour replays on its own (its first line holds the engine's
state), so any range of hours can be (re)built in any order.

The file (`resampled_path`) names its parameters in its hive path,
`resampled/okx/l2_perps/cadence_ms={ms}/depth={n}/instId={instId}/date={YYYY-MM-DD}/hour={H}/data.parquet`,
so resamplings at several cadences live side by side and read as one dataset with `cadence_ms` and
`depth` as columns. Written like the curated tier (`curated.write_verified`: temp file, row count read
back, fsync, atomic rename), with the parameters and the source in the schema metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

from l2_lake.format import layout
from l2_lake.format.hours import is_closed
from l2_lake.quality.hour_stats import scan_source
from l2_lake.tiers.archive import OpenHourError
from l2_lake.tiers.curated import CuratedResult, source_metadata, write_verified
from l2_lake.tiers.tape_books import resample_hour
from l2_lake.venues.registry import DEFAULT_VENUE

RESAMPLED_PREFIX = Path("resampled", DEFAULT_VENUE.name, DEFAULT_VENUE.dataset)
DEFAULT_CADENCE_MS = 250
DEFAULT_DEPTH = 25


def resampled_prefix(cadence_ms: int, depth: int) -> Path:
    """`resampled/okx/l2_perps/cadence_ms={ms}/depth={n}`: one resampling's hive-partitioned tier."""
    return RESAMPLED_PREFIX / f"cadence_ms={cadence_ms}" / f"depth={depth}"


def resampled_path(data_dir: Path, inst_id: str, hour: datetime, *, cadence_ms: int, depth: int) -> Path:
    """`…/cadence_ms={ms}/depth={n}/instId={instId}/date={YYYY-MM-DD}/hour={H}/data.parquet` under `data_dir`."""
    return layout.hive_hour_dir(data_dir, resampled_prefix(cadence_ms, depth), inst_id, hour) / layout.PARQUET_FILE


def resample_lines(lines: IO[bytes], inst_id: str, *, cadence_ms: int, depth: int) -> tuple[pa.Table, int, int]:
    """(the records of a replay of a tape hour's lines at `cadence_ms` and `depth`, the lines, those
    that could not be replayed: `tape_schema_valid` names them)."""
    table, stats = resample_hour(lines, inst_id, cadence_ms, depth)
    return table, stats.lines, stats.bad_lines


@dataclass(frozen=True)
class ResampledResult(CuratedResult):
    """What resampling one hour did (`materialize_hours`' HourResult): a curated file's figures, with
    `source_lines` the tape's lines and `skipped_lines` those the replay could not take, plus the
    resampling's parameters and `exact_rows`, the rows of a book the engine trusted (not a gap or
    checksum marker)."""

    cadence_ms: int = DEFAULT_CADENCE_MS
    depth: int = DEFAULT_DEPTH
    exact_rows: int = 0

    def metadata(self) -> dict[str, object]:
        return {**super().metadata(), "exact_rows": self.exact_rows, "cadence_ms": self.cadence_ms,
                "depth": self.depth}


def exact_rows(table: pa.Table) -> int:
    """Rows that are the exchange's book: neither a gap marker nor a failed checksum."""
    flagged = pc.or_kleene(pc.equal(table["gap_detected"], True), pc.equal(table["checksum_ok"], False))
    return table.num_rows - pc.sum(pc.fill_null(flagged, False)).as_py() if table.num_rows else 0


def write_resampled(data_dir: Path, inst_id: str, hour: datetime, now: datetime,
                    grace: timedelta = timedelta(minutes=2), *, cadence_ms: int = DEFAULT_CADENCE_MS,
                    depth: int = DEFAULT_DEPTH) -> ResampledResult:
    """Replay the closed tape hour at `cadence_ms`, `depth` levels per side, into its Parquet file
    (`resampled_path`), atomically; refuses the open hour."""
    started = time.monotonic()
    if cadence_ms < 1 or not 1 <= depth <= layout.MAX_DEPTH:
        raise ValueError(f"cadence_ms must be ≥ 1 and depth 1 to {layout.MAX_DEPTH} (got {cadence_ms}, {depth})")
    target = resampled_path(data_dir, inst_id, hour, cadence_ms=cadence_ms, depth=depth)
    if not is_closed(hour, now, grace):
        raise OpenHourError(f"{inst_id} {hour:%Y-%m-%d %H}:00 is not closed yet; no resampling of an open hour")
    found = scan_source(data_dir, inst_id, hour,
                        lambda f: resample_lines(f, inst_id, cadence_ms=cadence_ms, depth=depth),
                        prefix=layout.TAPE_PREFIX)
    if found is None:
        return ResampledResult(inst_id, hour, "no_data", target, cadence_ms=cadence_ms, depth=depth,
                               seconds=time.monotonic() - started)
    source, _, _, (table, lines, skipped) = found
    metadata = source_metadata(data_dir, source, inst_id, hour, cadence_ms=str(cadence_ms), depth=str(depth))
    write_verified(table.replace_schema_metadata(metadata), target)
    return ResampledResult(inst_id, hour, "written", target, source=source, source_lines=lines, rows=table.num_rows,
                           skipped_lines=skipped, bytes=target.stat().st_size, seconds=time.monotonic() - started,
                           cadence_ms=cadence_ms, depth=depth, exact_rows=exact_rows(table))

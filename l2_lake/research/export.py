"""`l2-collector export`: one instrument's books over a time range into one Parquet, CSV or JSONL file.

The records are those `read_books` returns (same tiers, same filters), streamed hour by hour so a
month of 400-level books never sits in memory at once. The file is written beside its final path
and renamed into place only when complete: a failed or interrupted export leaves no partial file.

- parquet: the curated schema (docs/CONTRACT.md §5), zstd.
- csv and jsonl: one row / object per record; `timestamp_utc` and `recv_ts_utc` as ISO-8601 with
  milliseconds and `Z` (the record's spelling); `bids` and `asks` as JSON text
  `[["price","size",orders], …]` with the exact decimal strings OKX sent, best level first; the
  other columns as in the curated schema.

No Dagster import: the collector's CLI calls this.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

from l2_lake.research.read import BookRange
from l2_lake.store.files import atomic_target

FORMATS = ("parquet", "csv", "jsonl")
LEVEL_COLUMNS = ("bids", "asks")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # %S carries the milliseconds of a timestamp[ms]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    hours: int
    bytes: int
    seconds: float


def levels_json(levels: pa.ChunkedArray) -> pa.Array:
    """Each row's levels as JSON text `[["price","size",orders],…]`, built with Arrow kernels."""
    levels = levels.combine_chunks()
    flat = pc.list_flatten(levels)
    one = pc.binary_join_element_wise(
        '["', flat.field("price_str"), '","', flat.field("size_str"), '",',
        pc.cast(pc.fill_null(flat.field("orders"), 0), pa.string()), "]", "",
    )
    offsets = pc.subtract(levels.offsets, levels.offsets[0])  # a sliced list array's offsets need not start at 0
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, one), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


def flat_table(table: pa.Table) -> pa.Table:
    """`table` with times as ISO text and levels as JSON text (the csv and jsonl row)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, pc.strftime(table[field.name], format=TIME_FORMAT))
        elif field.name in LEVEL_COLUMNS:
            table = table.set_column(i, field.name, levels_json(table[field.name]))
    return table


class _ParquetSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


class _CsvSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pa_csv.CSVWriter(path, flat_table(schema.empty_table()).schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(flat_table(table))

    def close(self) -> None:
        self._writer.close()


class _JsonlSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 (closed by close())

    def write(self, table: pa.Table) -> None:
        flat = flat_table(table)
        names = flat.column_names
        columns = [
            [orjson.Fragment(text) for text in flat[name].to_pylist()] if name in LEVEL_COLUMNS  # JSON already
            else flat[name].to_pylist()
            for name in names
        ]
        for values in zip(*columns, strict=True):
            self._file.write(orjson.dumps(dict(zip(names, values, strict=True)), option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        self._file.close()


_SINKS = {"parquet": _ParquetSink, "csv": _CsvSink, "jsonl": _JsonlSink}


def export_books(request: BookRange, out: Path, fmt: str, *, quiet: bool = False,
                 progress_file: IO[str] | None = None) -> ExportResult:
    """Write `request`'s records to `out` in `fmt`; ReadError (and no file) when there is none.
    The progress bar goes to `progress_file` (stderr) when it is a terminal and not `quiet`."""
    if fmt not in _SINKS:
        raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    started = time.monotonic()
    hours = request.hours()
    rows = 0
    bar = tqdm(total=len(hours), unit="h", desc=f"{request.inst_id} {fmt}", file=progress_file or sys.stderr,
               disable=True if quiet else None, dynamic_ncols=True)
    with bar, atomic_target(out) as tmp:
        sink = _SINKS[fmt](tmp, request.schema())
        try:
            for hour in hours:
                table = request.hour_table(hour)
                if table.num_rows:
                    sink.write(table)
                    rows += table.num_rows
                bar.set_postfix_str(f"{hour:%Y-%m-%d %H}h, {rows} rows", refresh=False)
                bar.update()
        finally:
            sink.close()
        if rows == 0:
            raise request.nothing_found()
    return ExportResult(out, rows, len(hours), out.stat().st_size, time.monotonic() - started)



"""Analysis-ready Parquet of one closed instrument-hour (`layout.curated_path`), built with pyarrow.

Columns (one row per record line of the source, in file order):
- `timestamp_utc`, `recv_ts_utc`: timestamp[ms, tz=UTC]
- `exchange`, `market`, `channel`, `instId`: string
- `best_bid`, `best_ask`, `mid_price`: float64, plus `*_str` with the exact decimal strings
- `checksum`, `seqId`, `prevSeqId`, `book_crc32`: int64; `gap_detected`, `checksum_ok`: bool
- `bids`, `asks`: list<struct<price: float64, size: float64, orders: int64, price_str: string,
  size_str: string>>, best level first (OKX's deprecated third level field, always "0", is dropped)

zstd-compressed, written to a temp file in the target directory, its row count read back and
compared with the source, then fsynced and atomically renamed (`l2_lake.store.files.atomic_target`).
Reads `{HH}.jsonl` or `{HH}.jsonl.gz`. Lines that are not JSON objects cannot become rows: they are
counted in `skipped_lines` (the schema check flags the hour), so rows == source lines exactly when
the hour is valid.

Records of the original format (CONTRACT.md §2.1, `l2_lake.format.record.ORIGINAL_FIELDS`) get the same
schema with `book_crc32`, `recv_ts_utc` and `checksum_ok` null, on both paths: pyarrow's JSON reader
leaves a field absent from a line null, and `records_to_table` reads every field with `.get`. An
hour mixing both formats has those columns null exactly in its original-format rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from l2_lake.format import layout
from l2_lake.format.hour_content import open_content
from l2_lake.format.hours import is_closed
from l2_lake.format.record import parse_ts_ms
from l2_lake.format.source_json import read_source_table
from l2_lake.quality.hour_stats import records_source
from l2_lake.store.files import atomic_target
from l2_lake.tiers.archive import OpenHourError, stray_temps

SCHEMA_VERSION = "1"
LEVEL_TYPE = pa.struct(
    [
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("orders", pa.int64()),
        ("price_str", pa.string()),
        ("size_str", pa.string()),
    ]
)
TS_TYPE = pa.timestamp("ms", tz="UTC")
PARQUET_SCHEMA = pa.schema(
    [
        ("timestamp_utc", TS_TYPE),
        ("exchange", pa.string()),
        ("market", pa.string()),
        ("channel", pa.string()),
        ("instId", pa.string()),
        ("bids", pa.list_(LEVEL_TYPE)),
        ("asks", pa.list_(LEVEL_TYPE)),
        ("best_bid", pa.float64()),
        ("best_ask", pa.float64()),
        ("mid_price", pa.float64()),
        ("best_bid_str", pa.string()),
        ("best_ask_str", pa.string()),
        ("mid_price_str", pa.string()),
        ("checksum", pa.int64()),
        ("seqId", pa.int64()),
        ("prevSeqId", pa.int64()),
        ("gap_detected", pa.bool_()),
        ("book_crc32", pa.int64()),
        ("recv_ts_utc", TS_TYPE),
        ("checksum_ok", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class CuratedResult:
    inst_id: str
    hour: datetime
    status: str  # written | no_data
    path: Path
    source: Path | None = None
    source_lines: int = 0
    rows: int = 0
    skipped_lines: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def empty(self) -> bool:
        """A Parquet file was written, with no row (the source holds no record)."""
        return self.status == "written" and not self.rows

    @property
    def warning(self) -> str | None:
        return f"{self.skipped_lines} unparseable line(s) in {self.source} left out" if self.skipped_lines else None

    def metadata(self) -> dict[str, object]:
        return {
            "status": self.status,
            "path": str(self.path),
            "source": str(self.source) if self.source else "",
            "source_lines": self.source_lines,
            "rows": self.rows,
            "skipped_lines": self.skipped_lines,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def _ts(value: Any) -> int | None:
    try:
        return parse_ts_ms(value)
    except (TypeError, ValueError, AttributeError):
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _to_number(text: pa.Array, target: pa.DataType) -> pa.Array:
    """Vectorised string → number cast; values that are not numbers (invalid records) become null."""
    try:
        return pc.cast(text, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        convert = float if pa.types.is_floating(target) else int
        out: list[float | int | None] = []
        for value in text.to_pylist():
            try:
                out.append(convert(value) if value is not None else None)
            except ValueError:
                out.append(None)
        return pa.array(out, target)


def _levels(records: Sequence[dict[str, Any]], side: str) -> pa.ListArray:
    offsets = [0]
    prices: list[str | None] = []
    sizes: list[str | None] = []
    orders: list[str | None] = []
    for rec in records:
        levels = rec.get(side)
        if isinstance(levels, list):
            for level in levels:  # lists when parsed from JSON, tuples as the engine's book holds them
                if isinstance(level, list | tuple) and len(level) >= 2:
                    prices.append(_str(level[0]))
                    sizes.append(_str(level[1]))
                    orders.append(_str(level[3]) if len(level) > 3 else None)
        offsets.append(len(prices))
    price_str = pa.array(prices, pa.string())
    size_str = pa.array(sizes, pa.string())
    struct = pa.StructArray.from_arrays(
        [
            _to_number(price_str, pa.float64()),
            _to_number(size_str, pa.float64()),
            _to_number(pa.array(orders, pa.string()), pa.int64()),
            price_str,
            size_str,
        ],
        fields=list(LEVEL_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct)


def _decimal_column(records: Sequence[dict[str, Any]], name: str) -> tuple[pa.Array, pa.Array]:
    text = pa.array([_str(r.get(name)) for r in records], pa.string())
    return _to_number(text, pa.float64()), text


def records_to_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """The typed table of `records` (schema `PARQUET_SCHEMA`)."""
    columns: dict[str, pa.Array] = {
        "timestamp_utc": pa.array([_ts(r.get("timestamp_utc")) for r in records], TS_TYPE),
    }
    for name in ("exchange", "market", "channel", "instId"):
        columns[name] = pa.array([_str(r.get(name)) for r in records], pa.string())
    columns["bids"] = _levels(records, "bids_top400")
    columns["asks"] = _levels(records, "asks_top400")
    strings = {}
    for name, column in (("best_bid", "best_bid"), ("best_ask", "best_ask"), ("mid_price", "mid_price")):
        columns[column], strings[f"{column}_str"] = _decimal_column(records, name)
    columns.update(strings)
    for name in ("checksum", "seqId", "prevSeqId"):
        columns[name] = pa.array([_int(r.get(name)) for r in records], pa.int64())
    columns["gap_detected"] = pa.array([_bool(r.get("gap_detected")) for r in records], pa.bool_())
    columns["book_crc32"] = pa.array([_int(r.get("book_crc32")) for r in records], pa.int64())
    columns["recv_ts_utc"] = pa.array([_ts(r.get("recv_ts_utc")) for r in records], TS_TYPE)
    columns["checksum_ok"] = pa.array([_bool(r.get("checksum_ok")) for r in records], pa.bool_())
    return pa.Table.from_arrays([columns[f.name] for f in PARQUET_SCHEMA], schema=PARQUET_SCHEMA)


def _levels_from_json(column: pa.ChunkedArray) -> pa.ListArray:
    outer = column.combine_chunks()
    inner = outer.flatten()  # one list<string> per level
    price_str = pc.list_element(inner, 0)
    size_str = pc.list_element(inner, 1)
    struct = pa.StructArray.from_arrays(
        [
            _to_number(price_str, pa.float64()),
            _to_number(size_str, pa.float64()),
            _to_number(pc.list_element(inner, 3), pa.int64()),
            price_str,
            size_str,
        ],
        fields=list(LEVEL_TYPE),
    )
    offsets = pc.subtract(outer.offsets, outer.offsets[0])
    return pa.ListArray.from_arrays(offsets, struct, mask=outer.is_null())


def curated_from_source(src: pa.Table) -> pa.Table | None:
    """The typed table (`PARQUET_SCHEMA`) of an hour read by `l2_lake.format.source_json.read_source_table`;
    None when a value does not convert (then `records_to_table` handles the hour line by line)."""
    try:
        columns: dict[str, pa.Array] = {
            "timestamp_utc": pc.cast(src["timestamp_utc"], TS_TYPE).combine_chunks(),
            "recv_ts_utc": pc.cast(src["recv_ts_utc"], TS_TYPE).combine_chunks(),
            "bids": _levels_from_json(src["bids_top400"]),
            "asks": _levels_from_json(src["asks_top400"]),
        }
        for name in ("exchange", "market", "channel", "instId", "checksum", "seqId", "prevSeqId", "gap_detected",
                     "book_crc32", "checksum_ok"):
            columns[name] = src[name].combine_chunks()
        for name in ("best_bid", "best_ask", "mid_price"):
            text = src[name].combine_chunks()
            columns[name], columns[f"{name}_str"] = _to_number(text, pa.float64()), text
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, IndexError):
        return None
    return pa.Table.from_arrays([columns[f.name] for f in PARQUET_SCHEMA], schema=PARQUET_SCHEMA)


def table_from_jsonl_bytes(data: bytes) -> pa.Table | None:
    """Vectorised conversion with pyarrow's JSON reader; None when the hour is not entirely made of
    well-formed records (then `records_to_table` handles it line by line)."""
    src = read_source_table(data)
    return None if src is None else curated_from_source(src)


def json_objects(lines: Sequence[bytes]) -> list[dict[str, Any]]:
    """The lines that are JSON objects, parsed (the others are skipped: callers count them)."""
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def load_table(source: Path) -> tuple[pa.Table, int]:
    """(table of the source's records, number of source lines); fast path first."""
    with open_content(source) as f:
        return table_from_bytes(f.read())


def table_from_bytes(data: bytes) -> tuple[pa.Table, int]:
    """(table of the records in `data`, the JSONL of an hour, and its number of lines)."""
    table = table_from_jsonl_bytes(data)
    if table is not None:
        return table, table.num_rows
    lines = data.splitlines(keepends=True)
    return records_to_table(json_objects(lines)), len(lines)


def load_hour(data_dir: Path, inst_id: str, hour: datetime) -> tuple[Path, pa.Table, int] | None:
    """(source file, table, source lines) of the hour's records, read from its `.jsonl` or, once
    archived, its `.jsonl.gz`; None when it has neither."""
    source, _ = records_source(data_dir, inst_id, hour)
    if source is None:
        return None
    try:
        table, lines = load_table(source)
    except FileNotFoundError:  # the .jsonl was archived between the lookup and the open: read the archive
        source = layout.archive_path(data_dir, inst_id, hour)
        table, lines = load_table(source)
    return source, table, lines


def write_verified(table: pa.Table, target: Path) -> None:
    """Write `table` to `target` atomically (zstd), after reading its row count back from the temp
    file; temp files a killed writer left beside `target` are removed first."""
    prefix = f".{target.name}."
    for stray in stray_temps(target.parent, prefix):
        stray.unlink(missing_ok=True)
    with atomic_target(target, prefix) as tmp:  # fsync, rename, fsync dir; temp removed on failure
        pq.write_table(table, tmp, compression="zstd")
        written_rows = pq.read_metadata(tmp).num_rows
        if written_rows != table.num_rows:
            raise RuntimeError(f"{tmp.name}: {written_rows} rows written, the table has {table.num_rows}")


def source_metadata(data_dir: Path, source: Path, inst_id: str, hour: datetime, **extra: str) -> dict[str, str]:
    """The Parquet schema metadata naming a file's source (relative to `data_dir`), hour and `extra` values."""
    return {
        "okx_l2.schema_version": SCHEMA_VERSION,
        "okx_l2.source": str(source.relative_to(data_dir)) if source.is_relative_to(data_dir) else str(source),
        "okx_l2.instId": inst_id,
        "okx_l2.hour": hour.isoformat(),
        **{f"okx_l2.{name}": value for name, value in extra.items()},
    }


def write_parquet(
    data_dir: Path, inst_id: str, hour: datetime, now: datetime, grace: timedelta = timedelta(minutes=2), *,
    loaded: tuple[Path, pa.Table, int] | None = None,
) -> CuratedResult:
    """Build (or rebuild) the hour's Parquet file atomically; refuses the open hour. `loaded`: the hour
    as `load_hour` gives it, already read (`l2_lake.tiers.hour_tiers`); else it is read here."""
    started = time.monotonic()
    target = layout.curated_path(data_dir, inst_id, hour)
    if not is_closed(hour, now, grace):
        raise OpenHourError(f"{inst_id} {hour:%Y-%m-%d %H}:00 is not closed yet; no Parquet for an open hour")
    loaded = loaded or load_hour(data_dir, inst_id, hour)
    if loaded is None:
        return CuratedResult(inst_id, hour, "no_data", target, seconds=time.monotonic() - started)
    source, table, lines = loaded
    write_verified(table.replace_schema_metadata(source_metadata(data_dir, source, inst_id, hour)), target)
    layout.legacy_curated_path(data_dir, inst_id, hour).unlink(missing_ok=True)  # superseded pre-hive copy
    return CuratedResult(
        inst_id, hour, "written", target, source=source, source_lines=lines, rows=table.num_rows,
        skipped_lines=lines - table.num_rows, bytes=target.stat().st_size, seconds=time.monotonic() - started,
    )

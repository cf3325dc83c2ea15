"""Where research access reads the lake: a local lake directory, or the lake's home in object
storage (`s3://bucket[/prefix]`, where the collector ships closed hours, `collector.ship`).

Both answer the same questions with the same code downstream: which instruments the lake holds,
one hour's records as a table in the curated schema (curated Parquet first, else the raw
`.jsonl.gz` / `.jsonl`, converted by `l2_lake.tiers.curated`), one hour's events, and one hour of
the tape (`--tape`) resampled to a cadence and depth (`l2_lake.tiers.tape_books`). Object storage
is read with the collector's S3 client (`l2_lake.store.s3`: boto3; credentials, region and
`AWS_ENDPOINT_URL` from the standard variables). No Dagster.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from l2_lake.book.tape_replay import read_lines
from l2_lake.format import layout
from l2_lake.format.hour_content import content_of
from l2_lake.quality.hour_stats import records_source
from l2_lake.store.lake_walk import parquet_instruments
from l2_lake.store.s3 import S3Store, StoreError, parse_lake_url
from l2_lake.tiers.curated import PARQUET_SCHEMA, json_objects, load_hour, table_from_bytes
from l2_lake.tiers.tape_books import resample_hour

RELATIVE = Path("")  # the layout's paths relative to the lake root: the object keys under the URL


class LakeSourceError(ValueError):
    """A lake that cannot be read; the message says what to change."""


class LakeSource(Protocol):
    def instruments(self) -> set[str]: ...

    def hour_books(self, inst_id: str, hour: datetime) -> pa.Table | None: ...

    def hour_events(self, inst_id: str, hour: datetime) -> list[dict[str, Any]]: ...

    def hour_tape_lines(self, inst_id: str, hour: datetime) -> Iterable[bytes] | None: ...

    def hour_tape(self, inst_id: str, hour: datetime, cadence_ms: int, depth: int) -> pa.Table | None: ...


@dataclass(frozen=True)
class LocalLake:
    root: Path

    def __str__(self) -> str:
        return str(self.root)

    def instruments(self) -> set[str]:
        return {*layout.list_instruments(self.root), *layout.list_instruments(self.root, layout.TAPE_PREFIX),
                *parquet_instruments(self.root, layout.CURATED_PREFIX)}

    def hour_books(self, inst_id: str, hour: datetime) -> pa.Table | None:
        curated = layout.curated_path(self.root, inst_id, hour)
        if curated.is_file():
            return pq.read_table(curated, schema=PARQUET_SCHEMA)
        loaded = load_hour(self.root, inst_id, hour)
        return None if loaded is None else loaded[1].cast(PARQUET_SCHEMA)

    def hour_events(self, inst_id: str, hour: datetime) -> list[dict[str, Any]]:
        try:
            return json_objects(layout.events_path(self.root, inst_id, hour).read_bytes().splitlines())
        except FileNotFoundError:
            return []

    def hour_tape_lines(self, inst_id: str, hour: datetime) -> Iterable[bytes] | None:
        """The tape hour's lines (its `.jsonl`, else its archive), None if the lake has neither."""
        source, _ = records_source(self.root, inst_id, hour, layout.TAPE_PREFIX)
        return None if source is None else read_lines(source)

    def hour_tape(self, inst_id: str, hour: datetime, cadence_ms: int, depth: int) -> pa.Table | None:
        return _resampled(self.hour_tape_lines(inst_id, hour), inst_id, cadence_ms, depth)


def _resampled(lines: Iterable[bytes] | None, inst_id: str, cadence_ms: int, depth: int) -> pa.Table | None:
    return None if lines is None else resample_hour(lines, inst_id, cadence_ms, depth)[0]


def _key(path: Path) -> str:
    return PurePosixPath(path).as_posix()


@dataclass(frozen=True)
class ObjectLake:
    store: S3Store

    def __str__(self) -> str:
        return self.store.describe()

    def instruments(self) -> set[str]:
        raw = {name for prefix in (layout.RAW_PREFIX, layout.TAPE_PREFIX) for name in self.store.list_dirs(_key(prefix))
               if layout.INST_ID_RE.fullmatch(name)}
        curated = {v for name in self.store.list_dirs(_key(layout.CURATED_PREFIX))
                   if (v := layout.parse_hive_part(name, 0)) is not None}
        return raw | curated

    def _get(self, path: Path) -> bytes | None:
        return self.store.read_if_exists(_key(path))

    def hour_books(self, inst_id: str, hour: datetime) -> pa.Table | None:
        curated = self._get(layout.curated_path(RELATIVE, inst_id, hour))
        if curated is not None:
            return pq.read_table(io.BytesIO(curated), schema=PARQUET_SCHEMA)
        data = self._hour_content(inst_id, hour, layout.RAW_PREFIX)
        return None if data is None else table_from_bytes(data)[0].cast(PARQUET_SCHEMA)

    def hour_events(self, inst_id: str, hour: datetime) -> list[dict[str, Any]]:
        data = self._get(layout.events_path(RELATIVE, inst_id, hour))
        return [] if data is None else json_objects(data.splitlines())

    def hour_tape_lines(self, inst_id: str, hour: datetime) -> Iterable[bytes] | None:
        """The tape hour's lines (its archive's content, else its `.jsonl`), None if the lake has neither."""
        data = self._hour_content(inst_id, hour, layout.TAPE_PREFIX)
        return None if data is None else data.splitlines()

    def hour_tape(self, inst_id: str, hour: datetime, cadence_ms: int, depth: int) -> pa.Table | None:
        return _resampled(self.hour_tape_lines(inst_id, hour), inst_id, cadence_ms, depth)

    def _hour_content(self, inst_id: str, hour: datetime, prefix: Path) -> bytes | None:
        """The hour's lines of the dataset `prefix`: its archive's content, else its `.jsonl`."""
        archive = layout.archive_path(RELATIVE, inst_id, hour, prefix)
        archived = self._get(archive)
        if archived is not None:
            return content_of(archived, archive.name)
        return self._get(layout.records_path(RELATIVE, inst_id, hour, prefix))


def open_lake(lake: str | os.PathLike | None) -> LocalLake | ObjectLake:
    """`lake` (default: `L2_LAKE_URL`, else `L2_DATA_DIR`, else ./data) as a source: `s3://…` is
    object storage, anything else a directory that must exist."""
    given = lake if lake is not None else os.environ.get("L2_LAKE_URL") or os.environ.get("L2_DATA_DIR", "./data")
    if str(given).startswith("s3://"):
        try:
            return ObjectLake(S3Store(parse_lake_url(str(given))))
        except (ValueError, StoreError) as exc:
            raise LakeSourceError(f"lake {given}: {exc}") from None
    root = Path(given).expanduser()
    if not root.is_dir():
        raise LakeSourceError(f"lake {root} does not exist (pass lake=… or set L2_DATA_DIR to the collector's data "
                              "dir, or L2_LAKE_URL to its s3:// home)")
    return LocalLake(root)

"""Where research access reads the lake: one reader (`HomeLake`) over the lake's storage interface
(`l2_lake.store.home.Home`), so a local lake directory and the lake's home in object storage
(`s3://bucket[/prefix]`, where the collector ships closed hours, `collector.ship`) are read by the
same code.

It answers: which instruments the lake holds, one hour's records as a table in the curated schema
(curated Parquet first, else the raw hour: its archive `.jsonl.gz`, else its `.jsonl`, converted by
`l2_lake.tiers.curated`), one hour's events, and one hour of the tape (`--tape`: its archive's
content, else its `.jsonl`) resampled to a cadence and depth (`l2_lake.tiers.tape_books`). The
archive comes first because it holds the whole closed hour: a `.jsonl` beside it can only be the
same lines (the moment before the archive step removes it) or lines that came after the hour was
archived. Object storage is read with the lake's S3 client (`l2_lake.store.s3`: boto3;
credentials, region and `AWS_ENDPOINT_URL` from the standard variables). No Dagster.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from l2_lake.format import layout
from l2_lake.format.hour_content import content_of
from l2_lake.store.home import Home, LocalHome, StoreError
from l2_lake.store.s3 import S3Store, parse_lake_url
from l2_lake.tiers.curated import PARQUET_SCHEMA, json_objects, table_from_bytes
from l2_lake.tiers.tape_books import resample_hour

RELATIVE = Path("")  # the layout's paths relative to the lake root: the keys of its home


class LakeSourceError(ValueError):
    """A lake that cannot be read; the message says what to change."""


def _key(path: Path) -> str:
    return PurePosixPath(path).as_posix()


@dataclass(frozen=True)
class HomeLake:
    """The lake as research reads it, from any home: a directory (`LocalHome`) or a bucket (`S3Store`)."""

    home: Home

    def __str__(self) -> str:
        return self.home.describe()

    def instruments(self) -> set[str]:
        raw = {name for prefix in (layout.RAW_PREFIX, layout.TAPE_PREFIX) for name in self.home.list_dirs(_key(prefix))
               if layout.INST_ID_RE.fullmatch(name)}
        curated = {v for name in self.home.list_dirs(_key(layout.CURATED_PREFIX))
                   if (v := layout.parse_hive_part(name, 0)) is not None}
        return raw | curated

    def _get(self, path: Path) -> bytes | None:
        return self.home.read(_key(path))

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
        lines = self.hour_tape_lines(inst_id, hour)
        return None if lines is None else resample_hour(lines, inst_id, cadence_ms, depth)[0]

    def _hour_content(self, inst_id: str, hour: datetime, prefix: Path) -> bytes | None:
        """The hour's lines of the dataset `prefix`: its archive's content, else its `.jsonl`."""
        archive = layout.archive_path(RELATIVE, inst_id, hour, prefix)
        archived = self._get(archive)
        if archived is not None:
            return content_of(archived, archive.name)
        return self._get(layout.records_path(RELATIVE, inst_id, hour, prefix))


def open_lake(lake: str | os.PathLike | None) -> HomeLake:
    """`lake` (default: `L2_LAKE_URL`, else `L2_DATA_DIR`, else ./data) as a source: `s3://…` is
    object storage, anything else a directory that must exist."""
    given = lake if lake is not None else os.environ.get("L2_LAKE_URL") or os.environ.get("L2_DATA_DIR", "./data")
    if str(given).startswith("s3://"):
        try:
            return HomeLake(S3Store(parse_lake_url(str(given))))
        except (ValueError, StoreError) as exc:
            raise LakeSourceError(f"lake {given}: {exc}") from None
    root = Path(given).expanduser()
    if not root.is_dir():
        raise LakeSourceError(f"lake {root} does not exist (pass lake=… or set L2_DATA_DIR to the collector's data "
                              "dir, or L2_LAKE_URL to its s3:// home)")
    return HomeLake(LocalHome(root))

"""One closed instrument-hour's liquidity features (`l2_lake.tiers.features`) written to the features
tier (`layout.features_path`, hive-partitioned like the curated tier), and optionally the hour's
figure (`l2_lake.pictures.plots.hour_figure`) rendered from the same tables.

The books come from the curated Parquet of the hour, or from its `.jsonl` / `.jsonl.gz` when the
hour is not curated yet (the same table either way, see `l2_lake.research.read`). Every record becomes a
row, flagged ones included with `exact=false` and null features, so the features tier lines up row
for row with the curated tier. No Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from l2_lake.format import layout
from l2_lake.format.hours import is_closed
from l2_lake.store.home import LocalHome
from l2_lake.tiers.archive import OpenHourError
from l2_lake.tiers.curated import write_verified
from l2_lake.tiers.features import book_features
from l2_lake.tiers.source import HomeLake


@dataclass(frozen=True)
class FeaturesResult:
    inst_id: str
    hour: datetime
    status: str  # written | no_data
    path: Path
    rows: int = 0
    exact_rows: int = 0
    medians: dict[str, float | None] | None = None
    bytes: int = 0
    seconds: float = 0.0
    figure: bytes | None = None  # PNG of the hour, when asked for

    @property
    def empty(self) -> bool:
        return self.status == "written" and not self.rows

    @property
    def warning(self) -> str | None:
        return None

    def metadata(self) -> dict[str, object]:
        return {
            "status": self.status,
            "rows": self.rows,
            "exact_rows": self.exact_rows,
            **{f"median_{name}": value for name, value in (self.medians or {}).items() if value is not None},
            "path": str(self.path),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


# the hour's picture as PNG from its books, features and events (`l2_lake.pictures.plots.hour_figure`)
HourFigureDrawer = Callable[[pa.Table, pa.Table, Sequence[dict[str, Any]], str, datetime], bytes]

SUMMARISED = ("spread_bps", "bid_depth_25bps", "ask_depth_25bps", "imbalance_5")  # medians in the metadata


def _median(column: pa.ChunkedArray) -> float | None:
    value = pc.approximate_median(column).as_py()  # t-digest: exact for an hour's worth of rows in practice
    return None if value is None else round(value, 6)


def write_features(data_dir: Path, inst_id: str, hour: datetime, now: datetime,
                   grace: timedelta = timedelta(minutes=2), *,
                   figure: HourFigureDrawer | None = None, books: pa.Table | None = None) -> FeaturesResult:
    """Compute and atomically write the hour's features (refuses the open hour); with a `figure` drawer, also
    render the hour's PNG. `books`: the hour's curated table, already read (`l2_lake.tiers.hour_tiers`); else
    it is read here."""
    started = time.monotonic()
    target = layout.features_path(data_dir, inst_id, hour)
    if not is_closed(hour, now, grace):
        raise OpenHourError(f"{inst_id} {hour:%Y-%m-%d %H}:00 is not closed yet; no features for an open hour")
    lake = HomeLake(LocalHome(Path(data_dir)))
    books = books if books is not None else lake.hour_books(inst_id, hour)
    if books is None:
        return FeaturesResult(inst_id, hour, "no_data", target, seconds=time.monotonic() - started)
    features = book_features(books)
    write_verified(features.replace_schema_metadata({"okx_l2.instId": inst_id, "okx_l2.hour": hour.isoformat()}),
                   target)
    png = figure(books, features, lake.hour_events(inst_id, hour), inst_id, hour) if figure is not None else None
    return FeaturesResult(
        inst_id, hour, "written", target, rows=features.num_rows,
        exact_rows=pc.sum(features["exact"]).as_py() or 0,
        medians={name: _median(features[name]) for name in SUMMARISED},
        bytes=target.stat().st_size, seconds=time.monotonic() - started, figure=png,
    )

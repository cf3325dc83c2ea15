"""The images in Dagster's UI, through a real Dagster instance: `book_features` writes the features
tier and shows the hour's figure in its materialization; `lake_health` draws the heatmap of the
registered hours, failed where a check failed, grey where nothing is registered."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from io import BytesIO

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, materialize
from matplotlib.image import imread

from l2_lake.format import layout
from l2_lake.tiers.features import FEATURES_SCHEMA
from l2_pipeline.assets.dashboards import health_cell, window
from l2_pipeline.keys import BOOK_FEATURES, LAKE_HEALTH
from l2_pipeline.partitions import parse_partition_key, partition_key
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    hours_drawn_after,
    lake_assets,
    lake_resource,
    make_records,
    plant_good_hour,
    register_closed_hours,
    with_gap,
    write_hour,
)

PNG = b"\x89PNG\r\n\x1a\n"


def png_of(markdown: str) -> bytes:
    """The PNG a Markdown metadata value shows (`![alt](data:image/png;base64,…)`)."""
    m = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert m, markdown[:120]
    return base64.b64decode(m.group(1))


def looks_drawn(png: bytes, min_kb: int = 10) -> np.ndarray:
    assert png.startswith(PNG) and min_kb * 1000 < len(png) < 400_000
    pixels = imread(BytesIO(png))
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20
    return pixels


@pytest.fixture(scope="module")
def registered(tmp_path_factory, dagster_instances):
    """Three closed hours of BTC and ETH, the last one ended an hour ago: BTC's middle hour has a gap (a WARN
    check fails), ETH's last hour has 40 records (coverage, an ERROR check, fails at 5 %); the rest
    have 180 records (10 %, passing at 5 %: a tenth of an hour's data keeps the test quick).
    Registered through the sensor's backfill on a persistent instance, figures on."""
    root = tmp_path_factory.mktemp("lake")
    last = layout.hour_floor(int(datetime.now(UTC).timestamp() * 1000)) - 2 * layout.HOUR  # closed, grace or not
    hours = [last - 2 * layout.HOUR, last - layout.HOUR, last]
    for hour in hours:
        plant_good_hour(root, ETH, hour, count=40 if hour == last else 180)
        if hour == hours[1]:
            records, events = with_gap(make_records(BTC, hour, count=180, depth=5), 90, BTC, hour)
            write_hour(root, BTC, hour, records, events=events)
        else:
            plant_good_hour(root, BTC, hour, count=180)
    lake = lake_resource(root, hour_figures=True, health_days=1, coverage_threshold_pct=5)
    with dagster_instances.persistent(tmp_path_factory.mktemp("home")) as instance:
        register_closed_hours(instance, lake)
        yield instance, lake, {"no_gaps": str(partition_key(BTC, hours[1])), "coverage": str(partition_key(ETH, last))}


def test_book_features_shows_the_hours_figure(registered):
    instance, lake, damaged = registered
    partition = damaged["no_gaps"]
    records = instance.fetch_materializations(BOOK_FEATURES, limit=1000).records
    by_partition = {r.partition_key: r.asset_materialization.metadata for r in records}
    meta = by_partition[partition]
    looks_drawn(png_of(meta["figure"].value), min_kb=8)
    hour = datetime.strptime(partition.split("|")[0], "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
    features = pq.read_table(layout.features_path(lake.root, BTC, hour))
    assert features.schema.remove_metadata() == FEATURES_SCHEMA
    assert meta["rows"].value == features.num_rows and meta["exact_rows"].value == features.num_rows - 1  # the gap


def test_lake_health_heatmap_colours_the_failed_hours(registered):
    instance, lake, damaged = registered
    _, last = parse_partition_key(damaged["coverage"])  # the last registered hour
    done = materialize([lake_assets(lake)["lake_health"]], instance=instance, resources={"lake": lake})
    assert done.success
    meta = instance.get_latest_materialization_event(LAKE_HEALTH).asset_materialization.metadata
    pixels = looks_drawn(png_of(meta["heatmap"].value))
    assert (meta["failed"].value, meta["warning"].value, meta["passed"].value) == (1, 1, 4)
    # from the first registered hour on (no grey cells before it) to the last closed hour
    assert meta["missing"].value == 2 * hours_drawn_after(meta, last)
    red = (pixels[..., 0] > 0.75) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    assert red.sum() > 100  # the failed cells are drawn red


def test_health_cells_from_metadata():
    hour = datetime(2026, 11, 20, 5, tzinfo=UTC)
    assert health_cell("BTC-USDT-SWAP", hour, None).status == "missing"
    cell = health_cell("BTC-USDT-SWAP", hour, {"quality": "FAILED: no_gaps, coverage", "coverage_pct": 80.5, "gaps": 2})
    assert (cell.status, cell.failed_checks, cell.coverage_pct, cell.gaps) == ("failed", ("no_gaps", "coverage"),
                                                                               80.5, 2)
    assert health_cell("BTC-USDT-SWAP", hour, {"quality": "FAILED: no_gaps"}).status == "warning"
    assert health_cell("BTC-USDT-SWAP", hour, {"quality": "passed (6 checks)"}).status == "passed"
    now = datetime(2026, 11, 20, 5, 30, tzinfo=UTC)
    assert window(now, 1)[-1] == datetime(2026, 11, 20, 4, tzinfo=UTC) and len(window(now, 1)) == 24
    assert window(now, 1)[0] == datetime(2026, 11, 19, 5, tzinfo=UTC) == now - timedelta(hours=24, minutes=30)
    assert AssetKey("lake_health") == LAKE_HEALTH

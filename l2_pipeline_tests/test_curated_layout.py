"""The hive-partitioned Parquet tiers (CONTRACT.md §1): DuckDB reads the curated tier in one line
with instId, date and hour as columns; lakes curated in the pre-hive layout are moved by the
retention job without losing a row; retention empties and removes the hive directories (curated,
features and a resampling of the tape alike)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow.parquet as pq
from dagster import RunRequest, build_schedule_context

from l2_lake.format import layout
from l2_lake.tiers.curated import write_parquet
from l2_lake.tiers.resampled import resampled_path, resampled_prefix
from l2_lake.tiers.retention import plan_deletions
from l2_pipeline import read_books
from l2_pipeline.jobs import retention_job
from l2_pipeline.schedules import retention_schedule
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, ETH, lake_resource, plant_good_hour, plant_live_hour

NOW = datetime.now(UTC)


def h(offset: float) -> datetime:
    return BASE_HOUR + timedelta(hours=offset)


def test_duckdb_reads_the_curated_tier_in_one_line(tmp_path):
    for inst_id, hours in ((BTC, (0, 13)), (ETH, (0,))):
        for offset in hours:
            plant_good_hour(tmp_path, inst_id, h(offset), count=3 + offset)
            write_parquet(tmp_path, inst_id, h(offset), NOW)
    glob = f"{tmp_path}/curated/**/*.parquet"
    rows = duckdb.sql(
        f"select instId, date, hour, count(*) as n, min(best_bid_str) as bid "
        f"from read_parquet('{glob}', hive_partitioning=true) group by all order by all"
    ).fetchall()
    day = BASE_HOUR.date()
    assert [row[:4] for row in rows] == [(BTC, day, 0, 3), (BTC, day, 13, 16), (ETH, day, 0, 3)]
    types = duckdb.sql(f"select typeof(date), typeof(hour) from read_parquet('{glob}', hive_partitioning=true) limit 1")
    assert types.fetchall() == [("DATE", "BIGINT")]
    # a filter on the partition columns is a plain integer comparison
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}', hive_partitioning=true) "
                      f"where hour = 13 and instId = '{BTC}'").fetchall() == [(16,)]


def move_to_legacy_layout(data_dir, inst_id: str, hour: datetime) -> None:
    legacy = layout.legacy_curated_path(data_dir, inst_id, hour)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(layout.curated_path(data_dir, inst_id, hour), legacy)
    shutil.rmtree(data_dir / layout.CURATED_PREFIX / f"instId={inst_id}")


def test_retention_job_moves_a_pre_hive_lake_losing_nothing(tmp_path, dagster_instances):
    plant_good_hour(tmp_path, BTC, h(0), count=5)
    write_parquet(tmp_path, BTC, h(0), NOW)
    expected = pq.read_table(layout.curated_path(tmp_path, BTC, h(0)))
    move_to_legacy_layout(tmp_path, BTC, h(0))
    for suffix in (layout.RECORDS_SUFFIX, layout.EVENTS_SUFFIX):  # raw gone: the curated copy is the only one
        (layout.hour_dir(tmp_path, BTC, h(0)) / f"00{suffix}").unlink(missing_ok=True)
    lake = lake_resource(tmp_path, curated_retention_days=30)
    at = h(24)
    assert plan_deletions(tmp_path, at, lake.raw_retention, lake.curated_retention) == []
    with dagster_instances.ephemeral() as instance:
        request = retention_schedule(build_schedule_context(instance=instance, scheduled_execution_time=at,
                                                            resources={"lake": lake}))
        assert isinstance(request, RunRequest)  # nothing due, but a legacy directory to move
        assert retention_job.execute_in_process(run_config=request.run_config, instance=instance,
                                                resources={"lake": lake}).success
    assert pq.read_table(layout.curated_path(tmp_path, BTC, h(0))).equals(expected)
    assert not (tmp_path / layout.CURATED_PREFIX / BTC).exists()
    assert read_books(BTC, h(0), h(1), lake=tmp_path, include_flagged=True).num_rows == 5


def test_rebuilding_an_hour_removes_its_pre_hive_copy(tmp_path):
    plant_good_hour(tmp_path, BTC, h(0), count=2)
    write_parquet(tmp_path, BTC, h(0), NOW)
    move_to_legacy_layout(tmp_path, BTC, h(0))
    write_parquet(tmp_path, BTC, h(0), NOW)
    assert layout.curated_path(tmp_path, BTC, h(0)).is_file()
    assert not layout.legacy_curated_path(tmp_path, BTC, h(0)).exists()


def test_retention_deletes_parquet_tiers_and_their_emptied_directories(tmp_path, dagster_instances):
    plant_good_hour(tmp_path, BTC, h(0), count=2)
    write_parquet(tmp_path, BTC, h(0), NOW)
    features = layout.features_path(tmp_path, BTC, h(0))
    resampled = resampled_path(tmp_path, BTC, h(0), cadence_ms=250, depth=25)
    for copy in (features, resampled):
        copy.parent.mkdir(parents=True)
        shutil.copy(layout.curated_path(tmp_path, BTC, h(0)), copy)
    plant_live_hour(tmp_path, datetime.now(UTC))
    lake = lake_resource(tmp_path, curated_retention_days=1)  # BASE_HOUR is days before now
    config = {"ops": {"delete_expired": {"config": {"as_of": "", "dry_run": False}}}}
    with dagster_instances.ephemeral() as instance:
        assert retention_job.execute_in_process(run_config=config, instance=instance, resources={"lake": lake}).success
    for prefix in (layout.CURATED_PREFIX, layout.FEATURES_PREFIX, resampled_prefix(250, 25)):
        assert list((tmp_path / prefix / f"instId={BTC}").iterdir()) == []  # date=…/hour=… removed

"""raw_hours_sensor and collector_freshness_sensor on a real ephemeral Dagster instance."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from dagster import AssetCheckEvaluation, AssetMaterialization, DagsterInstance, build_sensor_context

from collector import layout
from l2_pipeline import sensors
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.quality import HOUR_CHECKS
from l2_pipeline.sensors import RawCursor, collector_freshness_sensor, raw_hours_sensor
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    apply_sensor_result,
    backfill_keys,
    crossed_record,
    event,
    lake_resource,
    make_records,
    ms,
    plant_good_hour,
    write_events,
    write_hour,
)

SOL = "SOL-USDT-SWAP"


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def tick(instance, lake, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake})
    result = raw_hours_sensor(context)
    apply_sensor_result(instance, result)
    return result


def materializations(result) -> dict[str, AssetMaterialization]:
    return {e.partition: e for e in result.asset_events if isinstance(e, AssetMaterialization)}


def key(inst_id, offset):
    return str(partition_key(inst_id, BASE_HOUR + timedelta(hours=offset)))


def test_registers_exactly_the_closed_hours(instance, tmp_path):
    for offset in range(3):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=60)
    plant_good_hour(tmp_path, SOL, BASE_HOUR + timedelta(hours=1), count=60, archived=True)
    now = datetime.now(UTC)
    current = layout.hour_floor(ms(now))
    plant_good_hour(tmp_path, BTC, current, count=2)  # the open hour
    previous = current - timedelta(hours=1)
    plant_good_hour(tmp_path, ETH, previous, count=2)  # closed, but inside the grace chosen below
    grace_minutes = (now - current).total_seconds() / 60 + 10
    lake = lake_resource(tmp_path, closed_grace_minutes=grace_minutes, cadence_seconds=60)

    result = tick(instance, lake)
    assert set(materializations(result)) == {key(BTC, 0), key(BTC, 1), key(BTC, 2), key(SOL, 1)}
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == [BTC, ETH, SOL]
    assert set(instance.get_dynamic_partitions("instrument")) == {BTC, ETH, SOL}
    checks = [e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)]
    assert len(checks) == 4 * len(HOUR_CHECKS) and all(c.passed for c in checks)
    assert {c.partition for c in checks} == set(materializations(result))
    meta = materializations(result)[key(BTC, 0)].metadata
    assert meta["records"].value == 60 and meta["coverage_pct"].value == 100.0
    assert meta["first_ts"].value == ms(BASE_HOUR) / 1000 + 1
    for name in ("gaps", "checksum_failures", "resyncs", "reconnects", "bytes", "last_ts", "max_spread_bps",
                 "crossed_records"):
        assert isinstance(meta[name].value, int | float), name
    assert materializations(result)[key(SOL, 1)].metadata["source_kind"].value == "archive"
    (backfill,) = result.run_requests  # a curated_parquet backfill of the new hours
    assert backfill.requires_backfill_daemon()
    assert backfill_keys(backfill) == {key(BTC, 0), key(BTC, 1), key(SOL, 1), key(BTC, 2)}
    assert (backfill.tags["l2/first"], backfill.tags["l2/last"], backfill.tags["l2/hours"]) == (
        key(BTC, 0), key(BTC, 2), "4")  # oldest first
    cursor = orjson.loads(result.cursor)["last"]
    assert cursor == {BTC: "2026-11-20T02:00:00Z", SOL: "2026-11-20T01:00:00Z"}
    stored = instance.get_materialized_partitions(RAW_HOUR)
    assert stored == set(materializations(result))


def test_cursor_skips_registered_hours_without_reading_them(instance, tmp_path, monkeypatch):
    for offset in range(4):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=10)
    lake = lake_resource(tmp_path, curate_on_register=False)
    first = tick(instance, lake)
    assert len(materializations(first)) == 4 and not first.run_requests

    reads = []
    real = sensors.compute_hour_stats
    monkeypatch.setattr(sensors, "compute_hour_stats", lambda *a, **k: reads.append(a[1:3]) or real(*a, **k))
    second = tick(instance, lake, first.cursor)
    assert not second.asset_events and reads == [] and second.skip_reason is not None

    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=4), count=10)
    plant_good_hour(tmp_path, BTC, BASE_HOUR - timedelta(hours=5), count=10)  # older than the cursor: not revisited
    plant_good_hour(tmp_path, ETH, BASE_HOUR + timedelta(hours=2), count=10)  # new instrument: all its hours
    third = tick(instance, lake, second.cursor)
    assert set(materializations(third)) == {key(BTC, 4), key(ETH, 2)}
    assert sorted(reads) == sorted([(BTC, BASE_HOUR + timedelta(hours=4)), (ETH, BASE_HOUR + timedelta(hours=2))])


def test_tick_budget_continues_next_tick(instance, tmp_path):
    for offset in range(5):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=5)
        plant_good_hour(tmp_path, ETH, BASE_HOUR + timedelta(hours=offset), count=5)
    lake = lake_resource(tmp_path, sensor_max_hours_per_tick=4)
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        result = tick(instance, lake, cursor)
        seen.extend(materializations(result))
        cursor = result.cursor
    assert len(seen) == len(set(seen)) == 10
    assert seen[:4] == [key(BTC, 0), key(ETH, 0), key(BTC, 1), key(ETH, 1)]


def test_bad_hour_gets_failing_check_evaluations(instance, tmp_path):
    hour = BASE_HOUR
    records = make_records(BTC, hour, count=100, cadence_ms=36_000)
    records[50] = crossed_record(BTC, ms(hour) + 50 * 36_000 + 1000, seq=9)
    write_hour(tmp_path, BTC, hour, records)
    result = tick(instance, lake_resource(tmp_path, cadence_seconds=36))
    verdicts = {e.check_name: e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)}
    assert not verdicts["no_crossed_books"].passed
    assert verdicts["no_crossed_books"].metadata["crossed_records"].value == 1
    assert all(v.passed for name, v in verdicts.items() if name != "no_crossed_books")


def test_hours_before_partitions_start_are_skipped(instance, tmp_path):
    plant_good_hour(tmp_path, BTC, datetime(2025, 6, 1, 3, tzinfo=UTC), count=5)
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    result = tick(instance, lake_resource(tmp_path))
    assert set(materializations(result)) == {key(BTC, 0)}
    assert RawCursor.parse(result.cursor).last[BTC] == BASE_HOUR


def test_freshness_sensor_reports_changes(instance, tmp_path):
    now = datetime.now(UTC)
    path = layout.records_path(tmp_path, BTC, layout.hour_floor(ms(now)))
    plant_good_hour(tmp_path, BTC, layout.hour_floor(ms(now)), count=1)
    lake = lake_resource(tmp_path, instruments=[BTC], freshness_minutes=5)

    def run(cursor=None):
        return collector_freshness_sensor(build_sensor_context(instance=instance, cursor=cursor,
                                                               resources={"lake": lake}))

    fresh = run()
    (evaluation,) = fresh.asset_events
    assert evaluation.passed and evaluation.check_name == "collector_freshness" and evaluation.partition is None
    assert run(fresh.cursor).asset_events == []  # unchanged within 10 minutes: nothing new
    old = (now - timedelta(minutes=30)).timestamp()
    os.utime(path, (old, old))
    stale = run(fresh.cursor)
    (evaluation,) = stale.asset_events
    assert not evaluation.passed and "stale" in evaluation.description


def test_configured_partitions_start_and_events_only_hours(instance, tmp_path):
    """The first registrable hour is the resource's `partitions_start` (the one the partitions are
    built from); an hour with only an events file is registered but not curated (nothing to convert:
    curating it would fail for want of a records file)."""
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=1), count=5)
    write_events(tmp_path, BTC, BASE_HOUR + timedelta(hours=2), [event(BTC, "reconnect", BASE_HOUR, reason="x")])
    result = tick(instance, lake_resource(tmp_path, instruments=[BTC], partitions_start="2026-11-20-01:00"))
    assert set(materializations(result)) == {key(BTC, 1), key(BTC, 2)}
    assert materializations(result)[key(BTC, 2)].metadata["note"].value.startswith("only an events file")
    (backfill,) = result.run_requests
    assert backfill_keys(backfill) == {key(BTC, 1)}
    assert RawCursor.parse(result.cursor).last[BTC] == BASE_HOUR + timedelta(hours=2)

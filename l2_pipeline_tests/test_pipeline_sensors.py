"""raw_hours_sensor and collector_freshness_sensor on a real Dagster instance (the `instance` fixture:
in memory, or on PostgreSQL): what a tick requests, and what the runs of its backfill record
(executed in process, as the backfill daemon would split them)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import orjson
from dagster import AssetCheckSeverity, build_sensor_context

from l2_lake.format import layout
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_pipeline import sensors
from l2_pipeline.assets.dashboards import lake_health_sensor
from l2_pipeline.keys import RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.sensors import RawCursor, collector_freshness_sensor
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    SOL,
    check_status,
    crossed_record,
    event,
    execute_backfill_request,
    lake_definitions,
    lake_resource,
    latest_raw_hour,
    make_records,
    ms,
    parquet_tiers,
    plant_good_hour,
    raw_hours_tick,
    requested,
    write_events,
    write_hour,
)


def key(inst_id, offset):
    return str(partition_key(inst_id, BASE_HOUR + timedelta(hours=offset)))


def test_registers_exactly_the_closed_hours(instance, tmp_path, monkeypatch):
    for offset in range(3):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=60)
    plant_good_hour(tmp_path, SOL, BASE_HOUR + timedelta(hours=1), count=60, archived=True)
    now = datetime.now(UTC)
    # the tick runs at `now`, the instant the grace below is measured from: a wall clock crossing the hour
    # before the tick would close `current` and move every hour's place relative to the grace
    monkeypatch.setattr(sensors, "now_utc", lambda: now)
    current = layout.hour_floor(ms(now))
    plant_good_hour(tmp_path, BTC, current, count=2)  # the open hour
    for hours_back in (1, 2):  # closed, but inside the grace chosen below, which reaches back past an hour
        plant_good_hour(tmp_path, ETH, current - timedelta(hours=hours_back), count=2)
    grace_minutes = (now - current).total_seconds() / 60 + 70
    lake = lake_resource(tmp_path, closed_grace_minutes=grace_minutes, cadence_seconds=60)

    result = raw_hours_tick(instance, lake)
    new = {key(BTC, 0), key(BTC, 1), key(BTC, 2), key(SOL, 1)}
    assert requested(result) == {"raw_hour": new, "raw_archive": {key(SOL, 1)}, **parquet_tiers(new)}
    (backfill,) = result.run_requests
    tags = backfill.tags
    assert (tags["l2/backfill_first"], tags["l2/backfill_last"], tags["l2/backfill_hours"]) == (
        key(BTC, 0), key(BTC, 2), "4")  # oldest first
    cursor = orjson.loads(result.cursor)["last"]
    assert cursor == {BTC: "2026-11-20T02:00:00Z", SOL: "2026-11-20T01:00:00Z"}

    runs = execute_backfill_request(instance, lake, result)
    assert all(run.success for run in runs)
    assert instance.get_materialized_partitions(RAW_HOUR) == new
    meta = latest_raw_hour(instance, key(BTC, 0)).metadata
    assert meta["records"].value == 60 and meta["coverage_pct"].value == 100.0
    assert meta["first_ts"].value == ms(BASE_HOUR) / 1000 + 1
    for name in ("gaps", "checksum_failures", "resyncs", "reconnects", "bytes", "last_ts", "max_spread_bps",
                 "crossed_records"):
        assert isinstance(meta[name].value, int | float), name
    assert meta["fingerprint"].value.startswith("00.jsonl:")
    assert latest_raw_hour(instance, key(SOL, 1)).metadata["source_kind"].value == "archive"
    status = check_status(instance, lake)
    assert status == {name: {"SUCCEEDED": new} for name in HOUR_CHECKS}  # current: each targets its hour
    assert instance.get_materialized_partitions(RAW_ARCHIVE) == {key(SOL, 1)}  # found archived


def test_cursor_skips_registered_hours_without_reading_them(instance, tmp_path):
    for offset in range(4):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=10)
    lake = lake_resource(tmp_path, curate_on_register=False)
    first = raw_hours_tick(instance, lake)
    assert set(requested(first)) == {"raw_hour"} and len(requested(first)["raw_hour"]) == 4

    second = raw_hours_tick(instance, lake, first.cursor)
    assert not second.run_requests and second.skip_reason is not None

    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=4), count=10)
    plant_good_hour(tmp_path, BTC, BASE_HOUR - timedelta(hours=5), count=10)  # older than the cursor: not revisited
    plant_good_hour(tmp_path, ETH, BASE_HOUR + timedelta(hours=2), count=10)  # an instrument's first hours
    third = raw_hours_tick(instance, lake, second.cursor)
    assert requested(third) == {"raw_hour": {key(BTC, 4), key(ETH, 2)}}


def test_tick_budget_continues_next_tick(instance, tmp_path):
    for offset in range(5):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=5)
        plant_good_hour(tmp_path, ETH, BASE_HOUR + timedelta(hours=offset), count=5)
    lake = lake_resource(tmp_path, sensor_max_hours_per_tick=4)
    seen: list[set[str]] = []
    cursor = None
    for _ in range(4):
        result = raw_hours_tick(instance, lake, cursor)
        seen.append(requested(result).get("raw_hour", set()))
        cursor = result.cursor
    assert [len(s) for s in seen] == [4, 4, 2, 0]
    assert seen[0] == {key(BTC, 0), key(ETH, 0), key(BTC, 1), key(ETH, 1)}
    assert set().union(*seen) == {key(i, h) for i in (BTC, ETH) for h in range(5)}


def test_bad_hour_fails_its_check_in_the_partition_health(instance, tmp_path):
    hour = BASE_HOUR
    records = make_records(BTC, hour, count=100, cadence_ms=36_000)
    records[50] = crossed_record(BTC, ms(hour) + 50 * 36_000 + 1000, seq=9)
    write_hour(tmp_path, BTC, hour, records)
    write_hour(tmp_path, BTC, hour + timedelta(hours=1), make_records(BTC, hour + timedelta(hours=1), count=100,
                                                                      cadence_ms=36_000))
    lake = lake_resource(tmp_path, cadence_seconds=36)
    result = raw_hours_tick(instance, lake)
    (run,) = [r for r in execute_backfill_request(instance, lake, result)
              if r.get_asset_check_evaluations()]  # raw_hour and its checks: one run for both hours
    crossed = {e.partition: e for e in run.get_asset_check_evaluations() if e.check_name == "no_crossed_books"}
    assert not crossed[key(BTC, 0)].passed and crossed[key(BTC, 0)].metadata["crossed_records"].value == 1
    assert crossed[key(BTC, 1)].passed
    status = check_status(instance, lake)
    assert status["no_crossed_books"] == {"FAILED": {key(BTC, 0)}, "SUCCEEDED": {key(BTC, 1)}}
    # the asset's partition view shows metadata, so the verdict leads it there too
    assert latest_raw_hour(instance, key(BTC, 0)).metadata["quality"].value == "FAILED: no_crossed_books"
    assert latest_raw_hour(instance, key(BTC, 1)).metadata["quality"].value == "passed (6 checks)"
    assert latest_raw_hour(instance, key(BTC, 0)).metadata["failed_checks"].value == 1
    assert all(status[name] == {"SUCCEEDED": {key(BTC, 0), key(BTC, 1)}} for name in HOUR_CHECKS
               if name != "no_crossed_books")


def test_hours_before_partitions_start_are_skipped(instance, tmp_path):
    plant_good_hour(tmp_path, BTC, datetime(2025, 6, 1, 3, tzinfo=UTC), count=5)
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    result = raw_hours_tick(instance, lake_resource(tmp_path, partitions_start="2026-11-20-00:00"))
    assert requested(result)["raw_hour"] == {key(BTC, 0)}
    assert RawCursor.parse(result.cursor).last[BTC] == BASE_HOUR


def test_instrument_that_appears_after_load_waits_for_a_reload(instance, tmp_path, capfd):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    lake = lake_resource(tmp_path, instruments=[BTC])
    sensor = lake_definitions(lake).resolve_sensor_def("raw_hours_sensor")  # loaded before SOL appears
    plant_good_hour(tmp_path, SOL, BASE_HOUR, count=5)
    result = sensor(build_sensor_context(instance=instance, resources={"lake": lake}))
    assert requested(result)["raw_hour"] == {key(BTC, 0)}
    assert SOL not in RawCursor.parse(result.cursor).last
    assert "reload it to register them): SOL-USDT-SWAP" in capfd.readouterr().err


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
    assert fresh.skip_reason.skip_message.startswith("recorded collector_freshness (passed)")
    unchanged = run(fresh.cursor)
    assert unchanged.asset_events == [] and unchanged.skip_reason.skip_message.startswith("unchanged")
    old = (now - timedelta(minutes=30)).timestamp()
    os.utime(path, (old, old))
    stale = run(fresh.cursor)
    (evaluation,) = stale.asset_events
    assert not evaluation.passed and evaluation.description.startswith("stopped: no l2-collector is running")
    assert evaluation.severity == AssetCheckSeverity.WARN  # nothing runs here: a warning, not an alarm


def test_configured_partitions_start_and_events_only_hours(instance, tmp_path):
    """The first registrable hour is the resource's `partitions_start` (the one the partitions are
    built from); an hour with only an events file is registered but not curated (nothing to convert:
    curating it would fail for want of a records file)."""
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=1), count=5)
    write_events(tmp_path, BTC, BASE_HOUR + timedelta(hours=2), [event(BTC, "reconnect", BASE_HOUR, reason="x")])
    lake = lake_resource(tmp_path, instruments=[BTC], partitions_start="2026-11-20-01:00")
    result = raw_hours_tick(instance, lake)
    assert requested(result) == {"raw_hour": {key(BTC, 1), key(BTC, 2)}, **parquet_tiers({key(BTC, 1)})}
    assert RawCursor.parse(result.cursor).last[BTC] == BASE_HOUR + timedelta(hours=2)
    assert all(run.success for run in execute_backfill_request(instance, lake, result))
    assert latest_raw_hour(instance, key(BTC, 2)).metadata["note"].value.startswith("only an events file")


def test_lake_health_sensor_redraws_once_per_batch_of_registrations(instance, tmp_path):
    """No raw_hour materialization: nothing; after a registration: one run, keyed by the newest event;
    nothing more until another hour is registered."""
    lake = lake_resource(tmp_path, instruments=[BTC])
    assert lake_health_sensor(build_sensor_context(instance=instance)).run_requests == []
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=5)
    assert all(run.success for run in execute_backfill_request(instance, lake, raw_hours_tick(instance, lake)))
    first = lake_health_sensor(build_sensor_context(instance=instance))
    (request,) = first.run_requests
    assert request.run_key == f"lake_health-{first.cursor}"
    again = lake_health_sensor(build_sensor_context(instance=instance, cursor=first.cursor))
    assert again.run_requests == [] and again.cursor == first.cursor

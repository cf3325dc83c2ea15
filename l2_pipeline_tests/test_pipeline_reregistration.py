"""Re-registering raw_hour partitions (a cursor reset) on a persistent Dagster instance (SQLite, or
PostgreSQL: l2_pipeline_tests/instances.py).

After a cursor reset the sensor must not register an hour twice for nothing, and must register
again every hour whose files changed since (a late write, a repaired torn tail, a file planted late
before the cursor), so that its figures and its check results are current again. It tells them
apart by the `fingerprint` of the hour's files its latest `raw_hour` materialization recorded.

The runless UNIQUE-constraint bug (asset_check_executions) it guarded is gone: the sensor emits no runless event.

Ticks are evaluated with the code location's sensor and their backfills executed in process as
the backfill daemon splits them; in the last test the sensor daemon, the UI's cursor mutation
and the backfill daemon do it all.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, DagsterInstance
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.scheduler.instigation import TickStatus

from l2_lake.format import layout
from l2_lake.format.record import encode_line
from l2_lake.quality.stats_cache import fingerprint
from l2_lake.quality.verdicts import HOUR_CHECKS, SCHEMA_VALID
from l2_lake.tiers.archive import archive_hour
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    NO_FIGURES,
    append_record,
    backfill_partitions,
    backfill_runs,
    check_status,
    execute_backfill_request,
    lake_resource,
    latest_raw_hour,
    make_records,
    parquet_tiers,
    plant_good_hour,
    raw_hours_tick,
    register_closed_hours,
    requested,
    reset_sensor_cursor,
    run_backfill,
    sensor_daemon_tick,
    torn,
    write_hour,
)


@pytest.fixture
def instance(persistent_instance):
    """The tests' instance: a persistent one."""
    return persistent_instance


def key(inst_id: str, offset: int) -> str:
    return str(partition_key(inst_id, BASE_HOUR + timedelta(hours=offset)))


def check_executions(instance: DagsterInstance) -> Counter:
    """(partition, check) → stored executions of that check."""
    counts: Counter = Counter()
    for name in HOUR_CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(RAW_HOUR, name), 10_000)
        counts.update((record.partition, name) for record in history)
    return counts


def raw_hour_materializations(instance: DagsterInstance) -> Counter:
    records = instance.fetch_materializations(RAW_HOUR, limit=10_000).records
    return Counter(record.partition_key for record in records)


def plant_torn_hour(data_dir, inst_id: str, hour: datetime) -> None:
    lines = [encode_line(r) for r in make_records(inst_id, hour, count=30)]
    write_hour(data_dir, inst_id, hour, lines=[*lines, torn(lines[-1])])


def repair_torn_tail(data_dir, inst_id: str, hour: datetime) -> None:
    path = layout.records_path(data_dir, inst_id, hour)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\n") + 1])


def test_cursor_reset_skips_unchanged_hours_and_registers_changed_ones(instance, tmp_path):
    for offset in range(3):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=30)
    plant_good_hour(tmp_path, ETH, BASE_HOUR, count=30)
    plant_torn_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=3))
    # short hours: only the torn one fails a check; the lake's partitions start an hour early (the late file)
    lake = lake_resource(tmp_path, coverage_threshold_pct=0, partitions_start="2026-11-19-23:00")

    first = register_closed_hours(instance, lake)
    registered = {key(BTC, 0), key(BTC, 1), key(BTC, 2), key(BTC, 3), key(ETH, 0)}
    assert requested(first) == {"raw_hour": registered, **parquet_tiers(registered)}
    status = check_status(instance, lake)
    assert status[SCHEMA_VALID] == {"FAILED": {key(BTC, 3)}, "SUCCEEDED": registered - {key(BTC, 3)}}
    assert all(status[name] == {"SUCCEEDED": registered} for name in HOUR_CHECKS if name != SCHEMA_VALID)
    assert latest_raw_hour(instance, key(BTC, 3)).metadata["invalid_lines"].value == 1
    assert check_executions(instance) == Counter({(k, name): 1 for k in registered for name in HOUR_CHECKS})
    assert raw_hour_materializations(instance) == Counter(dict.fromkeys(registered, 1))

    append_record(tmp_path, BTC, BASE_HOUR + timedelta(hours=1))  # a late write, archived since: changed
    assert archive_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=1), datetime.now(UTC)).status == "archived"
    repair_torn_tail(tmp_path, BTC, BASE_HOUR + timedelta(hours=3))  # a repaired torn tail
    plant_good_hour(tmp_path, BTC, BASE_HOUR - timedelta(hours=1), count=30)  # planted late, before the cursor
    archived = archive_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=2), datetime.now(UTC))
    assert archived.status == "archived"  # same content, now read from the .jsonl.gz: unchanged

    second = raw_hours_tick(instance, lake)  # the operator reset the cursor
    late = key(BTC, -1)
    changed = {key(BTC, 1), key(BTC, 3)}
    assert requested(second) == {"raw_hour": changed | {late}, "raw_archive": {key(BTC, 1)},
                                 **parquet_tiers(changed | {late})}
    assert second.cursor == first.cursor
    assert all(run.success for run in execute_backfill_request(instance, lake, second))

    # the changed hours' new figures and check results are current; nothing was registered twice for nothing
    assert latest_raw_hour(instance, key(BTC, 1)).metadata["records"].value == 31
    repaired = latest_raw_hour(instance, key(BTC, 3)).metadata
    assert repaired["invalid_lines"].value == 0 and repaired["records"].value == 30
    for k, offset in ((key(BTC, 1), 1), (key(BTC, 3), 3), (late, -1)):
        stored = latest_raw_hour(instance, k).metadata["fingerprint"].value
        assert stored == fingerprint(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset))
    everything = registered | {late}
    assert check_status(instance, lake) == {name: {"SUCCEEDED": everything} for name in HOUR_CHECKS}
    twice = {(k, name): 1 + (k in changed) for k in everything for name in HOUR_CHECKS}
    assert check_executions(instance) == Counter(twice)
    assert raw_hour_materializations(instance) == Counter({k: 1 + (k in changed) for k in everything})
    assert pq.read_metadata(layout.curated_path(tmp_path, BTC, BASE_HOUR + timedelta(hours=1))).num_rows == 31
    assert instance.get_materialized_partitions(CURATED_PARQUET) == everything

    third = raw_hours_tick(instance, lake)  # another reset: everything is as registered now
    assert third.run_requests == [] and third.cursor == first.cursor
    assert "0 new hour(s) and 0 whose files changed" in third.skip_reason.skip_message
    assert "6 unchanged" in third.skip_reason.skip_message


def test_reset_during_catch_up_reads_one_budget_per_tick(instance, tmp_path):
    for offset in range(6):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=5)
    lake = lake_resource(tmp_path, instruments=[BTC], sensor_max_hours_per_tick=4, curate_on_register=False)
    first = register_closed_hours(instance, lake)
    assert requested(first) == {"raw_hour": {key(BTC, o) for o in range(4)}}
    reset = raw_hours_tick(instance, lake)  # the first four are registered: nothing, but the cursor moves on
    assert reset.run_requests == [] and reset.cursor == first.cursor
    rest = register_closed_hours(instance, lake, reset.cursor)
    assert requested(rest) == {"raw_hour": {key(BTC, 4), key(BTC, 5)}}
    assert check_executions(instance) == Counter({(key(BTC, o), name): 1 for o in range(6) for name in HOUR_CHECKS})
    assert raw_hour_materializations(instance) == Counter({key(BTC, o): 1 for o in range(6)})


def test_daemon_ticks_after_a_ui_cursor_reset(tmp_path, monkeypatch, dagster_instances):
    """The user's report, end to end: the sensor daemon evaluates the code location's sensor and
    submits its backfill, the backfill daemon runs it, the cursor is reset through the UI's GraphQL
    mutation, and the next daemon tick must succeed and register only the hour that changed."""
    lake_dir = tmp_path / "lake"
    for offset in range(3):
        plant_good_hour(lake_dir, BTC, BASE_HOUR + timedelta(hours=offset), count=10)
    for name, value in {"L2_DATA_DIR": str(lake_dir), "L2_INSTRUMENTS": BTC, **NO_FIGURES,
                        "L2_COVERAGE_THRESHOLD_PCT": "0"}.items():
        monkeypatch.setenv(name, value)  # read by the code server the daemon starts and the runs it launches
    with dagster_instances.daemon_workspace(tmp_path / "dagster_home") as (instance, workspace):
        start = datetime.now(UTC)
        lake = lake_resource(lake_dir, instruments=[BTC], coverage_threshold_pct=0)

        first, cursor = sensor_daemon_tick(instance, workspace, start)
        assert first.status == TickStatus.SUCCESS and cursor is not None
        (backfill,) = instance.get_backfills()
        hours = {key(BTC, offset) for offset in range(3)}
        assert backfill_partitions(backfill) == {"raw_hour": hours, **parquet_tiers(hours)}
        assert run_backfill(instance, workspace, backfill.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
        assert check_status(instance, lake) == {name: {"SUCCEEDED": hours} for name in HOUR_CHECKS}
        append_record(lake_dir, BTC, BASE_HOUR + timedelta(hours=1))

        reset_sensor_cursor(workspace)  # the UI's GraphQL mutation

        # past the sensor's 60 s minimum interval
        second, cursor_after_reset = sensor_daemon_tick(instance, workspace, start + timedelta(minutes=2))
        assert second.status == TickStatus.SUCCESS, second.error
        assert cursor_after_reset == cursor
        # the reset tick's backfill holds only the changed hour: raw_hour (+ its checks) and its Parquet
        again = [b for b in instance.get_backfills() if b.backfill_id != backfill.backfill_id]
        (rereg,) = again
        assert backfill_partitions(rereg) == {"raw_hour": {key(BTC, 1)}, **parquet_tiers({key(BTC, 1)})}
        assert run_backfill(instance, workspace, rereg.backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
        assert all(run.asset_selection <= {RAW_HOUR, CURATED_PARQUET, BOOK_FEATURES} for run in backfill_runs(
            instance, rereg.backfill_id))
        assert latest_raw_hour(instance, key(BTC, 1)).metadata["records"].value == 11
        assert check_status(instance, lake) == {name: {"SUCCEEDED": hours} for name in HOUR_CHECKS}
        assert Counter(r.partition_key for r in instance.fetch_materializations(RAW_HOUR, limit=100).records) == {
            key(BTC, 0): 1, key(BTC, 1): 2, key(BTC, 2): 1}

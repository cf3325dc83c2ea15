"""Re-registering raw_hour partitions (a cursor reset) on a persistent SQLite Dagster instance.

The bug this guards against: Dagster stores a runless check evaluation at most once per
(asset, check, partition) (unique index on asset_key, check_name, run_id "", partition), so a
sensor tick that registered an hour a second time failed with `sqlite3.IntegrityError: UNIQUE
constraint failed: asset_check_executions...` — and so did every later tick.

Ticks are stored the way the sensor daemon stores them: each asset event of the SensorResult
through `DagsterInstance.report_runless_asset_event` (dagster/_daemon/sensor.py), and in the
last test by the daemon itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetMaterialization,
    DagsterInstance,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.sensor import execute_sensor_iteration
from dagster_graphql.test.utils import execute_dagster_graphql

from collector import layout
from collector.record import encode_line
from l2_pipeline.archive import archive_hour
from l2_pipeline.checks import HOUR_CHECK_KEYS
from l2_pipeline.jobs import raw_hour_job
from l2_pipeline.keys import CURATED_PARQUET, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.quality import HOUR_CHECKS
from l2_pipeline.sensors import raw_hours_sensor
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    apply_sensor_result,
    backfill_keys,
    lake_definitions,
    lake_resource,
    make_record,
    make_records,
    ms,
    plant_good_hour,
    torn,
    write_hour,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def tick(instance: DagsterInstance, lake, cursor: str | None):
    result = raw_hours_sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))
    apply_sensor_result(instance, result)
    return result


def key(inst_id: str, offset: int) -> str:
    return str(partition_key(inst_id, BASE_HOUR + timedelta(hours=offset)))


def check_executions(instance: DagsterInstance) -> Counter:
    """(partition, check, run id) → stored executions of that check ("" = runless)."""
    counts: Counter = Counter()
    for name in HOUR_CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(RAW_HOUR, name), 10_000)
        counts.update((record.partition, name, record.run_id) for record in history)
    return counts


def raw_hour_materializations(instance: DagsterInstance) -> Counter:
    records = instance.fetch_materializations(RAW_HOUR, limit=10_000).records
    return Counter(record.partition_key for record in records)


def file_sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plant_torn_hour(data_dir, inst_id: str, hour: datetime) -> None:
    lines = [encode_line(r) for r in make_records(inst_id, hour, count=30)]
    write_hour(data_dir, inst_id, hour, lines=[*lines, torn(lines[-1])])


def append_record(data_dir, inst_id: str, hour: datetime) -> None:
    """A late write: one more valid record at the end of a closed hour's file."""
    path = layout.records_path(data_dir, inst_id, hour)
    with open(path, "ab") as f:
        f.write(encode_line(make_record(inst_id, ms(hour) + 3_500_000, seq=50_000)))


def repair_torn_tail(data_dir, inst_id: str, hour: datetime) -> None:
    path = layout.records_path(data_dir, inst_id, hour)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\n") + 1])


def run_raw_hour_job(instance: DagsterInstance, lake, request):
    """Execute a re-run request: its selection is raw_hour_job's (raw_hour and the six hour checks)."""
    job = lake_definitions(lake).resolve_job_def(raw_hour_job.name)
    assert request.asset_selection == [RAW_HOUR] and request.asset_check_keys == HOUR_CHECK_KEYS
    return job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags)


def test_cursor_reset_reregisters_nothing_twice_and_reruns_changed_hours(instance, tmp_path):
    for offset in range(3):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=30)
    plant_good_hour(tmp_path, ETH, BASE_HOUR, count=30)
    plant_torn_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=3))
    lake = lake_resource(tmp_path, coverage_threshold_pct=0)  # short hours: only the torn one fails a check

    first = tick(instance, lake, None)
    registered = {key(BTC, 0), key(BTC, 1), key(BTC, 2), key(BTC, 3), key(ETH, 0)}
    failed = {(e.partition, e.check_name) for e in first.asset_events if isinstance(e, AssetCheckEvaluation)
              and not e.passed}
    assert failed == {(key(BTC, 3), "schema_valid")}
    assert check_executions(instance) == Counter({(k, name, ""): 1 for k in registered for name in HOUR_CHECKS})
    assert raw_hour_materializations(instance) == Counter(dict.fromkeys(registered, 1))

    append_record(tmp_path, BTC, BASE_HOUR + timedelta(hours=1))  # a late write
    repair_torn_tail(tmp_path, BTC, BASE_HOUR + timedelta(hours=3))  # a repaired torn tail
    plant_good_hour(tmp_path, BTC, BASE_HOUR - timedelta(hours=1), count=30)  # planted late, before the cursor
    archived = archive_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=2), datetime.now(UTC))
    assert archived.status == "archived"  # same content, now read from the .jsonl.gz: unchanged

    second = tick(instance, lake, None)  # the operator reset the cursor

    late = key(BTC, -1)
    (new_materialization,) = [e for e in second.asset_events if isinstance(e, AssetMaterialization)]
    assert new_materialization.partition == late
    evaluations = [e for e in second.asset_events if isinstance(e, AssetCheckEvaluation)]
    assert {(e.partition, e.check_name) for e in evaluations} == {(late, name) for name in HOUR_CHECKS}
    expected = {(k, name, ""): 1 for k in registered | {late} for name in HOUR_CHECKS}
    assert check_executions(instance) == Counter(expected)  # every hour keeps its figures, none twice
    assert raw_hour_materializations(instance) == Counter(dict.fromkeys(registered | {late}, 1))
    assert second.cursor == first.cursor

    curate, *reruns = second.run_requests
    assert curate.requires_backfill_daemon() and backfill_keys(curate) == {late}
    changed = {key(BTC, 1): BASE_HOUR + timedelta(hours=1), key(BTC, 3): BASE_HOUR + timedelta(hours=3)}
    assert {r.partition_key for r in reruns} == set(changed)
    for request in reruns:
        new_sha = file_sha256(layout.records_path(tmp_path, BTC, changed[request.partition_key]))
        assert request.asset_selection == [RAW_HOUR] and request.asset_check_keys == HOUR_CHECK_KEYS
        assert request.partition_key in request.run_key and new_sha in request.run_key

    for request in reruns:
        run = run_raw_hour_job(instance, lake, request)
        assert run.success
        in_run = {e.check_name: e for e in run.get_asset_check_evaluations()}
        assert set(in_run) == set(HOUR_CHECKS) and {e.partition for e in in_run.values()} == {request.partition_key}
        assert all(e.passed for e in in_run.values())  # the repaired hour is schema-valid now
        for name in HOUR_CHECKS:
            expected[(request.partition_key, name, run.run_id)] = 1
    assert check_executions(instance) == Counter(expected)

    third = tick(instance, lake, None)  # another reset: everything is as registered now
    assert third.asset_events == [] and third.run_requests == [] and third.cursor == first.cursor
    assert check_executions(instance) == Counter(expected)


def test_reset_during_catch_up_reads_one_budget_per_tick(instance, tmp_path):
    for offset in range(6):
        plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=offset), count=5)
    lake = lake_resource(tmp_path, instruments=[BTC], sensor_max_hours_per_tick=4, curate_on_register=False)
    first = tick(instance, lake, None)
    assert len(first.asset_events) == 4 * (1 + len(HOUR_CHECKS))
    reset = tick(instance, lake, None)  # the first four are registered: nothing, but the cursor moves on
    assert reset.asset_events == [] and reset.run_requests == [] and reset.cursor == first.cursor
    rest = tick(instance, lake, reset.cursor)
    assert {e.partition for e in rest.asset_events} == {key(BTC, 4), key(BTC, 5)}
    assert check_executions(instance) == Counter(
        {(key(BTC, o), name, ""): 1 for o in range(6) for name in HOUR_CHECKS})


SET_CURSOR = """
mutation SetSensorCursorMutation($sensorSelector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $sensorSelector, cursor: $cursor) { __typename }
}
"""


def test_daemon_ticks_after_a_ui_cursor_reset(tmp_path, monkeypatch):
    """The user's report, end to end: the sensor daemon evaluates the code location's sensor, the
    cursor is reset through the UI's GraphQL mutation, and the next daemon tick must succeed."""
    lake_dir = tmp_path / "lake"
    for offset in range(3):
        plant_good_hour(lake_dir, BTC, BASE_HOUR + timedelta(hours=offset), count=10)
    for name, value in {"L2_DATA_DIR": str(lake_dir), "L2_INSTRUMENTS": BTC}.items():
        monkeypatch.setenv(name, value)  # read by the code server the daemon starts
    home = tmp_path / "dagster_home"
    home.mkdir()
    launcher = {"run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}}
    target = ModuleTarget(module_name="l2_pipeline.definitions", attribute="defs", working_directory=str(REPO),
                          location_name="l2_pipeline")
    with instance_for_test(temp_dir=str(home), overrides=launcher) as instance, \
            create_test_daemon_workspace_context(target, instance) as workspace:
        start = datetime.now(UTC)

        def daemon_tick(minutes: int):
            with freeze_time(start + timedelta(minutes=minutes)):  # past the sensor's 60 s minimum interval
                list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))
            states = {s.name: s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)}
            state = states["raw_hours_sensor"]
            (latest,) = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            return latest, state.instigator_data.cursor

        first, cursor = daemon_tick(0)
        assert first.status == TickStatus.SUCCESS and cursor is not None
        append_record(lake_dir, BTC, BASE_HOUR + timedelta(hours=1))

        selector = {"repositoryLocationName": "l2_pipeline", "repositoryName": "__repository__",
                    "sensorName": "raw_hours_sensor"}
        reset = execute_dagster_graphql(workspace.create_request_context(), SET_CURSOR,
                                        {"sensorSelector": selector, "cursor": None})
        assert reset.data["setSensorCursor"]["__typename"] == "Sensor", reset

        second, cursor_after_reset = daemon_tick(2)
        assert second.status == TickStatus.SUCCESS, second.error
        assert cursor_after_reset == cursor
        # the first tick's curation is a backfill of curated_parquet (its runs are the backfill
        # daemon's); the reset tick's only run is raw_hour + its hour checks for the changed hour
        (backfill,) = instance.get_backfills()
        assert backfill.asset_selection == [CURATED_PARQUET]
        assert set(backfill.asset_backfill_data.target_subset.iterate_asset_partitions()) == {
            AssetKeyPartitionKey(CURATED_PARQUET, key(BTC, offset)) for offset in range(3)}
        (run,) = instance.get_runs()
        assert run.asset_selection == {RAW_HOUR} and run.asset_check_selection == set(HOUR_CHECK_KEYS)
        assert run.tags["dagster/partition"] == key(BTC, 1)

"""Backfills the way a user (or `raw_hours_sensor`) launches them, through Dagster's own daemon code.

The bug this guards against: a UI backfill of `curated_parquet` (or `raw_hour`) over a range that
held an hour with no data ended Failure with nothing to act on. The step of that hour succeeded
without materializing; the backfill daemon then found "partitions with no materialization status
despite all runs being complete" and marked them failed.

Each test loads the real code location (`l2_pipeline.definitions`, in a code server the daemon
starts, like `dagster dev`), launches an asset backfill with the UI's GraphQL mutation
(`launchPartitionBackfill`: asset selection × partition names) or has the sensor daemon
(`dagster._daemon.sensor.execute_sensor_iteration`) submit the sensor's, and runs iterations of the
backfill daemon (`dagster._daemon.backfill.execute_backfill_iteration`). The runs it submits are
launched by the instance's default run launcher (a process per run, from the code server) and are
waited for between iterations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
)
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.test_utils import freeze_time
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._scheduler.scheduler import launch_scheduled_runs
from dagster._time import get_current_datetime
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from l2_lake.format import layout
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_pipeline.checks import HOUR_CHECK_KEYS
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.instances import DagsterInstances
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    NO_FIGURES,
    backfill_runs,
    check_status,
    lake_resource,
    plant_good_hour,
    range_keys,
    run_backfill,
)

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
PRESENT = [(BTC, 0), (BTC, 1), (BTC, 2), (ETH, 0), (ETH, 2)]  # ETH 01 has no file at all
MISSING = str(partition_key(ETH, BASE_HOUR + timedelta(hours=1)))


def key(inst_id: str, offset: int) -> str:
    return str(partition_key(inst_id, BASE_HOUR + timedelta(hours=offset)))


@contextmanager
def daemon_workspace(instances: DagsterInstances, tmp_path: Path, monkeypatch, hours=PRESENT
                     ) -> Iterator[tuple[DagsterInstance, WorkspaceProcessContext]]:
    """A persistent instance and the code location loaded as `dagster dev` loads it, over a lake of
    `hours` (instrument, offset from BASE_HOUR); the instrument dimension holds BTC and ETH."""
    lake_dir = tmp_path / "lake"
    for inst_id, offset in hours:
        plant_good_hour(lake_dir, inst_id, BASE_HOUR + timedelta(hours=offset), count=20)
    for name, value in {"L2_DATA_DIR": str(lake_dir), "L2_INSTRUMENTS": f"{BTC},{ETH}", **NO_FIGURES}.items():
        monkeypatch.setenv(name, value)  # read by the code server and the run processes
    with instances.daemon_workspace(tmp_path / "dagster_home") as (instance, workspace):
        yield instance, workspace


def launch_from_ui(workspace: WorkspaceProcessContext, assets: list[str], keys: list[str]) -> str:
    """Materialize → partitions of `assets` → Launch backfill, as the UI's dialog sends it (no run
    config: the code location's executor runs the steps in the run's process)."""
    result = execute_dagster_graphql(
        workspace.create_request_context(), LAUNCH_PARTITION_BACKFILL_MUTATION,
        {"backfillParams": {"assetSelection": [{"path": [asset]} for asset in assets], "partitionNames": keys}},
    )
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def step_failures(instance: DagsterInstance, run_id: str) -> list[str]:
    """The descriptions of a run's failed steps, as the UI shows them."""
    events = instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
    return [e.dagster_event.step_failure_data.error.message for e in events]


@pytest.mark.parametrize(("asset", "asset_key", "runs"), [
    (RAW_HOUR.to_user_string(), RAW_HOUR, 2),  # multi_run(100): one range of hours per instrument, checks included
    (RAW_ARCHIVE.to_user_string(), RAW_ARCHIVE, 2),
    (CURATED_PARQUET.to_user_string(), CURATED_PARQUET, 2),
])
def test_ui_backfill_over_a_missing_hour_fails_naming_it(dagster_instances, tmp_path, monkeypatch,
                                                         asset, asset_key, runs):
    keys = [key(inst_id, offset) for inst_id in (BTC, ETH) for offset in range(3)]
    with daemon_workspace(dagster_instances, tmp_path, monkeypatch) as (instance, workspace):
        backfill_id = launch_from_ui(workspace, [asset], keys)
        backfill = run_backfill(instance, workspace, backfill_id)

        assert backfill.status == BulkActionStatus.COMPLETED_FAILED
        assert instance.get_materialized_partitions(asset_key) == {key(i, o) for i, o in PRESENT}
        done = backfill_runs(instance, backfill_id)
        (failed,) = [run for run in done if run.status == DagsterRunStatus.FAILURE]  # the missing hour's
        (message,) = step_failures(instance, failed.run_id)
        assert MISSING in message and "no data" in message and "Leave the hour out of the backfill" in message
        assert str(tmp_path / "lake" / "raw/okx/l2_perps" / ETH / "2026-11-20" / "01.jsonl") in message
        reason = instance.get_run_by_id(failed.run_id).tags["l2/failed"]  # shown in the backfill's Runs table
        assert reason.startswith(f"1 hour(s); {MISSING}: ") and "no data" in reason
        failed_subset = backfill.asset_backfill_data.failed_and_downstream_subset
        assert {str(p.partition_key) for p in failed_subset.iterate_asset_partitions()} == {MISSING}
        assert len(done) == runs


def test_ui_backfill_of_present_hours_ends_green(dagster_instances, tmp_path, monkeypatch):
    """One backfill of the three partitioned assets over hours that all have data: one ranged run of
    all three (and raw_hour's checks, current for every hour afterwards)."""
    keys = [key(BTC, offset) for offset in range(3)]
    with daemon_workspace(dagster_instances, tmp_path, monkeypatch) as (instance, workspace):
        backfill_id = launch_from_ui(workspace, [k.to_user_string() for k in (RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET)],
                                     keys)
        backfill = run_backfill(instance, workspace, backfill_id)

        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        for asset_key in (RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET):
            assert instance.get_materialized_partitions(asset_key) == set(keys), asset_key
        runs = backfill_runs(instance, backfill_id)
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs) and len(runs) == 1
        status = check_status(instance, lake_resource(tmp_path / "lake"))
        assert status == {name: {"FAILED" if name == "coverage" else "SUCCEEDED": set(keys)}  # 20 records an hour
                          for name in HOUR_CHECKS}


def test_sensor_catch_up_is_one_backfill_of_few_runs(dagster_instances, tmp_path, monkeypatch):
    """11 closed hours × 2 instruments registered in one tick of the sensor daemon become one
    backfill of raw_hour (with its six checks), curated_parquet and book_features, which the backfill daemon splits
    into 2 × ceil(11 / 10) = 4 ranged runs (not 22) with L2_PARTITIONS_PER_RUN=10 (the default 100 splits
    the same way, ten times the hours: test_pipeline_schedules holds `run_batches` to Dagster's split). Once
    they ran, every hour's check results are current: partition health as the UI shows it."""
    hours = [(inst_id, offset) for inst_id in (BTC, ETH) for offset in range(-11, 0)]
    monkeypatch.setenv("L2_COVERAGE_THRESHOLD_PCT", "0")  # 20 records an hour: every check passes
    monkeypatch.setenv("L2_PARTITIONS_PER_RUN", "10")  # read by the code server
    with daemon_workspace(dagster_instances, tmp_path, monkeypatch, hours) as (instance, workspace):
        lake = lake_resource(tmp_path / "lake", partitions_per_run=10)
        list(execute_sensor_iteration(workspace, logging.getLogger("sensor-daemon"), None, None))
        (backfill,) = instance.get_backfills()
        assert set(backfill.asset_selection) == {RAW_HOUR, CURATED_PARQUET, BOOK_FEATURES}
        assert backfill.tags["l2/backfill_hours"] == "22"
        target = backfill.asset_backfill_data.target_subset
        everything = {key(inst_id, offset) for inst_id, offset in hours}
        for asset_key in (RAW_HOUR, CURATED_PARQUET, BOOK_FEATURES):
            assert {str(p.partition_key) for p in target.iterate_asset_partitions() if p.asset_key == asset_key} \
                == everything, asset_key

        done = run_backfill(instance, workspace, backfill.backfill_id, timeout=600)
        assert done.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = backfill_runs(instance, backfill.backfill_id)
        sizes = sorted(len(range_keys(RunRequest(tags=run.tags), lake)) for run in runs)
        assert sizes == [1, 1, 10, 10]
        for run in runs:  # each run names its own range, not the backfill's
            own = instance.get_run_by_id(run.run_id).tags
            assert (own["l2/first"], own["l2/last"], own["l2/hours"]) == (
                own[ASSET_PARTITION_RANGE_START_TAG], own[ASSET_PARTITION_RANGE_END_TAG],
                str(len(range_keys(RunRequest(tags=run.tags), lake))))
        assert all(run.asset_selection == {RAW_HOUR, CURATED_PARQUET, BOOK_FEATURES} for run in runs)
        assert all(set(HOUR_CHECK_KEYS) <= run.asset_check_selection for run in runs)
        assert instance.get_materialized_partitions(RAW_HOUR) == everything
        assert instance.get_materialized_partitions(CURATED_PARQUET) == everything
        assert instance.get_materialized_partitions(BOOK_FEATURES) == everything
        assert check_status(instance, lake) == {name: {"SUCCEEDED": everything} for name in HOUR_CHECKS}


def test_compression_schedule_ranged_runs_through_the_scheduler_daemon(dagster_instances, tmp_path, monkeypatch):
    """The scheduler daemon evaluates compression_schedule and launches its ranged compress_job runs
    (a schedule cannot request a backfill in Dagster 1.13); they archive every due hour."""
    monkeypatch.setenv("L2_DELETE_AFTER_DAYS", "36500")  # retention_schedule ticks too: keep the planted hours
    with daemon_workspace(dagster_instances, tmp_path, monkeypatch) as (instance, workspace):
        start = get_current_datetime().replace(minute=10, second=0, microsecond=0) - timedelta(hours=1)
        for minutes in (0, 60):  # the first iteration starts the schedule, the second ticks at :15
            with freeze_time(start + timedelta(minutes=minutes)):
                list(launch_scheduled_runs(workspace, logging.getLogger("scheduler"), get_current_datetime(), {}))
        runs = instance.get_runs(filters=RunsFilter(job_name="compress_job"))
        assert sorted((run.tags[ASSET_PARTITION_RANGE_START_TAG], run.tags[ASSET_PARTITION_RANGE_END_TAG])
                      for run in runs) == [(key(BTC, 0), key(BTC, 2)), (key(ETH, 0), key(ETH, 0)),
                                           (key(ETH, 2), key(ETH, 2))]
        deadline = time.monotonic() + 120
        while any(run.status not in FINISHED for run in instance.get_runs()):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert all(run.status == DagsterRunStatus.SUCCESS for run in instance.get_runs())
        assert all(not layout.records_path(tmp_path / "lake", i, BASE_HOUR + timedelta(hours=o)).exists()
                   for i, o in PRESENT)
        assert instance.get_materialized_partitions(RAW_ARCHIVE) == {key(i, o) for i, o in PRESENT}

"""Bounded instance storage (`l2_pipeline.instance_retention`), on SQLite and on PostgreSQL: 16 days
pass, one real `raw_hour_job` run a day (an hour registered, its six checks evaluated), each run at
its day (Dagster's clock frozen there); `instance_retention_job` (a 6-day window) as of day 11,
then as of day 16 (now), keeps exactly the runs of the window with their events and check
executions, deletes the rest, leaves unfinished runs alone, and the storage after day 16 holds as
many rows as after day 11. `lake_health` and the six checks still work on what remains."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as db
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, job, materialize, op
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.test_utils import freeze_time

from l2_lake.format import layout
from l2_lake.format.hours import iso
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_pipeline.instance_retention import instance_retention_job, instance_retention_request, instance_window
from l2_pipeline.keys import LAKE_HEALTH
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.instances import DagsterInstances
from l2_pipeline_tests.lake_factory import (
    BTC,
    check_status,
    execute_ranged,
    lake_assets,
    lake_resource,
    latest_raw_hour,
    plant_good_hour,
)

DAYS, MIDWAY = 16, 11  # days simulated; the first purge is as of MIDWAY, the second as of DAYS (today)
WINDOW = 6  # > L2_DELETE_AFTER_DAYS (5) and L2_HEALTH_DAYS (3); the test lake keeps no Parquet tier


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def instances(request: pytest.FixtureRequest) -> DagsterInstances:
    if request.param == "sqlite":
        return DagsterInstances()
    return DagsterInstances.on_postgres(request.getfixturevalue("postgres_server"))


@op
def wait() -> None:
    """The step of a run that is still queued or running."""


@job
def never_finished() -> None:
    wait()


def todays_hour() -> datetime:
    """The hour day DAYS (today) registers: the one that ended 2 h ago. Read once per test, so every
    day's hour stays put if the wall clock crosses an hour while the test runs."""
    return layout.hour_floor(int(datetime.now(UTC).timestamp() * 1000)) - 2 * layout.HOUR


def day_hour(today: datetime, day: int) -> datetime:
    """The hour registered on `day` (day DAYS is today: its hour is `today`)."""
    return today - timedelta(days=DAYS - day)


def day_time(today: datetime, day: int) -> datetime:
    """When `day`'s run runs: 5 minutes after its hour closed."""
    return day_hour(today, day) + timedelta(hours=1, minutes=5)


def storage_rows(instance: DagsterInstance) -> dict[str, int]:
    """Rows the instance stores: runs, events (all of every run's, and the runless), asset check
    executions, and on SQLite the run databases on disk."""
    storage = instance.event_log_storage
    run_ids = instance.get_run_ids()
    events = sum(len(instance.all_logs(run_id)) for run_id in run_ids)
    with storage.index_connection() as conn:
        runless = conn.execute(db.select(db.func.count()).select_from(SqlEventLogStorageTable).where(
            SqlEventLogStorageTable.c.run_id == "")).scalar()
        checks = conn.execute(db.select(db.func.count()).select_from(AssetCheckExecutionsTable)).scalar()
    rows = {"runs": len(run_ids), "events": events + runless, "check_executions": checks}
    if isinstance(storage, SqliteEventLogStorage):
        rows["run_databases"] = sum(1 for p in Path(storage._base_dir).glob("*.db") if p.stem != "index")
    return rows


def registration_rows(instance: DagsterInstance) -> dict[str, int]:
    """`storage_rows` of the registration runs only (not of the purges, which are of today)."""
    runs = instance.get_runs(RunsFilter(job_name="raw_hour_job"))
    return {"runs": len(runs), "events": sum(len(instance.all_logs(run.run_id)) for run in runs)}


def registered_days(instance: DagsterInstance, today: datetime) -> list[int]:
    keys = {str(partition_key(BTC, day_hour(today, day))): day for day in range(DAYS + 1)}
    runs = instance.get_runs(RunsFilter(job_name="raw_hour_job"))
    return sorted(keys[run.tags["dagster/partition"]] for run in runs)


def purge(instance: DagsterInstance, lake, as_of: datetime, **config):
    result = instance_retention_job.execute_in_process(
        instance=instance, resources={"lake": lake}, raise_on_error=False,
        run_config={"ops": {"purge_old_runs": {"config": {"as_of": iso(as_of), **config}}}})
    return result


def purge_metadata(result) -> dict:
    (materialization,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in materialization.event_specific_data.metadata.items()}


def test_storage_stays_bounded_as_days_pass(instances: DagsterInstances, tmp_path: Path):
    root = tmp_path / "lake"
    today = todays_hour()
    for day in range(DAYS + 1):
        plant_good_hour(root, BTC, day_hour(today, day), count=40)
    lake = lake_resource(root, coverage_threshold_pct=1, instance_retention_days=WINDOW, curated_retention_days=0,
                         partitions_start=day_hour(today, 0).strftime("%Y-%m-%d-%H:%M"))
    with instances.persistent(tmp_path / "home") as instance:
        def register(day: int) -> None:
            with freeze_time(day_time(today, day)):
                done = execute_ranged(instance, lake, "raw_hour_job",
                                      {"dagster/partition": str(partition_key(BTC, day_hour(today, day)))})
            assert done.success

        for day in range(MIDWAY + 1):
            register(day)
        with freeze_time(day_time(today, 0)):  # runs that never finished: one queued, one started on day 0
            unfinished = [instance.create_run_for_job(never_finished, status=status).run_id
                          for status in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED)]
        before = registration_rows(instance)
        per_run = before["events"] // (MIDWAY + 1)
        assert before == {"runs": MIDWAY + 1, "events": (MIDWAY + 1) * per_run}
        first_kept = MIDWAY - WINDOW  # finished exactly WINDOW days before the purge: kept; the days before go

        dry = purge(instance, lake, day_time(today, MIDWAY), dry_run=True)
        assert dry.success and purge_metadata(dry)["runs_due"] == first_kept and registration_rows(instance) == before

        done = purge(instance, lake, day_time(today, MIDWAY))
        assert done.success
        meta = purge_metadata(done)
        assert (meta["runs_deleted"], meta["events_deleted"]) == (first_kept, first_kept * per_run)
        assert meta["check_executions_deleted"] == first_kept * len(HOUR_CHECKS) and meta["seconds"] >= 0
        assert registered_days(instance, today) == list(range(first_kept, MIDWAY + 1))
        assert latest_raw_hour(instance, str(partition_key(BTC, day_hour(today, first_kept - 1)))) is None
        assert latest_raw_hour(instance, str(partition_key(BTC, day_hour(today, first_kept)))) is not None
        assert [instance.get_run_by_id(run_id).status for run_id in unfinished] == [DagsterRunStatus.NOT_STARTED,
                                                                                    DagsterRunStatus.STARTED]
        at_midway = storage_rows(instance)
        assert registration_rows(instance) == {"runs": WINDOW + 1, "events": (WINDOW + 1) * per_run}
        assert at_midway["check_executions"] == (WINDOW + 1) * len(HOUR_CHECKS)

        for day in range(MIDWAY + 1, DAYS + 1):
            register(day)
        done = purge(instance, lake, day_time(today, DAYS))
        assert done.success and purge_metadata(done)["runs_deleted"] == DAYS - MIDWAY
        at_end = storage_rows(instance)
        assert registered_days(instance, today) == list(range(DAYS - WINDOW, DAYS + 1))
        # steady state: the same rows as at midway but for one more purge run (of today, inside the window)
        purge_run = newest_run_events(instance, "instance_retention_job")
        assert {k: at_end[k] - at_midway[k] for k in at_end} == {
            "runs": 1, "events": purge_run, "check_executions": 0,
            **({"run_databases": 1} if "run_databases" in at_end else {})}

        # what remains still works: the six checks of the window, lake_health over its last 3 days
        window_keys = {str(partition_key(BTC, day_hour(today, day))) for day in range(DAYS - WINDOW, DAYS + 1)}
        status = check_status(instance, lake)
        assert set(status) == set(HOUR_CHECKS)
        assert all(by_status == {"SUCCEEDED": window_keys} for by_status in status.values()), status
        recheck = execute_ranged(instance, lake, "hour_checks_job",
                                 {"dagster/partition": str(partition_key(BTC, day_hour(today, DAYS)))})
        assert recheck.success
        drawn = materialize([lake_assets(lake)["lake_health"]], instance=instance, resources={"lake": lake})
        assert drawn.success
        health = instance.get_latest_materialization_event(LAKE_HEALTH).asset_materialization.metadata
        assert (health["passed"].value, health["failed"].value, health["warning"].value) == (3, 0, 0)


def newest_run_events(instance: DagsterInstance, job_name: str) -> int:
    """Events of the newest run of `job_name`."""
    (run,) = instance.get_runs(RunsFilter(job_name=job_name), limit=1)
    return len(instance.all_logs(run.run_id))


def test_a_window_shorter_than_the_lake_needs_is_refused(instances: DagsterInstances, tmp_path: Path):
    lake = lake_resource(tmp_path / "lake", instance_retention_days=5)  # = L2_DELETE_AFTER_DAYS
    with pytest.raises(ValueError, match=r"L2_INSTANCE_RETENTION_DAYS=5 is too short: .*L2_DELETE_AFTER_DAYS=5"):
        instance_window(lake)
    with pytest.raises(ValueError, match="L2_CURATED_RETENTION_DAYS=30"):
        instance_window(lake_resource(tmp_path / "lake", instance_retention_days=20))
    assert instance_window(lake_resource(tmp_path / "lake", curated_retention_days=0, instance_retention_days=6)) \
        == timedelta(days=6)
    with instances.ephemeral() as instance:
        refused = purge(instance, lake, datetime.now(UTC))
        assert not refused.success
        (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "L2_HEALTH_DAYS" not in failure.event_specific_data.error.message
        assert "L2_INSTANCE_RETENTION_DAYS=5 is too short" in failure.event_specific_data.error.message


def test_the_schedule_requests_a_purge_only_when_a_run_is_due(instances: DagsterInstances, tmp_path: Path):
    lake = lake_resource(tmp_path / "lake")
    now = datetime.now(UTC)
    with instances.ephemeral() as instance:
        assert "no finished run older than" in instance_retention_request(instance, lake, now).skip_message
        purge(instance, lake, now)  # a finished run of now
        assert instance_retention_request(instance, lake, now).skip_message
        request = instance_retention_request(instance, lake, now + timedelta(days=31))
        assert request.run_config == {"ops": {"purge_old_runs": {"config": {"as_of": iso(now + timedelta(days=31))}}}}
        with pytest.raises(ValueError, match="L2_HEALTH_DAYS=3"):
            instance_retention_request(instance, lake_resource(tmp_path / "lake", instance_retention_days=3), now)

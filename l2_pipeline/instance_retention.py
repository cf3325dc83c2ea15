"""Bounded instance storage: `instance_retention_job` (op `purge_old_runs`) and its daily schedule
`instance_retention_schedule` delete finished runs older than `L2_INSTANCE_RETENTION_DAYS` (30),
and with them everything the Dagster instance stores per run.

The event log grows by about 29 kB per instrument-hour with the hour figures off (110 kB with them
on): without this, 250 instruments add ~170 MB a day for ever. The lake's own tiers (the hive
Parquet of curated/features, read with DuckDB) are the long-term record; the Dagster instance holds
the operations window: runs, materializations and check results of the last N days.

What one purged run takes with it (Dagster 1.13, SQLite and PostgreSQL alike):
- `DagsterInstance.delete_run`: its row in `runs` (and `run_tags`), every row of `event_logs` of
  the run, and the `asset_event_tags` of its materializations and observations. It leaves the
  `asset_check_executions` rows of the run (each one holds a copy of its check evaluation event),
  the asset's cached latest materialization (`asset_keys`), the run's captured stdout/stderr and,
  on SQLite, the run's own database file (`storage/<run_id>.db`);
- so this op deletes those too: the run's `asset_check_executions` rows, its captured logs
  (`ComputeLogManager.delete_logs`) and its SQLite shard file.

It never deletes a run that is not finished (queued, starting, started, canceling), one whose
backfill is still in progress, nor its own run; a run counts as old when it *finished* (its last
status change) more than the window before `as_of`. The window must be longer than the
`lake_health` window (`L2_HEALTH_DAYS`) and the raw retention (`L2_DELETE_AFTER_DAYS`), and at
least the Parquet retention (`L2_CURATED_RETENTION_DAYS`) when that is finite: an hour's record goes
after its files, never before (`instance_window` refuses anything shorter, naming the variables).

What the UI shows afterwards: a purged partition keeps its status in the asset's partition squares
(green, or its check colours): Dagster 1.13 updates its cached partition status from new events
only. Its materialization history and metadata are gone ("No materializations"). When the cache is
rebuilt from the event log (the partitions definition changed: a new instrument), purged
partitions show as missing (grey) — which, with the window at least the file retention, is what
the lake holds.

Not deleted here: runless events (the `collector_freshness` verdicts, ~144 a day whatever the
number of instruments), backfill rows, job snapshots (one per code version) and ticks (those go
by the `retention:` settings of dagster.yaml, see deploy/dagster.yaml).
"""

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import sqlalchemy as db
from dagster import (
    Config,
    DagsterInstance,
    DefaultScheduleStatus,
    Failure,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    job,
    op,
    schedule,
)
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.tags import BACKFILL_ID_TAG
from pydantic import Field

from l2_lake.format.hours import iso, now_utc, parse_utc
from l2_pipeline.resources import LakeResource
from l2_pipeline.schedules import scheduled_time

ACTIVE_BACKFILL = [BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING]


def instance_window(lake: LakeResource) -> timedelta:
    """The instance retention window; ValueError when it is not longer than the lake_health window and
    the raw retention, or shorter than a finite Parquet retention."""
    days = lake.instance_retention_days
    problems = []
    if days <= lake.health_days:
        problems.append(f"more than L2_HEALTH_DAYS={lake.health_days} (lake_health reads that window)")
    if days <= lake.delete_after_days:
        problems.append(f"more than L2_DELETE_AFTER_DAYS={lake.delete_after_days:g} (the raw retention)")
    if lake.curated_retention_days and days < lake.curated_retention_days:
        problems.append(f"at least L2_CURATED_RETENTION_DAYS={lake.curated_retention_days:g} (the Parquet "
                        "retention: an hour's record must not go before its files)")
    if problems:
        raise ValueError(f"L2_INSTANCE_RETENTION_DAYS={days} is too short: it must be " + " and ".join(problems))
    return timedelta(days=days)


def expired_runs(cutoff: datetime) -> RunsFilter:
    """Finished runs whose last status change is older than `cutoff`."""
    return RunsFilter(statuses=list(FINISHED_STATUSES), updated_before=cutoff)


def batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def event_counts(storage: SqlEventLogStorage, run_ids: Sequence[str]) -> dict[str, int]:
    """run id → rows of `event_logs` it holds (on SQLite each run's own database)."""
    counts = {}
    for run_id in run_ids:
        with storage.run_connection(run_id) as conn:
            counts[run_id] = conn.execute(db.select(db.func.count()).select_from(SqlEventLogStorageTable).where(
                SqlEventLogStorageTable.c.run_id == run_id)).scalar() or 0
    return counts


def delete_check_executions(storage: SqlEventLogStorage, run_ids: Sequence[str]) -> int:
    """Delete the `asset_check_executions` rows of `run_ids` (`delete_run` leaves them); returns how many."""
    with storage.index_connection() as conn:
        return conn.execute(AssetCheckExecutionsTable.delete().where(
            AssetCheckExecutionsTable.c.run_id.in_(list(run_ids)))).rowcount


def remove_sqlite_shard(storage: SqliteEventLogStorage, run_id: str) -> None:
    """Remove the run's own SQLite database (emptied by `delete_run`, but its file stays)."""
    path = storage.path_for_shard(run_id)
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


class InstanceRetentionConfig(Config):
    as_of: str = Field(default="", description="ISO time to evaluate the window at (empty = now; never later)")
    dry_run: bool = Field(default=False, description="only report what would be deleted")
    batch_size: int = Field(default=100, ge=1, description="runs looked up and deleted per batch")


@op(
    description="Delete finished runs (and their events, check executions and logs) older than "
    "L2_INSTANCE_RETENTION_DAYS: the Dagster instance keeps the operations window, the lake the data.",
    out=Out(Nothing, description="what was deleted is this output's metadata"),
)
def purge_old_runs(context: OpExecutionContext, config: InstanceRetentionConfig,
                   lake: LakeResource) -> Iterator[Output]:
    try:
        window = instance_window(lake)
    except ValueError as exc:
        raise Failure(description=str(exc)) from None
    started = time.monotonic()
    now = now_utc()
    as_of = min(parse_utc(config.as_of), now) if config.as_of else now
    cutoff = as_of - window
    instance = context.instance
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        raise Failure(description=f"instance retention needs SQL event log storage, not {type(storage).__name__}")
    active = {b.backfill_id for b in instance.get_backfills(filters=BulkActionsFilter(statuses=ACTIVE_BACKFILL))}
    # oldest first (get_run_ids lists the newest first): an interrupted purge has removed the oldest
    candidates = [run_id for run_id in reversed(instance.get_run_ids(expired_runs(cutoff)))
                  if run_id != context.run_id]
    runs = events = check_rows = kept = 0
    oldest: datetime | None = None
    for batch in batches(candidates, config.batch_size):
        records = instance.get_run_records(RunsFilter(run_ids=list(batch)))
        chosen = [r for r in records if r.dagster_run.tags.get(BACKFILL_ID_TAG) not in active]
        kept += len(records) - len(chosen)
        run_ids = [r.dagster_run.run_id for r in chosen]
        if not run_ids:
            continue
        first = min(r.create_timestamp for r in chosen)
        oldest = first if oldest is None else min(oldest, first)
        counts = event_counts(storage, run_ids)
        runs += len(run_ids)
        events += sum(counts.values())
        if config.dry_run:
            continue
        for run_id in run_ids:
            instance.delete_run(run_id)
            instance.compute_log_manager.delete_logs(prefix=[run_id])
            if isinstance(storage, SqliteEventLogStorage):
                remove_sqlite_shard(storage, run_id)
        check_rows += delete_check_executions(storage, run_ids)
    seconds = round(time.monotonic() - started, 3)
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(f"instance retention at {iso(as_of)} (window {window.days} days, cutoff {iso(cutoff)}): {verb} "
                     f"{runs} run(s), {events} event(s), {check_rows} check execution(s) in {seconds} s; kept "
                     f"{kept} run(s) of backfills in progress")
    metadata = {
        "as_of": iso(as_of),
        "cutoff": iso(cutoff),
        "window_days": window.days,
        "dry_run": config.dry_run,
        "runs_deleted": 0 if config.dry_run else runs,
        "events_deleted": 0 if config.dry_run else events,
        "check_executions_deleted": check_rows,
        "runs_due": runs,
        "events_due": events,
        "runs_kept_in_active_backfills": kept,
        "oldest_deleted_run_created": iso(oldest) if oldest else "",
        "seconds": seconds,
    }
    context.instance.add_run_tags(context.run_id, {"l2/runs_deleted": str(metadata["runs_deleted"]),
                                                   "l2/events_deleted": str(metadata["events_deleted"])})
    yield Output(None, metadata=metadata)


@job(description="Delete finished runs older than L2_INSTANCE_RETENTION_DAYS with their events (launched by "
     "instance_retention_schedule).")
def instance_retention_job() -> None:
    purge_old_runs()


def instance_retention_request(instance: DagsterInstance, lake: LakeResource,
                               as_of: datetime) -> RunRequest | SkipReason:
    """What the schedule does at `as_of`: one run when a finished run is older than the window (a
    window that is too short fails the tick with the reason)."""
    cutoff = as_of - instance_window(lake)
    if not instance.get_run_ids(expired_runs(cutoff), limit=1):
        return SkipReason(f"no finished run older than {iso(cutoff)}")
    return RunRequest(run_key=f"instance-retention-{iso(as_of)}",
                      run_config={"ops": {"purge_old_runs": {"config": {"as_of": iso(as_of)}}}},
                      tags={"l2/as_of": iso(as_of), "l2/cutoff": iso(cutoff)})


@schedule(
    name="instance_retention_schedule",
    job=instance_retention_job,
    cron_schedule="40 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily: delete finished runs (their events, check executions, logs) older than "
    "L2_INSTANCE_RETENTION_DAYS (30). Off by default: turn it on to keep the instance's storage bounded.",
)
def instance_retention_schedule(context: ScheduleEvaluationContext, lake: LakeResource) -> RunRequest | SkipReason:
    return instance_retention_request(context.instance, lake, scheduled_time(context))

"""Schedules. Each evaluates "now" as its *scheduled* execution time, never the wall clock, so a
late tick or a backfilled tick selects exactly what an on-time tick would have.

- `compression_schedule` (hourly, :15): every hour whose `.jsonl` still exists and that ended
  ≥ `compress_after_hours` (6) before the tick → one `compress_job` run listing all of them
  (a lake left alone for days catches up in one tick; already archived hours are skipped).
- `retention_schedule` (daily, 00:20 UTC; off by default because it deletes): raw hours that
  ended ≥ `delete_after_days` (5) and curated files past `curated_retention_days` before the tick
  → one `retention_job` run evaluated at that time (`retention_dry_run` makes it report only).
- `instrument_metadata_schedule` (daily, 00:05 UTC; off by default, needs the network): refresh
  instrument metadata from OKX REST.

A directory of the lake the schedules cannot list (permission denied, I/O error) is skipped with a
warning in the tick's log; the rest of the lake is still evaluated, so one bad directory never makes
every tick fail.
"""

from datetime import datetime
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from l2_pipeline.hours import iso, now_utc, utc
from l2_pipeline.jobs import compress_job, instrument_metadata_job, retention_job
from l2_pipeline.partitions import partition_key
from l2_pipeline.resources import LakeResource
from l2_pipeline.retention import plan_deletions
from l2_pipeline.selection import LakeHour, OnUnreadable, compression_due, log_unreadable


def scheduled_time(context: ScheduleEvaluationContext) -> datetime:
    """The tick's scheduled execution time (wall clock only when evaluated outside a tick)."""
    return utc(context.scheduled_execution_time) if context.scheduled_execution_time else now_utc()


def compression_run_config(hours: list[LakeHour], as_of: datetime) -> dict[str, Any]:
    keys = [str(partition_key(h.inst_id, h.hour)) for h in hours]
    return {"ops": {"compress_hours": {"config": {"partition_keys": keys, "as_of": iso(as_of)}}}}


def compression_request(
    lake: LakeResource, as_of: datetime, on_unreadable: OnUnreadable, now: datetime | None = None
) -> RunRequest | SkipReason:
    """What the compression schedule does at `as_of` (pure apart from listing the lake)."""
    due = compression_due(lake.root, as_of, lake.compress_after, lake.grace, now=now, on_unreadable=on_unreadable)
    if not due:
        return SkipReason(f"no hour that ended ≥ {lake.compress_after_hours:g} h before {iso(as_of)} is unarchived")
    return RunRequest(
        run_key=f"compress-{iso(as_of)}",
        run_config=compression_run_config(due, as_of),
        tags={"l2/as_of": iso(as_of), "l2/hours": str(len(due)),
              "l2/oldest": iso(due[0].hour), "l2/newest": iso(due[-1].hour)},
    )


def retention_request(lake: LakeResource, as_of: datetime, on_unreadable: OnUnreadable) -> RunRequest | SkipReason:
    """What the retention schedule does at `as_of`."""
    due = plan_deletions(lake.root, as_of, lake.raw_retention, lake.curated_retention, on_unreadable)
    if not due:
        return SkipReason(f"nothing past retention at {iso(as_of)}")
    return RunRequest(
        run_key=f"retention-{iso(as_of)}",
        run_config={"ops": {"delete_expired": {"config": {"as_of": iso(as_of), "dry_run": lake.retention_dry_run}}}},
        tags={"l2/as_of": iso(as_of), "l2/files_due": str(len(due)), "l2/dry_run": str(lake.retention_dry_run).lower()},
    )


@schedule(
    name="compression_schedule",
    job=compress_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: archive (verified gzip) every hour that ended ≥ compress_after_hours before the tick.",
)
def compression_schedule(context: ScheduleEvaluationContext, lake: LakeResource) -> RunRequest | SkipReason:
    return compression_request(lake, scheduled_time(context), log_unreadable(context.log), now=now_utc())


@schedule(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: delete raw hours that ended delete_after_days ago and curated files older than "
    "curated_retention_days (inside the data root only). L2_RETENTION_DRY_RUN=true only reports.",
)
def retention_schedule(context: ScheduleEvaluationContext, lake: LakeResource) -> RunRequest | SkipReason:
    return retention_request(lake, scheduled_time(context), log_unreadable(context.log))


@schedule(
    name="instrument_metadata_schedule",
    job=instrument_metadata_job,
    cron_schedule="5 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Daily: refresh instrument metadata (tick size, contract value, …) from OKX REST. Off by default "
    "(the collector refreshes the same files; turn on to have it in Dagster too — needs the network).",
)
def instrument_metadata_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest(run_key=f"metadata-{iso(scheduled_time(context))}")

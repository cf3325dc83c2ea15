"""Schedules. Each evaluates "now" as its *scheduled* execution time, never the wall clock, so a
late tick or a backfilled tick selects exactly what an on-time tick would have.

- `compression_schedule` (hourly, :15): every hour whose `.jsonl` still exists and that ended
  ≥ `compress_after_hours` (6) before the tick, however old (already archived hours are not
  selected) → `raw_archive` partitions, requested as `compress_job` runs of one partition range
  each, split the way an asset backfill splits them with the asset's backfill policy
  (`partitions.run_batches`): a lake left alone for days catches up in a few runs of up to
  `HOURS_PER_RUN` hours. A schedule cannot request a backfill in Dagster 1.13 (the scheduler
  daemon, dagster/_scheduler/scheduler.py, submits only runs; the sensor daemon is the one that
  submits `RunRequest.for_asset_graph_subset` as a backfill; dagster-io/dagster#13852), hence the
  ranged runs. Due hours that are not partitions (before the first hour partition, or of an
  instrument that appeared after the code location loaded) are left alone, with a warning. When the
  lake holds a tape (`l2_pipeline.assets.tape`), its hours are archived the same way and by the same
  rule: `book_tape_archive` partitions, in runs of their own (each run's `asset_selection` names
  the one asset it archives).
- `retention_schedule` (hourly, :20; on, the contract's 5-day policy): raw hours that ended
  ≥ `delete_after_days` (5) and curated files past `curated_retention_days` before the tick
  → one `retention_job` run evaluated at that time (`retention_dry_run` makes it report only).
- `instrument_metadata_schedule` (daily, 00:05 UTC; off by default, needs the network): refresh
  instrument metadata from OKX REST.

A directory of the lake the schedules cannot list (permission denied, I/O error) is skipped with a
warning in the tick's log; the rest of the lake is still evaluated, so one bad directory never makes
every tick fail.
"""

import logging
from datetime import datetime
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    MultiPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from l2_lake.format import layout
from l2_lake.format.hours import iso, now_utc, utc
from l2_lake.store.lake_walk import OnUnreadable, log_unreadable
from l2_lake.tiers.curated_migration import has_legacy_curated
from l2_lake.tiers.retention import plan_deletions
from l2_lake.tiers.selection import compression_due
from l2_pipeline.assets.lake import partitions_per_run
from l2_pipeline.jobs import compress_job, instrument_metadata_job, retention_job
from l2_pipeline.keys import BOOK_TAPE_ARCHIVE, RAW_ARCHIVE
from l2_pipeline.partitions import (
    hours_start,
    instrument_groups,
    instrument_keys,
    parse_partition_key,
    partition_key,
    run_batches,
)
from l2_pipeline.resources import LakeResource


def scheduled_time(context: ScheduleEvaluationContext) -> datetime:
    """The tick's scheduled execution time (wall clock only when evaluated outside a tick)."""
    return utc(context.scheduled_execution_time) if context.scheduled_execution_time else now_utc()


COMPRESSED = {RAW_ARCHIVE: (layout.RAW_PREFIX, "compress"), BOOK_TAPE_ARCHIVE: (layout.TAPE_PREFIX, "compress-tape")}


def compression_requests(
    lake: LakeResource,
    partitions: MultiPartitionsDefinition,
    as_of: datetime,
    on_unreadable: OnUnreadable,
    log: logging.Logger,
    now: datetime | None = None,
    tape: bool = False,
) -> list[RunRequest] | SkipReason:
    """What the compression schedule does at `as_of`: one `compress_job` run per partition range of
    `raw_archive` and, with `tape`, of `book_tape_archive` (those runs name their asset)."""
    assets = (RAW_ARCHIVE, BOOK_TAPE_ARCHIVE) if tape else (RAW_ARCHIVE,)
    requests = [request for asset in assets for request in dataset_compression_requests(
        lake, partitions, as_of, on_unreadable, log, now, asset, COMPRESSED[asset], name_asset=tape)]
    if not requests:
        return SkipReason(f"no hour that ended ≥ {lake.compress_after_hours:g} h before {iso(as_of)} is unarchived")
    return requests


def dataset_compression_requests(lake: LakeResource, partitions: MultiPartitionsDefinition, as_of: datetime,
                                 on_unreadable: OnUnreadable, log: logging.Logger, now: datetime | None,
                                 asset: AssetKey, dataset: tuple[Path, str], name_asset: bool) -> list[RunRequest]:
    """The runs archiving the due hours of one dataset (`dataset`: its prefix and run key prefix) as
    partitions of `asset`; `name_asset`: each run's `asset_selection` is `asset`."""
    prefix, run_key = dataset
    due = compression_due(lake.tree, as_of, lake.compress_after, lake.grace, now=now, on_unreadable=on_unreadable,
                          prefix=prefix)
    instruments = instrument_keys(partitions)  # in the dimension's order
    start, known, groups = hours_start(partitions), set(instruments), instrument_groups(partitions)
    partition_of = {h: str(partition_key(h.inst_id, h.hour, groups)) for h in due
                    if h.hour >= start and (groups or h.inst_id in known)}
    keys = list(dict.fromkeys(partition_of.values()))  # a group's hour once, however many members are due
    if len(partition_of) < len(due):
        log.warning(f"{len(due) - len(partition_of)} due hour(s) are not {asset.to_user_string()} partitions "
                    f"(before the first hour partition {iso(start)}, or of an instrument that appeared after the "
                    "code location loaded: reload it to add the instrument): left alone")
    requests = []
    for batch in run_batches(keys, partitions_per_run(partitions, lake.partitions_per_run), instruments):
        hours = sorted(parse_partition_key(key)[1] for key in batch)
        requests.append(RunRequest(
            run_key=f"{run_key}-{iso(as_of)}-{batch[0]}..{batch[-1]}",
            tags={ASSET_PARTITION_RANGE_START_TAG: batch[0], ASSET_PARTITION_RANGE_END_TAG: batch[-1],
                  "l2/as_of": iso(as_of), "l2/hours": str(len(batch)),
                  "l2/oldest": iso(hours[0]), "l2/newest": iso(hours[-1])},
            asset_selection=[asset] if name_asset else None,
        ))
    return requests


def retention_request(lake: LakeResource, as_of: datetime, on_unreadable: OnUnreadable) -> RunRequest | SkipReason:
    """What the retention schedule does at `as_of`."""
    due = [cand for tree, curated_retention in lake.retention_targets()
           for cand in plan_deletions(tree, as_of, lake.raw_retention, curated_retention, on_unreadable)]
    if not due and (lake.lake_url or not has_legacy_curated(lake.root, on_unreadable)):
        return SkipReason(f"nothing past retention at {iso(as_of)}")
    return RunRequest(
        run_key=f"retention-{iso(as_of)}",
        run_config={"ops": {"delete_expired": {"config": {"as_of": iso(as_of), "dry_run": lake.retention_dry_run}}}},
        tags={"l2/as_of": iso(as_of), "l2/files_due": str(len(due)), "l2/dry_run": str(lake.retention_dry_run).lower()},
    )


def build_compression_schedule(partitions: MultiPartitionsDefinition, tape: bool = False,
                               job: UnresolvedAssetJobDefinition = compress_job) -> ScheduleDefinition:
    """`compression_schedule` over `partitions` (the due hours that are partitions), launching `job`
    (`jobs.build_compress_job(tape)`); with `tape` it archives the tape's hours too."""

    @schedule(
        name="compression_schedule",
        job=job,
        cron_schedule="15 * * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Hourly: archive (verified gzip) every hour that ended ≥ compress_after_hours before the tick: "
        "raw_archive partitions" + (" and the tape's, book_tape_archive partitions" if tape else "")
        + ", one compress_job run per partition range.",
    )
    def compression_schedule(context: ScheduleEvaluationContext, lake: LakeResource) -> list[RunRequest] | SkipReason:
        return compression_requests(lake, partitions, scheduled_time(context), log_unreadable(context.log),
                                    context.log, now=now_utc(), tape=tape)

    return compression_schedule


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

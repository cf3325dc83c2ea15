"""Batch jobs launched by the schedules and the sensor, plus asset jobs for backfills.

A catch-up can mean hundreds of instrument-hours; one run per tick that handles all of them (and
records an `AssetMaterialization` per partition of `raw_archive` / `curated_parquet`) is far
cheaper than one run per partition. The partitioned assets remain for per-partition runs and UI
backfills; both paths call the same functions.
"""

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    Config,
    Failure,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    define_asset_job,
    job,
    op,
)
from pydantic import Field

from l2_pipeline.archive import ArchiveVerificationError, OpenHourError, archive_hour
from l2_pipeline.checks import HOUR_CHECK_KEYS
from l2_pipeline.curated import write_parquet
from l2_pipeline.hours import iso, now_utc, parse_utc
from l2_pipeline.keys import CURATED_PARQUET, INSTRUMENT_METADATA, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import is_registrable, parse_partition_key
from l2_pipeline.resources import LakeResource
from l2_pipeline.retention import delete_files, plan_deletions
from l2_pipeline.selection import log_unreadable

MAX_LISTED = 200  # paths listed in run metadata (counts are always complete)


class HoursConfig(Config):
    partition_keys: list[str] = Field(
        default_factory=list, description="partitions '<YYYY-MM-DD-HH:MM>|<instId>' to process"
    )
    as_of: str = Field(default="", description="scheduled time that selected them (informational)")


class RetentionConfig(Config):
    as_of: str = Field(default="", description="ISO time to evaluate retention at (empty = now)")
    dry_run: bool = Field(default=False, description="only report what would be deleted")


def _for_each_hour(
    context: OpExecutionContext,
    config: HoursConfig,
    asset_key: AssetKey,
    work: Callable[[str, datetime], tuple[str, dict[str, object]]],
    emit: frozenset[str],
) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    for key in config.partition_keys:
        try:
            inst_id, hour = parse_partition_key(key)
            status, metadata = work(inst_id, hour)
        except (ValueError, OpenHourError, ArchiveVerificationError, OSError) as exc:
            failures.append(f"{key}: {exc}")
            context.log.error(f"{key}: {exc}")
            continue
        statuses[status] = statuses.get(status, 0) + 1
        if status in emit and is_registrable(hour):
            context.log_event(AssetMaterialization(asset_key=asset_key, partition=key, metadata=metadata))
    summary = {**statuses, "failed": len(failures), "requested": len(config.partition_keys), "as_of": config.as_of}
    context.log.info(f"{asset_key.to_user_string()}: {summary} in {time.monotonic() - started:.1f}s")
    if failures:
        raise Failure(
            description=f"{len(failures)} of {len(config.partition_keys)} hours failed; the others were processed",
            metadata={"failures": MetadataValue.json(failures[:MAX_LISTED]), **statuses},
        )
    return summary


@op(
    description="Archive (verified gzip) every listed closed hour; one raw_archive materialization per hour.",
    out=Out(Nothing, description="counts per status are this output's metadata"),
)
def compress_hours(context: OpExecutionContext, config: HoursConfig, lake: LakeResource) -> Iterator[Output]:
    def work(inst_id: str, hour: datetime) -> tuple[str, dict[str, object]]:
        result = archive_hour(lake.root, inst_id, hour, now_utc(), lake.grace)
        return result.status, result.metadata()

    yield Output(None, metadata=_for_each_hour(context, config, RAW_ARCHIVE, work,
                                               frozenset({"archived", "completed_removal"})))


@op(
    description="Write the Parquet file of every listed closed hour; one curated_parquet materialization per hour.",
    out=Out(Nothing, description="counts per status are this output's metadata"),
)
def curate_hours(context: OpExecutionContext, config: HoursConfig, lake: LakeResource) -> Iterator[Output]:
    def work(inst_id: str, hour: datetime) -> tuple[str, dict[str, object]]:
        result = write_parquet(lake.root, inst_id, hour, now_utc(), lake.grace)
        return result.status, result.metadata()

    yield Output(None, metadata=_for_each_hour(context, config, CURATED_PARQUET, work, frozenset({"written"})))


@op(
    description="Delete raw hours and curated files past their retention window, inside the data root only.",
    out=Out(Nothing, description="the deletion report is this output's metadata"),
)
def delete_expired(context: OpExecutionContext, config: RetentionConfig, lake: LakeResource) -> Iterator[Output]:
    now = now_utc()
    as_of = min(parse_utc(config.as_of), now) if config.as_of else now
    dry_run = config.dry_run or lake.retention_dry_run
    candidates = plan_deletions(lake.root, as_of, lake.raw_retention, lake.curated_retention,
                                log_unreadable(context.log))
    report = delete_files(lake.root, candidates, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    context.log.info(f"retention at {iso(as_of)}: {verb} {len(report.removed)} file(s), "
                     f"{report.bytes_freed} bytes; refused {len(report.refused)}")
    metadata: dict[str, Any] = {
        "as_of": iso(as_of),
        "dry_run": dry_run,
        "removed_count": len(report.removed),
        "bytes_freed": report.bytes_freed,
        "hours": len(report.hours),
        "refused_count": len(report.refused),
        "removed": MetadataValue.json(report.removed[:MAX_LISTED]),
        "removed_dirs": MetadataValue.json(report.removed_dirs[:MAX_LISTED]),
        "refused": MetadataValue.json(report.refused[:MAX_LISTED]),
    }
    context.instance.add_run_tags(
        context.run_id,
        {"l2/retention_as_of": iso(as_of), "l2/dry_run": str(dry_run).lower(),
         "l2/removed": str(len(report.removed)), "l2/refused": str(len(report.refused))},
    )
    if report.refused:
        raise Failure(
            description=f"refused to delete {len(report.refused)} path(s) outside the data root or through symlinks "
            f"(the {len(report.removed)} safe ones were {verb})",
            metadata=metadata,
        )
    yield Output(None, metadata=metadata)


@job(description="Archive listed hours (launched by compression_schedule).")
def compress_job() -> None:
    compress_hours()


@job(description="Write Parquet for listed hours (launched by raw_hours_sensor).")
def curate_job() -> None:
    curate_hours()


@job(description="Delete expired raw and curated files (launched by retention_schedule).")
def retention_job() -> None:
    delete_expired()


raw_hour_job = define_asset_job(
    "raw_hour_job",
    selection=AssetSelection.assets(RAW_HOUR).without_checks() | AssetSelection.checks(*HOUR_CHECK_KEYS),
    description="Re-register hours and re-run their quality checks (use for backfills). raw_hours_sensor "
    "requests it for an already registered hour whose content changed.",
)

instrument_metadata_job = define_asset_job(
    "instrument_metadata_job",
    selection=AssetSelection.assets(INSTRUMENT_METADATA),
    description="Refresh instrument metadata from OKX REST.",
)

"""Jobs: asset jobs for every asset, and the lake's op job, retention (it deletes; it is not an asset; the
instance's own retention job is `l2_pipeline.instance_retention`).

- `compress_job` (`raw_archive`; and `book_tape_archive` when the lake holds a tape:
  `build_compress_job`) is what `compression_schedule` launches: one run per partition range and
  asset, as an asset backfill with the asset's backfill policy would split them.
- `curate_job` (`curated_parquet`) and `raw_hour_job` (`raw_hour` and its six hour checks) are for
  runs launched by hand; `raw_hours_sensor` requests the same assets as one backfill.
- `hour_checks_job` (the six hour checks alone) re-runs checks on chosen hours without touching
  them: the UI cannot execute a partitioned check on its own (Dagster 1.13: "Executing checks on
  their own for partitioned assets is not yet supported"), and a checks-only job has no partitions
  definition in 1.13 (it is inferred from selected assets), so its runs name their hours with the
  `dagster/partition` tag or the `dagster/asset_partition_range_start`/`_end` tags; the
  Launchpad's check selection picks single checks.
- `retention_job` (op `delete_expired`) is what `retention_schedule` launches.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetKey,
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
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import Field

from l2_lake.format.hours import iso, now_utc, parse_utc
from l2_lake.store.lake_walk import log_unreadable
from l2_lake.tiers.curated_migration import MigrationReport, migrate_legacy_curated
from l2_lake.tiers.retention import DeletionReport, delete_files, plan_deletions
from l2_pipeline.checks import HOUR_CHECK_KEYS
from l2_pipeline.keys import (
    BOOK_FEATURES,
    BOOK_TAPE_ARCHIVE,
    CURATED_PARQUET,
    INSTRUMENT_METADATA,
    RAW_ARCHIVE,
    RAW_HOUR,
)
from l2_pipeline.resources import LakeResource

MAX_LISTED = 200  # paths listed in run metadata (counts are always complete)


class RetentionConfig(Config):
    as_of: str = Field(default="", description="ISO time to evaluate retention at (empty = now)")
    dry_run: bool = Field(default=False, description="only report what would be deleted")


@op(
    description="Move curated files of the pre-hive layout into the hive layout, then delete raw hours and "
    "curated/features files past their retention window, inside the data root only.",
    out=Out(Nothing, description="the deletion report is this output's metadata"),
)
def delete_expired(context: OpExecutionContext, config: RetentionConfig, lake: LakeResource) -> Iterator[Output]:
    now = now_utc()
    as_of = min(parse_utc(config.as_of), now) if config.as_of else now
    dry_run = config.dry_run or lake.retention_dry_run
    local_lake = not lake.lake_url  # object storage never held the pre-hive layout
    migrated = migrate_legacy_curated(lake.root, log_unreadable(context.log)) if local_lake and not dry_run \
        else MigrationReport()
    if migrated.moved or migrated.superseded:
        context.log.info(f"moved {len(migrated.moved)} curated file(s) of the pre-hive layout into the hive layout; "
                         f"removed {len(migrated.superseded)} old copies of hours rebuilt since")
    report = DeletionReport(dry_run=dry_run)
    for tree, curated_retention in lake.retention_targets():  # the lake, then each replica's spool
        candidates = plan_deletions(tree, as_of, lake.raw_retention, curated_retention, log_unreadable(context.log),
                                    report=context.log.error)
        report.add(delete_files(tree, candidates, dry_run=dry_run))
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
        "legacy_curated_moved": len(migrated.moved),
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


@job(description="Delete expired raw and curated files (launched by retention_schedule).")
def retention_job() -> None:
    delete_expired()


def build_compress_job(tape: bool = False) -> UnresolvedAssetJobDefinition:
    """`compress_job`: `raw_archive`, and with `tape` `book_tape_archive` (each run of the schedule
    selects one of them)."""
    assets: tuple[AssetKey, ...] = (RAW_ARCHIVE, BOOK_TAPE_ARCHIVE) if tape else (RAW_ARCHIVE,)
    return define_asset_job(
        "compress_job",
        selection=AssetSelection.assets(*assets),
        description="Archive (verified gzip) hours: " + " and ".join(a.to_user_string() for a in assets)
        + " partitions. compression_schedule launches it, one run per partition range"
        + (" and asset." if tape else "."),
    )


compress_job = build_compress_job()

curate_job = define_asset_job(
    "curate_job",
    selection=AssetSelection.assets(CURATED_PARQUET, BOOK_FEATURES),
    description="Write the Parquet files of hours: curated_parquet and book_features partitions (raw_hours_sensor "
    "requests the same assets as a backfill).",
)

raw_hour_job = define_asset_job(
    "raw_hour_job",
    selection=AssetSelection.assets(RAW_HOUR).without_checks() | AssetSelection.checks(*HOUR_CHECK_KEYS),
    description="Register hours again (re-read their files, refresh their figures) and evaluate their six quality "
    "checks; raw_hours_sensor requests the same selection as a backfill.",
)


hour_checks_job = define_asset_job(
    "hour_checks_job",
    selection=AssetSelection.checks(*HOUR_CHECK_KEYS),
    description="Re-run the quality checks of raw_hour on chosen hours, without touching them. Name the hours "
    "with a tag: dagster/partition = '<YYYY-MM-DD-HH:MM>|<instId>' (or '…|group-7-of-10' with instrument "
    "groups), or dagster/asset_partition_range_start and dagster/asset_partition_range_end.",
)

instrument_metadata_job = define_asset_job(
    "instrument_metadata_job",
    selection=AssetSelection.assets(INSTRUMENT_METADATA),
    description="Refresh instrument metadata from OKX REST.",
)

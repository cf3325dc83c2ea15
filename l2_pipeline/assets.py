"""The lake's assets, all partitioned by UTC hour × instrument except the instrument metadata.

- `raw_hour`: the collector's hour file. Registered (materialized without a run) by
  `raw_hours_sensor` when the hour closes; materializing it in a run re-registers the hour.
- `raw_archive`: the verified `{HH}.jsonl.gz` of the hour (see `l2_pipeline.archive`).
- `curated_parquet`: the hour as typed, zstd Parquet (see `l2_pipeline.curated`).
- `instrument_metadata`: OKX instrument objects and their change history under `meta/`.
"""

import time
from collections.abc import Iterator
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from l2_pipeline.archive import ArchiveVerificationError, OpenHourError, archive_hour
from l2_pipeline.curated import write_parquet
from l2_pipeline.hour_stats import HourStats, compute_hour_stats
from l2_pipeline.hours import is_closed, iso, now_utc
from l2_pipeline.instruments import fetch_swap_instruments, refresh_instruments
from l2_pipeline.keys import CURATED_PARQUET, INSTRUMENT_METADATA, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import lake_partitions, parse_partition_key
from l2_pipeline.resources import LakeResource
from l2_pipeline.selection import lake_instruments

LAKE_GROUP = "lake"


def stats_metadata(stats: HourStats) -> dict[str, Any]:
    """Partition metadata of a registered hour: numbers (plotted over partitions) + provenance."""
    meta = stats.metadata()
    if "first_ts" in meta:
        meta["first_ts_utc"] = MetadataValue.timestamp(meta["first_ts"])
        meta["last_ts_utc"] = MetadataValue.timestamp(meta["last_ts"])
    if meta["source"]:
        meta["source"] = MetadataValue.path(meta["source"])
    return meta


@asset(
    key=RAW_HOUR,
    partitions_def=lake_partitions,
    group_name=LAKE_GROUP,
    output_required=False,
    kinds={"json"},
    description="One closed hour of one instrument as the collector wrote it ({HH}.jsonl or its .jsonl.gz). "
    "Registered by raw_hours_sensor; materializing re-reads the hour and refreshes its metadata.",
)
def raw_hour(context: AssetExecutionContext, lake: LakeResource) -> Iterator[MaterializeResult]:
    inst_id, hour = parse_partition_key(context.partition_key)
    if not is_closed(hour, now_utc(), lake.grace):
        raise Failure(f"{inst_id} {iso(hour)} is the open hour (or inside the {lake.grace} grace): not registered")
    stats = compute_hour_stats(lake.root, inst_id, hour, lake.cadence_seconds)
    if not stats.has_data:
        context.log.warning(f"no records, archive or events for {inst_id} {iso(hour)}: nothing to register")
        return
    yield MaterializeResult(metadata=stats_metadata(stats))


@asset(
    key=RAW_ARCHIVE,
    deps=[RAW_HOUR],
    partitions_def=lake_partitions,
    group_name=LAKE_GROUP,
    output_required=False,
    kinds={"gzip"},
    description="Verified gzip of the hour ({HH}.jsonl.gz; sha256 and line count of the decompressed archive "
    "equal the original's before the .jsonl is removed). Idempotent; never the open hour.",
)
def raw_archive(context: AssetExecutionContext, lake: LakeResource) -> Iterator[MaterializeResult]:
    inst_id, hour = parse_partition_key(context.partition_key)
    try:
        result = archive_hour(lake.root, inst_id, hour, now_utc(), lake.grace)
    except (OpenHourError, ArchiveVerificationError) as exc:
        raise Failure(str(exc)) from exc
    if result.status == "no_data":
        context.log.warning(f"no {hour:%H}.jsonl or archive for {inst_id} {iso(hour)}: nothing to archive")
        return
    if result.status == "busy":
        raise Failure(f"{inst_id} {iso(hour)} is being archived by another run right now; retry later")
    yield MaterializeResult(metadata=result.metadata())


@asset(
    key=CURATED_PARQUET,
    deps=[RAW_HOUR],
    partitions_def=lake_partitions,
    group_name=LAKE_GROUP,
    output_required=False,
    kinds={"parquet"},
    description="The hour as analysis-ready Parquet (pyarrow, zstd): timestamps as timestamp[ms, UTC], prices as "
    "float64 plus exact strings, levels as list<struct>; one row per source record.",
)
def curated_parquet(context: AssetExecutionContext, lake: LakeResource) -> Iterator[MaterializeResult]:
    inst_id, hour = parse_partition_key(context.partition_key)
    try:
        result = write_parquet(lake.root, inst_id, hour, now_utc(), lake.grace)
    except OpenHourError as exc:
        raise Failure(str(exc)) from exc
    if result.status == "no_data":
        context.log.warning(f"no records for {inst_id} {iso(hour)}: no Parquet written")
        return
    if result.skipped_lines:
        context.log.warning(f"{result.skipped_lines} unparseable line(s) in {result.source} left out")
    yield MaterializeResult(metadata=result.metadata())


@asset(
    key=INSTRUMENT_METADATA,
    group_name="reference",
    kinds={"json"},
    description="OKX SWAP instrument objects (GET {rest_url}/api/v5/public/instruments?instType=SWAP) of every "
    "configured or collected instrument, written to meta/okx/instruments/{instId}.json with a .history.jsonl line "
    "per change (tickSz / ctVal changes decide how old data is read).",
)
def instrument_metadata(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    listed = fetch_swap_instruments(lake.rest_url, lake.rest_timeout_seconds)
    wanted = sorted(set(lake.validated_instruments()) | set(lake_instruments(lake.root)))
    result = refresh_instruments(lake.root, wanted, listed, int(time.time() * 1000))
    if result.missing:
        context.log.warning(f"OKX does not list {', '.join(result.missing)} as SWAP instruments")
    if not result.stored:
        raise Failure(f"none of {', '.join(wanted)} is listed by OKX at {lake.rest_url}")
    for change in result.important_changes:
        context.log.warning(f"{change.inst_id} {change.field} changed: {change.old!r} -> {change.new!r}")
    rows = "\n".join(f"| {c.inst_id} | {c.field} | {c.old} | {c.new} |" for c in result.changes)
    return MaterializeResult(
        metadata={
            "instruments": len(result.stored),
            "listed_by_okx": result.listed,
            "changes": len(result.changes),
            "important_changes": len(result.important_changes),
            "stored": ", ".join(result.stored),
            "new_instruments": ", ".join(result.new_instruments),
            "missing": ", ".join(result.missing),
            "change_table": MetadataValue.md(
                "| instId | field | old | new |\n|---|---|---|---|\n" + rows if rows else "no changes"
            ),
        }
    )

"""`lake_health`: the partition quality dashboard, one image of the whole lake in the Dagster UI.

A heatmap of instruments × the hours of the last `health_days` days (`LakeResource.health_days`;
from the first registered hour when the lake is younger),
each cell coloured by the worst of the hour's six checks (failed, warning, passed; grey where the
hour has no `raw_hour` materialization) and naming the checks that failed, with the gaps counted and
the coverage shown
(`l2_lake.pictures.plots.lake_health_figure`). It reads no file: each cell comes from the metadata of
the hour's latest `raw_hour` materialization (`quality`, `coverage_pct`, `gaps`; with instrument groups,
the instrument's entry in its group-hour's `by_instrument`), written by the
same run that evaluated the hour's checks, fetched in two queries for the whole window.
`lake_health_sensor` redraws it within 30 s of any new `raw_hour` materialization (an hour registered
or re-registered), once per batch; materialize it from the UI for a refresh now.
"""

from collections import Counter
from datetime import datetime

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DefaultSensorStatus,
    MaterializeResult,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

from l2_lake.format import layout
from l2_lake.format.hours import iso, now_utc
from l2_lake.pictures.plots import HourHealth, lake_health_figure
from l2_lake.quality.verdicts import failed_in_summary, worst_status
from l2_pipeline.assets.lake import png_markdown
from l2_pipeline.group_hours import member_metadata
from l2_pipeline.keys import LAKE_HEALTH, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline.registry import latest_materializations
from l2_pipeline.resources import LakeResource


def window(now: datetime, days: int) -> list[datetime]:
    """The hours of the last `days` days that have ended by `now`, oldest first."""
    last = layout.hour_floor(int(now.timestamp() * 1000)) - layout.HOUR
    return [last - layout.HOUR * i for i in range(24 * days - 1, -1, -1)]


def health_cell(inst_id: str, hour: datetime, metadata: dict | None) -> HourHealth:
    """A heatmap cell from an instrument-hour's own `raw_hour` metadata, as plain values
    (`group_hours.member_metadata`; None: not registered)."""
    if metadata is None:
        return HourHealth(inst_id, hour, "missing")
    failed = failed_in_summary(str(metadata["quality"])) if "quality" in metadata else ()
    coverage = metadata.get("coverage_pct")
    gaps = metadata.get("gaps")
    return HourHealth(inst_id, hour, worst_status(failed), None if coverage is None else float(coverage),
                      0 if gaps is None else int(gaps), failed)


@asset(
    key=LAKE_HEALTH,
    group_name="dashboards",
    kinds={"png"},
    description="Partition quality at a glance: instruments × hours of the last health_days days, coloured by the "
    "worst check (red failed, amber warning, green passed, grey not registered), naming the checks that failed. "
    "Redrawn by lake_health_sensor after new hours are registered; the image is in the latest materialization's "
    "metadata.",
)
def lake_health(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    hours = window(now_utc(), lake.health_days)
    instruments = lake.known_instruments()
    keys = {(inst_id, hour): str(partition_key(inst_id, hour, lake.instrument_groups))
            for inst_id in instruments for hour in hours}
    records = latest_materializations(context.instance, list(dict.fromkeys(keys.values())))
    cells = []
    for (inst_id, hour), key in keys.items():
        record = records.get(key)
        materialization = record.asset_materialization if record is not None else None
        member = member_metadata(materialization.metadata, inst_id) if materialization else None
        cells.append(health_cell(inst_id, hour, member))
    # a young lake: the window starts at its first registered hour, so each cell is wide enough to say what failed
    first = min((cell.hour for cell in cells if cell.status != "missing"), default=hours[0])
    hours = [hour for hour in hours if hour >= first]
    cells = [cell for cell in cells if cell.hour >= first]
    counts = Counter(cell.status for cell in cells)
    context.log.info(f"lake health over {len(hours)} hours × {len(instruments)} instruments: {dict(counts)}")
    return MaterializeResult(metadata={
        "heatmap": png_markdown(lake_health_figure(cells, instruments, hours), "lake health"),
        **{status: counts.get(status, 0) for status in ("failed", "warning", "passed", "missing")},
        "first_hour": iso(hours[0]),
        "last_hour": iso(hours[-1]),
        "instruments": len(instruments),
    })


lake_health_job = define_asset_job(
    "lake_health_job", selection=AssetSelection.assets(LAKE_HEALTH),
    description="Redraw the lake_health heatmap (lake_health_sensor runs it after new hours are registered).",
)

@sensor(
    name="lake_health_sensor",
    job=lake_health_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Redraws the lake_health heatmap within 30 s of a new raw_hour materialization (an hour registered "
    "or re-registered), once per batch of them.",
)
def lake_health_sensor(context: SensorEvaluationContext) -> SensorResult:
    newest = context.instance.fetch_materializations(RAW_HOUR, limit=1).records  # newest first: one row
    latest = newest[0] if newest else None
    drawn = int(context.cursor) if (context.cursor or "").isdigit() else 0
    if latest is None or latest.storage_id <= drawn:
        return SensorResult(skip_reason=SkipReason("no raw_hour materialization since the heatmap was drawn"),
                            cursor=context.cursor)
    return SensorResult(run_requests=[RunRequest(run_key=f"lake_health-{latest.storage_id}")],
                        cursor=str(latest.storage_id))

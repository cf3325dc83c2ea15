"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

Asset graph (all but instrument_metadata partitioned by UTC hour × instrument):

    raw_hour ──► raw_archive          (checks on raw_hour: no_gaps, no_checksum_failures, coverage,
        └──────► curated_parquet       no_crossed_books, schema_valid, timestamps_valid; collector_freshness)
    instrument_metadata

Loading reads the `L2_*` environment variables once (`lake_resource_from_env`: an invalid value
stops the load with an error naming the variable) and builds the hour × instrument partitions from
that same resource (`partitions_start`), so the partitions and what the sensor and schedules
select always agree. Nothing here touches the network or the lake at load time.
"""

from __future__ import annotations

from dagster import Definitions

from l2_pipeline.assets import build_lake_assets, instrument_metadata
from l2_pipeline.checks import build_hour_checks, collector_freshness_check
from l2_pipeline.jobs import compress_job, curate_job, instrument_metadata_job, raw_hour_job, retention_job
from l2_pipeline.partitions import lake_partitions
from l2_pipeline.resources import LakeResource, lake_resource_from_env
from l2_pipeline.schedules import compression_schedule, instrument_metadata_schedule, retention_schedule
from l2_pipeline.sensors import collector_freshness_sensor, raw_hours_sensor


def build_definitions(lake: LakeResource | None = None) -> Definitions:
    """The code location over `lake` (default: configured by the process environment)."""
    lake = lake_resource_from_env() if lake is None else lake
    partitions = lake_partitions(lake.first_hour)
    return Definitions(
        assets=[*build_lake_assets(partitions), instrument_metadata],
        asset_checks=[build_hour_checks(partitions), collector_freshness_check],
        jobs=[compress_job, curate_job, retention_job, raw_hour_job, instrument_metadata_job],
        schedules=[compression_schedule, retention_schedule, instrument_metadata_schedule],
        sensors=[raw_hours_sensor, collector_freshness_sensor],
        resources={"lake": lake},
    )


defs = build_definitions()

"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

Asset graph (all but instrument_metadata partitioned by UTC hour × instrument):

    raw_hour ──► raw_archive          (checks on raw_hour: no_gaps, no_checksum_failures, coverage,
        └──────► curated_parquet       no_crossed_books, schema_valid, timestamps_valid; collector_freshness)
    instrument_metadata

The lake location and every knob come from `L2_*` environment variables (`LakeResource`);
nothing here touches the network or the lake at load time.
"""

from __future__ import annotations

from dagster import Definitions

from l2_pipeline.assets import curated_parquet, instrument_metadata, raw_archive, raw_hour
from l2_pipeline.checks import collector_freshness_check, raw_hour_quality
from l2_pipeline.jobs import compress_job, curate_job, instrument_metadata_job, raw_hour_job, retention_job
from l2_pipeline.resources import lake_resource_from_env
from l2_pipeline.schedules import compression_schedule, instrument_metadata_schedule, retention_schedule
from l2_pipeline.sensors import collector_freshness_sensor, raw_hours_sensor


def build_definitions() -> Definitions:
    return Definitions(
        assets=[raw_hour, raw_archive, curated_parquet, instrument_metadata],
        asset_checks=[raw_hour_quality, collector_freshness_check],
        jobs=[compress_job, curate_job, retention_job, raw_hour_job, instrument_metadata_job],
        schedules=[compression_schedule, retention_schedule, instrument_metadata_schedule],
        sensors=[raw_hours_sensor, collector_freshness_sensor],
        resources={"lake": lake_resource_from_env()},
    )


defs = build_definitions()

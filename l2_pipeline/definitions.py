"""The code location: `dagster dev -w workspace.yaml` loads `defs` from here.

Asset graph (all but instrument_metadata partitioned by UTC hour × instrument, or hour × instrument
group with `L2_INSTRUMENT_GROUPS`, see `l2_pipeline.partitions`):

    raw_hour ──► raw_archive          (checks on raw_hour: no_gaps, no_checksum_failures, coverage,
        └──────► curated_parquet       no_crossed_books, schema_valid, timestamps_valid; collector_freshness)
                     └──► book_features
    instrument_metadata   lake_health (unpartitioned: the quality heatmap, from raw_hour's metadata)

With replicas (`L2_REPLICA_DIRS`, redundant capture: `l2_pipeline.assets.replicas`), `canonical_hour`
(check `replicas_agree`, sensor `replica_hours_sensor`) merges the replicas' spools into the lake and
`raw_hour` depends on it; the partitions then also cover the replicas' first hour and instruments.
Without, the code location is exactly the graph above.

With a tape in the lake (`l2-collector run --tape`: `raw/okx/l2_tape/` holds an instrument when the
code location loads; `l2_pipeline.assets.tape`), `book_tape` (checks `tape_no_gaps`, `tape_coverage`,
`tape_schema_valid`) ──► `book_tape_archive` and `resampled_books` join it, `raw_hours_sensor`
registers the tape's hours, `compress_job` / `compression_schedule` archive them too, and the jobs
`book_tape_job` and `resample_job` are added. Without a tape, none of this is loaded.

Loading reads the `L2_*` environment variables once (`lake_resource_from_env`: an invalid value
stops the load with an error naming the variable) and fixes the partitions (`partitions_at_load`):
the instruments configured or present in the lake, and hours from `L2_PARTITIONS_START` or the
lake's first hour. That costs one directory listing per instrument; nothing here touches the
network. Sensors and schedules are built from the same partitions, so what they select and what
is a partition always agree.

Steps run in the run's own process (`in_process_executor`) unless `L2_EXECUTOR=celery` sends them to
Celery workers on other hosts (`l2_pipeline.executors`, docs/DISTRIBUTED.md). In process, a run's
parallelism is its range of hours, read one after the other, and runs of different ranges run side
by side; it also lets the hour checks reuse the figures the `hour_tiers` step of the same run just read
(`stats_cache`; on a worker that did not run that step they read the hour again).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

from dagster import Definitions, MultiPartitionsDefinition

from l2_lake.format import layout
from l2_lake.format.hours import now_utc
from l2_lake.store.lake_walk import log_unreadable
from l2_lake.store.tree import LocalTree
from l2_pipeline.assets.dashboards import lake_health, lake_health_job, lake_health_sensor
from l2_pipeline.assets.lake import build_lake_assets, instrument_metadata, partitions_per_run
from l2_pipeline.assets.replicas import ReplicaDefinitions, build_replica_definitions
from l2_pipeline.assets.tape import TapeDefinitions, build_tape_definitions
from l2_pipeline.checks import build_hour_checks, collector_freshness_check
from l2_pipeline.executors import executor_from_env
from l2_pipeline.instance_retention import instance_retention_job, instance_retention_schedule
from l2_pipeline.jobs import (
    build_compress_job,
    curate_job,
    hour_checks_job,
    instrument_metadata_job,
    raw_hour_job,
    retention_job,
)
from l2_pipeline.partitions import instrument_keys, lake_partitions
from l2_pipeline.resources import LakeResource, lake_resource_from_env
from l2_pipeline.schedules import build_compression_schedule, instrument_metadata_schedule, retention_schedule
from l2_pipeline.sensors import build_raw_hours_sensor, collector_freshness_sensor

log = logging.getLogger(__name__)
CHECK_PAGE_PARTITIONS = 3_600  # checked partitions per check the raw_hour page rebuilds in ~2 s (docs/PERFORMANCE.md)


def partitions_at_load(lake: LakeResource, now: datetime | None = None) -> MultiPartitionsDefinition:
    """Hour × instrument partitions over what `lake` holds now (see the module docstring)."""
    trees = (lake.tree, *(LocalTree(d) for d in lake.replicas.values()))
    firsts = (tree.first_hour(log_unreadable(log)) for tree in trees)  # lazy: only if unset
    start = lake.configured_start or min(filter(None, firsts), default=None)
    if start is None:
        start = (now or now_utc()).replace(hour=0, minute=0, second=0, microsecond=0)
    instruments = lake.known_instruments()
    partitions = lake_partitions(start, instruments, lake.instrument_groups)
    too_many = checked_partitions_warning(len(instrument_keys(partitions)), lake.instance_retention_days)
    if too_many:
        log.warning(too_many)
    return partitions


def checked_partitions_warning(keys: int, window_days: int) -> str | None:
    """What to change when `keys` instrument keys (instruments or groups) over a `window_days`-day
    instance window make more checked partitions per check than the `raw_hour` page rebuilds in ~2 s."""
    checked = keys * 24 * window_days
    if checked <= CHECK_PAGE_PARTITIONS:
        return None
    groups = max(1, CHECK_PAGE_PARTITIONS // (24 * window_days))
    return (f"{keys} instrument key(s) × {window_days} days of hours = {checked:,} checked partitions per check: "
            f"Dagster's raw_hour page rebuilds every one, about 2 s per {CHECK_PAGE_PARTITIONS:,}. Set "
            f"L2_INSTRUMENT_GROUPS={groups} before the first registration, or a shorter L2_INSTANCE_RETENTION_DAYS, "
            "and turn instance_retention_schedule on (docs/PIPELINE.md, \"Instrument groups\")")


def build_definitions(lake: LakeResource | None = None) -> Definitions:
    """The code location over `lake` (default: configured by the process environment)."""
    settings = lake_resource_from_env(os.environ) if lake is None else lake
    partitions = partitions_at_load(settings)
    per_run = partitions_per_run(partitions, settings.partitions_per_run)
    replicas = build_replica_definitions(partitions, per_run) if settings.replicas else ReplicaDefinitions()
    tape = bool(settings.tree.instruments(layout.TAPE_PREFIX))
    tapes = build_tape_definitions(partitions, per_run) if tape else TapeDefinitions()
    compress_job = build_compress_job(tape)
    return Definitions(
        assets=[*build_lake_assets(partitions, replicas.raw_hour_deps, per_run), *replicas.assets, *tapes.assets,
                instrument_metadata, lake_health],
        asset_checks=[build_hour_checks(partitions), collector_freshness_check, *replicas.checks, *tapes.checks],
        jobs=[compress_job, curate_job, raw_hour_job, hour_checks_job, retention_job, lake_health_job,
              instrument_metadata_job, instance_retention_job, *tapes.jobs],
        schedules=[build_compression_schedule(partitions, tape, compress_job), retention_schedule,
                   instrument_metadata_schedule, instance_retention_schedule],
        sensors=[build_raw_hours_sensor(partitions, tape), collector_freshness_sensor, lake_health_sensor,
                 *replicas.sensors],
        resources={"lake": lake_resource_from_env() if lake is None else lake},
        executor=executor_from_env(),
    )


defs = build_definitions()

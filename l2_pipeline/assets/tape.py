"""The full-resolution tape in Dagster (`l2_lake.book.tape`, `l2-collector run --tape`): part of the code
location when the lake holds a tape (`raw/okx/l2_tape/` has an instrument directory when it loads;
`l2_pipeline.definitions`), so a lake without one is exactly as before. All three assets are
partitioned like `raw_hour` (hour × instrument) and built by `build_tape_definitions(partitions)`.

- `book_tape`: each closed tape hour (`{HH}.jsonl`, or its archive `{HH}.parquet`), registered by
  `raw_hours_sensor` with the same backfill as the snapshots' hours. Its runs read the hour once: a
  replay through a fresh engine into a sink that only counts (`l2_lake.quality.tape_stats`), whose
  figures are the partition's metadata (lines, bytes, frames, messages, messages applied to a
  trusted book, engine gaps, checksum failures, resyncs by reason, drops, ticks, first/last message,
  trusted-book seconds → `coverage_pct`, messages per second, schema problems) led by the verdict
  of its checks and the `fingerprint` of its files.
- `book_tape_quality`: the checks `tape_no_gaps` (WARN), `tape_coverage` and `tape_schema_valid`
  (`l2_lake.quality.verdicts.evaluate_tape`), evaluated in every run that materializes `book_tape`
  (from the figures its step just read: `stats_cache.read_tape_hour`), each evaluation targeting
  the hour's latest `book_tape` materialization, by the same machinery as `raw_hour`'s six checks
  (`l2_pipeline.checks.build_partition_checks`).
- `book_tape_archive`: the hour's verified archive, `{HH}.parquet` (`l2_lake.format.tape_columns`: one row
  per tape line, levels as decimal columns, brotli; it decodes to the hour's exact bytes, which
  `archive.archive_hour` with the tape's prefix proves before the `.jsonl` goes), launched by
  `compression_schedule` in `compress_job` runs of its own after `compress_after_hours`, like
  `raw_archive`. Retention deletes tape hours as raw hours
  (`retention.plan_deletions`).
- `resampled_books`: the hour replayed at a cadence and depth of the run's config
  (`ResampleConfig`, default 250 ms and 25 levels), as Parquet in the curated schema at a hive path
  naming them (`l2_lake.tiers.resampled`). Never requested automatically: materialize or backfill
  any range from the UI (`resample_job`, or the asset; the Launchpad takes the config).

`book_tape_job` registers hours again and re-evaluates their checks, as `raw_hour_job` does.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetMaterialization,
    AssetsDefinition,
    AssetSelection,
    Config,
    MetadataValue,
    MultiPartitionsDefinition,
    Output,
    define_asset_job,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import Field

from l2_lake.format import layout
from l2_lake.pictures.tape_figure import tape_hour_figure
from l2_lake.quality.stats_cache import TAPE_NEEDS, read_tape_hour
from l2_lake.quality.tape_stats import TapeHourStats
from l2_lake.quality.verdicts import TAPE_CHECKS, TAPE_SCHEMA_VALID, Verdict, tape_verdicts
from l2_lake.store.tree import LakeTree
from l2_lake.tiers.archive import archive_hour
from l2_lake.tiers.resampled import DEFAULT_CADENCE_MS, DEFAULT_DEPTH, write_resampled
from l2_pipeline.assets.lake import (
    HOURS_PER_RUN,
    RegisteredHour,
    figures_metadata,
    hours_asset,
    materialize_hours,
    png_markdown,
    require_closed,
)
from l2_pipeline.checks import build_partition_checks
from l2_pipeline.keys import BOOK_TAPE, BOOK_TAPE_ARCHIVE, RESAMPLED_BOOKS
from l2_pipeline.resources import LakeResource

TAPE_GROUP = "tape"
TAPE_CHECK_KEYS = [AssetCheckKey(BOOK_TAPE, name) for name in TAPE_CHECKS]
NO_MESSAGE_NOTE = "the tape file of this hour exists but holds no book message"


class ResampleConfig(Config):
    """How `resampled_books` replays each hour."""

    cadence_ms: int = Field(default=DEFAULT_CADENCE_MS, ge=1,
                            description="one record per this many ms of exchange time (when the book changed)")
    depth: int = Field(default=DEFAULT_DEPTH, ge=1, le=layout.MAX_DEPTH, description="levels per side in each record")


def tape_figures(stats: TapeHourStats, picture: bool) -> dict[str, Any]:
    """Partition metadata of a registered tape hour: its figures (`TapeHourStats.metadata`) and, if
    `picture`, its picture when it was drawn (`l2_lake.pictures.tape_figure`)."""
    meta = figures_metadata(stats.metadata())
    meta["resyncs_by_reason"] = MetadataValue.json(meta["resyncs_by_reason"])
    if not stats.scan.replay.messages:
        meta["note"] = NO_MESSAGE_NOTE
    if picture and stats.figure is not None:
        meta["figure"] = png_markdown(stats.figure, f"{stats.inst_id} {stats.hour:%Y-%m-%dT%H}:00Z tape")
    return meta


def register_tape_hour(lake: Path | LakeTree, inst_id: str, hour: datetime, now: datetime, grace: timedelta, *,
                       coverage_threshold_pct: float, figure: bool = False) -> RegisteredHour:
    """Read one closed tape hour's figures (`figure`: and draw its picture); one that cannot be read
    is registered with its error (its `tape_schema_valid` check says so), one without a tape file
    fails the step."""
    require_closed(inst_id, hour, now, grace)
    read = read_tape_hour(lake, inst_id, hour, tape_hour_figure if figure else None)
    return RegisteredHour.of(read, tape_verdicts(read.stats, read.error, coverage_threshold_pct),
                             partial(tape_figures, picture=figure),
                             lambda stats: stats.source is not None, TAPE_SCHEMA_VALID)


def tape_hour_verdicts(lake: LakeResource, inst_id: str, hour: datetime) -> list[Verdict]:
    """The verdicts of one instrument's tape hour (`quality.tape_verdicts` of its read)."""
    read = read_tape_hour(lake.tree, inst_id, hour)
    return tape_verdicts(read.stats, read.error, lake.coverage_threshold_pct)


@dataclass(frozen=True)
class TapeDefinitions:
    """What the tape adds to the code location (all empty for a lake without a tape)."""

    assets: list[AssetsDefinition] = field(default_factory=list)
    checks: list[AssetChecksDefinition] = field(default_factory=list)
    jobs: list[UnresolvedAssetJobDefinition] = field(default_factory=list)


def build_tape_definitions(partitions: MultiPartitionsDefinition, per_run: int = HOURS_PER_RUN) -> TapeDefinitions:
    """`book_tape` and its checks, `book_tape_archive`, `resampled_books`, `book_tape_job` and
    `resample_job` over `partitions` (hour × instrument), in runs of up to `per_run` partitions."""
    tape_asset = partial(hours_asset, partitions, per_run, group=TAPE_GROUP)

    @tape_asset(
        BOOK_TAPE, "json", "One closed hour of one instrument's full-resolution tape (raw/okx/l2_tape/…/{HH}.jsonl or "
        "its archive {HH}.parquet): every books frame as received and the engine's other inputs. raw_hours_sensor "
        "registers each closed hour; its runs replay the hour once through a fresh engine for its figures (messages, "
        "trusted-book coverage, gaps, resyncs by reason, schema problems) and evaluate the three tape checks.", deps=(),
    )
    def book_tape(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Output | AssetMaterialization]:
        yield from materialize_hours(context, lake, partial(register_tape_hour, figure=lake.hour_figures,
                                                            coverage_threshold_pct=lake.coverage_threshold_pct),
                                     needs=None, prefix=layout.TAPE_PREFIX)

    @tape_asset(
        BOOK_TAPE_ARCHIVE, "parquet", "Verified archive of the tape hour ({HH}.parquet: one row per tape line, "
        "levels as decimal columns, brotli; about the size of the same hour's gzipped snapshots. It decodes to the "
        "hour's exact bytes: sha256 and line count equal the original's before the .jsonl is removed). Idempotent; "
        "never the open hour; "
        "compression_schedule archives tape hours after compress_after_hours.", deps=[BOOK_TAPE],
    )
    def book_tape_archive(context: AssetExecutionContext, lake: LakeResource
                          ) -> Iterator[Output | AssetMaterialization]:
        yield from materialize_hours(context, lake, partial(archive_hour, prefix=layout.TAPE_PREFIX),
                                     needs=(("tape_records",), ("tape_archive",)), prefix=layout.TAPE_PREFIX)

    @tape_asset(
        RESAMPLED_BOOKS, "parquet", "The tape hour replayed at the run config's cadence_ms (default 250) and depth "
        "(default 25), as Parquet in the curated schema at resampled/okx/l2_perps/cadence_ms=…/depth=…/instId=…/"
        "date=…/hour=…/data.parquet: a record of the book before the first message at or after each cadence "
        "boundary of exchange time (if it changed), never across a gap. Not requested automatically: materialize "
        "or backfill any range with the config you want.", deps=[BOOK_TAPE],
    )
    def resampled_books(context: AssetExecutionContext, config: ResampleConfig, lake: LakeResource
                        ) -> Iterator[Output | AssetMaterialization]:
        yield from materialize_hours(context, lake, partial(write_resampled, cadence_ms=config.cadence_ms,
                                                            depth=config.depth),
                                     needs=TAPE_NEEDS, prefix=layout.TAPE_PREFIX)

    checks = build_partition_checks(
        "book_tape_quality", BOOK_TAPE, TAPE_CHECKS, partitions, tape_hour_verdicts,
        "Engine gaps, trusted-book coverage and schema of each tape hour of the step.", prefix=layout.TAPE_PREFIX)
    book_tape_job = define_asset_job(
        "book_tape_job", selection=AssetSelection.assets(BOOK_TAPE).without_checks()
        | AssetSelection.checks(*TAPE_CHECK_KEYS),
        description="Register tape hours again (replay them for their figures) and evaluate their three checks; "
        "raw_hours_sensor requests the same selection as a backfill.")
    resample_job = define_asset_job(
        "resample_job", selection=AssetSelection.assets(RESAMPLED_BOOKS),
        description="Resample tape hours at a cadence and depth of your choosing (config: ops.resampled_books."
        "config.cadence_ms / depth): resampled_books partitions; launch a backfill over any range.")
    return TapeDefinitions(assets=[book_tape, book_tape_archive, resampled_books], checks=[checks],
                           jobs=[book_tape_job, resample_job])

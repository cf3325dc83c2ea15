"""The lake's assets, all partitioned by UTC hour × instrument except the instrument metadata.

- `raw_hour`: the collector's hour file, registered when the hour closes: `raw_hours_sensor`
  requests a backfill of it (its runs also evaluate the six hour checks, see `l2_pipeline.checks`);
  its metadata holds the hour's figures and the `fingerprint` of its files.
- `raw_archive`: the verified `{HH}.jsonl.gz` of the hour (see `l2_lake.tiers.archive`).
- `curated_parquet`: the hour as typed, zstd Parquet (see `l2_lake.tiers.curated`).
- `book_features`: liquidity features, one row per record (see `l2_lake.tiers.features`), with the
  hour's figure in its metadata (`l2_lake.pictures.plots.hour_figure`).
- `instrument_metadata`: OKX instrument objects and their change history under `meta/`.

`raw_hour`, `curated_parquet` and `book_features` are the multi-asset `hour_tiers`: one step that
reads each hour once and builds what its run selected from that read (`l2_lake.tiers.hour_tiers`);
each can still be materialized alone (`can_subset`).

The partitioned assets are built by `build_lake_assets(partitions)` when the code location loads
(the hour dimension starts where the configuration says). The tape's assets (`l2_pipeline.assets.tape`)
are made of the same pieces: `hours_asset`, `materialize_hours` and `RegisteredHour`. Materializing `raw_archive` or
`curated_parquet` is the only way their files are written: UI runs and backfills,
`compression_schedule` and `raw_hours_sensor` all end in these functions. An hour found already
archived when it is registered gets its `raw_archive` materialization the same way (the sensor's
backfill includes it; `archive_hour` reports it `already_archived`).

Runs and missing data:
- `hour_tiers` and `raw_archive` have `BackfillPolicy.multi_run(partitions_per_run)`: a backfill
  (or a schedule tick) of N hours is a few runs of up to `HOURS_PER_RUN` partitions each
  (`GROUP_HOURS_PER_RUN` with instrument groups). A run processes every hour of its range and
  records one materialization per hour, with that hour's metadata; if any hour could not be done it
  records the others and fails, naming each failed hour and why.
- An hour without any data file fails its step with the paths looked for and what to do; it is
  never a silent success (a backfill would mark it failed with no explanation). An hour whose file
  exists but holds no record materializes, with a `note` metadata entry saying so (records /
  rows / lines 0); its checks tell the rest.
"""

import asyncio
import base64
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    Failure,
    MaterializeResult,
    MetadataValue,
    MultiPartitionsDefinition,
    Nothing,
    Output,
    PathMetadataValue,
    asset,
    multi_asset,
)

from l2_lake.format import layout
from l2_lake.format.hours import is_closed, iso, now_utc
from l2_lake.pictures.plots import hour_figure
from l2_lake.quality.hour_stats import HourStats
from l2_lake.quality.stats_cache import HourRead
from l2_lake.quality.verdicts import SCHEMA_VALID, Verdict, hour_verdicts, quality_summary
from l2_lake.store import instrument_meta
from l2_lake.store.home import Changed
from l2_lake.store.s3 import StoreError
from l2_lake.store.tree import LakeTree, LocalTree, Needs
from l2_lake.tiers.archive import ArchiveVerificationError, archive_hour
from l2_lake.tiers.features_hour import FeaturesResult
from l2_lake.tiers.hour_tiers import CURATE, FEATURES, build_hour_tiers
from l2_lake.tiers.instruments import RefreshResult, refresh_instruments
from l2_lake.venues import rest
from l2_lake.venues.registry import DEFAULT_VENUE
from l2_pipeline.group_hours import (
    HasHour,
    group_metadata,
    is_group,
    lake_has_hour,
    members_with_data,
    no_member_data,
)
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, INSTRUMENT_METADATA, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import instrument_groups, parse_partition_key
from l2_pipeline.resources import LakeResource

LAKE_GROUP = "lake"
HOURS_PER_RUN = 100  # partitions per run of raw_archive / curated_parquet (≈ 1 min of work on a full hour each)
GROUP_HOURS_PER_RUN = 2  # group-hours per run: about as many instrument-hours, with groups of ~50
MAX_LISTED = 200  # failed hours listed in a run's failure metadata (the count is always complete)
EMPTY_NOTE = "the hour's file exists but holds no record"
T = TypeVar("T")


class HourFailed(Exception):
    """One hour of a run could not be materialized; the message says why and what to do."""


def missing_data(inst_id: str, paths: Sequence[Path | str]) -> HourFailed:
    """The failure of an hour that has none of `paths`."""
    return HourFailed(
        f"no data: none of {', '.join(str(p) for p in paths)} exists. Nothing was collected for this hour "
        f"(the collector was not running, or not collecting {inst_id}), or retention deleted it. Leave the hour "
        f"out of the backfill; if its file was moved, put it back at {paths[0]} and materialize it again."
    )


def figures_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Figures' plain metadata (`HourStats.metadata`, `TapeHourStats.metadata`) as the UI shows it best:
    the first and last timestamps also as timestamps, the source as a path."""
    if "first_ts" in meta:
        meta["first_ts_utc"] = MetadataValue.timestamp(meta["first_ts"])
        meta["last_ts_utc"] = MetadataValue.timestamp(meta["last_ts"])
    if meta["source"]:
        meta["source"] = MetadataValue.path(meta["source"])
    return meta


def stats_metadata(stats: HourStats) -> dict[str, Any]:
    """Partition metadata of a registered hour: numbers (plotted over partitions) + provenance."""
    meta = figures_metadata(stats.metadata())
    if not stats.records:
        meta["note"] = EMPTY_NOTE if stats.source is not None else "only an events file for this hour, no records"
    return meta


@dataclass(frozen=True)
class RegisteredHour:
    """What an asset that registers hours (`raw_hour`, the tape's `book_tape`) records of one hour: its
    figures, or the error that kept it from being read, with the verdicts of its checks."""

    read: HourRead[Any]
    verdicts: list[Verdict]
    figures: dict[str, Any]  # the figures' metadata (`{"error": …}` for an hour that could not be read)
    has_data: bool  # False: no file of the hour (the step fails, naming the paths looked for)
    schema_check: str = SCHEMA_VALID  # the check an unreadable hour fails

    @classmethod
    def of(cls, read: HourRead[T], verdicts: list[Verdict], figures: Callable[[T], dict[str, Any]],
           has_data: Callable[[T], bool], schema_check: str = SCHEMA_VALID) -> "RegisteredHour":
        """The registration of `read`: `figures(stats)`, or its error when it could not be read."""
        stats = read.stats
        if stats is None:
            return cls(read, verdicts, {"error": MetadataValue.text(read.error or "")}, True, schema_check)
        return cls(read, verdicts, figures(stats), has_data(stats), schema_check)

    @property
    def status(self) -> str:
        return "registered" if self.has_data else "no_data"

    @property
    def empty(self) -> bool:
        return False  # the figures already note an hour without records

    @property
    def warning(self) -> str | None:
        return f"cannot read the hour ({self.read.error}): registered with the error, {self.schema_check} fails" \
            if self.read.error else None

    def metadata(self) -> dict[str, Any]:
        """The hour's figures, led by a one-line verdict of its checks (the asset's partition view
        shows metadata, not check results, so the verdict is here too; the checks hold the details)."""
        failed = [v for v in self.verdicts if not v.passed]
        return {"quality": quality_summary(self.verdicts), "failed_checks": len(failed), **self.figures,
                "fingerprint": self.read.fingerprint}


def require_closed(inst_id: str, hour: datetime, now: datetime, grace: timedelta) -> None:
    """Raises HourFailed for the open hour (or one inside the grace): it is never registered."""
    if not is_closed(hour, now, grace):
        raise HourFailed(f"{inst_id} {iso(hour)} is the open hour (or inside the {grace} grace): not registered")


def registered(read: HourRead[HourStats], coverage_threshold_pct: float) -> RegisteredHour:
    """The registration of one closed hour's read. An hour that could not be read (corrupt gzip, I/O
    error) is registered with its error rather than failing the run: its `schema_valid` check says so."""
    return RegisteredHour.of(read, hour_verdicts(read.stats, read.error, coverage_threshold_pct), stats_metadata,
                             lambda stats: stats.has_data)


class HourResult(Protocol):
    """What `archive_hour` and `write_parquet` return for one hour."""

    status: str  # "no_data" when the hour has no records file; "busy" when another run holds it

    @property
    def empty(self) -> bool: ...  # the file exists but holds no record

    @property
    def warning(self) -> str | None: ...

    def metadata(self) -> dict[str, object]: ...


HourWork = Callable[[Any, str, datetime, datetime, timedelta], HourResult]


def relocated(metadata: dict[str, Any], tree: LakeTree) -> dict[str, Any]:
    """`metadata` with the paths of a step's staged files (text or path values) as the lake names them."""
    if isinstance(tree, LocalTree):
        return metadata
    out = dict(metadata)
    for name, value in metadata.items():
        if isinstance(value, PathMetadataValue) and str(value.path).startswith("/"):
            out[name] = MetadataValue.path(tree.where(Path(value.path)))
        elif isinstance(value, str) and value.startswith("/"):
            out[name] = tree.where(Path(value))
    return out


FAILED_TAG_CHARS = 240  # a tag value the Runs table can show in one cell


def materialize_hours(context: AssetExecutionContext, lake: LakeResource, work: HourWork, needs: Needs | None,
                      prefix: Path = layout.RAW_PREFIX, has_hour: HasHour | None = None
                      ) -> Iterator[Output | AssetMaterialization]:
    """Run `work` on every partition of the step (one, or a range): on the lake's tree itself
    (`needs` None: `work` takes a tree), or on a directory holding the hour's files that `needs`
    names (the lake directory, or a workspace of object storage's files: `LakeTree.hour_workspace`).
    What is recorded, and how a run with failed hours ends: `materialize_assets_hours`."""
    tree = lake.tree

    def one_asset(inst_id: str, hour: datetime) -> dict[AssetKey, HourResult | Exception]:
        if needs is None:
            return {context.asset_key: work(tree, inst_id, hour, now_utc(), lake.grace)}
        with tree.hour_workspace(inst_id, hour, needs) as root:
            return {context.asset_key: work(root, inst_id, hour, now_utc(), lake.grace)}

    yield from materialize_assets_hours(context, lake, one_asset, prefix, has_hour)


def in_lake(lake: LakeResource, relative: Path) -> str:
    """Where the lake's `relative` path is, as a message names it (a path, or the object's URL)."""
    return lake.tree.where(lake.root / relative if isinstance(lake.tree, LocalTree) else relative)


HourOutcomes = Callable[[str, datetime], Mapping[AssetKey, HourResult | Exception]]
HOUR_ERRORS = (HourFailed, ValueError, ArchiveVerificationError, OSError, StoreError)  # OpenHourError too


def _materialized(outcome: HourResult | Exception, inst_id: str, hour: datetime, lake: LakeResource,
                  prefix: Path) -> HourResult:
    """`outcome` of one asset's hour; raised as the hour's failure when it is not a materialization (an
    hour without data fails naming the files of the dataset `prefix` it can have)."""
    if isinstance(outcome, Exception):
        raise outcome
    if outcome.status == "no_data":
        raise missing_data(inst_id, [in_lake(lake, layout.records_path(Path(""), inst_id, hour, prefix)),
                                     in_lake(lake, layout.archive_path(Path(""), inst_id, hour, prefix))])
    if outcome.status == "busy":
        raise HourFailed("a live collector still holds this hour's file, or another run is processing it; "
                         "materialize it again later")
    return outcome


def materialize_assets_hours(context: AssetExecutionContext, lake: LakeResource, outcomes: HourOutcomes,
                             prefix: Path = layout.RAW_PREFIX, has_hour: HasHour | None = None
                             ) -> Iterator[Output | AssetMaterialization]:
    """Materialize every partition of the step (one, or a range) of each asset `outcomes` gives an
    outcome of, hour by hour: `outcomes(inst_id, hour)` is each asset's result, or the exception that
    stopped it (one that stops the hour's every asset is raised). A group's partition is the hour of
    each member with a file of it (`has_hour`; default: a records or archive file under `prefix` in
    the lake, `l2_pipeline.group_hours`): it is done when every member is, and
    records them all in one materialization; otherwise it fails naming each member's reason.

    An asset all done: its output, with each hour's metadata added to its partition
    (`add_asset_metadata`), so Dagster records one materialization per hour and later steps of the
    same run (the hour checks, assets downstream) run. Some failed: one materialization per hour that
    was done, then a `Failure` naming every hour that could not be done and why."""
    keys = context.partition_keys
    # a backfill's runs all inherit its tags: each run names its own range (the Runs list shows it)
    context.instance.add_run_tags(context.run.run_id,
                                  {"l2/first": keys[0], "l2/last": keys[-1], "l2/hours": str(len(keys))})
    # in the order the asset's outputs are declared: a multi-asset's outputs must be yielded upstream first
    assets = [key for key in context.assets_def.keys_by_output_name.values() if key in context.selected_asset_keys]
    failed: dict[str, dict[AssetKey, str]] = {}  # partition → asset → why it could not be done
    done: dict[AssetKey, dict[str, dict[str, Any]]] = {asset: {} for asset in assets}
    # every key is a group's or none is; a group's members are among the instruments known now
    candidates = lake.known_instruments() if is_group(parse_partition_key(keys[0])[0]) else []
    has_hour = has_hour or lake_has_hour(lake.tree, prefix)
    started = time.monotonic()
    for key in keys:
        try:
            column, hour = parse_partition_key(key)
            if is_group(column):
                members = members_with_data(column, hour, candidates, has_hour)
                if not members:
                    raise HourFailed(no_member_data(column, hour, candidates, in_lake(lake, prefix)))
            else:
                members = [column]
        except HOUR_ERRORS as exc:
            failed[key] = dict.fromkeys(assets, str(exc))
            context.log.error(f"{key}: {exc}")
            continue
        by_member = {inst_id: _instrument_hour(context, lake, outcomes, assets, inst_id, hour, prefix,
                                               key if inst_id == column else f"{key} {inst_id}")
                     for inst_id in members}
        for target in assets:
            reasons = {inst_id: why[target] for inst_id, (_, why) in by_member.items() if target in why}
            if reasons:
                failed.setdefault(key, {})[target] = reasons[column] if column in reasons else "; ".join(
                    f"{inst_id}: {why}" for inst_id, why in reasons.items())
                continue
            metadata = {inst_id: meta[target] for inst_id, (meta, _) in by_member.items() if target in meta}
            if metadata:
                done[target][key] = metadata[column] if column in metadata else group_metadata(metadata)
        if key in failed:
            context.log.error(f"{key}: {_why(failed[key])}")
    for target in assets:
        context.log.info(f"{target.to_user_string()}: {len(done[target])} of {len(keys)} hour(s) materialized "
                         f"in {time.monotonic() - started:.1f}s")
    for target in assets:
        if len(done[target]) == len(keys):
            for key, metadata in done[target].items():
                context.add_asset_metadata(metadata, asset_key=target, partition_key=key)
            yield Output(None, output_name=context.assets_def.get_output_name_for_asset_key(target))
        else:
            for key, metadata in done[target].items():
                yield AssetMaterialization(asset_key=target, partition=key, metadata=metadata)
    if failed:
        _raise_failed(context, {key: _why(reasons) for key, reasons in failed.items()}, len(keys))


def _instrument_hour(context: AssetExecutionContext, lake: LakeResource, outcomes: HourOutcomes,
                     assets: Sequence[AssetKey], inst_id: str, hour: datetime, prefix: Path, label: str
                     ) -> tuple[dict[AssetKey, dict[str, Any]], dict[AssetKey, str]]:
    """One instrument-hour's outcomes: (asset → its metadata, asset → why it could not be done); its
    warnings are logged as `label`'s."""
    try:
        results = outcomes(inst_id, hour)
    except HOUR_ERRORS as exc:
        return {}, dict.fromkeys(assets, str(exc))
    done: dict[AssetKey, dict[str, Any]] = {}
    failed: dict[AssetKey, str] = {}
    for target, outcome in results.items():
        try:
            result = _materialized(outcome, inst_id, hour, lake, prefix)
        except HOUR_ERRORS as exc:
            failed[target] = str(exc)
            continue
        if result.warning:
            context.log.warning(f"{label}: {result.warning}")
        done[target] = relocated(result.metadata(), lake.tree)
        if result.empty:
            done[target]["note"] = EMPTY_NOTE
    return done, failed


def _why(reasons: Mapping[AssetKey, str]) -> str:
    """Why an hour could not be done: the reason, once when every asset of the hour failed for it."""
    if len(set(reasons.values())) == 1:
        return next(iter(reasons.values()))
    return "; ".join(f"{target.to_user_string()}: {why}" for target, why in reasons.items())


def _raise_failed(context: AssetExecutionContext, failed: dict[str, str], hours: int) -> None:
    """End the step naming every failed hour and why (in its Failure, and the first in the run's tags)."""
    listed = list(failed)[:MAX_LISTED]
    more = f"{len(failed) - len(listed)} more" if len(failed) > len(listed) else ""
    first = listed[0]  # the reason where a failed backfill's Runs table shows it, not only in the event log
    context.instance.add_run_tags(context.run.run_id, {
        "l2/failed": f"{len(failed)} hour(s); {first}: {failed[first]}"[:FAILED_TAG_CHARS]})
    raise Failure(
        description=f"{len(failed)} of {hours} hour(s) not materialized (the other {hours - len(failed)} were):\n"
        + "\n".join(f"- {key}: {failed[key]}" for key in listed) + (f"\n… and {more}" if more else ""),
        metadata={"failed_hours": MetadataValue.json(listed), "failed": len(failed),
                  "materialized": hours - len(failed)},
    )


def png_markdown(png: bytes, alt: str) -> MetadataValue:
    """A PNG the Dagster UI shows inline: Markdown metadata with the image as a data URI."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dataclass(frozen=True)
class FeaturesHour:
    """`write_features`' result as `materialize_hours` records it: the figure shown as an image."""

    result: FeaturesResult

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def empty(self) -> bool:
        return self.result.empty

    @property
    def warning(self) -> str | None:
        return self.result.warning

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {**self.result.metadata(), "path": MetadataValue.path(str(self.result.path))}
        if self.result.figure is not None:
            meta["figure"] = png_markdown(self.result.figure, f"{self.result.inst_id} {iso(self.result.hour)}")
        return meta


def fetch_swap_instruments(rest_url: str, timeout: float) -> dict[str, dict[str, Any]]:
    """instId → instrument object of every SWAP instrument OKX lists (raises l2_lake.venues.rest.RestError)."""
    return asyncio.run(instrument_meta.fetch_swap_instruments(rest.RestClient(DEFAULT_VENUE, rest_url, timeout)))


def hour_tier_outcomes(lake: LakeResource, selected: Set[AssetKey], inst_id: str, hour: datetime
                       ) -> dict[AssetKey, HourResult | Exception]:
    """The outcome for each of `raw_hour`, `curated_parquet` and `book_features` in `selected` of one
    closed hour, all from one read of it (`l2_lake.tiers.hour_tiers`)."""
    now = now_utc()
    require_closed(inst_id, hour, now, lake.grace)
    tiers = frozenset(tier for key, tier in ((CURATED_PARQUET, CURATE), (BOOK_FEATURES, FEATURES)) if key in selected)
    built = build_hour_tiers(lake.tree, inst_id, hour, now, lake.grace, cadence_seconds=lake.cadence_seconds,
                             tiers=tiers, figure=hour_figure if lake.hour_figures else None)
    outcomes: dict[AssetKey, HourResult | Exception] = {}
    if RAW_HOUR in selected:
        outcomes[RAW_HOUR] = registered(built.read, lake.coverage_threshold_pct)
    if built.curated is not None:
        outcomes[CURATED_PARQUET] = built.curated
    if built.features is not None:
        outcomes[BOOK_FEATURES] = built.features if isinstance(built.features, Exception) \
            else FeaturesHour(built.features)
    return outcomes


def partitions_per_run(partitions: MultiPartitionsDefinition, configured: int = 0) -> int:
    """The partitions a backfill or a schedule puts in one run of the lake's assets over `partitions`:
    `configured` (`LakeResource.partitions_per_run`), or by default `HOURS_PER_RUN` instrument-hours or
    `GROUP_HOURS_PER_RUN` group-hours."""
    return configured or (GROUP_HOURS_PER_RUN if instrument_groups(partitions) else HOURS_PER_RUN)


def hours_asset(partitions: MultiPartitionsDefinition, per_run: int, key: AssetKey, kind: str, description: str,
                deps: Sequence[AssetKey] = (RAW_HOUR,), group: str = LAKE_GROUP
                ) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """Decorator of a lake asset over `partitions` whose runs take a range of up to `per_run` partitions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # backfill_policy on @asset is "beta" in Dagster 1.13
        return asset(key=key, deps=deps, partitions_def=partitions,
                     backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=per_run),
                     group_name=group, output_required=False, dagster_type=Nothing, kinds={kind},
                     description=description)


def build_lake_assets(partitions: MultiPartitionsDefinition, raw_hour_deps: Sequence[AssetKey] = (),
                      per_run: int = HOURS_PER_RUN) -> list[AssetsDefinition]:
    """`raw_hour`, `raw_archive`, `curated_parquet` and `book_features` over `partitions` (hour × instrument),
    in runs of up to `per_run` partitions; `raw_hour` depends on `raw_hour_deps` (`canonical_hour` with
    replicas, `l2_pipeline.assets.replicas`)."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # backfill_policy on @multi_asset is "beta" in Dagster 1.13

        @multi_asset(
            name="hour_tiers", partitions_def=partitions, can_subset=True, group_name=LAKE_GROUP,
            backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=per_run),
            description="An hour's registration, curated Parquet and features, built from one read of it.",
            specs=[
                AssetSpec(RAW_HOUR, deps=list(raw_hour_deps), kinds={"json"}, skippable=True, description=(
                    "One closed hour of one instrument as the collector wrote it ({HH}.jsonl or its .jsonl.gz). "
                    "raw_hours_sensor registers each closed hour with a backfill of this asset and its six quality "
                    "checks; materializing re-reads the hour and refreshes its figures.")),
                AssetSpec(CURATED_PARQUET, deps=[RAW_HOUR], kinds={"parquet"}, skippable=True, description=(
                    "The hour as analysis-ready Parquet (pyarrow, zstd): timestamps as timestamp[ms, UTC], prices as "
                    "float64 plus exact strings, levels as list<struct>; one row per source record.")),
                AssetSpec(BOOK_FEATURES, deps=[CURATED_PARQUET], kinds={"parquet"}, skippable=True, description=(
                    "Liquidity features of the hour, one row per record (features/…/data.parquet): spread in bps, "
                    "depth within 10/25/100 bps per side, imbalance at 5/25/400 levels, microprice, mid log-return; "
                    "null where the record is not the exchange's book. Metadata shows the hour's figure: mid and "
                    "spread, depth, a liquidity heatmap and the gaps, resyncs and reconnects.")),
            ],
        )
        def hour_tiers(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Output | AssetMaterialization]:
            selected = context.selected_asset_keys
            yield from materialize_assets_hours(context, lake, partial(hour_tier_outcomes, lake, selected))

    @hours_asset(
        partitions, per_run, RAW_ARCHIVE,
        "gzip", "Verified gzip of the hour ({HH}.jsonl.gz; sha256 and line count of the decompressed "
        "archive equal the original's before the .jsonl is removed). Idempotent; never the open hour."
    )
    def raw_archive(context: AssetExecutionContext, lake: LakeResource) -> Iterator[Output | AssetMaterialization]:
        yield from materialize_hours(context, lake, archive_hour, needs=(("records",), ("archive",)))

    return [hour_tiers, raw_archive]


META_ATTEMPTS = 3


def _refresh_in_lake(lake: LakeResource, wanted: list[str], listed: dict[str, dict]) -> RefreshResult:
    """Refresh the lake's metadata files; in a bucket a collector may ship its copy meanwhile, and
    then the refresh is made again over the merged files rather than overwriting them."""
    attempt = 1
    while True:
        try:
            with lake.tree.files_workspace(layout.META_PREFIX) as root:
                return refresh_instruments(root, wanted, listed, int(time.time() * 1000))
        except Changed:
            if attempt == META_ATTEMPTS:
                raise
            attempt += 1


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
    wanted = lake.known_instruments()
    result = _refresh_in_lake(lake, wanted, listed)
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

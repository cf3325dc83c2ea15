"""Redundant capture in Dagster: the `canonical_hour` asset, its `replicas_agree` check and the
`replica_hours_sensor`. Part of the code location only when replicas are configured
(`L2_REPLICA_DIRS`, `LakeResource.replica_dirs`); with one collector nothing here is loaded.

- `canonical_hour` (partitioned like `raw_hour`, built by `build_replica_definitions(partitions)`):
  `l2_lake.tiers.replicas.merge_hour` of each hour of the step, replicas → the canonical `{HH}.jsonl` and
  `{HH}.events.jsonl` of the lake, with the merge's figures as partition metadata: per replica its
  records, coverage and records only it had (`replica_<id>_records`, `replica_<id>_coverage_pct`,
  `replica_<id>_only`, and the `replicas` table), `agreed`, `disagreements` (and examples),
  `flagged_superseded`, `seq_conflicts`, and the `replica_fingerprint` of the files it read. Same run
  shape as the other hour assets (`BackfillPolicy.multi_run(partitions_per_run)`, `materialize_hours`).
  `raw_hour` depends on it (`build_lake_assets(partitions, raw_hour_deps=…)`).
- `replicas_agree` (non-blocking, partitioned): fails for an hour whose replicas hold different
  levels at the same seqId and timestamp. Evaluated in every run that materializes `canonical_hour`,
  for each hour of the step, from that hour's latest materialization (which it targets, as the hour
  checks of `l2_pipeline.checks` do, so the result is the partition's current check status).
- `replica_hours_sensor` (every 60 s): requests one asset backfill per tick of `canonical_hour` and
  `raw_hour` (and `curated_parquet`, `book_features` for hours with records, with
  `curate_on_register`) for every closed hour whose replica files' fingerprint is not the one its
  latest `canonical_hour` materialization recorded: hours that closed in any replica since the
  last tick, and hours of the last `RECHECK_HOURS` whose replica files changed (a late spool sync,
  a repaired tail). `raw_hour` is in the backfill so that a merge that changed an hour registers it
  again; `raw_hours_sensor` still discovers canonical files in the lake as before and passes over
  those the backfill registered (same fingerprint). The cursor is the last hour considered per
  instrument; resetting it rechecks every hour of the replicas.

With instrument groups, a group-hour merges each member a replica holds a file of, the sensor compares
each member's replica fingerprint (from the group-hour's `by_instrument`), and `replicas_agree` judges
each member (`group_verdicts`: it names the members whose replicas disagree).
"""

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetChecksDefinition,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    AssetSelection,
    BackfillPolicy,
    BetaWarning,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogRecord,
    MetadataValue,
    MultiPartitionsDefinition,
    Nothing,
    Output,
    PreviewWarning,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    multi_asset_check,
    sensor,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from l2_lake.format import layout
from l2_lake.format.hours import iso, now_utc
from l2_lake.quality.verdicts import Verdict, group_verdicts
from l2_lake.store.lake_walk import OnUnreadable, log_unreadable
from l2_lake.tiers.replicas import MergeReport, merge_hour, replica_fingerprint
from l2_lake.tiers.selection import LakeHour, closed_hours_after
from l2_pipeline.assets.lake import HOURS_PER_RUN, LAKE_GROUP, HourFailed, materialize_hours
from l2_pipeline.checks import verdict_evaluation
from l2_pipeline.group_hours import HasHour, is_group, recorded_members
from l2_pipeline.keys import BOOK_FEATURES, CURATED_PARQUET, RAW_HOUR
from l2_pipeline.partitions import hours_start, instrument_groups, instrument_keys, parse_partition_key, partition_key
from l2_pipeline.registry import latest_materializations, stored_fingerprints
from l2_pipeline.resources import LakeResource
from l2_pipeline.sensors import RawCursor, hours_backfill, read_cursor

CANONICAL_HOUR = AssetKey("canonical_hour")
REPLICAS_AGREE = "replicas_agree"
RECHECK_HOURS = 24  # hours behind the cursor whose replica files are compared with their last merge each tick
REPLICAS_AGREE_DESCRIPTION = (
    "Replicas hold the same levels (bids_top400, asks_top400, canonical JSON encodings compared) in every record "
    "they share (same seqId and timestamp, both exact). Fails with the number of disagreements and examples; the "
    "canonical hour keeps the first replica's record at each."
)


@dataclass(frozen=True)
class CanonicalHour:
    """A `MergeReport` as `materialize_hours` records it (the HourResult protocol)."""

    report: MergeReport

    @property
    def status(self) -> str:
        return self.report.status

    @property
    def empty(self) -> bool:
        return self.report.empty

    @property
    def warning(self) -> str | None:
        return self.report.warning

    def metadata(self) -> dict[str, Any]:
        meta = self.report.metadata()
        meta["replicas"] = MetadataValue.json(meta["replicas"])
        meta["disagreement_examples"] = MetadataValue.json(meta["disagreement_examples"])
        meta["path"] = MetadataValue.path(meta["path"])
        return meta


def merge_work(data_dir: Path, inst_id: str, hour: datetime, now: datetime, grace: timedelta, *,
               replicas: Mapping[str, Path], cadence_seconds: float) -> CanonicalHour:
    """`merge_hour` of one partition; an hour no replica has a file of fails, naming where it looked."""
    report = merge_hour(replicas, data_dir, inst_id, hour, now=now, grace=grace, cadence_seconds=cadence_seconds)
    if report.status == "no_data":
        looked = [str(path(d, inst_id, hour)) for d in replicas.values()
                  for path in (layout.records_path, layout.archive_path, layout.events_path)]
        raise HourFailed(f"no data: no replica has a file of this hour (looked for {', '.join(looked)}). Leave the "
                         f"hour out of the backfill, or put the replica's files back and materialize it again.")
    return CanonicalHour(report)


def replica_has_hour(replicas: Mapping[str, Path]) -> HasHour:
    """Whether any replica holds a records or archive file of an instrument-hour (a group-hour's members)."""
    return lambda inst_id, hour: any(layout.records_path(d, inst_id, hour).exists()
                                     or layout.archive_path(d, inst_id, hour).exists() for d in replicas.values())


def latest_canonical(instance: DagsterInstance, partition_keys: Sequence[str]) -> dict[str, EventLogRecord]:
    """partition → the record of its latest `canonical_hour` materialization (those that have one)."""
    return latest_materializations(instance, partition_keys, CANONICAL_HOUR)


def agreement_verdict(metadata: Mapping[str, Any]) -> Verdict:
    """`replicas_agree` of one instrument-hour, from its `canonical_hour` metadata (plain values)."""
    disagreements = int(metadata.get("disagreements") or 0)
    agreed = int(metadata.get("agreed") or 0)
    examples = metadata.get("disagreement_examples") or []
    if disagreements:
        description = (f"{disagreements} record(s) at the same seqId and timestamp differ between replicas (the first "
                       f"replica's kept); {agreed} agreed. E.g. {examples[0] if examples else '?'}")
    else:
        description = f"replicas agree: {agreed} record(s) held by two or more replicas, identical levels"
    return Verdict(REPLICAS_AGREE, not disagreements, False, description,
                   {"disagreements": disagreements, "agreed": agreed, "examples": examples})


def agreement_evaluation(key: str, record: EventLogRecord) -> AssetCheckEvaluation:
    """`replicas_agree` of one partition, from its latest `canonical_hour` materialization `record`: of
    its instrument-hour, or of each member of its group (`group_verdicts`)."""
    materialization = record.asset_materialization
    column, _ = parse_partition_key(key)
    members = recorded_members(materialization.metadata if materialization else {}, column)
    by_member = {inst_id: [agreement_verdict(member)] for inst_id, member in members.items()}
    (verdict,) = group_verdicts(by_member) if is_group(column) else by_member[column]
    target = AssetCheckEvaluationTargetMaterializationData(storage_id=record.storage_id, run_id=record.run_id,
                                                           timestamp=record.timestamp)
    return verdict_evaluation(verdict, key, target, CANONICAL_HOUR)


@dataclass
class MergePlan:
    """What one evaluation of `replica_hours_sensor` decided (pure data, tested without the daemon)."""

    canonical: dict[str, None] = field(default_factory=dict)  # partitions to merge (and register again)
    curated: dict[str, None] = field(default_factory=dict)  # of those, the ones a replica has records of
    merged: int = 0  # instrument-hours to merge (a group's partition holds several)
    unchanged: int = 0  # hours whose replica files kept the fingerprint of their last merge
    skipped_before_start: int = 0
    considered: int = 0
    candidates: int = 0
    cursor: RawCursor = field(default_factory=RawCursor)


def plan_merges(lake: LakeResource, partitions: MultiPartitionsDefinition, cursor: RawCursor, now: datetime,
                stored_lookup: Callable[[list[str]], Mapping[str, Mapping[str, str]]], on_unreadable: OnUnreadable
                ) -> MergePlan:
    """The closed replica hours to merge now: those after the cursor (less `RECHECK_HOURS`) whose
    replica fingerprint differs from the stored one, oldest first, at most `sensor_max_hours_per_tick`
    (a group's hour is merged again, all its members, when one member's changed)."""
    first_hour = hours_start(partitions)
    groups = instrument_groups(partitions)
    replicas = lake.replicas
    has_hour = replica_has_hour(replicas)
    items: set[LakeHour] = set()
    for inst_id in lake.known_instruments() if groups else instrument_keys(partitions):
        last = cursor.last.get(inst_id)
        after = None if last is None else last - timedelta(hours=RECHECK_HOURS)
        for directory in replicas.values():
            items.update(LakeHour(hour, inst_id)
                         for hour in closed_hours_after(directory, inst_id, after, now, lake.grace, on_unreadable))
    pending = sorted(items)
    keys = {item: str(partition_key(item.inst_id, item.hour, groups)) for item in pending if item.hour >= first_hour}
    stored = stored_lookup(list(dict.fromkeys(keys.values())))
    plan = MergePlan(candidates=len(pending), cursor=RawCursor(dict(cursor.last)))
    started = time.monotonic()
    for item in pending:
        if plan.merged >= lake.sensor_max_hours_per_tick or \
                time.monotonic() - started > lake.sensor_tick_budget_seconds:
            break
        if item.hour < first_hour:
            plan.skipped_before_start += 1
        elif stored.get(keys[item], {}).get(item.inst_id) == replica_fingerprint(replicas, item.inst_id, item.hour):
            plan.unchanged += 1
        else:
            plan.merged += 1
            plan.canonical[keys[item]] = None
            if has_hour(item.inst_id, item.hour) and lake.curate_on_register:
                plan.curated[keys[item]] = None
        previous = plan.cursor.last.get(item.inst_id)
        plan.cursor.last[item.inst_id] = item.hour if previous is None else max(previous, item.hour)
        plan.considered += 1
    return plan


def merge_request(partitions: MultiPartitionsDefinition, plan: MergePlan) -> RunRequest:
    """One asset backfill of `canonical_hour`, `raw_hour` and the Parquet tiers over the hours of `plan`."""
    canonical, curated = list(plan.canonical), list(plan.curated)
    return hours_backfill(partitions, {CANONICAL_HOUR: canonical, RAW_HOUR: canonical,
                                       CURATED_PARQUET: curated, BOOK_FEATURES: curated}, canonical)


@dataclass(frozen=True)
class ReplicaDefinitions:
    """What redundant capture adds to the code location (all empty without replicas)."""

    assets: list[AssetsDefinition] = field(default_factory=list)
    checks: list[AssetChecksDefinition] = field(default_factory=list)
    sensors: list[SensorDefinition] = field(default_factory=list)
    raw_hour_deps: list[AssetKey] = field(default_factory=list)


def build_replica_definitions(partitions: MultiPartitionsDefinition, per_run: int = HOURS_PER_RUN
                              ) -> ReplicaDefinitions:
    """`canonical_hour`, `replicas_agree` and `replica_hours_sensor` over `partitions` (hour × instrument)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # backfill_policy on @asset is "beta" in Dagster 1.13

        @asset(key=CANONICAL_HOUR, partitions_def=partitions, group_name=LAKE_GROUP, kinds={"json"},
               backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=per_run),
               output_required=False, dagster_type=Nothing,
               description="The hour merged from every replica's spool (L2_REPLICA_DIRS) into the lake's {HH}.jsonl "
               "and {HH}.events.jsonl: one record per timestamp, exact records preferred, events tagged with their "
               "replica. Metadata: coverage per replica, records only one replica had, agreed records, disagreements.")
        def canonical_hour(context: AssetExecutionContext, lake: LakeResource
                           ) -> Iterator[Output | AssetMaterialization]:
            yield from materialize_hours(context, lake, partial(merge_work, replicas=lake.replicas,
                                                                cadence_seconds=lake.cadence_seconds),
                                         needs=(),  # a local lake only (no L2_LAKE_URL with replicas)
                                         has_hour=replica_has_hour(lake.replicas))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)  # partitions_def on AssetCheckSpec is "preview" in 1.13
        spec = AssetCheckSpec(REPLICAS_AGREE, asset=CANONICAL_HOUR, description=REPLICAS_AGREE_DESCRIPTION,
                              partitions_def=partitions, blocking=False)

    @multi_asset_check(specs=[spec], name="replicas_agree_check", can_subset=True)  # it yields evaluations, no output
    def replicas_agree(context: AssetCheckExecutionContext) -> Iterator[AssetCheckEvaluation]:
        """Disagreements of each hour of the step, from its latest canonical_hour materialization."""
        keys = list(context.op_execution_context.partition_keys)
        records = latest_canonical(context.instance, keys)
        for key in keys:
            if key in records:
                yield agreement_evaluation(key, records[key])
            else:
                context.log.warning(f"{key}: no canonical_hour materialization to check")
        context.log.info(f"evaluated {REPLICAS_AGREE} on {len(records)} of {len(keys)} hour(s)")

    @sensor(
        name="replica_hours_sensor",
        asset_selection=AssetSelection.assets(CANONICAL_HOUR, RAW_HOUR, CURATED_PARQUET, BOOK_FEATURES),
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Merges replica hours: one backfill per tick of canonical_hour (with replicas_agree), raw_hour, "
        "curated_parquet and book_features over the closed hours whose replica files are new or changed.",
    )
    def replica_hours_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
        cursor = read_cursor(context, RawCursor.parse, RawCursor())
        plan = plan_merges(lake, partitions, cursor, now_utc(),
                           lambda keys: stored_fingerprints(context.instance, keys, CANONICAL_HOUR,
                                                            "replica_fingerprint"),
                           log_unreadable(context.log))
        text = (f"merging {plan.merged} hour(s) in {len(plan.canonical)} partition(s) ({len(plan.curated)} to "
                f"curate); {plan.unchanged} unchanged; "
                f"{plan.candidates - plan.considered} still pending; {plan.skipped_before_start} before the first "
                f"hour partition")
        if plan.canonical:
            context.log.info(text)
        return SensorResult(
            run_requests=[merge_request(partitions, plan)] if plan.canonical else [],
            cursor=plan.cursor.dump(),
            skip_reason=None if plan.canonical else SkipReason(f"nothing to merge at {iso(now_utc())}: {text}"),
        )

    return ReplicaDefinitions(assets=[canonical_hour], checks=[replicas_agree], sensors=[replica_hours_sensor],
                              raw_hour_deps=[CANONICAL_HOUR])


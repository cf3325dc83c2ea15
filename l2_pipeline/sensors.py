"""Sensors over the lake.

`raw_hours_sensor` registers every closed instrument-hour: one `AssetMaterialization` of
`raw_hour` (partition metadata: records, coverage_pct, gaps, sha256, …) plus the six
quality-check evaluations, all without a run; it adds new instruments to the dynamic partition
dimension and (`curate_on_register`) requests an asset backfill of `curated_parquet` over the
registered hours that have records (`RunRequest.for_asset_graph_subset`: the backfill daemon makes
runs of up to `HOURS_PER_RUN` partitions, the asset's backfill policy). Its cursor
is the last registered hour per instrument, so a tick lists only day directories at or after
that hour and reads only new hours: cheap on a lake of weeks. A tick stops after
`sensor_max_hours_per_tick` hours or `sensor_tick_budget_seconds`; the next tick continues
(catch-up over several ticks).

Re-registration (after a cursor reset, or a cursor that cannot be parsed, which is logged and
taken as empty): Dagster stores a runless check evaluation only once per partition (see
`l2_pipeline.registry`), so before reading a batch the sensor asks the instance which of its
partitions already have check executions. Such an hour gets no runless event again:
- its content is unchanged (the sha256 of its records equals the `sha256` of its latest
  `raw_hour` materialization) and each of the six checks has an execution → nothing is emitted;
- otherwise (a torn tail was repaired, a file was planted late, a check is missing) → one run of
  `raw_hour` and its six hour checks (the selection of `raw_hour_job`) for that partition is
  requested, with run key partition + new sha256 (so once per content); that run's check
  evaluations belong to it and record the current figures.

Hours before `partitions_start` are not partitions: they are passed over without being read.

Error isolation: an hour that raises while being read (corrupt gzip, I/O or permission error) is
logged with its traceback and, if not registered yet, registered with what is known: a
materialization whose `error` metadata names the problem and a failed `schema_valid` evaluation
(the other checks are not evaluated). An hour registered before keeps its figures. The cursor
moves past it either way. A directory that cannot be listed is skipped with a warning (the cursor
may move past its hours: once it is readable, reset the cursor to register them).

`collector_freshness_sensor` re-evaluates `collector_freshness` every minute and emits it when the
verdict changes or at least every 10 minutes; an unparseable cursor is logged and taken as empty.
"""

import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import orjson
from dagster import (
    AssetMaterialization,
    AssetSelection,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from collector.lake_walk import OnUnreadable, log_unreadable
from collector.layout import validate_inst_id
from l2_pipeline.assets import stats_metadata
from l2_pipeline.checks import HOUR_CHECK_KEYS, verdict_evaluation
from l2_pipeline.hour_stats import compute_hour_stats
from l2_pipeline.hours import iso, now_utc, parse_utc
from l2_pipeline.keys import CURATED_PARQUET, RAW_HOUR
from l2_pipeline.partitions import INSTRUMENT_DIM, instrument_partitions, lake_partitions, partition_key
from l2_pipeline.quality import collector_freshness, evaluate_hour, unreadable_hour_verdict
from l2_pipeline.registry import PriorRegistration, prior_registrations
from l2_pipeline.resources import LakeResource
from l2_pipeline.selection import LakeHour, pending_registrations

FRESHNESS_REEMIT_SECONDS = 600

Cursor = TypeVar("Cursor")
PriorLookup = Callable[[list[str]], Mapping[str, PriorRegistration]]


@dataclass
class RawCursor:
    """Last registered hour per instrument (JSON: {"v": 1, "last": {instId: ISO hour}})."""

    last: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "RawCursor":
        """The cursor `text` encodes (empty for None or ""); ValueError for anything else."""
        if not text:
            return cls()
        obj = orjson.loads(text)
        if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("last"), dict):
            raise ValueError('expected {"v": 1, "last": {instId: ISO hour}}')
        if not all(isinstance(ts, str) for ts in obj["last"].values()):
            raise ValueError("every hour must be an ISO string")
        return cls({validate_inst_id(inst): parse_utc(ts) for inst, ts in obj["last"].items()})

    def dump(self) -> str:
        return orjson.dumps({"v": 1, "last": {i: iso(h) for i, h in sorted(self.last.items())}}).decode()


@dataclass(frozen=True)
class FreshnessCursor:
    """The last emitted freshness verdict (JSON: {"passed": bool, "at": epoch seconds})."""

    passed: bool | None = None
    at: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> "FreshnessCursor":
        """The cursor `text` encodes (empty for None or ""); ValueError for anything else."""
        if not text:
            return cls()
        obj = orjson.loads(text)
        valid = isinstance(obj, dict) and isinstance(obj.get("passed"), bool) and isinstance(obj.get("at"), int | float)
        if not valid:
            raise ValueError('expected {"passed": bool, "at": epoch seconds}')
        return cls(obj["passed"], float(obj["at"]))

    def dump(self) -> str:
        return orjson.dumps({"passed": self.passed, "at": self.at}).decode()


def read_cursor(context: SensorEvaluationContext, parse: Callable[[str | None], Cursor], empty: Cursor) -> Cursor:
    """The sensor's cursor; one that cannot be parsed (hand-edited, older format) is logged and
    replaced by `empty` instead of failing every tick."""
    try:
        return parse(context.cursor)
    except ValueError as exc:
        context.log.warning(f"cannot parse cursor {context.cursor!r} ({exc}): starting from an empty cursor")
        return empty


@dataclass(frozen=True)
class UnreadableHour:
    """An hour whose files raised while being read."""

    partition_key: str
    traceback: str
    registered_now: bool  # False: registered before, its stored figures are kept


@dataclass
class Registration:
    """What one evaluation of the raw-hours sensor decided (pure data, tested without Dagster)."""

    events: list = field(default_factory=list)
    partition_keys: list[str] = field(default_factory=list)  # newly registered (and readable) hours
    curate: list[str] = field(default_factory=list)  # those of them with records (a .jsonl or .jsonl.gz)
    rerun: dict[str, str] = field(default_factory=dict)  # registered hour whose figures are outdated → its sha256
    unchanged: int = 0  # registered hours whose stored figures are those of their current content
    unreadable: list[UnreadableHour] = field(default_factory=list)
    skipped_before_start: int = 0
    processed: int = 0
    pending: int = 0
    cursor: RawCursor = field(default_factory=RawCursor)


def registration_batch(pending: list[LakeHour], max_hours: int, first_hour: datetime) -> list[LakeHour]:
    """The head of `pending` holding at most `max_hours` registrable hours (the ones before the
    partitions start, `first_hour`, are passed over without reading)."""
    batch: list[LakeHour] = []
    registrable = 0
    for item in pending:
        if registrable >= max_hours:
            break
        batch.append(item)
        registrable += item.hour >= first_hour
    return batch


def partition_of(item: LakeHour) -> str:
    return str(partition_key(item.inst_id, item.hour))


def unreadable_hour_events(key: str, error: str) -> list:
    """Registration of an hour that could not be read: the error as metadata, a failed schema_valid."""
    return [
        AssetMaterialization(asset_key=RAW_HOUR, partition=key, metadata={"error": MetadataValue.text(error)}),
        verdict_evaluation(unreadable_hour_verdict(error), key),
    ]


def register_hour(lake: LakeResource, item: LakeHour, prior: PriorRegistration | None, out: Registration) -> None:
    """Read one hour and add to `out` what it needs: a registration, a re-run, or nothing."""
    key = partition_of(item)
    try:
        stats = compute_hour_stats(lake.root, item.inst_id, item.hour, lake.cadence_seconds)
    except Exception as exc:  # any failure of one hour must not fail the tick and block every later hour
        error = f"{type(exc).__name__}: {exc}"
        out.unreadable.append(UnreadableHour(key, "".join(traceback.format_exception(exc)), prior is None))
        if prior is None:
            out.events.extend(unreadable_hour_events(key, error))
        return
    if prior is None:
        out.events.append(AssetMaterialization(asset_key=RAW_HOUR, partition=key, metadata=stats_metadata(stats)))
        out.events.extend(verdict_evaluation(v, key) for v in evaluate_hour(stats, lake.coverage_threshold_pct))
        out.partition_keys.append(key)
        if stats.source is not None:
            out.curate.append(key)
    elif prior.covers(stats.scan.sha256):
        out.unchanged += 1
    else:
        out.rerun[key] = stats.scan.sha256


def register_closed_hours(
    lake: LakeResource, cursor: RawCursor, now: datetime, prior_lookup: PriorLookup, on_unreadable: OnUnreadable
) -> Registration:
    """Stats + check verdicts of every closed hour after the cursor (within the tick budget);
    hours `prior_lookup` knows as registered are compared with what is stored instead."""
    first_hour = lake.first_hour
    pending = pending_registrations(lake.root, lake.known_instruments(), cursor.last, now, lake.grace, on_unreadable)
    batch = registration_batch(pending, lake.sensor_max_hours_per_tick, first_hour)
    prior = prior_lookup([partition_of(item) for item in batch if item.hour >= first_hour])
    out = Registration(pending=len(pending), cursor=RawCursor(dict(cursor.last)))
    started = time.monotonic()
    for item in batch:
        if time.monotonic() - started > lake.sensor_tick_budget_seconds:
            break
        if item.hour >= first_hour:
            register_hour(lake, item, prior.get(partition_of(item)), out)
        else:
            out.skipped_before_start += 1
        out.cursor.last[item.inst_id] = item.hour
        out.processed += 1
    return out


def curation_request(lake: LakeResource, partition_keys: list[str]) -> RunRequest:
    """An asset backfill of `curated_parquet` over `partition_keys` (oldest first). The backfill
    daemon turns it into runs with the asset's backfill policy, so a catch-up of N hours is a few
    runs. (The subset type is not public in Dagster 1.13; `RunRequest.for_asset_graph_subset` is
    how a sensor requests a backfill, see dagster/_daemon/sensor.py `_submit_backfill_request`.)"""
    subset = lake_partitions(lake.first_hour).subset_with_partition_keys(partition_keys)
    return RunRequest.for_asset_graph_subset(
        AssetGraphSubset(partitions_subsets_by_asset_key={CURATED_PARQUET: subset}),
        tags={"l2/hours": str(len(partition_keys)), "l2/first": partition_keys[0], "l2/last": partition_keys[-1]},
    )


def rerun_request(key: str, sha256: str) -> RunRequest:
    """A run of `raw_hour` and its six hour checks for one registered hour whose stored figures are
    outdated (content changed or a check missing); the run key holds the content's sha256, so each
    content is requested once."""
    return RunRequest(
        run_key=f"raw_hour-{key}-{sha256}",
        asset_selection=[RAW_HOUR],
        asset_check_keys=HOUR_CHECK_KEYS,
        partition_key=key,
        tags={"l2/reason": "re-registration: content changed or a check missing", "l2/sha256": sha256},
    )


def log_unreadable_hours(context: SensorEvaluationContext, hours: list[UnreadableHour]) -> None:
    for hour in hours:
        outcome = "registered with the error" if hour.registered_now else "registered before, its figures are kept"
        context.log.error(f"{hour.partition_key}: cannot read the hour ({outcome}):\n{hour.traceback}")


def summary(reg: Registration, new_instruments: list[str]) -> str:
    errors = sum(h.registered_now for h in reg.unreadable)
    return (
        f"registered {len(reg.partition_keys)} new hour(s) and {errors} unreadable one(s); already registered: "
        f"{reg.unchanged} unchanged, {len(reg.rerun)} outdated (a raw_hour run requested), "
        f"{len(reg.unreadable) - errors} unreadable; {reg.pending - reg.processed} still pending, "
        f"{reg.skipped_before_start} before the partitions start, new instruments: {new_instruments or 'none'}"
    )


@sensor(
    name="raw_hours_sensor",
    # an asset selection, not jobs: only such a sensor may request a backfill (SensorDefinition.
    # validate_backfill_requests); a raw_hour re-run goes to Dagster's implicit asset job
    asset_selection=AssetSelection.assets(RAW_HOUR, CURATED_PARQUET),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers closed hour files as raw_hour partitions (metadata + quality checks), adds new "
    "instruments to the partition set, and requests a curated_parquet backfill of the new hours (a raw_hour "
    "run for a registered hour whose content changed).",
)
def raw_hours_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    cursor = read_cursor(context, RawCursor.parse, RawCursor())
    known = set(context.instance.get_dynamic_partitions(INSTRUMENT_DIM))
    new_instruments = sorted(set(lake.known_instruments()) - known)
    reg = register_closed_hours(lake, cursor, now_utc(), lambda keys: prior_registrations(context.instance, keys),
                                log_unreadable(context.log))
    log_unreadable_hours(context, reg.unreadable)
    run_requests = [curation_request(lake, reg.curate)] if lake.curate_on_register and reg.curate else []
    run_requests += [rerun_request(key, sha) for key, sha in reg.rerun.items()]
    context.log.info(summary(reg, new_instruments))
    return SensorResult(
        run_requests=run_requests,
        asset_events=reg.events,
        dynamic_partitions_requests=[instrument_partitions.build_add_request(new_instruments)]
        if new_instruments else None,
        cursor=reg.cursor.dump(),
        skip_reason=None if (reg.events or run_requests or new_instruments) else SkipReason("no newly closed hour"),
    )


@sensor(
    name="collector_freshness_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates the collector_freshness check (is the open hour's file being written?) every minute.",
)
def collector_freshness_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    now = now_utc()
    verdict = collector_freshness(lake.root, lake.instruments, now, lake.freshness).verdict()
    previous = read_cursor(context, FreshnessCursor.parse, FreshnessCursor())
    due = previous.passed != verdict.passed or now.timestamp() - previous.at >= FRESHNESS_REEMIT_SECONDS
    if not due:
        return SensorResult(skip_reason=SkipReason(f"unchanged: {verdict.description}"), cursor=context.cursor)
    return SensorResult(
        asset_events=[verdict_evaluation(verdict, None)],
        cursor=FreshnessCursor(verdict.passed, now.timestamp()).dump(),
    )

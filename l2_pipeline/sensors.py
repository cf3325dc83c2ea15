"""Sensors over the lake.

`raw_hours_sensor` registers every closed instrument-hour once: one `AssetMaterialization` of
`raw_hour` (partition metadata: records, coverage_pct, gaps, …) plus the six quality-check
evaluations, all without a run; it adds new instruments to the dynamic partition dimension and
(optionally) launches one `curate_job` run for the hours it registered. Its cursor is the last
registered hour per instrument, so a tick lists only day directories at or after that hour and
reads only new hours: cheap on a lake of weeks. A tick stops after `sensor_max_hours_per_tick`
hours or `sensor_tick_budget_seconds`; the next tick continues (catch-up over several ticks).

`collector_freshness_sensor` re-evaluates `collector_freshness` every minute and emits it when the
verdict changes or at least every 10 minutes.
"""

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from dagster import (
    AssetMaterialization,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from l2_pipeline.assets import stats_metadata
from l2_pipeline.checks import verdict_evaluation
from l2_pipeline.hour_stats import compute_hour_stats
from l2_pipeline.hours import iso, now_utc, parse_utc
from l2_pipeline.jobs import curate_job
from l2_pipeline.keys import INSTRUMENT_PARTITIONS_NAME, RAW_HOUR
from l2_pipeline.partitions import instrument_partitions, is_registrable, partition_key
from l2_pipeline.quality import collector_freshness, evaluate_hour
from l2_pipeline.resources import LakeResource
from l2_pipeline.selection import lake_instruments, pending_registrations

FRESHNESS_REEMIT_SECONDS = 600


@dataclass
class RawCursor:
    """Last registered hour per instrument (JSON: {"v": 1, "last": {instId: ISO hour}})."""

    last: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "RawCursor":
        if not text:
            return cls()
        obj = orjson.loads(text)
        return cls({inst: parse_utc(ts) for inst, ts in obj.get("last", {}).items()})

    def dump(self) -> str:
        return orjson.dumps({"v": 1, "last": {i: iso(h) for i, h in sorted(self.last.items())}}).decode()


@dataclass
class Registration:
    """What one evaluation of the raw-hours sensor decided (pure data, tested without Dagster)."""

    events: list = field(default_factory=list)
    partition_keys: list[str] = field(default_factory=list)
    skipped_before_start: int = 0
    pending: int = 0
    cursor: RawCursor = field(default_factory=RawCursor)


def register_closed_hours(lake: LakeResource, cursor: RawCursor, now: datetime) -> Registration:
    """Stats + check verdicts of every closed, unregistered hour (within the tick budget)."""
    instruments = sorted(set(lake.validated_instruments()) | set(lake_instruments(lake.root)))
    pending = pending_registrations(lake.root, instruments, cursor.last, now, lake.grace)
    out = Registration(pending=len(pending), cursor=RawCursor(dict(cursor.last)))
    started = time.monotonic()
    for item in pending:
        if len(out.partition_keys) >= lake.sensor_max_hours_per_tick:
            break
        if time.monotonic() - started > lake.sensor_tick_budget_seconds:
            break
        if not is_registrable(item.hour):
            out.skipped_before_start += 1
            out.cursor.last[item.inst_id] = item.hour
            continue
        stats = compute_hour_stats(lake.root, item.inst_id, item.hour, lake.cadence_seconds)
        key = str(partition_key(item.inst_id, item.hour))
        out.events.append(AssetMaterialization(asset_key=RAW_HOUR, partition=key, metadata=stats_metadata(stats)))
        out.events.extend(verdict_evaluation(v, key) for v in evaluate_hour(stats, lake.coverage_threshold_pct))
        out.partition_keys.append(key)
        out.cursor.last[item.inst_id] = item.hour
    return out


def curate_run_request(partition_keys: list[str]) -> RunRequest:
    digest = hashlib.sha1("\n".join(partition_keys).encode()).hexdigest()[:16]
    return RunRequest(
        run_key=f"curate-{digest}",
        run_config={"ops": {"curate_hours": {"config": {"partition_keys": partition_keys}}}},
        tags={"l2/hours": str(len(partition_keys)), "l2/first": partition_keys[0], "l2/last": partition_keys[-1]},
    )


@sensor(
    name="raw_hours_sensor",
    job=curate_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers closed hour files as raw_hour partitions (metadata + quality checks), adds new "
    "instruments to the partition set, and launches curate_job for the new hours.",
)
def raw_hours_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    cursor = RawCursor.parse(context.cursor)
    known = set(context.instance.get_dynamic_partitions(INSTRUMENT_PARTITIONS_NAME))
    wanted = set(lake.validated_instruments()) | set(lake_instruments(lake.root))
    new_instruments = sorted(wanted - known)
    reg = register_closed_hours(lake, cursor, now_utc())
    run_requests = [curate_run_request(reg.partition_keys)] if lake.curate_on_register and reg.partition_keys else []
    left = reg.pending - len(reg.partition_keys) - reg.skipped_before_start
    context.log.info(
        f"registered {len(reg.partition_keys)} hour(s), {left} still pending, "
        f"{reg.skipped_before_start} before the partitions start, new instruments: {new_instruments or 'none'}"
    )
    return SensorResult(
        run_requests=run_requests,
        asset_events=reg.events,
        dynamic_partitions_requests=[instrument_partitions.build_add_request(new_instruments)]
        if new_instruments else None,
        cursor=reg.cursor.dump(),
        skip_reason=None if (reg.partition_keys or new_instruments) else SkipReason("no newly closed hour"),
    )


@sensor(
    name="collector_freshness_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates the collector_freshness check (is the open hour's file being written?) every minute.",
)
def collector_freshness_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    now = now_utc()
    verdict = collector_freshness(lake.root, lake.validated_instruments(), now, lake.freshness).verdict()
    previous = orjson.loads(context.cursor) if context.cursor else {}
    age = now.timestamp() - previous.get("at", 0)
    due = previous.get("passed") != verdict.passed or age >= FRESHNESS_REEMIT_SECONDS
    if not due:
        return SensorResult(skip_reason=SkipReason(f"unchanged: {verdict.description}"), cursor=context.cursor)
    return SensorResult(
        asset_events=[verdict_evaluation(verdict, None)],
        cursor=orjson.dumps({"passed": verdict.passed, "at": now.timestamp()}).decode(),
    )

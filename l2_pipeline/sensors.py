"""Sensors over the lake.

`raw_hours_sensor` registers every closed instrument-hour by requesting one asset backfill per
tick (`RunRequest.for_asset_graph_subset`) over the hours that closed since its cursor:
- `raw_hour` for each of them: its runs read the hour, record its figures as partition metadata and
  evaluate the six hour checks, each evaluation targeting that materialization (so check results
  are partition health in the UI, see `l2_pipeline.checks`);
- `raw_archive` for those already archived (a `.jsonl.gz` and no `.jsonl`): recorded as archived;
- `curated_parquet` and `book_features` for those with records (`curate_on_register`);
- when the lake holds a tape (`l2_pipeline.assets.tape`), the closed hours of the tape the same
  way: `book_tape` (its runs evaluate the three tape checks), `book_tape_archive` for those already
  archived. Its own cursor (`RawCursor.tape`) and its own fingerprints (stored with `book_tape`).
  A lake without a tape is registered exactly as before. A tape that appears after the code
  location loaded is registered after a reload (the tick says so).
With instrument groups (`L2_INSTRUMENT_GROUPS`, `l2_pipeline.partitions`) the cursor, the fingerprints
and the budget stay per instrument-hour; each is requested as its group's hour, once however many of its
members led to it, and the instruments are those known now (a new one joins its group without a reload).
The backfill daemon makes runs of up to `HOURS_PER_RUN` partitions (the assets' backfill policy),
so a catch-up of thousands of hours is tens of runs. The tick itself reads no file: it lists the
day directories at or after its cursor (the last registered hour per instrument) and stats the
hours it registers, so it stays far inside the sensor timeout on a lake of weeks. A tick stops
after `sensor_max_hours_per_tick` hours or `sensor_tick_budget_seconds`; the next tick continues.

Re-registration (after a cursor reset, or a cursor that cannot be parsed, which is logged and
taken as empty): an hour whose latest `raw_hour` materialization recorded the fingerprint its files
have now (`stats_cache.fingerprint`: name, size and mtime of each file; archiving the hour since is
no change, `stats_cache.unchanged`) is unchanged and passed over; any other (a torn tail was
repaired, a file was planted late, never registered) is registered again with the same backfill,
Parquet included.

Hours before the first hour partition are passed over without being read. Hours of an instrument
that appeared after the code location loaded are not partitions yet: the tick says so (reload the
code location) and leaves that instrument's cursor where it is, so they are registered after the
reload. A directory that cannot be listed is skipped with a warning (the cursor may move past its
hours: once it is readable, reset the cursor to register them).

`collector_freshness_sensor` re-evaluates `collector_freshness` every minute and records it when
the verdict changes or at least every 10 minutes; on the ticks in between it records nothing and
says why ("unchanged: …"). Dagster lists every tick without a run as skipped, so a tick that
recorded a verdict says so ("recorded collector_freshness (…)"). An unparseable cursor is logged
and taken as empty.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import orjson
from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    MultiPartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from l2_lake.format import layout
from l2_lake.format.hours import iso, now_utc, parse_utc
from l2_lake.format.layout import validate_inst_id
from l2_lake.quality.stats_cache import fingerprint, unchanged
from l2_lake.quality.verdicts import collector_freshness
from l2_lake.store.lake_walk import OnUnreadable, log_unreadable
from l2_lake.tiers.selection import LakeHour, pending_registrations
from l2_pipeline.checks import verdict_evaluation
from l2_pipeline.keys import BOOK_FEATURES, BOOK_TAPE, BOOK_TAPE_ARCHIVE, CURATED_PARQUET, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import hours_start, instrument_groups, instrument_keys, parse_partition_key, partition_key
from l2_pipeline.registry import stored_fingerprints
from l2_pipeline.resources import LakeResource

FRESHNESS_REEMIT_SECONDS = 600

Cursor = TypeVar("Cursor")
# (asset that registers hours, partition keys) → partition → instId → the fingerprint stored with its latest
# materialization (`registry.stored_fingerprints`)
StoredLookup = Callable[[AssetKey, list[str]], Mapping[str, Mapping[str, str]]]


@dataclass(frozen=True)
class HourDataset:
    """A dataset of raw hour files the sensor registers: where it is in the lake, the asset that
    registers an hour, the one that records it as archived, the Parquet tiers built from it, and the
    name of its part of the cursor."""

    prefix: Path
    asset: AssetKey
    archive: AssetKey
    derived: tuple[AssetKey, ...]
    cursor_key: str


SNAPSHOTS = HourDataset(layout.RAW_PREFIX, RAW_HOUR, RAW_ARCHIVE, (CURATED_PARQUET, BOOK_FEATURES), "last")
TAPE = HourDataset(layout.TAPE_PREFIX, BOOK_TAPE, BOOK_TAPE_ARCHIVE, (), "tape")


@dataclass
class RawCursor:
    """Last registered hour per instrument, of the snapshots and of the tape (JSON: {"v": 1, "last":
    {instId: ISO hour}, "tape": {instId: ISO hour}}; "tape" only once a tape hour was registered)."""

    last: dict[str, datetime] = field(default_factory=dict)
    tape: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "RawCursor":
        """The cursor `text` encodes (empty for None or ""); ValueError for anything else."""
        if not text:
            return cls()
        obj = orjson.loads(text)
        if not isinstance(obj, dict) or obj.get("v") != 1 or not isinstance(obj.get("last"), dict) \
                or not isinstance(obj.get("tape", {}), dict):
            raise ValueError('expected {"v": 1, "last": {instId: ISO hour}, "tape": {instId: ISO hour}}')
        parts = (obj["last"], obj.get("tape", {}))
        if not all(isinstance(ts, str) for part in parts for ts in part.values()):
            raise ValueError("every hour must be an ISO string")
        last, tape = ({validate_inst_id(inst): parse_utc(ts) for inst, ts in part.items()} for part in parts)
        return cls(last, tape)

    def of(self, dataset: HourDataset) -> dict[str, datetime]:
        """The part of the cursor of `dataset`."""
        return self.tape if dataset.cursor_key == "tape" else self.last

    def copy(self) -> "RawCursor":
        return RawCursor(dict(self.last), dict(self.tape))

    def dump(self) -> str:
        obj = {"v": 1, "last": {i: iso(h) for i, h in sorted(self.last.items())}}
        if self.tape:
            obj["tape"] = {i: iso(h) for i, h in sorted(self.tape.items())}
        return orjson.dumps(obj).decode()


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


@dataclass
class Registration:
    """What one evaluation of the raw-hours sensor decided (pure data, tested without Dagster)."""

    # asset → partitions to request (in the order first added; a group's once, however many of its members
    # led to it): hours to (re-)register (`raw_hour`, `book_tape`), of those the ones already archived
    # (`raw_archive`, `book_tape_archive`) and those with records (the Parquet tiers)
    requested: dict[AssetKey, dict[str, None]] = field(default_factory=dict)
    added: int = 0  # instrument-hours to (re-)register (a group's partition holds several)
    unchanged: int = 0  # registered hours whose files kept the fingerprint stored with them
    reregistered: int = 0  # registered hours whose files changed since
    skipped_before_start: int = 0
    processed: int = 0
    pending: int = 0
    cursor: RawCursor = field(default_factory=RawCursor)

    def keys(self, asset: AssetKey) -> list[str]:
        return list(self.requested.get(asset, ()))

    def add(self, asset: AssetKey, key: str) -> None:
        self.requested.setdefault(asset, {})[key] = None

    @property
    def registered(self) -> list[str]:
        """The hours to (re-)register, of the snapshots or the tape, by hour then instrument."""
        keys = {*self.keys(RAW_HOUR), *self.keys(BOOK_TAPE)}
        return sorted(keys, key=lambda key: parse_partition_key(key)[::-1])


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


def add_hour(lake: LakeResource, dataset: HourDataset, item: LakeHour, key: str, stored: str | None,
             out: Registration) -> None:
    """Add one closed hour of `dataset` (of the partition `key`) to `out`: registered (again), or passed
    over when `stored` (the fingerprint its registration recorded) is still its files' fingerprint."""
    if stored is not None:
        if unchanged(stored, fingerprint(lake.tree, item.inst_id, item.hour, dataset.prefix)):
            out.unchanged += 1
            return
        out.reregistered += 1
    out.added += 1
    out.add(dataset.asset, key)
    kinds = lake.tree.hour_kinds(item.inst_id, item.hour, dataset.prefix)
    records, archived = "records" in kinds, "archive" in kinds
    if archived and not records:
        out.add(dataset.archive, key)
    if (records or archived) and lake.curate_on_register:
        for derived in dataset.derived:
            out.add(derived, key)


def register_closed_hours(
    lake: LakeResource,
    partitions: MultiPartitionsDefinition,
    cursor: RawCursor,
    now: datetime,
    stored_lookup: StoredLookup,
    on_unreadable: OnUnreadable,
    datasets: Sequence[HourDataset] = (SNAPSHOTS,),
) -> Registration:
    """The closed hours of `datasets` after the cursor (within the tick budget) that need registering;
    each dataset takes up to `sensor_max_hours_per_tick` hours."""
    first_hour = hours_start(partitions)
    groups = instrument_groups(partitions)
    instruments = lake.known_instruments() if groups else instrument_keys(partitions)
    out = Registration(cursor=cursor.copy())
    started = time.monotonic()
    for dataset in datasets:
        pending = pending_registrations(lake.tree, instruments, cursor.of(dataset), now, lake.grace, on_unreadable,
                                        dataset.prefix)
        batch = registration_batch(pending, lake.sensor_max_hours_per_tick, first_hour)
        keys = {item: str(partition_key(item.inst_id, item.hour, groups)) for item in batch
                if item.hour >= first_hour}
        stored = stored_lookup(dataset.asset, list(dict.fromkeys(keys.values())))
        out.pending += len(pending)
        for item in batch:
            if time.monotonic() - started > lake.sensor_tick_budget_seconds:
                break
            if item.hour >= first_hour:
                add_hour(lake, dataset, item, keys[item], stored.get(keys[item], {}).get(item.inst_id), out)
            else:
                out.skipped_before_start += 1
            out.cursor.of(dataset)[item.inst_id] = item.hour
            out.processed += 1
    return out


def registration_request(partitions: MultiPartitionsDefinition, reg: Registration) -> RunRequest:
    """One asset backfill of `raw_hour` (with its checks), `raw_archive`, `curated_parquet` and `book_features`
    (and of the tape's `book_tape`, with its checks, and `book_tape_archive`) over the hours of `reg`. The
    backfill daemon turns it into runs with the assets' backfill policy. (The subset type is not public
    in Dagster 1.13; `RunRequest.for_asset_graph_subset` is how a sensor requests a backfill, see
    dagster/_daemon/sensor.py `_submit_backfill_request`.)"""
    return hours_backfill(partitions, {asset: list(keys) for asset, keys in reg.requested.items()}, reg.registered)


def hours_backfill(partitions: MultiPartitionsDefinition, by_asset: dict[AssetKey, list[str]],
                   hours: list[str]) -> RunRequest:
    """A sensor's request for one asset backfill of `by_asset` (asset → partition keys), tagged with
    the number and range of `hours` (the keys that led to it, in order) as `l2/backfill_*`: its runs
    inherit them, and each run adds its own range as `l2/first`, `l2/last`, `l2/hours`."""
    subsets = {asset: partitions.subset_with_partition_keys(keys) for asset, keys in by_asset.items() if keys}
    return RunRequest.for_asset_graph_subset(
        AssetGraphSubset(partitions_subsets_by_asset_key=subsets),
        tags={"l2/backfill_hours": str(len(hours)), "l2/backfill_first": hours[0], "l2/backfill_last": hours[-1]},
    )


def summary(reg: Registration, unknown_instruments: list[str]) -> str:
    new = reg.added - reg.reregistered
    partitions = len(reg.keys(RAW_HOUR)) + len(reg.keys(BOOK_TAPE))
    grouped = f" in {partitions} group-hour partition(s)" if partitions != reg.added else ""
    tape = (f", {len(reg.keys(BOOK_TAPE))} of the tape ({len(reg.keys(BOOK_TAPE_ARCHIVE))} already archived)"
            if reg.keys(BOOK_TAPE) else "")
    text = (
        f"registering {new} new hour(s) and {reg.reregistered} whose files changed{grouped} "
        f"({len(reg.keys(RAW_ARCHIVE))} already archived, {len(reg.keys(CURATED_PARQUET))} to curate{tape}); "
        f"{reg.unchanged} unchanged; "
        f"{reg.pending - reg.processed} still pending; {reg.skipped_before_start} before the first hour partition"
    )
    if unknown_instruments:
        text += (f"; not partitions yet (appeared after the code location loaded; reload it to register them): "
                 f"{', '.join(unknown_instruments)}")
    return text


def build_raw_hours_sensor(partitions: MultiPartitionsDefinition, tape: bool = False) -> SensorDefinition:
    """`raw_hours_sensor` over `partitions`; with `tape` it registers the tape's hours too."""
    datasets = (SNAPSHOTS, TAPE) if tape else (SNAPSHOTS,)
    tape_assets = (BOOK_TAPE, BOOK_TAPE_ARCHIVE) if tape else ()

    @sensor(
        name="raw_hours_sensor",
        # an asset selection, not jobs: only such a sensor may request a backfill (SensorDefinition.
        # validate_backfill_requests)
        asset_selection=AssetSelection.assets(RAW_HOUR, RAW_ARCHIVE, CURATED_PARQUET, BOOK_FEATURES, *tape_assets),
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        description="Registers closed hours: one backfill per tick of raw_hour (figures + the six quality checks), "
        "raw_archive for hours already archived, curated_parquet and book_features, over the hours that closed since "
        "the last tick." + (" The tape's closed hours likewise: book_tape (figures + the three tape checks), "
                            "book_tape_archive for those already archived." if tape else ""),
    )
    def raw_hours_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
        cursor = read_cursor(context, RawCursor.parse, RawCursor())
        grouped = bool(instrument_groups(partitions))
        unknown = [] if grouped else sorted(set(lake.known_instruments()) - set(instrument_keys(partitions)))
        reg = register_closed_hours(lake, partitions, cursor, now_utc(),
                                    lambda asset, keys: stored_fingerprints(context.instance, keys, asset),
                                    log_unreadable(context.log), datasets)
        text = summary(reg, unknown)
        if not tape and lake.tree.instruments(layout.TAPE_PREFIX):
            context.log.warning("the lake holds a tape the code location has no assets for (it appeared after the "
                                "code location loaded): reload it to register the tape's hours")
        if unknown:
            context.log.warning(text)
        elif reg.registered:
            context.log.info(text)
        return SensorResult(
            run_requests=[registration_request(partitions, reg)] if reg.registered else [],
            cursor=reg.cursor.dump(),
            skip_reason=None if reg.registered else SkipReason(f"nothing to register: {text}"),
        )

    return raw_hours_sensor


@sensor(
    name="collector_freshness_sensor",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Evaluates the collector_freshness check (is the open hour's file being written?) every minute.",
)
def collector_freshness_sensor(context: SensorEvaluationContext, lake: LakeResource) -> SensorResult:
    now = now_utc()
    verdict = collector_freshness(lake.root, lake.instruments, now, lake.freshness,
                                  replicas=list(lake.replicas.values())).verdict()
    previous = read_cursor(context, FreshnessCursor.parse, FreshnessCursor())
    due = previous.passed != verdict.passed or now.timestamp() - previous.at >= FRESHNESS_REEMIT_SECONDS
    if not due:
        return SensorResult(skip_reason=SkipReason(f"unchanged: {verdict.description}"), cursor=context.cursor)
    # Dagster 1.13 marks a tick without run requests "skipped" even when it records events: say what it recorded
    return SensorResult(
        asset_events=[verdict_evaluation(verdict, None)],
        cursor=FreshnessCursor(verdict.passed, now.timestamp()).dump(),
        skip_reason=SkipReason(f"recorded collector_freshness ({'passed' if verdict.passed else 'FAILED'}): "
                               f"{verdict.description}"),
    )

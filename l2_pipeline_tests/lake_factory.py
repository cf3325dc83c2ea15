"""Plant lakes for the pipeline tests: records built with `l2_lake.format.record.build_record` and
written with `encode_line` at the paths `l2_lake.format.layout` defines, plus helpers that damage an
hour in the ways the quality checks must catch (gaps, torn/invalid lines, crossed books,
out-of-hour timestamps), and `without_fields` to plant the original record format."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from l2_lake.format import layout
from l2_lake.format.hours import parse_utc
from l2_lake.format.record import ADDED_FIELDS, build_event, build_record, encode_line

BTC = "BTC-USDT-SWAP"
ETH = "ETH-USDT-SWAP"
SOL = "SOL-USDT-SWAP"
BASE_HOUR = datetime(2026, 11, 20, 0, tzinfo=UTC)  # well in the past, inside the partitions


def hour_at(offset_hours: int, base: datetime = BASE_HOUR) -> datetime:
    return base + timedelta(hours=offset_hours)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def hours_drawn_after(health: dict, hour: datetime) -> int:
    """How many hours the lake_health heatmap's window runs past `hour`: it ends at the last hour closed
    when it was drawn, which moves on if the wall clock crossed an hour since the test planted its lake."""
    return (parse_utc(health["last_hour"].value) - hour) // timedelta(hours=1)


def levels(mid_ticks: int, depth: int, tick: Decimal = Decimal("0.1"), seed: int = 0) -> tuple[list, list]:
    """A valid book around `mid_ticks` × tick: bids descending, asks ascending, exact strings."""
    bids = [[str((mid_ticks - 1 - i) * tick), str(Decimal(1 + (i + seed) % 7) / 100), "0", str(1 + i % 4)]
            for i in range(depth)]
    asks = [[str((mid_ticks + 1 + i) * tick), str(Decimal(1 + (i + 2 * seed) % 5) / 100), "0", str(1 + i % 3)]
            for i in range(depth)]
    return bids, asks


def make_record(inst_id: str, ts_ms: int, *, seq: int, depth: int = 5, mid_ticks: int = 970_000,
                gap: bool = False, checksum_ok: bool = True, bids: list | None = None,
                asks: list | None = None) -> dict[str, Any]:
    if bids is None or asks is None:
        bids, asks = levels(mid_ticks, depth, seed=seq)
    return build_record(inst_id=inst_id, ts_ms=ts_ms, recv_ms=ts_ms + 15, bids=bids, asks=asks, checksum=0,
                        seq_id=seq, prev_seq_id=seq - 1, gap_detected=gap, checksum_ok=checksum_ok)


def make_records(inst_id: str, hour: datetime, *, count: int = 1800, cadence_ms: int = 2000,
                 depth: int = 5, first_offset_ms: int = 1000) -> list[dict[str, Any]]:
    """`count` valid records every `cadence_ms` from `hour` + `first_offset_ms`."""
    start = ms(hour) + first_offset_ms
    return [make_record(inst_id, start + i * cadence_ms, seq=1000 + i, depth=depth, mid_ticks=970_000 + (i % 50) - 25)
            for i in range(count)]


def without_fields(record: dict[str, Any], fields: Iterable[str] = ADDED_FIELDS) -> dict[str, Any]:
    """`record` without `fields`, order kept; by default the original record format (CONTRACT.md §2.1)."""
    drop = set(fields)
    return {k: v for k, v in record.items() if k not in drop}


def write_lines(path: Path, lines: Iterable[bytes], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(lines)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_hour(data_dir: Path, inst_id: str, hour: datetime, records: Sequence[dict] | None = None, *,
               lines: Sequence[bytes] | None = None, events: Sequence[dict] = (), archived: bool = False) -> Path:
    """Write one instrument-hour: records (or raw `lines`) as `.jsonl` (or only `.jsonl.gz` when
    `archived`), plus the events sidecar. Returns the records file path."""
    body = list(lines) if lines is not None else [encode_line(r) for r in (records or [])]
    target = (layout.archive_path if archived else layout.records_path)(data_dir, inst_id, hour)
    write_lines(target, body, gz=archived)
    if events:
        write_events(data_dir, inst_id, hour, events)
    return target


LIVE = "LIVE-USDT-SWAP"  # the instrument of `plant_live_hour`


def plant_live_hour(data_dir: Path, at: datetime) -> Path:
    """A collector's current hour at `at` (one record of another instrument): the lake's newest data, so
    retention run at about `at` trusts the clock (`l2_lake.tiers.selection.lake_time`: a clock far
    ahead of the newest data deletes nothing newer than that data less the retention)."""
    hour = at.replace(minute=0, second=0, microsecond=0)
    return write_hour(data_dir, LIVE, hour, make_records(LIVE, hour, count=1))


def write_events(data_dir: Path, inst_id: str, hour: datetime, events: Sequence[dict]) -> Path:
    """Write (replace) the hour's events sidecar."""
    return write_lines(layout.events_path(data_dir, inst_id, hour), [encode_line(e) for e in events])


def plant_good_hour(data_dir: Path, inst_id: str, hour: datetime, *, count: int = 1800, depth: int = 5,
                    archived: bool = False, mtime: datetime | None = None) -> list[dict]:
    records = make_records(inst_id, hour, count=count, depth=depth)
    path = write_hour(data_dir, inst_id, hour, records, archived=archived)
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return records


def append_record(data_dir: Path, inst_id: str, hour: datetime) -> None:
    """A late write: one more valid record at the end of a closed hour's file."""
    path = layout.records_path(data_dir, inst_id, hour)
    with open(path, "ab") as f:
        f.write(encode_line(make_record(inst_id, ms(hour) + 3_500_000, seq=50_000)))


def event(inst_id: str, event_type: str, at: datetime, **details: Any) -> dict[str, Any]:
    return build_event(inst_id, event_type, ms(at), **details)


# --- damage -------------------------------------------------------------------------------------


def with_gap(records: list[dict], index: int, inst_id: str, hour: datetime) -> tuple[list[dict], list[dict]]:
    """Mark record `index` as a gap marker and return the matching sidecar events."""
    rec = records[index]
    records[index] = make_record(inst_id, ms(datetime.fromisoformat(rec["timestamp_utc"].replace("Z", "+00:00"))),
                                 seq=rec["seqId"], gap=True, bids=rec["bids_top400"], asks=rec["asks_top400"])
    at = hour + timedelta(seconds=index * 2 + 1)
    events = [
        event(inst_id, "gap", at, expected=rec["seqId"] - 1, received=rec["seqId"] - 5, seqId=rec["seqId"]),
        event(inst_id, "resync_start", at, reason="gap", seqId=rec["seqId"]),
        event(inst_id, "resync_done", at + timedelta(seconds=1), how="ws_snapshot", seqId=rec["seqId"] + 1,
              reason="gap"),
    ]
    return records, events


def crossed_record(inst_id: str, ts_ms: int, seq: int) -> dict[str, Any]:
    """A record whose best bid is above its best ask (otherwise well-formed, crc correct)."""
    bids = [["97001.0", "0.5", "0", "1"], ["97000.0", "0.5", "0", "1"]]
    asks = [["96999.0", "0.5", "0", "1"], ["97002.0", "0.5", "0", "1"]]
    return make_record(inst_id, ts_ms, seq=seq, bids=bids, asks=asks)


def unsorted_record(inst_id: str, ts_ms: int, seq: int) -> dict[str, Any]:
    bids = [["96990.0", "0.5", "0", "1"], ["96995.0", "0.5", "0", "1"]]
    asks = [["97001.0", "0.5", "0", "1"], ["97002.0", "0.5", "0", "1"]]
    return make_record(inst_id, ts_ms, seq=seq, bids=bids, asks=asks)


def bad_crc(record: dict) -> dict:
    return {**record, "book_crc32": record["book_crc32"] ^ 1}


def torn(line: bytes, keep: int = 40) -> bytes:
    """A line cut mid-write: no newline, not valid JSON."""
    return line[:keep]


# --- Dagster helpers ----------------------------------------------------------------------------


NO_FIGURES = {"L2_HOUR_FIGURES": "false"}  # for code locations loaded from the environment: as `lake_resource`


def lake_resource(data_dir: Path, **overrides: Any):
    """A LakeResource over `data_dir` (instruments default to BTC and ETH). Hour figures are off
    unless asked for: rendering one costs ~0.5 s, and test_dashboards.py covers them."""
    from l2_pipeline.resources import LakeResource

    return LakeResource(data_dir=str(data_dir), **{"instruments": [BTC, ETH], "hour_figures": False, **overrides})


def lake_definitions(lake):
    """The code location (`l2_pipeline.definitions.build_definitions`) over `lake`."""
    from l2_pipeline.definitions import build_definitions

    return build_definitions(lake)


def lake_assets(lake) -> dict:
    """asset or check name → its definition in the code location over `lake` (e.g. "raw_hour",
    "raw_hour_quality")."""
    defs = lake_definitions(lake)
    out = {key.to_user_string(): defs.get_assets_def(key) for key in defs.resolve_asset_graph().get_all_asset_keys()}
    out.update({checks.node_def.name: checks for checks in defs.asset_checks or []})
    return out


def materialize_named(lake, names: Sequence[str], **kwargs):
    """`dagster.materialize` of exactly the assets named `names` of the code location over `lake`, with
    the checks named there (by `lake_assets` name): an asset of the multi-asset `hour_tiers` runs
    without the others."""
    from dagster import AssetKey, materialize

    assets = lake_assets(lake)
    chosen = list({id(assets[name]): assets[name] for name in names}.values())
    keys = [AssetKey(name) for name in names if name in assets and assets[name] in chosen
            and AssetKey(name) in getattr(assets[name], "keys", ())]
    return materialize(chosen, selection=keys, **kwargs)


def lake_schedule(lake, name: str = "compression_schedule"):
    """The schedule `name` of the code location over `lake`, loaded now (the compression schedule's
    partitions are what the lake holds now)."""
    return lake_definitions(lake).resolve_schedule_def(name)


def apply_sensor_result(instance, result) -> None:
    """Do with a SensorResult's asset events what the sensor daemon does: store them."""
    for ev in result.asset_events:
        instance.report_runless_asset_event(ev)


def raw_hours_tick(instance, lake, cursor: str | None = None):
    """One evaluation of `raw_hours_sensor` of the code location over `lake` (its SensorResult)."""
    from dagster import build_sensor_context

    sensor = lake_definitions(lake).resolve_sensor_def("raw_hours_sensor")
    return sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))


def requested(result) -> dict[str, set[str]]:
    """asset name → the partitions a raw_hours_sensor result's backfill requests ({} for none)."""
    if not result.run_requests:
        return {}
    (request,) = result.run_requests
    assert request.requires_backfill_daemon()
    subsets = request.asset_graph_subset.partitions_subsets_by_asset_key
    return {key.to_user_string(): set(subset.get_partition_keys()) for key, subset in subsets.items()}


def parquet_tiers(keys: set[str]) -> dict[str, set[str]]:
    """What registration requests of the Parquet tiers for hours with records: `curated_parquet`
    and `book_features` over the same `keys`."""
    return {"curated_parquet": keys, "book_features": keys}


def backfill_keys(request) -> set[str]:
    """The partitions of `curated_parquet` a sensor's backfill request targets."""
    from l2_pipeline.keys import CURATED_PARQUET

    return set(request.asset_graph_subset.partitions_subsets_by_asset_key[CURATED_PARQUET].get_partition_keys())


def range_keys(request, lake) -> list[str]:
    """The partitions of a ranged run request (a compression schedule's), in partition order."""
    from dagster import PartitionKeyRange
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from l2_pipeline.keys import RAW_HOUR

    key_range = PartitionKeyRange(request.tags[ASSET_PARTITION_RANGE_START_TAG],
                                  request.tags[ASSET_PARTITION_RANGE_END_TAG])
    partitions = lake_definitions(lake).resolve_asset_graph().get(RAW_HOUR).partitions_def
    return [str(k) for k in partitions.get_partition_keys_in_range(key_range)]


def execute_ranged(instance, lake, job_name: str, tags: dict, raise_on_error: bool = True, asset_selection=None):
    """Execute one run of `job_name` of the code location over `lake` with `tags` (a partition range),
    of its `asset_selection` (AssetKeys) only if given."""
    job = lake_definitions(lake).resolve_job_def(job_name)
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=raise_on_error,
                                  asset_selection=asset_selection)


JOB_OF_ASSET = {"raw_hour": "raw_hour_job", "raw_archive": "compress_job", "curated_parquet": "curate_job"}


def execute_backfill_request(instance, lake, result, raise_on_error: bool = True) -> list:
    """Execute a raw_hours_sensor result's backfill in process: the runs the backfill daemon would
    launch (`partitions.run_batches` with the assets' policy), raw_hour (and its checks) first."""
    from dagster import AssetKey
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from l2_pipeline.assets.lake import partitions_per_run
    from l2_pipeline.keys import RAW_HOUR
    from l2_pipeline.partitions import instrument_keys, run_batches

    by_asset = requested(result)
    partitions = lake_definitions(lake).resolve_asset_graph().get(RAW_HOUR).partitions_def
    order, per_run = instrument_keys(partitions), partitions_per_run(partitions, lake.partitions_per_run)
    runs = []
    for asset_name, job_name in JOB_OF_ASSET.items():
        for batch in run_batches(by_asset.get(asset_name, ()), per_run, order):
            tags = {**result.run_requests[0].tags, ASSET_PARTITION_RANGE_START_TAG: batch[0],
                    ASSET_PARTITION_RANGE_END_TAG: batch[-1]}
            # a backfill's run names its asset: with a tape, compress_job also holds book_tape_archive
            selection = [AssetKey(asset_name)] if job_name == "compress_job" else None
            runs.append(execute_ranged(instance, lake, job_name, tags, raise_on_error, selection))
    return runs


def register_closed_hours(instance, lake, cursor: str | None = None):
    """One raw_hours_sensor tick and the runs of its backfill; returns the tick's SensorResult."""
    result = raw_hours_tick(instance, lake, cursor)
    execute_backfill_request(instance, lake, result)
    return result


def latest_raw_hour(instance, partition: str):
    """The latest raw_hour materialization of `partition` (None if it has none)."""
    from l2_pipeline.registry import latest_materializations

    record = latest_materializations(instance, [partition]).get(partition)
    return record.asset_materialization if record else None


def check_status(instance, lake) -> dict[str, dict[str, set[str]]]:
    """check name → status (SUCCEEDED, FAILED, …) → partitions: the per-partition check health
    Dagster's UI shows (`AssetCheckState`, the state the asset health and the check's Partitions
    tab are computed from)."""
    from dagster import AssetCheckKey
    from dagster._core.storage.asset_check_state import AssetCheckState, bulk_update_asset_check_state

    from l2_lake.quality.verdicts import HOUR_CHECKS
    from l2_pipeline.keys import RAW_HOUR

    partitions = lake_definitions(lake).resolve_asset_graph().get(RAW_HOUR).partitions_def
    keys = [(AssetCheckKey(RAW_HOUR, name), partitions) for name in HOUR_CHECKS]
    states = bulk_update_asset_check_state(instance, keys, {key: AssetCheckState.empty() for key, _ in keys})
    return {key.name: {status.value: set(subset.subset_value.get_partition_keys())
                       for status, subset in state.subsets.items() if not subset.is_empty}
            for key, state in states.items()}


def backfill_runs(instance, backfill_id: str) -> list:
    """The runs of the backfill `backfill_id`."""
    from dagster import RunsFilter
    from dagster._core.storage.tags import BACKFILL_ID_TAG

    return instance.get_runs(filters=RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))


def run_backfill(instance, workspace, backfill_id: str, timeout: float = 240):
    """Iterations of the backfill daemon (`dagster._daemon.backfill.execute_backfill_iteration`) until
    the backfill `backfill_id` is done, waiting for the runs it launched in between; returns it.
    On an instance whose run coordinator queues runs (`QueuedRunCoordinator`, deploy/dagster.yaml)
    the run queue daemon's iterations (`QueuedRunCoordinatorDaemon`) start them meanwhile."""
    import logging
    import time
    from contextlib import ExitStack

    from dagster import DagsterRunStatus
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout
    with ExitStack() as stack:
        queue = (stack.enter_context(QueuedRunCoordinatorDaemon(interval_seconds=1))
                 if isinstance(instance.run_coordinator, QueuedRunCoordinator) else None)
        while True:
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill-daemon")))
            backfill = instance.get_backfill(backfill_id)
            assert backfill is not None
            if backfill.status != BulkActionStatus.REQUESTED:
                return backfill
            while any(run.status not in finished for run in backfill_runs(instance, backfill_id)):
                assert time.monotonic() < deadline, [(r.run_id, r.status) for r in backfill_runs(instance, backfill_id)]
                if queue is not None:
                    list(queue.run_iteration(workspace))
                time.sleep(0.5)
            assert time.monotonic() < deadline, backfill.status


def backfill_partitions(backfill) -> dict[str, set[str]]:
    """asset name → the partitions a backfill targets."""
    subset = backfill.asset_backfill_data.target_subset
    return {asset_key.to_user_string(): {str(p.partition_key) for p in subset.iterate_asset_partitions()
                                         if p.asset_key == asset_key} for asset_key in subset.asset_keys}


def sensor_daemon_tick(instance, workspace, at: datetime, sensor: str = "raw_hours_sensor"):
    """One iteration of the sensor daemon (`dagster._daemon.sensor.execute_sensor_iteration`) at
    time `at` (a sensor is evaluated at most every 60 s: give each tick a later `at`); returns the
    sensor's latest tick and its cursor afterwards."""
    import logging

    from dagster._core.scheduler.instigation import InstigatorType
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.sensor import execute_sensor_iteration

    with freeze_time(at):
        list(execute_sensor_iteration(workspace, logging.getLogger("sensor-daemon"), None, None))
    states = {s.name: s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)}
    state = states[sensor]
    (latest,) = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
    return latest, state.instigator_data.cursor


SET_SENSOR_CURSOR = """
mutation SetSensorCursorMutation($sensorSelector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $sensorSelector, cursor: $cursor) { __typename }
}
"""


def reset_sensor_cursor(workspace, sensor: str = "raw_hours_sensor", location: str = "l2_pipeline") -> None:
    """Sensors → `sensor` → Reset cursor, as the UI sends it (GraphQL `setSensorCursor`, cursor null)."""
    from dagster_graphql.test.utils import execute_dagster_graphql

    selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "sensorName": sensor}
    reset = execute_dagster_graphql(workspace.create_request_context(), SET_SENSOR_CURSOR,
                                    {"sensorSelector": selector, "cursor": None})
    assert reset.data["setSensorCursor"]["__typename"] == "Sensor", reset

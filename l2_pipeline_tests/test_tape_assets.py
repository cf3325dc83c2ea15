"""The full-resolution tape in the pipeline (`l2_pipeline.assets.tape`), on REAL tapes: one
`l2-collector run --tape` against `l2-collector simulate` (processes on loopback, exchange time set
hours back so the hour is closed), with `drop` injected into BTC's feed twice so its tape holds two
sequence gaps, recorded once per session and copied into each test's lake; plus hand-damaged copies.

- the sensor registers the tape's closed hours with the snapshots' in one backfill; `book_tape`'s
  figures are those of an independent replay of the file (messages, gaps, resyncs by reason, ticks,
  lines, trusted-book seconds); its three checks are current for each partition: `tape_no_gaps`
  fails for BTC only, `tape_coverage` follows the threshold, `tape_schema_valid` passes;
- damaged tapes (a garbage line, an unknown kind, a frame that does not decode, a torn last line, a
  missing book line, a corrupt archive) fail `tape_schema_valid`, each problem counted;
- `resampled_books` writes Parquet in the curated schema at a hive path naming its config, row for
  row the replay at that cadence and depth, records on the cadence grid relative to the messages;
- compression archives tape hours (verified Parquet that decodes to the hour's exact bytes, runs of
  their own), retention deletes them, a lake
  in object storage (moto) takes the same steps, and a lake without a tape is unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, DagsterInstance, build_schedule_context, build_sensor_context, materialize

from collector.cli import main as cli_main
from collector.ship import Shipper
from collector_tests.harness import count_records, start_collector, start_simulator, stop_process, wait_for
from collector_tests.s3_server import s3_env
from l2_lake.book.tape_replay import TapeReplayer, read_lines
from l2_lake.format import layout, tape_columns
from l2_lake.format.record import parse_ts_ms
from l2_lake.pictures.tape_figure import tape_hour_figure, top_of_book
from l2_lake.quality.tape_stats import compute_tape_stats
from l2_lake.quality.verdicts import TAPE_CHECKS
from l2_lake.store import lake_walk
from l2_lake.tiers.curated import PARQUET_SCHEMA
from l2_lake.tiers.resampled import resampled_path
from l2_lake_tests.test_plots import png_size
from l2_pipeline.jobs import retention_job
from l2_pipeline.keys import BOOK_TAPE, BOOK_TAPE_ARCHIVE, RAW_ARCHIVE, RESAMPLED_BOOKS
from l2_pipeline.partitions import partition_key
from l2_pipeline.registry import latest_materializations
from l2_pipeline.schedules import retention_request
from l2_pipeline_tests import lake_factory
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    LIVE,
    lake_assets,
    lake_definitions,
    lake_resource,
    lake_schedule,
    plant_good_hour,
    plant_live_hour,
    raw_hours_tick,
    register_closed_hours,
    requested,
)

pytestmark = pytest.mark.e2e
INSTS = f"{BTC},{ETH}"
HOURS_AGO = 8  # the tape's hour: ended 7 h ago, so compression (after 6 h) is due and retention can be set below it
RECORD_SECONDS = 15.0
TAPE_CHECK_KEYS = [AssetCheckKey(BOOK_TAPE, name) for name in TAPE_CHECKS]


@dataclass(frozen=True)
class Recording:
    lake: Path
    hour: datetime

    def key(self, inst_id: str) -> str:
        return str(partition_key(inst_id, self.hour))

    def tape(self, data_dir: Path, inst_id: str) -> Path:
        return layout.tape_path(data_dir, inst_id, self.hour)


def record_tape(directory: Path) -> datetime:
    """`l2-collector run --tape` against the simulator for ~15 s of exchange time in the hour that began
    `HOURS_AGO` h ago, with two `drop`s of a BTC update (each a sequence gap); returns the hour."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS_AGO)
    start_at = (hour + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sim = start_simulator(directory, INSTS, "--interval-ms", "50", "--seed", "11", "--start-at", start_at)
    data = directory / "lake"
    collector = start_collector(directory, sim, data, INSTS, "--tape")
    started = time.monotonic()
    try:
        wait_for(lambda: count_records(data) >= 4, what="first records")
        for _ in range(2):
            time.sleep(3.0)
            sim.inject("drop", BTC)
        time.sleep(max(1.0, RECORD_SECONDS - (time.monotonic() - started)))
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    (data / ".l2-collector.lock").unlink(missing_ok=True)
    for found in lake_walk.iter_hour_files(data):  # events are filed by the wall clock's hour, hours after the tape's
        if found.hour != hour:
            found.path.unlink()
            with contextlib.suppress(OSError):
                found.path.parent.rmdir()
    return hour


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """The session's recording, made once for all xdist workers (they share the base temp's parent)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if worker else base) / "tape-recording"
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "hour.json"
        if not done.exists():
            hour = record_tape(shared)
            done.write_text(json.dumps(hour.isoformat()))
    return Recording(shared / "lake", datetime.fromisoformat(json.loads(done.read_text())))


@pytest.fixture
def lake_dir(recording: Recording, tmp_path: Path) -> Path:
    """A copy of the recorded lake (snapshots, events and tape) for one test."""
    return Path(shutil.copytree(recording.lake, tmp_path / "lake"))


# --- independent readings of a tape file ----------------------------------------------------------


def tape_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in read_lines(path)]


class Collect:
    """A sink keeping the records an engine writes."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        self.records.append(record)

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        pass


def replay(path: Path, inst_id: str, *, cadence_ms: int | None = None, depth: int = 400
           ) -> tuple[TapeReplayer, Collect, list[int]]:
    """A replay of one tape file: the replayer, its records and the ts of every message applied to a
    trusted book."""
    sink, trusted = Collect(), []

    def on_message(sync, msg) -> None:
        if sync.in_sync and sync.seq_id == msg.seq_id:
            trusted.append(msg.ts_ms)

    replayer = TapeReplayer(inst_id, depth, sink, cadence_ms=cadence_ms, on_message=on_message)
    for line in read_lines(path):
        replayer.feed(line)
    replayer.finish()
    return replayer, sink, trusted


def trusted_seconds_from_markers(lines: list[dict[str, Any]]) -> float:
    """Seconds from each `synced` marker to the next `lost` one (or the last line), on the local clock."""
    total, since = 0, None
    for line in lines:
        if line["t"] == "synced" and since is None:
            since = line["r"]
        elif line["t"] in ("lost", "drop") and since is not None:
            total, since = total + line["r"] - since, None
    if since is not None:
        total += lines[-1]["r"] - since
    return total / 1000


def tape_health(instance: DagsterInstance) -> dict[str, dict[str, str]]:
    """check name → partition → status of its latest evaluation; every one of them must be current (it
    targets the partition's latest book_tape materialization)."""
    infos = instance.event_log_storage.get_asset_check_partition_info(TAPE_CHECK_KEYS)
    assert all(info.is_current for info in infos), [info for info in infos if not info.is_current]
    out: dict[str, dict[str, str]] = {name: {} for name in TAPE_CHECKS}
    for info in infos:
        out[info.check_key.name][info.partition_key] = info.latest_execution_status.value
    return out


def tape_metadata(instance: DagsterInstance, key: str) -> dict[str, Any]:
    record = latest_materializations(instance, [key], BOOK_TAPE)[key]
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


@pytest.fixture
def backfill_with_tape(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lake_factory.register_closed_hours` runs a backfill's `book_tape` partitions in `book_tape_job`."""
    monkeypatch.setitem(lake_factory.JOB_OF_ASSET, "book_tape", "book_tape_job")


# --- tests -----------------------------------------------------------------------------------------


def test_sensor_registers_tape_hours_with_figures_and_current_checks(recording, lake_dir, instance,
                                                                     backfill_with_tape):
    lake = lake_resource(lake_dir, coverage_threshold_pct=0.1)
    graph = lake_definitions(lake).resolve_asset_graph()
    assert {BOOK_TAPE, BOOK_TAPE_ARCHIVE, RESAMPLED_BOOKS} <= graph.get_all_asset_keys()
    keys = {recording.key(BTC), recording.key(ETH)}

    tick = register_closed_hours(instance, lake)  # the tick, then the runs of its backfill
    assert requested(tick) == {"raw_hour": keys, "curated_parquet": keys, "book_features": keys, "book_tape": keys}
    assert json.loads(tick.cursor)["tape"] == json.loads(tick.cursor)["last"]

    for inst_id in (BTC, ETH):
        path = recording.tape(lake_dir, inst_id)
        lines = tape_lines(path)
        replayer, _, trusted = replay(path, inst_id)
        meta = tape_metadata(instance, recording.key(inst_id))
        assert meta["lines"] == len(lines) and meta["bytes"] == path.stat().st_size
        assert meta["ws_frames"] == sum(line["t"] == "ws" for line in lines)
        assert meta["messages"] == replayer.stats.messages > 100
        assert meta["trusted_messages"] == len(trusted) and meta["gaps"] == replayer.sync.gaps
        assert meta["ticks"] == sum(line["t"] == "tick" for line in lines) > 0
        lost = Counter(line["reason"] for line in lines if line["t"] == "lost")
        assert meta["resyncs"] == sum(lost.values()) and meta["resyncs_by_reason"] == dict(lost)
        assert meta["trusted_seconds"] == pytest.approx(trusted_seconds_from_markers(lines), abs=0.25)
        assert 10 < meta["trusted_seconds"] < 30
        assert meta["coverage_pct"] == pytest.approx(meta["trusted_seconds"] / 36, abs=0.001)
        assert meta["message_coverage_pct"] == pytest.approx(100 * len(trusted) / meta["messages"], abs=0.001)
        span = meta["last_ts"] - meta["first_ts"]
        assert meta["messages_per_second"] == pytest.approx(meta["messages"] / span, rel=0.01)
        assert meta["schema_problems"] == 0 and meta["source"] == str(path)
    btc, eth = (tape_metadata(instance, recording.key(i)) for i in (BTC, ETH))
    assert btc["gaps"] == 2 and btc["resyncs_by_reason"] == {"gap": 2} and btc["quality"] == "FAILED: tape_no_gaps"
    assert eth["gaps"] == 0 and eth["resyncs"] == 0 and eth["quality"] == "passed (3 checks)"
    assert tape_health(instance) == {
        "tape_no_gaps": {recording.key(BTC): "FAILED", recording.key(ETH): "SUCCEEDED"},
        "tape_coverage": dict.fromkeys(keys, "SUCCEEDED"),
        "tape_schema_valid": dict.fromkeys(keys, "SUCCEEDED"),
    }

    # at the default threshold (95 %), 15 s of an hour fail tape_coverage (ERROR); gaps are a WARN
    strict = lake_resource(lake_dir)
    assets = lake_assets(strict)
    run = materialize([assets["book_tape"], assets["book_tape_quality"]], partition_key=recording.key(BTC),
                      instance=instance, resources={"lake": strict})
    evaluations = {e.check_name: e for e in run.get_asset_check_evaluations()}
    assert not evaluations["tape_coverage"].passed and evaluations["tape_coverage"].severity.value == "ERROR"
    assert evaluations["tape_coverage"].metadata["messages"].value == btc["messages"]
    assert evaluations["tape_no_gaps"].severity.value == "WARN"
    assert tape_health(instance)["tape_coverage"][recording.key(BTC)] == "FAILED"

    # registered: no tick registers them again, and after a cursor reset they are unchanged
    assert raw_hours_tick(instance, lake, tick.cursor).run_requests == []
    again = raw_hours_tick(instance, lake, None)
    assert again.run_requests == [] and "4 unchanged" in again.skip_reason.skip_message


def test_a_tape_in_instrument_groups_is_registered_and_checked_per_member(recording, lake_dir, instance,
                                                                          backfill_with_tape):
    """With one instrument group, BTC and ETH share a partition: its book_tape materialization holds each
    one's replay figures, and its tape_no_gaps evaluation fails naming BTC (its two dropped updates)."""
    lake = lake_resource(lake_dir, coverage_threshold_pct=0.1, instrument_groups=1)
    key = str(partition_key(BTC, recording.hour, 1))
    assert key == str(partition_key(ETH, recording.hour, 1))
    tick = register_closed_hours(instance, lake)
    assert requested(tick)["book_tape"] == {key} and requested(tick)["raw_hour"] == {key}
    meta = tape_metadata(instance, key)
    assert meta["instrument_ids"] == f"{BTC}, {ETH}" and meta["gaps"] == 2
    for inst_id in (BTC, ETH):
        member = meta["by_instrument"][inst_id]
        lines = tape_lines(recording.tape(lake_dir, inst_id))
        assert member["lines"] == len(lines) and member["gaps"] == (2 if inst_id == BTC else 0)
    assert meta["lines"] == sum(meta["by_instrument"][i]["lines"] for i in (BTC, ETH))
    health = tape_health(instance)
    assert health == {"tape_no_gaps": {key: "FAILED"}, "tape_coverage": {key: "SUCCEEDED"},
                      "tape_schema_valid": {key: "SUCCEEDED"}}
    assert raw_hours_tick(instance, lake, None).run_requests == []  # each member's fingerprint is unchanged


def damage(path: Path) -> None:
    """Into a tape file: a garbage line, a line of an unknown kind and a frame that does not decode, and
    its last line torn."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5:5] = [b"not json at all\n", b'{"t":"mystery","r":1}\n', b'{"t":"ws","r":1,"m":{"arg":oops}}\n']
    lines[-1] = lines[-1].rstrip(b"\n")
    path.write_bytes(b"".join(lines))


def test_book_tape_shows_the_hours_picture_drawn_from_its_replay(recording, lake_dir, instance, tmp_path,
                                                                  monkeypatch, capsys):
    # the picture's data: after each trusted message, the best bid and ask the live snapshots show at that time
    top = top_of_book(read_lines(recording.tape(lake_dir, BTC)), BTC)
    stats = compute_tape_stats(lake_dir, BTC, recording.hour, figure=tape_hour_figure)
    assert len(top.ts_ms) == stats.scan.replay.messages and sum(top.trusted) == stats.scan.trusted_messages
    assert stats.scan.top is None and png_size(stats.figure) == (1200, 900)
    ts, checked = np.asarray(top.ts_ms), 0
    for record in map(orjson.loads, read_lines(layout.records_path(lake_dir, BTC, recording.hour))):
        if record["gap_detected"] or not record["checksum_ok"]:
            continue
        i = int(np.searchsorted(ts, parse_ts_ms(record["timestamp_utc"]), side="right")) - 1
        assert top.trusted[i]
        assert (top.bid[i], top.ask[i]) == (float(record["bids_top400"][0][0]), float(record["asks_top400"][0][0]))
        checked += 1
    assert checked > 5 and not all(top.trusted)  # BTC's two gaps

    # in Dagster: book_tape's metadata shows it when hour_figures is on, and only then
    for figures in (True, False):
        lake = lake_resource(lake_dir, hour_figures=figures)
        assets = lake_assets(lake)
        materialize([assets["book_tape"], assets["book_tape_quality"]], partition_key=recording.key(BTC),
                    instance=instance, resources={"lake": lake})
        meta = tape_metadata(instance, recording.key(BTC))
        assert ("figure" in meta) is figures
        if figures:
            alt, data = meta["figure"].split("](data:image/png;base64,")
            assert alt == f"![{BTC} {recording.hour:%Y-%m-%dT%H}:00Z tape"
            assert png_size(base64.b64decode(data.rstrip(")"))) == (1200, 900)

    # and `l2-collector plot --tape` writes it
    monkeypatch.chdir(tmp_path)
    hour = recording.hour.strftime("%Y-%m-%dT%H:%MZ")
    assert cli_main(["plot", "--tape", "--instrument", BTC, "--lake", str(lake_dir), "--hour", hour]) == 0
    assert png_size((tmp_path / f"{BTC}_{recording.hour:%Y-%m-%dT%H}_tape.png").read_bytes()) == (1200, 900)
    earlier = (recording.hour - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    assert cli_main(["plot", "--tape", "--instrument", BTC, "--lake", str(lake_dir), "--hour", earlier]) == 2
    assert f"has no tape of {BTC}" in capsys.readouterr().err


def test_damaged_tapes_fail_tape_schema_valid(recording, lake_dir, instance):
    damage(recording.tape(lake_dir, BTC))
    eth = recording.tape(lake_dir, ETH)
    eth.write_bytes(b"".join(eth.read_bytes().splitlines(keepends=True)[1:]))  # no book line
    corrupt = recording.hour + timedelta(hours=1)
    broken = layout.archive_path(lake_dir, BTC, corrupt, layout.TAPE_PREFIX)
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(tape_columns.encode(recording.tape(lake_dir, BTC).read_bytes())[:-200])  # cut short

    lake = lake_resource(lake_dir, coverage_threshold_pct=0.1)
    assets = lake_assets(lake)
    found = {}
    for key in (recording.key(BTC), recording.key(ETH), str(partition_key(BTC, corrupt))):
        run = materialize([assets["book_tape"], assets["book_tape_quality"]], partition_key=key, instance=instance,
                          resources={"lake": lake})
        assert run.success  # a failed check does not fail the run, nor does an unreadable hour
        found[key] = {e.check_name: e for e in run.get_asset_check_evaluations()}
    btc = found[recording.key(BTC)]["tape_schema_valid"]
    assert not btc.passed and btc.severity.value == "ERROR"
    counts = {name: btc.metadata[name].value for name in
              ("unparsable_lines", "unknown_kinds", "bad_frames", "torn_tail", "first_line_not_book")}
    assert counts == {"unparsable_lines": 1, "unknown_kinds": 1, "bad_frames": 1, "torn_tail": 1,
                      "first_line_not_book": 0}
    assert btc.metadata["schema_problems"].value == 4 and "mystery" in btc.description
    eth_check = found[recording.key(ETH)]["tape_schema_valid"]
    assert not eth_check.passed and eth_check.metadata["first_line_not_book"].value == 1
    assert eth_check.metadata["schema_problems"].value == 1
    unreadable = found[str(partition_key(BTC, corrupt))]
    assert set(unreadable) == {"tape_schema_valid"} and not unreadable["tape_schema_valid"].passed
    assert "could not be read" in unreadable["tape_schema_valid"].description
    assert tape_metadata(instance, str(partition_key(BTC, corrupt)))["error"]
    # the damage costs the replay nothing else: BTC's messages are those of the undamaged copy
    clean = compute_tape_stats(recording.lake, BTC, recording.hour)
    damaged = tape_metadata(instance, recording.key(BTC))
    assert damaged["gaps"] == 2 and damaged["messages"] == clean.scan.replay.messages


def as_the_lake_keeps(records: list[dict]) -> list[dict]:
    """`records` as the lake writer would keep them: never two at the same event time (a record at or
    before the last kept one is dropped)."""
    kept: list[dict] = []
    for record in records:
        if not kept or parse_ts_ms(record["timestamp_utc"]) > parse_ts_ms(kept[-1]["timestamp_utc"]):
            kept.append(record)
    return kept


@pytest.mark.parametrize(("cadence_ms", "depth"), [(100, 10), (250, 25)])
def test_resampled_books_are_the_replay_at_the_configured_cadence(recording, lake_dir, instance, cadence_ms, depth):
    lake = lake_resource(lake_dir)
    defs = lake_definitions(lake)
    job = defs.resolve_job_def("resample_job")
    config = {"ops": {"resampled_books": {"config": {"cadence_ms": cadence_ms, "depth": depth}}}}
    if (cadence_ms, depth) == (250, 25):
        config = {}  # the defaults
    for inst_id in (BTC, ETH):
        run = job.execute_in_process(instance=instance, run_config=config, partition_key=recording.key(inst_id))
        (mat,) = run.get_asset_materialization_events()
        meta = mat.materialization.metadata
        path = resampled_path(lake_dir, inst_id, recording.hour, cadence_ms=cadence_ms, depth=depth)
        assert f"cadence_ms={cadence_ms}/depth={depth}/instId={inst_id}/" in str(path)
        assert meta["path"].value == str(path) and meta["seconds"].value >= 0

        table = pq.read_table(path)
        _, sink, trusted = replay(recording.tape(lake_dir, inst_id), inst_id, cadence_ms=cadence_ms, depth=depth)
        assert table.schema.remove_metadata() == PARQUET_SCHEMA
        assert table.schema.metadata[b"okx_l2.cadence_ms"] == str(cadence_ms).encode()
        kept = as_the_lake_keeps(sink.records)
        assert meta["rows"].value == table.num_rows == len(kept) > 0
        stamps = [int(t.timestamp() * 1000) for t in table["timestamp_utc"].to_pylist()]
        assert stamps == [parse_ts_ms(r["timestamp_utc"]) for r in kept]
        rows = table.select(["bids", "asks", "gap_detected", "checksum_ok"]).to_pylist()
        exact = [(ts, row) for ts, row in zip(stamps, rows, strict=True)
                 if not row["gap_detected"] and row["checksum_ok"]]
        markers = sum(bool(r["gap_detected"]) or r["checksum_ok"] is False for r in kept)
        assert meta["exact_rows"].value == len(exact) == table.num_rows - markers
        assert markers > 0 if inst_id == BTC else markers == 0
        assert all(len(row["bids"]) == len(row["asks"]) == depth for _, row in exact)
        # on the grid: one exact row per cadence interval at most, each the book after the last trusted
        # message before the interval's end
        buckets = [ts // cadence_ms for ts, _ in exact]
        assert buckets == sorted(set(buckets))
        trusted_set = set(trusted)
        for ts, _ in exact:
            assert ts in trusted_set
            boundary = (ts // cadence_ms + 1) * cadence_ms
            assert not [m for m in trusted if ts < m < boundary]


def test_compression_and_retention_take_tape_hours_like_raw_hours(recording, lake_dir, persistent_instance):
    instance = persistent_instance
    lake = lake_resource(lake_dir)
    original = {inst_id: recording.tape(lake_dir, inst_id).read_bytes() for inst_id in (BTC, ETH)}
    assets = lake_assets(lake)
    for inst_id in (BTC, ETH):
        materialize([assets["book_tape"]], partition_key=recording.key(inst_id), instance=instance,
                    resources={"lake": lake})
    before = {inst_id: tape_metadata(instance, recording.key(inst_id)) for inst_id in (BTC, ETH)}

    at = recording.hour + timedelta(hours=7, minutes=15)  # 6 h after the hour's end, and a bit
    with build_schedule_context(instance=instance, scheduled_execution_time=at, resources={"lake": lake}) as context:
        requests = lake_schedule(lake)(context)
    by_asset = {tuple(r.asset_selection): r for r in requests}
    assert set(by_asset) == {(RAW_ARCHIVE,), (BOOK_TAPE_ARCHIVE,)}
    assert by_asset[(BOOK_TAPE_ARCHIVE,)].run_key.startswith("compress-tape-")
    job = lake_definitions(lake).resolve_job_def("compress_job")
    for request in requests:
        run = job.execute_in_process(instance=instance, tags=request.tags, asset_selection=request.asset_selection)
        assert {e.asset_key for e in run.get_asset_materialization_events()} == set(request.asset_selection)
    for inst_id in (BTC, ETH):
        assert not recording.tape(lake_dir, inst_id).exists()
        archive = layout.archive_path(lake_dir, inst_id, recording.hour, layout.TAPE_PREFIX)
        assert archive.name == f"{recording.hour:%H}.parquet"
        assert tape_columns.decode(archive.read_bytes()) == original[inst_id]  # the hour's exact bytes
        table = tape_columns.read_table(archive)
        assert table.num_rows == original[inst_id].count(b"\n")
        assert table.filter(pc.equal(table["kind"], "ws"))["line"].null_count > 0  # messages held in columns
        assert not layout.records_path(lake_dir, inst_id, recording.hour).exists()  # the snapshots' too
    archived = latest_materializations(instance, [recording.key(BTC)], BOOK_TAPE_ARCHIVE)[recording.key(BTC)]
    assert archived.asset_materialization.metadata["status"].value == "archived"
    with build_schedule_context(instance=instance, scheduled_execution_time=at, resources={"lake": lake}) as context:
        assert "is unarchived" in lake_schedule(lake)(context).skip_message  # nothing due any more

    # the archive is the same hour: a cursor reset finds it unchanged, and it has the same figures
    assert "book_tape" not in requested(raw_hours_tick(instance, lake, None))
    for inst_id in (BTC, ETH):
        materialize([assets["book_tape"]], partition_key=recording.key(inst_id), instance=instance,
                    resources={"lake": lake})
        after = tape_metadata(instance, recording.key(inst_id))
        assert after["source_kind"] == "archive" and after["messages"] == before[inst_id]["messages"]
        assert after["trusted_seconds"] == before[inst_id]["trusted_seconds"]

    # retention: tape hours are raw hours, deleted by the same rule (kept 1 day: nothing due; 6 h: due)
    kept = lake_resource(lake_dir, delete_after_days=1)
    assert "nothing past retention" in retention_request(kept, datetime.now(UTC), fail_unreadable).skip_message
    short = lake_resource(lake_dir, delete_after_days=0.25)
    plant_live_hour(lake_dir, datetime.now(UTC))  # the recording's hour lies in the past: a collector is live now
    request = retention_request(short, datetime.now(UTC), fail_unreadable)
    assert request.tags["l2/files_due"] == "4"  # the snapshots' and the tape's archives of BTC and ETH
    run = retention_job.execute_in_process(instance=instance, run_config=request.run_config, resources={"lake": short})
    assert run.success
    assert not [p for p in layout.raw_root(lake_dir, layout.TAPE_PREFIX).rglob("*") if p.is_file()]
    assert not list(layout.raw_root(lake_dir, layout.TAPE_PREFIX).glob("*/*")), "emptied day directories stay"
    assert not [p for p in layout.raw_root(lake_dir).rglob("*.jsonl*") if LIVE not in p.parts]


def fail_unreadable(path: Path, exc: OSError) -> None:
    raise AssertionError(f"{path}: {exc}")


def test_object_storage_lake_takes_shipped_tape_hours_archives_them_and_resamples(
        recording, lake_dir, s3_server, monkeypatch, instance, backfill_with_tape):
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    url = f"s3://{bucket}/lake"
    original = {inst_id: recording.tape(lake_dir, inst_id).read_bytes() for inst_id in (BTC, ETH)}
    Shipper(lake_dir, url).ship_once()  # closed hours into the bucket: snapshots gzipped, the tape as it is
    assert not [p for p in layout.raw_root(lake_dir, layout.TAPE_PREFIX).rglob("*") if p.is_file()]
    lake = lake_resource(lake_dir / "work", lake_url=url, coverage_threshold_pct=0.1)
    keys = {recording.key(BTC), recording.key(ETH)}

    def tape_objects(inst_id: str) -> list[str]:
        prefix = f"lake/{layout.raw_root(Path(''), layout.TAPE_PREFIX).as_posix()}/{inst_id}/"
        return [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]

    tick = register_closed_hours(instance, lake)
    assert requested(tick)["book_tape"] == keys and "book_tape_archive" not in requested(tick)
    for inst_id in (BTC, ETH):
        meta = tape_metadata(instance, recording.key(inst_id))
        local = compute_tape_stats(recording.lake, inst_id, recording.hour)
        relative = layout.tape_path(Path(""), inst_id, recording.hour).as_posix()
        assert meta["source"] == f"{url}/{relative}" and meta["source_kind"] == "records"
        assert meta["messages"] == local.scan.replay.messages and meta["gaps"] == local.scan.gaps
    assert tape_health(instance)["tape_no_gaps"] == {recording.key(BTC): "FAILED", recording.key(ETH): "SUCCEEDED"}

    # 6 h on, the compression schedule makes the tape's Parquet in the bucket (off the collector's CPU)
    at = recording.hour + timedelta(hours=7, minutes=15)
    with build_schedule_context(instance=instance, scheduled_execution_time=at, resources={"lake": lake}) as context:
        requests = lake_schedule(lake)(context)
    assert [tuple(r.asset_selection) for r in requests] == [(BOOK_TAPE_ARCHIVE,)]  # the snapshots went as gzip
    job = lake_definitions(lake).resolve_job_def("compress_job")
    assert job.execute_in_process(instance=instance, tags=requests[0].tags,
                                  asset_selection=requests[0].asset_selection).success
    for inst_id in (BTC, ETH):
        relative = layout.archive_path(Path(""), inst_id, recording.hour, layout.TAPE_PREFIX).as_posix()
        assert tape_objects(inst_id) == [f"lake/{relative}"]
        body = s3_server.client().get_object(Bucket=bucket, Key=f"lake/{relative}")["Body"].read()
        assert tape_columns.decode(body) == original[inst_id]  # the hour's exact bytes
    # the Parquet object is the hour registered from the .jsonl object (it keeps that object's time in its
    # metadata, as a local archive keeps its original's mtime): a cursor reset finds it unchanged ...
    reset = register_closed_hours(instance, lake, cursor=None)
    assert not reset.run_requests and "4 unchanged" in reset.skip_reason.skip_message  # 2 snapshot, 2 tape hours
    # ... and read from the bucket's Parquet, it is the same hour
    before = {inst_id: tape_metadata(instance, recording.key(inst_id)) for inst_id in (BTC, ETH)}
    for inst_id in (BTC, ETH):
        materialize([lake_assets(lake)["book_tape"]], partition_key=recording.key(inst_id), instance=instance,
                    resources={"lake": lake})
        after = tape_metadata(instance, recording.key(inst_id))
        assert after["source_kind"] == "archive" and after["source"].endswith(".parquet")
        assert {k: after[k] for k in ("messages", "gaps")} == {k: before[inst_id][k] for k in ("messages", "gaps")}

    job = lake_definitions(lake).resolve_job_def("resample_job")
    assert job.execute_in_process(instance=instance, partition_key=recording.key(BTC)).success
    relative = resampled_path(Path(""), BTC, recording.hour, cadence_ms=250, depth=25).as_posix()
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="lake/resampled/").get("Contents", [])
    assert [item["Key"] for item in listed] == [f"lake/{relative}"]
    assert not list((lake_dir / "work").glob(".l2-work-*")), "a workspace was left behind"


def test_lake_without_tape_is_unchanged(tmp_path, instance, capfd):
    hour = lake_factory.BASE_HOUR
    plant_good_hour(tmp_path, BTC, hour, count=10)
    lake = lake_resource(tmp_path, instruments=[BTC])
    defs = lake_definitions(lake)
    assert not {BOOK_TAPE, BOOK_TAPE_ARCHIVE, RESAMPLED_BOOKS} & defs.resolve_asset_graph().get_all_asset_keys()
    assert {j.name for j in defs.get_repository_def().get_all_jobs()}.isdisjoint({"book_tape_job", "resample_job"})
    tick = raw_hours_tick(instance, lake)
    assert set(requested(tick)) == {"raw_hour", "curated_parquet", "book_features"}
    assert "tape" not in json.loads(tick.cursor)

    # a tape that appears after the code location loaded waits for a reload, and the tick says so
    tape = layout.tape_path(tmp_path, BTC, hour)
    tape.parent.mkdir(parents=True)
    tape.write_bytes(b'{"t":"book","r":1,"state":"wait_ack"}\n')
    sensor = defs.resolve_sensor_def("raw_hours_sensor")
    later = sensor(build_sensor_context(instance=instance, cursor=tick.cursor, resources={"lake": lake}))
    assert later.run_requests == [] and "tape" not in json.loads(later.cursor)
    assert "reload it to register the tape's hours" in capfd.readouterr().err


def test_each_kind_of_damaged_line_is_named_as_its_own_schema_problem():
    from l2_lake.quality.tape_stats import scan_tape

    hour = datetime(2026, 11, 20, tzinfo=UTC)
    lines = [b'{"t":"book","r":1,"state":"wait_ack"}\n',
             b'{"t":"rest","r":2}\n',  # a REST snapshot without its book
             b'{"t":"ws","r":3,"m":{"arg":{"channel":"books","instId":"' + BTC.encode() + b'"}}}\n',  # no data
             b'{"t":"ws","r":4\n',  # a frame's line cut before its frame
             b'{"t":"nope","r":5}\n']
    scan = scan_tape(lines, BTC, hour)
    assert scan.problem_counts() == {"unparsable_lines": 0, "unknown_kinds": 1, "bad_frames": 2,
                                     "invalid_lines": 1, "first_line_not_book": 0, "torn_tail": 0}


def test_tape_coverage_needs_both_the_hours_time_and_its_messages_on_a_trusted_book():
    from l2_lake.quality.tape_stats import TapeHourStats, TapeScan, TapeStats
    from l2_lake.quality.verdicts import TAPE_COVERAGE, evaluate_tape

    hour = datetime(2026, 11, 20, tzinfo=UTC)

    def coverage(trusted_s: float, messages: int, trusted: int):
        scan = TapeScan(replay=TapeStats(messages=messages), trusted_messages=trusted, trusted_ms=int(trusted_s * 1000))
        verdicts = evaluate_tape(TapeHourStats(BTC, hour, Path("x"), "records", 1, scan), coverage_threshold_pct=95)
        return next(v for v in verdicts if v.check_name == TAPE_COVERAGE)

    assert coverage(3600, 36_000, 35_000).passed  # 97.2 % of the messages
    short = coverage(3600, 36_000, 30_000)  # the whole hour trusted, but a sixth of its messages were not
    assert not short.passed and "83.33% of its messages" in short.description
    assert short.metadata["message_coverage_pct"] == pytest.approx(83.333, abs=0.001)
    assert not coverage(3000, 36_000, 36_000).passed  # every message, but 10 minutes without a trusted book
    assert coverage(3600, 0, 0).passed  # a trusted book that no message changed

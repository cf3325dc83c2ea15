"""The pipeline over lakes the collector itself wrote:

- a full exchange hour replayed through the collector's engine and store (`collector.replay`
  over `collector.okx.simulator.market.dump_frames`), clean and with one dropped frame (a real gap);
- a live `l2-collector simulate` + `l2-collector run` pair on 127.0.0.1 whose exchange clock
  starts in a past hour, so the hours it writes are closed.
"""

from __future__ import annotations

import gzip
import hashlib
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from collector import layout
from collector.okx.simulator.market import DUMP_START_MS, dump_frames
from collector.replay import replay_file
from collector_tests.harness import hour_boundary_soon, start_collector, start_simulator, stop_process, wait_for
from l2_pipeline.keys import CURATED_PARQUET, RAW_ARCHIVE
from l2_pipeline.partitions import partition_key
from l2_pipeline.schedules import compression_schedule
from l2_pipeline.sensors import raw_hours_sensor
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    apply_sensor_result,
    execute_backfill_request,
    execute_ranged,
    lake_resource,
)

HOUR0 = datetime.fromtimestamp(DUMP_START_MS / 1000, tz=UTC)  # 2026-11-25T00:00Z
FRAMES_PER_INSTRUMENT_HOUR = 36_000  # one update per 100 ms


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "frames.jsonl"
    dump_frames(path, [BTC, ETH], 2 * FRAMES_PER_INSTRUMENT_HOUR + 2, seed=11)
    return path


def replayed_lake(frames: Path, data_dir: Path, drop_line: int | None = None) -> Path:
    source = frames
    if drop_line is not None:
        lines = frames.read_bytes().splitlines(keepends=True)
        del lines[drop_line]
        source = data_dir.parent / f"{data_dir.name}-frames.jsonl"
        source.write_bytes(b"".join(lines))
    replay_file(source, data_dir, cadence_s=2.0, depth=50)
    return data_dir


def sensor_tick(instance, lake, cursor=None):
    result = raw_hours_sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))
    apply_sensor_result(instance, result)
    return result


def verdicts(result, key: str) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.asset_events
            if isinstance(e, AssetCheckEvaluation) and e.partition == key}


def test_replayed_full_hour_registers_checks_curates_and_archives(frames, tmp_path):
    lake_dir = replayed_lake(frames, tmp_path / "lake")
    lake = lake_resource(lake_dir)
    key0 = {i: str(partition_key(i, HOUR0)) for i in (BTC, ETH)}
    originals = {i: layout.records_path(lake_dir, i, HOUR0).read_bytes() for i in (BTC, ETH)}
    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as instance:  # persistent: the schedule context needs one
        result = sensor_tick(instance, lake)
        mats = {e.partition: e.metadata for e in result.asset_events if isinstance(e, AssetMaterialization)}
        # hour 00 is complete; hour 01 holds the single record written at exactly 01:00:00
        assert set(mats) == {*key0.values(), *(str(partition_key(i, HOUR0 + timedelta(hours=1))) for i in (BTC, ETH))}
        for inst_id in (BTC, ETH):
            meta = mats[key0[inst_id]]
            assert meta["records"].value == 1800 and meta["coverage_pct"].value == 100.0
            assert meta["gaps"].value == 0 and meta["crossed_records"].value == 0
            assert all(verdicts(result, key0[inst_id]).values()), verdicts(result, key0[inst_id])
        assert not verdicts(result, str(partition_key(BTC, HOUR0 + timedelta(hours=1))))["coverage"]

        (curate,) = result.run_requests  # a curated_parquet backfill: executed as its daemon would
        runs = execute_backfill_request(instance, lake, curate)
        assert len(runs) == 2 and all(r.success for r in runs)  # per hour, both instruments
        assert len(instance.get_materialized_partitions(CURATED_PARQUET)) == 4
        table = pq.read_table(layout.curated_path(lake_dir, BTC, HOUR0))
        assert table.num_rows == originals[BTC].count(b"\n") == 1800
        assert table.column("bids").combine_chunks().value_lengths().to_pylist() == [50] * 1800

        with build_schedule_context(instance=instance, scheduled_execution_time=HOUR0 + timedelta(hours=8),
                                    resources={"lake": lake}) as context:
            requests = compression_schedule(context)
        runs = [execute_ranged(instance, lake, "compress_job", request.tags) for request in requests]
        assert len(runs) == 2 and all(r.success for r in runs)
        assert len(instance.get_materialized_partitions(RAW_ARCHIVE)) == 4
        for inst_id, data in originals.items():
            assert not layout.records_path(lake_dir, inst_id, HOUR0).exists()
            restored = gzip.decompress(layout.archive_path(lake_dir, inst_id, HOUR0).read_bytes())
            assert hashlib.sha256(restored).hexdigest() == hashlib.sha256(data).hexdigest()


def test_replayed_hour_with_a_dropped_frame_fails_gap_and_coverage(frames, tmp_path):
    lake_dir = replayed_lake(frames, tmp_path / "lake", drop_line=2 + 2 * 18_000)  # a BTC update at ~00:30
    with DagsterInstance.ephemeral() as instance:
        result = sensor_tick(instance, lake_resource(lake_dir))
    btc, eth = (str(partition_key(i, HOUR0)) for i in (BTC, ETH))
    mats = {e.partition: e.metadata for e in result.asset_events if isinstance(e, AssetMaterialization)}
    assert mats[btc]["gaps"].value == 1 and mats[btc]["resyncs"].value == 1
    assert 45 < mats[btc]["coverage_pct"].value < 55  # replay cannot resync without a snapshot in the file
    assert {n for n, ok in verdicts(result, btc).items() if not ok} == {"no_gaps", "coverage"}
    assert all(verdicts(result, eth).values())


@pytest.mark.e2e
def test_live_collector_lake(tmp_path):
    hour6, start_at = hour_boundary_soon(3, hours_ago=2)  # closed hours, within a day of the local clock
    sim = start_simulator(tmp_path, f"{BTC},{ETH}", "--interval-ms", "50", "--start-at", start_at)
    data = tmp_path / "lake"
    hour5 = hour6 - timedelta(hours=1)
    collector = start_collector(tmp_path, sim, data, f"{BTC},{ETH}")
    try:
        for inst_id in (BTC, ETH):
            path = layout.records_path(data, inst_id, hour6)
            wait_for(lambda p=path: p.exists() and p.read_bytes().count(b"\n") >= 10, what=f"{inst_id} new hour")
        stop_process(collector)
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    lake = lake_resource(data, cadence_seconds=0.2)
    with DagsterInstance.ephemeral() as instance:
        result = sensor_tick(instance, lake)
    mats = {e.partition: e.metadata for e in result.asset_events if isinstance(e, AssetMaterialization)}
    for inst_id in (BTC, ETH):
        for hour in (hour5, hour6):
            key = str(partition_key(inst_id, hour))
            assert mats[key]["records"].value > 0
            failed = {n for n, ok in verdicts(result, key).items() if not ok}
            assert failed == {"coverage"}, (key, failed)  # seconds of data in each hour, all of it valid

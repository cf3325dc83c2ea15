"""The pipeline over lakes the collector itself wrote:

- a full exchange hour replayed through the collector's engine and store (`l2_lake.book.replay`
  over `collector.simulator.market.dump_frames`), clean and with one dropped frame (a real gap);
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
from dagster import build_schedule_context

from collector.simulator.market import DUMP_START_MS, dump_frames
from collector_tests.harness import hour_boundary_soon, start_collector, start_simulator, stop_process, wait_for
from l2_lake.book.replay import replay_file
from l2_lake.format import layout
from l2_lake.quality.verdicts import HOUR_CHECKS
from l2_pipeline.keys import CURATED_PARQUET, RAW_ARCHIVE, RAW_HOUR
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    check_status,
    execute_backfill_request,
    execute_ranged,
    lake_resource,
    lake_schedule,
    latest_raw_hour,
    parquet_tiers,
    raw_hours_tick,
    requested,
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


def register(instance, lake) -> tuple[dict[str, set[str]], list]:
    """One raw_hours_sensor tick and the runs of its backfill (executed in process as the backfill
    daemon would split them): what it requested, and the runs."""
    result = raw_hours_tick(instance, lake)
    runs = execute_backfill_request(instance, lake, result)
    assert all(run.success for run in runs)
    return requested(result), runs


def figures(instance, key: str) -> dict:
    """The metadata of the latest raw_hour materialization of `key` (the hour's figures)."""
    materialization = latest_raw_hour(instance, key)
    assert materialization is not None, key
    return materialization.metadata


def verdicts(instance, lake, key: str) -> dict[str, bool]:
    """check → passed, for the partition `key`, as the UI shows its current check status."""
    out = {}
    for name, by_status in check_status(instance, lake).items():
        (status,) = [s for s, keys in by_status.items() if key in keys]
        out[name] = status == "SUCCEEDED"
    assert set(out) == set(HOUR_CHECKS)
    return out


def test_replayed_full_hour_registers_checks_curates_and_archives(frames, tmp_path, dagster_instances):
    lake_dir = replayed_lake(frames, tmp_path / "lake")
    lake = lake_resource(lake_dir)
    key0 = {i: str(partition_key(i, HOUR0)) for i in (BTC, ETH)}
    originals = {i: layout.records_path(lake_dir, i, HOUR0).read_bytes() for i in (BTC, ETH)}
    with dagster_instances.persistent(tmp_path / "home") as instance:  # persistent: the schedule context needs one
        hours, runs = register(instance, lake)
        # hour 00 is complete; hour 01 holds the single record written at exactly 01:00:00
        both = {*key0.values(), *(str(partition_key(i, HOUR0 + timedelta(hours=1))) for i in (BTC, ETH))}
        assert hours == {"raw_hour": both, **parquet_tiers(both)}
        # raw_hour (+ its checks), then curated_parquet: one run per hour, both instruments
        assert len(runs) == 4 and [r.dagster_run.job_name for r in runs] == ["raw_hour_job"] * 2 + ["curate_job"] * 2
        assert instance.get_materialized_partitions(RAW_HOUR) == both
        for inst_id in (BTC, ETH):
            meta = figures(instance, key0[inst_id])
            assert meta["records"].value == 1800 and meta["coverage_pct"].value == 100.0
            assert meta["gaps"].value == 0 and meta["crossed_records"].value == 0
            assert all(verdicts(instance, lake, key0[inst_id]).values()), verdicts(instance, lake, key0[inst_id])
        late = verdicts(instance, lake, str(partition_key(BTC, HOUR0 + timedelta(hours=1))))
        assert {name for name, ok in late.items() if not ok} == {"coverage"}
        assert len(instance.get_materialized_partitions(CURATED_PARQUET)) == 4
        table = pq.read_table(layout.curated_path(lake_dir, BTC, HOUR0))
        assert table.num_rows == originals[BTC].count(b"\n") == 1800
        assert table.column("bids").combine_chunks().value_lengths().to_pylist() == [50] * 1800

        with build_schedule_context(instance=instance, scheduled_execution_time=HOUR0 + timedelta(hours=8),
                                    resources={"lake": lake}) as context:
            requests = lake_schedule(lake)(context)
        runs = [execute_ranged(instance, lake, "compress_job", request.tags) for request in requests]
        assert len(runs) == 2 and all(r.success for r in runs)
        assert len(instance.get_materialized_partitions(RAW_ARCHIVE)) == 4
        for inst_id, data in originals.items():
            assert not layout.records_path(lake_dir, inst_id, HOUR0).exists()
            restored = gzip.decompress(layout.archive_path(lake_dir, inst_id, HOUR0).read_bytes())
            assert hashlib.sha256(restored).hexdigest() == hashlib.sha256(data).hexdigest()


def test_replayed_hour_with_a_dropped_frame_fails_gap_and_coverage(frames, tmp_path, dagster_instances):
    lake_dir = replayed_lake(frames, tmp_path / "lake", drop_line=2 + 2 * 18_000)  # a BTC update at ~00:30
    lake = lake_resource(lake_dir)
    btc, eth = (str(partition_key(i, HOUR0)) for i in (BTC, ETH))
    with dagster_instances.ephemeral() as instance:
        register(instance, lake)
        meta = figures(instance, btc)
        assert meta["gaps"].value == 1 and meta["resyncs"].value == 1
        assert 45 < meta["coverage_pct"].value < 55  # replay cannot resync without a snapshot in the file
        assert {n for n, ok in verdicts(instance, lake, btc).items() if not ok} == {"no_gaps", "coverage"}
        assert all(verdicts(instance, lake, eth).values())


@pytest.mark.e2e
def test_live_collector_lake(tmp_path, dagster_instances):
    # closed hours, within a day of the local clock; the exchange clock starts 8 s before the boundary, so
    # that the collector, started after the simulator, records the earlier hour even on a loaded machine
    hour6, start_at = hour_boundary_soon(8, hours_ago=2)
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
    with dagster_instances.ephemeral() as instance:
        register(instance, lake)
        for inst_id in (BTC, ETH):
            for hour in (hour5, hour6):
                key = str(partition_key(inst_id, hour))
                assert figures(instance, key)["records"].value > 0
                failed = {n for n, ok in verdicts(instance, lake, key).items() if not ok}
                assert failed == {"coverage"}, (key, failed)  # seconds of data in each hour, all of it valid

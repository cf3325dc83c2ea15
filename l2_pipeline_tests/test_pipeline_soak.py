"""Soak: the pipeline's compression racing a live collector (real processes on loopback).

Compression ticks evaluated 7 h late archive every due hour while `l2-collector run` keeps appending
to the open one: old hours are archived and verified, the open hour is never touched.
"""

from __future__ import annotations

import gzip
import hashlib
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.simulator.market import DUMP_START_MS, dump_frames
from collector_tests.harness import count_records, start_collector, start_simulator, stop_process, verify_lake, wait_for
from l2_lake.book.replay import replay_file
from l2_lake.format import layout
from l2_lake.tiers.archive import OpenHourError, archive_hour
from l2_lake.tiers.selection import compression_due


@pytest.mark.soak
def test_compression_races_a_running_collector(tmp_path: Path) -> None:
    """Archive every due hour while the collector appends to the open one, with a schedule tick
    evaluated 7 h late: old hours are archived and verified, the open hour is never touched."""
    data = tmp_path / "lake"
    frames = tmp_path / "old.jsonl"
    dump_frames(frames, ["BTC-USDT-SWAP"], 6_001, seed=4, checksum_mode="zero")  # 2026-11-25 00:00-00:10
    replay_file(frames, data, cadence_s=2.0)
    old_hour = layout.hour_floor(DUMP_START_MS)
    old_path = layout.records_path(data, "BTC-USDT-SWAP", old_hour)
    old_sha = hashlib.sha256(old_path.read_bytes()).hexdigest()
    sim = start_simulator(tmp_path, "BTC-USDT-SWAP,ETH-USDT-SWAP", "--interval-ms", "50")
    collector = start_collector(tmp_path, sim, data, "BTC-USDT-SWAP,ETH-USDT-SWAP")
    try:
        wait_for(lambda: count_records(data) > 300 + 6, what="live records")
        now = datetime.now(tz=UTC)
        late_tick = now + timedelta(hours=7)  # as if the schedule ran late: the open hour is "due"
        for _ in range(3):  # repeated ticks while the collector keeps writing
            for item in compression_due(data, late_tick, timedelta(hours=6), timedelta(minutes=2), now=now):
                result = archive_hour(data, item.inst_id, item.hour, now)
                assert result.status in ("archived", "already_archived")
            with pytest.raises(OpenHourError):
                archive_hour(data, "BTC-USDT-SWAP", layout.hour_floor(time.time_ns() // 1_000_000), now)
            time.sleep(0.5)
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    assert not old_path.exists()
    with gzip.open(layout.archive_path(data, "BTC-USDT-SWAP", old_hour), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == old_sha
    result = verify_lake(data, sim.truth_log)  # live hours only (.jsonl); archived hour left as .gz
    assert not result.wrong and result.exact == result.promised > 0

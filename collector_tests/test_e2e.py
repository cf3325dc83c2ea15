"""End to end: `l2-collector run` against `l2-collector simulate` (real processes, loopback only).

Every record the collector promises (gap_detected=false, checksum_ok not false) must equal the
simulator's true book at that seqId and ts; each fault must show up as the right event.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from collector_tests.harness import (
    count_records,
    hour_boundary_soon,
    lake_events,
    lake_records,
    start_collector,
    start_simulator,
    stop_process,
    verify_lake,
    wait_for,
)
from l2_lake.format import layout

pytestmark = pytest.mark.e2e
INSTS = "BTC-USDT-SWAP,ETH-USDT-SWAP"

# fault -> (simulator flags, injections after sync, event types that must appear)
FAULTS: dict[str, tuple[tuple[str, ...], int, set[str]]] = {
    "none": ((), 0, {"resync_done"}),
    "drop": ((), 2, {"gap", "resync_start", "resync_done"}),
    "reset": ((), 2, set()),
    "heartbeat": ((), 3, set()),
    "bad_checksum": ((), 2, {"checksum_mismatch", "resync_start"}),
    "zero_checksum": (("--faults", "zero_checksum"), 0, set()),
    "no_snapshot": (("--faults", "no_snapshot"), 0, {"resync_done"}),
    "disconnect": ((), 1, {"reconnect"}),
    "notice": (("--notice-grace", "0.5"), 1, {"notice", "reconnect"}),
    "silence": (("--silence-seconds", "4"), 1, {"stale", "reconnect"}),
    "malformed": ((), 2, {"bad_frame"}),
    "error": ((), 1, {"error"}),
}

RESULTS: dict[str, str] = {}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_records_equal_true_book_under_fault(tmp_path: Path, fault: str) -> None:
    sim_flags, injections, expected_events = FAULTS[fault]
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--seed", "7", *sim_flags)
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS)
    try:
        wait_for(lambda: count_records(data) >= 4, what="first records")
        for _ in range(injections):
            sim.inject(fault)
            time.sleep(1.0)
        settle = 6.0 if fault == "silence" else 1.5
        time.sleep(settle)
        wait_for(lambda: count_records(data) >= 10, what="records after faults")
        assert stop_process(collector) < 5.0
        assert collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    result = verify_lake(data, sim.truth_log)
    RESULTS[fault] = f"{result.exact}/{result.promised} exact, {result.flagged} flagged"
    print(f"\n{fault}: {RESULTS[fault]}, events {dict(result.event_types)}")
    assert not result.wrong, result.wrong[:5]
    assert result.promised >= 10 and result.exact == result.promised
    if fault == "no_snapshot":
        assert {e["how"] for e in lake_events(data) if e["type"] == "resync_done"} == {"rest"}
    if injections:
        assert result.faults[fault] >= injections
    missing = expected_events - set(result.event_types)
    assert not missing, f"events {missing} missing; got {dict(result.event_types)}"


def test_restart_and_kill_9_leave_no_duplicates_or_torn_lines(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "20", "--seed", "3")
    data = tmp_path / "lake"
    try:
        for stop_signal in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGINT):
            before = count_records(data)
            collector = start_collector(tmp_path, sim, data, INSTS)
            wait_for(lambda b=before: count_records(data) >= b + 6, what="new records")
            stop_process(collector, stop_signal)
    finally:
        sim.stop()
    result = verify_lake(data, sim.truth_log)  # asserts strictly increasing, unique ts, no torn line
    assert not result.wrong and result.exact == result.promised >= 24


def test_unknown_instrument_is_a_startup_error(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, "BTC-USDT-SWAP")
    try:
        collector = start_collector(tmp_path, sim, tmp_path / "lake", "BTC-USDT-SWAP,NOPE-USDT-SWAP")
        assert collector.wait(timeout=30) == 2
    finally:
        sim.stop()
    stderr = (tmp_path / "collector.stderr").read_text()
    assert "NOPE-USDT-SWAP" in stderr and "unknown instrument" in stderr


def test_metadata_written_at_start(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, INSTS)
    data = tmp_path / "lake"
    try:
        collector = start_collector(tmp_path, sim, data, INSTS)
        wait_for(lambda: (data / "meta/okx/instruments/ETH-USDT-SWAP.json").exists(), what="metadata")
        stop_process(collector)
    finally:
        sim.stop()
    meta = orjson.loads((data / "meta/okx/instruments/ETH-USDT-SWAP.json").read_bytes())
    assert meta["instId"] == "ETH-USDT-SWAP" and "fetched_at" in meta and meta["tickSz"]
    history = (data / "meta/okx/instruments/ETH-USDT-SWAP.history.jsonl").read_bytes().splitlines()
    assert len(history) == 1


def test_status_line_per_instrument(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50")
    try:
        collector = start_collector(tmp_path, sim, tmp_path / "lake", INSTS)
        stderr = tmp_path / "collector.stderr"
        wait_for(lambda: "records=" in stderr.read_text() and " synced " in stderr.read_text(), what="status")
        assert stop_process(collector, signal.SIGINT) < 5.0 and collector.returncode == 0
    finally:
        sim.stop()
    status = [line for line in (tmp_path / "collector.stderr").read_text().splitlines() if "event=status" in line]
    for inst_id in INSTS.split(","):
        line = next(x for x in status if f"instId={inst_id}" in x and " synced " in x)
        assert "msg/s" in line and "seqId=" in line and "lag=" in line and "gaps=0" in line


def test_hour_rollover_by_exchange_event_time(tmp_path: Path) -> None:
    """The exchange clock crosses an hour while the local clock does not: records follow event time."""
    boundary, start_at = hour_boundary_soon(3)
    before = boundary - timedelta(hours=1)
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--start-at", start_at)
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS)
    after_path = layout.records_path(data, "BTC-USDT-SWAP", boundary)
    try:
        wait_for(lambda: after_path.exists() and after_path.stat().st_size > 0, what="the new hour's file")
        time.sleep(1)
        stop_process(collector)
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    for inst_id in INSTS.split(","):
        old = layout.records_path(data, inst_id, before).read_bytes().splitlines()
        new = layout.records_path(data, inst_id, boundary).read_bytes().splitlines()
        assert old and new
        assert all(before <= _event_time(r) < boundary for r in old)
        assert all(boundary <= _event_time(r) < boundary + timedelta(seconds=10) for r in new)
    result = verify_lake(data, sim.truth_log)
    assert not result.wrong and result.exact == result.promised > 0


def _event_time(line: bytes) -> datetime:
    return datetime.fromisoformat(orjson.loads(line)["timestamp_utc"].replace("Z", "+00:00"))


def test_sigterm_exits_promptly_while_okx_rest_hangs(tmp_path: Path) -> None:
    """A REST server that accepts and never answers must not delay shutdown past 5 s."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        port = hung.getsockname()[1]
        collector = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "--data-dir", str(tmp_path / "lake"),
             "--rest-url", f"http://127.0.0.1:{port}", "--ws-url", f"ws://127.0.0.1:{port}/ws",
             "--rest-timeout", "30"], stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        assert collector.poll() is None
        assert stop_process(collector) < 5.0
        assert collector.returncode == 0


def test_instruments_sharded_over_connections(tmp_path: Path) -> None:
    insts = "BTC-USDT-SWAP,ETH-USDT-SWAP,SOL-USDT-SWAP"
    sim = start_simulator(tmp_path, insts, "--interval-ms", "50")
    data = tmp_path / "lake"
    try:
        collector = start_collector(tmp_path, sim, data, insts, "--channels-per-connection", "2")
        wait_for(lambda: len([r for r in lake_records(data).values() if len(r) >= 3]) == 3, what="3 instruments")
        sim.inject("disconnect", "SOL-USDT-SWAP")  # only the second connection drops
        time.sleep(1.5)
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        sim.stop()
    log = (tmp_path / "collector.stderr").read_text()
    assert "conn0 connected" in log and "conn1 connected" in log and "conn2" not in log
    reconnected = {e["instId"] for e in lake_events(data) if e["type"] == "reconnect"}
    assert reconnected == {"SOL-USDT-SWAP"}
    result = verify_lake(data, sim.truth_log)
    assert not result.wrong and result.exact == result.promised > 0

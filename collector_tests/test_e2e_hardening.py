"""End to end, what real operations do to a collector: OKX maintenance pages and cut bodies, a REST
snapshot stamped late, a `ts` in microseconds, a crash that tears the last line of an hour, a second
collector on the same lake, an instrument that never syncs. Real `l2-collector run` and `simulate`
processes on 127.0.0.1; every promised record is held against the simulator's truth log, and the
collector must stay alive throughout.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from collector_tests.harness import (
    cli,
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
from l2_lake.book.inputs import MAX_CLOCK_DISTANCE_MS
from l2_lake.format import layout
from l2_lake.format.record import parse_ts_ms

pytestmark = pytest.mark.e2e
INSTS = "BTC-USDT-SWAP,ETH-USDT-SWAP"


def _run_and_verify(tmp_path: Path, sim_flags: tuple[str, ...], collector_flags: tuple[str, ...] = (),
                    injections: tuple[str, ...] = (), records: int = 10):
    """Run the pair, inject `injections` once synced, stop cleanly; returns (verification, lake)."""
    sim = start_simulator(tmp_path, INSTS, "--seed", "5", *sim_flags)
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS, *collector_flags)
    try:
        wait_for(lambda: count_records(data) >= 4, timeout=30, what="first records")
        for fault in injections:
            sim.inject(fault)
            time.sleep(1.0)
        wait_for(lambda: count_records(data) >= records, timeout=30, what="records after the faults")
        assert collector.poll() is None, "the collector must stay alive"
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    result = verify_lake(data, sim.truth_log)
    assert not result.wrong, result.wrong[:5]
    assert result.promised >= records // 2 and result.exact == result.promised
    return result, data


@pytest.mark.parametrize("fault", ["rest_cut", "rest_html"])
def test_alignment_survives_cut_and_html_rest_bodies(tmp_path: Path, fault: str) -> None:
    """No WS snapshot, and half the /market/books answers are cut short or a maintenance page."""
    result, data = _run_and_verify(tmp_path, ("--faults", f"no_snapshot,{fault}=0.5"))
    assert result.faults[fault] > 0
    assert {e["how"] for e in lake_events(data) if e["type"] == "resync_done"} == {"rest"}
    log = (tmp_path / "collector.stderr").read_text()
    assert "event=rest_error" in log and "Traceback" not in log


def test_first_rest_bodies_cut_short_still_sync(tmp_path: Path) -> None:
    """The user report: no WS snapshot and the first books bodies cut — it used to sync nothing."""
    sim = start_simulator(tmp_path, INSTS, "--seed", "5", "--faults", "no_snapshot")
    for _ in range(4):
        sim.inject("rest_cut")
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS)
    try:
        wait_for(lambda: len([r for r in lake_records(data).values() if len(r) >= 3]) == 2, timeout=30,
                 what="both instruments synced over REST")
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    result = verify_lake(data, sim.truth_log)
    assert not result.wrong and result.exact == result.promised > 0 and result.faults["rest_cut"] == 4


def test_rest_snapshot_stamped_up_to_500ms_late_aligns_within_3_attempts(tmp_path: Path) -> None:
    """10 msg/s books, no WS snapshot, every REST answer's ts 0..500 ms later than its content."""
    sim_flags = ("--interval-ms", "100", "--faults", "no_snapshot,rest_ts_skew=500")
    result, data = _run_and_verify(tmp_path, sim_flags, injections=("drop",) * 4, records=40)
    done = [e for e in lake_events(data) if e["type"] == "resync_done"]
    assert len(done) >= 6 and {e["how"] for e in done} == {"rest"}  # 2 at start, one after each gap
    assert max(e["attempts"] for e in done) <= 3, [e["attempts"] for e in done]
    assert result.faults["rest_ts_skew"] >= len(done) and result.faults["drop"] == 8  # 4 per instrument


def test_ts_in_microseconds_is_a_bad_frame_and_never_stamps_a_record(tmp_path: Path) -> None:
    result, data = _run_and_verify(tmp_path, ("--interval-ms", "50"), injections=("ts_micro", "ts_micro"))
    bad_ts = [e for e in lake_events(data) if e["type"] == "bad_frame" and e["kind"] == "bad_ts"]
    assert result.faults["ts_micro"] >= 2 and len(bad_ts) >= 2
    assert {e["reason"] for e in lake_events(data) if e["type"] == "resync_start"} >= {"bad_ts"}
    now_ms = time.time_ns() // 1_000_000
    stamps = [parse_ts_ms(r["timestamp_utc"]) for recs in lake_records(data).values() for r in recs]
    assert all(abs(ts - now_ms) < MAX_CLOCK_DISTANCE_MS for ts in stamps)


@pytest.mark.parametrize("fault", ["instruments_html", "instruments_cut"])
def test_failed_metadata_refresh_keeps_last_files_and_retries(tmp_path: Path, fault: str) -> None:
    sim = start_simulator(tmp_path, INSTS, "--seed", "5")
    data = tmp_path / "lake"
    meta = data / "meta/okx/instruments/BTC-USDT-SWAP.json"
    collector = start_collector(tmp_path, sim, data, INSTS, "--metadata-refresh-hours", "0.0005")  # 1.8 s
    stderr = tmp_path / "collector.stderr"
    try:
        wait_for(meta.exists, what="metadata at start")
        for _ in range(3):
            sim.inject(fault)
        wait_for(lambda: "metadata refresh failed" in stderr.read_text(), what="a failed refresh")
        kept = orjson.loads(meta.read_bytes())
        assert kept["instId"] == "BTC-USDT-SWAP"
        wait_for(lambda: orjson.loads(meta.read_bytes())["fetched_at"] != kept["fetched_at"], timeout=30,
                 what="a later refresh that succeeds")
        assert collector.poll() is None and count_records(data) > 0
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    assert "Traceback" not in stderr.read_text()


def test_second_collector_on_the_same_lake_exits_2_naming_the_pid(tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, INSTS)
    data = tmp_path / "lake"
    first = start_collector(tmp_path, sim, data, INSTS)
    try:
        wait_for(lambda: count_records(data) >= 2, what="first collector running")
        second = subprocess.run(
            cli("run", "--data-dir", str(data), "--instruments", INSTS, "--ws-url", sim.ws_url,
                "--rest-url", sim.rest_url),
            capture_output=True, text=True, timeout=30)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"PID {first.pid}" in lines[0] and "in use by another l2-collector" in lines[0]
        assert first.poll() is None
        stop_process(first)
    finally:
        stop_process(first, signal.SIGKILL)
        sim.stop()


def test_torn_line_left_in_a_closed_hour_is_repaired_at_restart(tmp_path: Path) -> None:
    """kill -9 tears the last line of hh:59; the collector restarts after the hour rolled over and never
    appends to the old file again — it is repaired at start anyway, with a `repair` event."""
    boundary, start_at = hour_boundary_soon(4)
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--start-at", start_at)
    data = tmp_path / "lake"
    old = layout.records_path(data, "BTC-USDT-SWAP", boundary - timedelta(hours=1))
    new = layout.records_path(data, "BTC-USDT-SWAP", boundary)
    collector = start_collector(tmp_path, sim, data, INSTS)
    try:
        wait_for(lambda: old.exists() and old.stat().st_size > 0, what="the old hour")
        stop_process(collector, signal.SIGKILL)
        whole = old.read_bytes()
        old.write_bytes(whole + whole.splitlines(keepends=True)[-1][:300])  # a write cut by the kill
        wait_for(lambda: _sim_clock_past(sim.truth_log, boundary), what="the exchange clock past the hour")
        collector = start_collector(tmp_path, sim, data, INSTS)
        wait_for(lambda: new.exists() and new.stat().st_size > 0, what="the new hour")
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    assert old.read_bytes() == whole
    repairs = [e for e in lake_events(data) if e["type"] == "repair"]
    assert [e["path"] for e in repairs] == [str(old.relative_to(data))]
    result = verify_lake(data, sim.truth_log)
    assert not result.wrong and result.exact == result.promised > 0


def _sim_clock_past(truth_log: Path, boundary: datetime) -> bool:
    """The simulator's exchange clock (its newest complete truth line) is half a second past `boundary`."""
    for line in reversed(truth_log.read_bytes()[-2000:].split(b"\n")[:-1]):
        try:
            return orjson.loads(line)["ts"] >= boundary.timestamp() * 1000 + 500
        except orjson.JSONDecodeError:
            continue
    return False


def test_instrument_that_never_syncs_is_resubscribed_by_the_watchdog(tmp_path: Path) -> None:
    """No WS snapshot and REST slower than --resync-timeout: the book never syncs, and the watchdog
    says so (`stale`, reason unsynced) and resubscribes, while the process stays alive."""
    sim = start_simulator(tmp_path, "BTC-USDT-SWAP", "--faults", "no_snapshot,rest_slow")
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, "BTC-USDT-SWAP", "--resync-timeout", "1")
    stderr = tmp_path / "collector.stderr"
    try:
        wait_for(lambda: len(re.findall("event=stale", stderr.read_text())) >= 2, timeout=20,
                 what="two watchdog resubscribes")
        wait_for(lambda: re.search(r"unsynced=\d+\.\d+s", stderr.read_text()) is not None, what="unsynced in status")
        assert collector.poll() is None
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    stale = [e for e in lake_events(data) if e["type"] == "stale"]
    assert len(stale) >= 2 and {e["reason"] for e in stale} == {"unsynced"}
    assert {e["state"] for e in stale} <= {"aligning", "wait_first", "wait_ack"}


def test_exchange_clock_days_away_paces_resubscribes_instead_of_flooding(tmp_path: Path) -> None:
    """Every `ts` three days from the local clock (a host clock gone wrong): no record is written, and
    resubscribes back off (1 s, 2 s, 4 s, …) instead of one per message, which would spend OKX's
    480-an-hour budget in a second."""
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--start-at",
                          time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 86_400)))
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS)
    try:
        time.sleep(10)
        assert collector.poll() is None
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    assert count_records(data) == 0
    events = lake_events(data)
    for inst_id in INSTS.split(","):
        bad = [e for e in events if e["instId"] == inst_id and e["type"] == "bad_frame" and e["kind"] == "bad_ts"]
        assert 2 <= len(bad) <= 6, len(bad)  # subscribe at 0 s, then 1, 2, 4 s later (+ watchdog)
    assert not [e for e in events if e["type"] == "subscribe_budget"]

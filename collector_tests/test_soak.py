"""Fault-injection soak: the collector against the simulator with random faults and random kill -9,
verified against the simulator's truth log; and a disk that fills up under the running collector.
(Compression racing a running collector is in l2_pipeline_tests/test_pipeline_soak.py.)

CI runs a short soak (`-m soak`, ~40 s). The long one: `SOAK_SECONDS=3600 pytest -m soak_long -s`.
Figures (frames, faults, records verified, wrong records, longest outage per fault, kills) are
printed as one summary line per run.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from collector_tests.harness import (
    count_records,
    hour_boundary_soon,
    lake_events,
    lake_records,
    read_jsonl,
    start_collector,
    start_simulator,
    stop_process,
    verify_lake,
    wait_for,
)
from l2_lake.format.record import parse_ts_ms

INSTS = "BTC-USDT-SWAP,ETH-USDT-SWAP,SOL-USDT-SWAP"
FAULT_RATES = ("drop=0.004,reset=0.002,heartbeat=0.01,bad_checksum=0.004,ts_micro=0.002,no_snapshot=0.3,"
               "disconnect=0.002,notice=0.001,silence=0.0008,malformed=0.006,error=0.004,rest_429=0.2,"
               "rest_slow=0.1,rest_error=0.2,rest_cut=0.15,rest_html=0.15,rest_ts_skew=300,"
               "instruments_html=0.3,instruments_cut=0.3")
# A fault the truth log names → the event it must leave in the sidecar.
FAULT_EVENT = {"drop": "gap", "bad_checksum": "checksum_mismatch", "disconnect": "reconnect", "notice": "notice",
               "silence": "stale", "malformed": "bad_frame", "error": "error", "ts_micro": "bad_frame"}
SECONDS_BEFORE_HOUR = 15
OUTAGE_MS = 1_500  # a pause in records longer than this (cadence 0.2 s) counts as an outage
MAX_UNSYNCED_MS = 15_000  # the longest record-free stretch any instrument may have, whatever the cause


def _longest_outages(data_dir: Path, marks: list[tuple[int, str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Longest record-free stretch per cause (the last fault/kill within 5 s before it began) and per
    instrument."""
    marks.sort()
    by_cause: dict[str, int] = defaultdict(int)
    by_instrument: dict[str, int] = defaultdict(int)
    for inst_id, records in lake_records(data_dir).items():
        stamps = [parse_ts_ms(r["timestamp_utc"]) for r in records]
        for before, after in itertools.pairwise(stamps):
            pause = after - before
            by_instrument[inst_id] = max(by_instrument[inst_id], pause)
            if pause <= OUTAGE_MS:
                continue
            causes = [name for ts, name in marks if before - 5_000 <= ts <= after]
            cause = causes[0] if causes else "unattributed"
            by_cause[cause] = max(by_cause[cause], pause)
    return dict(by_cause), dict(by_instrument)


def run_soak(tmp: Path, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    # The simulator's exchange clock starts just before an hour boundary (rollover under faults);
    # kills are stamped on that clock through this offset.
    _, start_at = hour_boundary_soon(SECONDS_BEFORE_HOUR)
    clock_offset_ms = parse_ts_ms(start_at) - time.time_ns() // 1_000_000
    sim = start_simulator(tmp, INSTS, "--interval-ms", "50", "--seed", str(seed), "--faults", FAULT_RATES,
                          "--silence-seconds", "3", "--notice-grace", "0.5", "--rest-lag-ticks", "2",
                          "--start-at", start_at)
    data = tmp / "lake"
    kills: list[int] = []
    start = time.monotonic()
    flags = ("--resync-timeout", "10", "--metadata-refresh-hours", "0.001")  # a metadata refresh every 3.6 s
    collector = start_collector(tmp, sim, data, INSTS, *flags)
    try:
        wait_for(lambda: count_records(data) >= 3, what="first records")
        while time.monotonic() - start < seconds:
            time.sleep(rng.uniform(2.0, 6.0))
            assert collector.poll() is None, f"the collector died (exit {collector.returncode}); see collector.stderr"
            if rng.random() < 0.35:  # kill -9 at a random moment, then restart
                stop_process(collector, signal.SIGKILL)
                kills.append(time.time_ns() // 1_000_000)
                collector = start_collector(tmp, sim, data, INSTS, *flags)
        time.sleep(2.0)
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    result = verify_lake(data, sim.truth_log)
    truth = read_jsonl(sim.truth_log)
    frames = sum(1 for line in truth if "digest" in line)
    marks = [(line["ts"], line["fault"]) for line in truth if "fault" in line]
    marks += [(k + clock_offset_ms, "kill-9") for k in kills]
    outages, per_instrument = _longest_outages(data, marks)
    print(f"\nSOAK seed={seed} seconds={seconds:.0f} states={frames} faults={dict(result.faults)} kills={len(kills)} "
          f"records_verified={result.exact}/{result.promised} flagged={result.flagged} wrong={len(result.wrong)} "
          f"longest_outage_ms={outages} longest_unsynced_ms_per_instrument={per_instrument} "
          f"events={dict(result.event_types)}")
    assert not result.wrong, result.wrong[:5]
    assert result.exact == result.promised > 0
    for fault, event in FAULT_EVENT.items():
        if result.faults[fault]:
            assert result.event_types[event], f"{fault} injected {result.faults[fault]}x but no {event} event"
    if result.faults["no_snapshot"]:
        assert any(e.get("how") == "rest" for e in lake_events(data) if e["type"] == "resync_done")
    assert max(per_instrument.values(), default=0) <= MAX_UNSYNCED_MS, per_instrument
    assert "Traceback" not in (tmp / "collector.stderr").read_text()


@pytest.mark.soak
def test_soak_short(tmp_path: Path) -> None:
    run_soak(tmp_path, seconds=float(os.environ.get("SOAK_SECONDS_SHORT", "35")), seed=int(
        os.environ.get("SOAK_SEED", "11")))


@pytest.mark.soak_long
@pytest.mark.timeout(0)
def test_soak_long(tmp_path: Path) -> None:
    run_soak(tmp_path, seconds=float(os.environ.get("SOAK_SECONDS", "1800")),
             seed=int(os.environ.get("SOAK_SEED", str(random.randrange(1 << 30)))))


@pytest.fixture
def small_disk(tmpfs) -> Path:
    return tmpfs("3m")


@pytest.mark.soak
def test_disk_full_under_running_collector(tmp_path: Path, small_disk: Path) -> None:
    sim = start_simulator(tmp_path, "BTC-USDT-SWAP,ETH-USDT-SWAP", "--interval-ms", "50")
    data = small_disk / "lake"
    collector = start_collector(tmp_path, sim, data, "BTC-USDT-SWAP,ETH-USDT-SWAP")
    filler = small_disk / "filler"
    stderr = tmp_path / "collector.stderr"
    try:
        wait_for(lambda: count_records(data) >= 4, what="first records")
        before_full = {p: p.read_bytes() for p in data.rglob("*.jsonl")}
        with open(filler, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        wait_for(lambda: "event=write_error" in stderr.read_text(), what="a clear disk-full error")
        time.sleep(1.0)
        assert collector.poll() is None, "collector must keep running on a full disk"
        for path, content in before_full.items():  # nothing already written is damaged
            assert path.read_bytes().startswith(content)
        records_while_full = count_records(data)
        filler.unlink()  # space returns
        wait_for(lambda: count_records(data) >= records_while_full + 4, what="writing to resume")
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    log = stderr.read_text()
    assert "No space left on device" in log and "event=write_recovered" in log
    result = verify_lake(data, sim.truth_log)  # no torn line, no duplicate, every record exact
    assert not result.wrong and result.exact == result.promised > 0
    lost = [e for e in lake_events(data) if e["type"] == "write_error"]
    assert lost and all(e["lost_lines"] > 0 for e in lost)

"""The full-resolution tape end to end: `l2-collector run --tape` against the simulator (real
processes on loopback) under each fault, then `l2_lake.book.tape_replay`:

- replayed at the live cadence, every record file equals the live one byte for byte;
- the replayed book after every message is, whenever the engine trusts it, the simulator's true
  book at that seqId and ts (its truth log), for every message;
- an hour that begins mid-run replays on its own into exactly the live records of that hour;
- at a finer cadence the records are exact too, and there are more of them;
- after a SIGKILL and a restart on the same lake, replay makes no record the collector did not write.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from collector_tests.harness import (
    cli,
    count_records,
    digest,
    hour_boundary_soon,
    lake_events,
    read_jsonl,
    start_collector,
    start_simulator,
    stop_process,
    verify_lake,
    wait_for,
)
from collector_tests.test_e2e import FAULTS, INSTS
from l2_lake.book.tape_replay import TapeReplayer, read_lines, replay_tape, tape_files
from l2_lake.format import layout, tape_columns
from l2_lake.store import lake_walk

pytestmark = pytest.mark.e2e
# faults injected one after another in one run (each run costs a collector and a simulator start)
TAPE_RUNS = {"none": ["none"], "drop+bad_checksum+malformed": ["drop", "bad_checksum", "malformed"],
             "no_snapshot": ["no_snapshot"], "disconnect+silence": ["disconnect", "silence"]}


def truth_books(truth_log: Path) -> dict[tuple[str, int, int], str]:
    return {(t["instId"], t["seqId"], t["ts"]): t["digest"] for t in read_jsonl(truth_log) if "fault" not in t}


def record_files(data_dir: Path) -> dict[Path, bytes]:
    return {f.path.relative_to(data_dir): f.path.read_bytes()
            for f in lake_walk.iter_hour_files(data_dir) if f.kind == "records"}


def run_with_tape(tmp_path: Path, faults: list[str]) -> tuple[Path, Path]:
    sim_flags = [flag for fault in faults for flag in FAULTS[fault][0]]
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--seed", "11", *sim_flags)
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS, "--tape")
    try:
        wait_for(lambda: count_records(data) >= 4, what="first records")
        for fault in faults:
            for _ in range(FAULTS[fault][1]):
                sim.inject(fault)
                time.sleep(1.0)
        time.sleep(6.0 if "silence" in faults else 1.5)
        wait_for(lambda: count_records(data) >= 10, what="records after faults")
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    return data, sim.truth_log


def archive_tape(data: Path, out: Path) -> Path:
    """A copy of the lake's tape with every hour in its archive form, `{HH}.parquet`, as
    `tape_columns.encode` makes it for the pipeline's archive step and the shipper."""
    for path in layout.raw_root(data, layout.TAPE_PREFIX).rglob("*.jsonl"):
        target = layout.archive_of(out / path.relative_to(data))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tape_columns.encode(path.read_bytes()))
    return out


def check_every_message(data: Path, truth_log: Path) -> tuple[int, int]:
    """(messages replayed with a trusted book, of which exact against the truth log)."""
    truth = truth_books(truth_log)
    trusted = exact = 0

    def check(sync, msg) -> None:
        nonlocal trusted, exact
        if sync.in_sync and sync.seq_id == msg.seq_id:
            trusted += 1
            exact += truth.get((sync.inst_id, msg.seq_id, msg.ts_ms)) == digest(
                list(sync.book.bids.top(400)), list(sync.book.asks.top(400)))

    class Discard:
        def record(self, *args) -> None:
            pass

        def event(self, *args, **kwargs) -> None:
            pass

    for inst_id, files in tape_files([layout.raw_root(data, layout.TAPE_PREFIX)]).items():
        replayer = TapeReplayer(inst_id, 400, Discard(), on_message=check)
        for path in files:
            for line in read_lines(path):
                replayer.feed(line)
    return trusted, exact


@pytest.mark.parametrize("fault", list(TAPE_RUNS))
def test_replay_rebuilds_every_live_record_and_every_book(tmp_path: Path, fault: str) -> None:
    data, truth_log = run_with_tape(tmp_path, TAPE_RUNS[fault])
    live = record_files(data)
    assert live and len(tape_files([layout.raw_root(data, layout.TAPE_PREFIX)])) == 2

    replayed = tmp_path / "replayed"
    stats = replay_tape([layout.raw_root(data, layout.TAPE_PREFIX)], replayed, cadence_s=None)
    assert record_files(replayed) == live, "records rebuilt at the live cadence differ from the live ones"
    assert all(s.bad_lines == 0 for s in stats.values())

    # the same from the tape's archive form (each hour as the pipeline's archive step leaves it)
    archived = archive_tape(data, tmp_path / "archived")
    from_archive = tmp_path / "from-archive"
    replay_tape([layout.raw_root(archived, layout.TAPE_PREFIX)], from_archive, cadence_s=None)
    assert record_files(from_archive) == live

    trusted, exact = check_every_message(data, truth_log)
    print(f"\n{fault}: {exact}/{trusted} messages exact after replay, "
          f"{sum(s.messages for s in stats.values())} replayed")
    assert trusted > 50 and exact == trusted

    fine = tmp_path / "fine"  # 50 ms of exchange time, against the collector's 200 ms
    replay_tape([layout.raw_root(data, layout.TAPE_PREFIX)], fine, cadence_s=0.05)
    result = verify_lake(fine, truth_log)
    assert not result.wrong and result.exact == result.promised
    assert result.promised > verify_lake(data, truth_log).promised

    # read_books serves the same finer cadence straight from the tape, at any depth
    from l2_pipeline import read_books

    for inst_id in INSTS.split(","):
        hours = sorted(f.hour for f in lake_walk.iter_hour_files(fine, inst_id))
        span = (hours[0], hours[-1] + layout.HOUR)
        from_tape = read_books(inst_id, *span, lake=data, cadence=0.05, include_flagged=True)
        assert from_tape.equals(read_books(inst_id, *span, lake=fine, include_flagged=True))
        top = read_books(inst_id, *span, lake=data, cadence=0.05, depth=10)
        assert top.num_rows and max(len(levels) for levels in top["bids"].to_pylist()) == 10


def test_an_hour_replays_on_its_own(tmp_path: Path) -> None:
    boundary, start_at = hour_boundary_soon(4)
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--start-at", start_at)
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS, "--tape")
    try:
        second = layout.tape_path(data, "BTC-USDT-SWAP", boundary)
        wait_for(second.exists, timeout=30, what="the tape of the hour after the boundary")
        live_records = layout.records_path(data, "BTC-USDT-SWAP", boundary)
        wait_for(lambda: live_records.exists() and live_records.read_bytes().count(b"\n") >= 3, timeout=30,
                 what="records of the hour after the boundary")
        assert stop_process(collector) < 5.0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    first_line = next(read_lines(second))
    assert first_line.startswith(b'{"t":"book"') and b'"state":"synced"' in first_line

    alone = tmp_path / "alone"
    out = subprocess.run(cli("replay", "--tape", str(second), "--data-dir", str(alone)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "BTC-USDT-SWAP: replayed 1 hour(s)" in out.stdout
    live_hour = live_records.read_bytes()
    assert live_hour and layout.records_path(alone, "BTC-USDT-SWAP", boundary).read_bytes() == live_hour

    archived = layout.archive_path(archive_tape(data, tmp_path / "archived"), "BTC-USDT-SWAP", boundary,
                                   layout.TAPE_PREFIX)
    alone_archived = tmp_path / "alone-archived"
    out = subprocess.run(cli("replay", "--tape", str(archived), "--data-dir", str(alone_archived)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert layout.records_path(alone_archived, "BTC-USDT-SWAP", boundary).read_bytes() == live_hour


def test_replay_tape_refuses_what_is_not_a_tape(tmp_path: Path) -> None:
    stray = tmp_path / "notes.txt"
    stray.write_text("hello\n")
    for args, message in (((str(stray),), "is not a tape hour file"),
                          ((str(tmp_path / "missing"),), "no such file or directory"),
                          ((str(tmp_path / "empty"),), "no tape hour files")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        out = subprocess.run(cli("replay", "--tape", *args, "--data-dir", str(tmp_path / "out")),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)


def test_a_crash_and_restart_leave_a_tape_that_replays_exactly(tmp_path: Path) -> None:
    """SIGKILL mid-hour, then a restart on the same lake: the torn tail is cut, the new run opens
    with its own `book` line in the same hour file, and replay yields no record the live collector
    did not write (a record whose inputs died with the process is missing, never wrong), every
    record of the second run byte for byte, and every trusted book exact."""
    sim = start_simulator(tmp_path, INSTS, "--interval-ms", "50", "--seed", "5")
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, INSTS, "--tape")
    try:
        wait_for(lambda: count_records(data) >= 20, what="records before the crash")
        stop_process(collector, signal.SIGKILL)
        before = record_files(data)
        torn = sorted(layout.raw_root(data, layout.TAPE_PREFIX).rglob("*.jsonl"))
        half_line = b'{"t":"ws","r":1796457600038,"m":{"arg":{"channel":"bo'  # what a kill mid-write leaves
        for path in torn:
            with path.open("ab") as f:
                f.write(half_line)
        collector = start_collector(tmp_path, sim, data, INSTS, "--tape")
        wait_for(lambda: count_records(data) >= sum(b.count(b"\n") for b in before.values()) + 20,
                 what="records after the restart")
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()
    live = record_files(data)
    tape_root = layout.raw_root(data, layout.TAPE_PREFIX)
    for path in tape_root.rglob("*.jsonl"):
        assert path.read_bytes().endswith(b"\n"), f"{path}: a torn line was left"
    repaired = {data / e["path"]: e["dropped_bytes"] for e in lake_events(data) if e.get("type") == "repair"}
    assert {path: len(half_line) for path in torn}.items() <= repaired.items(), "torn tape tails not cut at start"
    books = [line for path in tape_root.rglob("*.jsonl") for line in read_lines(path)
             if line.startswith(b'{"t":"book"')]
    assert len(books) >= 2 * len(INSTS.split(",")), "each run opens its tape with a book line"

    replayed = tmp_path / "replayed"
    stats = replay_tape([tape_root], replayed, cadence_s=None)
    assert all(s.bad_lines == 0 for s in stats.values())
    rebuilt = record_files(replayed)
    assert rebuilt.keys() <= live.keys()
    for name, content in live.items():
        live_lines, rebuilt_lines = content.splitlines(), rebuilt.get(name, b"").splitlines()
        assert set(rebuilt_lines) <= set(live_lines), f"{name}: replay made a record the collector did not write"
        first_run = set(before.get(name, b"").splitlines())
        missing = [line for line in live_lines if line not in set(rebuilt_lines)]
        assert all(line in first_run for line in missing), f"{name}: a record of the second run was not rebuilt"
        assert len(missing) <= 3, f"{name}: {len(missing)} records lost with the crash"
        print(f"\n{name}: {len(rebuilt_lines)} of {len(live_lines)} records rebuilt, {len(missing)} lost")
    trusted, exact = check_every_message(data, sim.truth_log)
    assert trusted > 50 and exact == trusted
    result = verify_lake(replayed, sim.truth_log)
    assert not result.wrong and result.exact == result.promised

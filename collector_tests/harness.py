"""Process harness for end-to-end tests: `l2-collector simulate` and `l2-collector run` as real
subprocesses on loopback, plus verification of a lake against the simulator's truth log."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from l2_lake.format.record import EXTENDED, parse_ts_ms, record_format, record_problems
from l2_lake.store import lake_walk

REFERENCE_DIR = Path(__file__).resolve().parent / "okx_reference"
LISTENING_RE = re.compile(r"SIMULATOR LISTENING (ws://\S+) (http://\S+)")


def reference_file(name: str) -> Path:
    """A recorded OKX file bundled with the tests (provenance in okx_reference/README.md)."""
    path = REFERENCE_DIR / name
    assert path.is_file(), f"reference file {name} not found in {REFERENCE_DIR}"
    return path


def hour_boundary_soon(seconds_before: float, hours_ago: int = 0) -> tuple[datetime, str]:
    """An hour boundary (the current hour's start, or `hours_ago` before it) and a simulator
    `--start-at` `seconds_before` it: the exchange clock crosses an hour soon, yet stays well within a
    day of the local clock (the collector refuses event times further away, as it must with real OKX)."""
    boundary = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)
    start_at = boundary - timedelta(seconds=seconds_before)
    return boundary, start_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{start_at.microsecond // 1000:03d}Z"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "collector", *args]


@dataclass
class Simulator:
    proc: subprocess.Popen
    ws_url: str
    rest_url: str
    truth_log: Path

    def inject(self, fault: str, inst_id: str | None = None) -> None:
        query = f"fault={fault}" + (f"&instId={inst_id}" if inst_id else "")
        with urllib.request.urlopen(f"{self.rest_url}/sim/inject?{query}", timeout=5) as response:
            assert response.status == 200

    def stop(self) -> None:
        stop_process(self.proc)


def start_simulator(tmp: Path, instruments: str, *extra: str) -> Simulator:
    truth = tmp / f"truth-{time.monotonic_ns()}.jsonl"
    proc = subprocess.Popen(
        cli("simulate", "--port", "0", "--instruments", instruments, "--truth-log", str(truth), *extra),
        stdout=subprocess.PIPE, stderr=open(tmp / "simulator.stderr", "ab"), text=True,  # noqa: SIM115
    )
    line = proc.stdout.readline()
    match = LISTENING_RE.search(line)
    if not match:
        proc.kill()
        raise AssertionError(f"simulator did not start: {line!r}; see {tmp / 'simulator.stderr'}")
    return Simulator(proc, match.group(1), match.group(2), truth)


def start_collector(tmp: Path, sim: Simulator, data_dir: Path, instruments: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        cli("run", "--data-dir", str(data_dir), "--instruments", instruments, "--ws-url", sim.ws_url,
            "--rest-url", sim.rest_url, "--cadence", "0.2", "--status-interval", "1", "--ping-after", "1",
            "--pong-timeout", "1", "--backoff-initial", "0.2", "--backoff-max", "1", *extra),
        stdout=subprocess.DEVNULL, stderr=open(tmp / "collector.stderr", "ab"),
    )


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5.0) -> float:
    """Signal `proc` and wait; returns seconds it took to exit (fails the test beyond `timeout`)."""
    if proc.poll() is not None:
        return 0.0
    start = time.monotonic()
    os.kill(proc.pid, sig)
    proc.wait(timeout=timeout)
    return time.monotonic() - start


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def lake_records(data_dir: Path) -> dict[str, list[dict]]:
    by_inst: dict[str, list[dict]] = defaultdict(list)
    for f in lake_walk.iter_hour_files(data_dir):
        if f.kind == "records":
            data = f.path.read_bytes()
            assert not data or data.endswith(b"\n"), f"torn last line in {f.path}"
            by_inst[f.inst_id].extend(read_jsonl(f.path))
    return by_inst


def lake_events(data_dir: Path) -> list[dict]:
    return [e for f in lake_walk.iter_hour_files(data_dir) if f.kind == "events" for e in read_jsonl(f.path)]


def count_records(data_dir: Path) -> int:
    """Complete record lines in the lake, for polling while a collector writes: a line being written
    (or a short write about to be truncated back on a full disk) is not counted. The torn-line check
    belongs to `lake_records`/`verify_lake`, run once the collector has stopped."""
    return sum(f.path.read_bytes().count(b"\n") for f in lake_walk.iter_hour_files(data_dir) if f.kind == "records")


def digest(bids: list, asks: list) -> str:
    return hashlib.sha256(orjson.dumps([bids, asks])).hexdigest()


@dataclass
class Verification:
    """Outcome of holding every record of a lake against the simulator's truth."""

    promised: int = 0  # gap_detected=false and checksum_ok not false
    exact: int = 0
    flagged: int = 0
    wrong: list[str] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)
    event_types: Counter = field(default_factory=Counter)


def load_truth(truth_log: Path, result: Verification) -> dict[tuple[str, int, int], str]:
    """(instId, seqId, ts) → digest of the true book, from the simulator's truth log; faults counted."""
    truth: dict[tuple[str, int, int], str] = {}
    for line in read_jsonl(truth_log):
        if "fault" in line:
            result.faults[line["fault"]] += 1
        else:
            truth[(line["instId"], line["seqId"], line["ts"])] = line["digest"]
    return truth


def check_record(inst_id: str, rec: dict, truth: dict[tuple[str, int, int], str], result: Verification) -> None:
    """Count one record into `result`: flagged, exact, or wrong (with why)."""
    problems = record_problems(rec)
    assert not problems, (inst_id, rec["timestamp_utc"], problems)
    assert record_format(rec) == EXTENDED, (inst_id, rec["timestamp_utc"], "the collector writes every field")
    if rec["gap_detected"] or rec["checksum_ok"] is False:
        result.flagged += 1
        return
    result.promised += 1
    expected = truth.get((inst_id, rec["seqId"], parse_ts_ms(rec["timestamp_utc"])))
    if expected == digest(rec["bids_top400"], rec["asks_top400"]):
        result.exact += 1
    else:
        result.wrong.append(f"{inst_id} seqId={rec['seqId']} ts={rec['timestamp_utc']} "
                            f"({'no truth' if expected is None else 'levels differ'})")


def verify_lake(data_dir: Path, truth_log: Path) -> Verification:
    result = Verification()
    truth = load_truth(truth_log, result)
    for inst_id, records in lake_records(data_dir).items():
        stamps = [parse_ts_ms(r["timestamp_utc"]) for r in records]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), f"{inst_id}: duplicate/unsorted ts"
        for rec in records:
            check_record(inst_id, rec, truth, result)
    result.event_types.update(e["type"] for e in lake_events(data_dir))
    return result

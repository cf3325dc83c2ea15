"""Reconciliation soak (issue: lake integrity): every record any collector wrote is in its final home
exactly once and exact, every tape line is in its hour once, and nothing is written outside the lake,
under the faults where the lake's homes meet.

Real processes on loopback: one simulator (truth log) for BTC, ETH and SOL; collectors `a` and `b`
(`--collector-id`, replicas of BTC and ETH, each shipping to its own prefix) and `c` (no id, SOL,
shipping to `lake/`), all with `--tape`, through a fault proxy in front of moto's S3 server; and the
pipeline's lake steps (`collector_tests.soak_pipeline`: sensor listing, compression of snapshots and
tape, metadata refresh, retention) over all three prefixes, in a process of its own.

The exchange clock starts ten hours back, 20 s before an hour ends, so hours close and become due
for compression within the run. Faults, at random: SIGKILL of a collector (restarted 1-3 s later) or
of the pipeline process (restarted with its clock skewed the other way, ±2 h); the store answering 500
to the next PUTs; every GET stalled 2 s for a few seconds. Planted before the start, in every prefix:
an hour six days old (retention must delete it), a foreign key under an instrument (kept, never ending
its listing) and keys with `..` (never becoming a path).

While it runs, a ledger reads every complete line the collectors write in their spools. At the end the
collectors stop (SIGTERM), each spool is drained with the faults off, and every home is read back:
records written (ledger), found, duplicated, lost (in the ledger, not found), wrong (not the ledger's
bytes, or not exact against the simulator's truth). `-m soak` runs it for SOAK_RECONCILE_SECONDS
(default 50) in CI; `-m soak_long` for SOAK_RECONCILE_LONG_SECONDS (default 1800).
"""

from __future__ import annotations

import gzip
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from collector.ship import Shipper
from collector_tests.harness import (
    Verification,
    check_record,
    count_records,
    load_truth,
    start_collector,
    start_simulator,
    stop_process,
    wait_for,
)
from collector_tests.s3_server import FaultProxy, S3Server, s3_env
from l2_lake.format import hour_content, layout
from l2_lake.store import lake_walk
from l2_lake.store.s3 import S3Store, parse_lake_url

BTC, ETH, SOL = "BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP"
# collector → (instruments, --collector-id, prefix of its home)
COLLECTORS = {"a": (f"{BTC},{ETH}", "a", "replica-a"), "b": (f"{BTC},{ETH}", "b", "replica-b"),
              "c": (SOL, "", "lake")}
OLD = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=6)
FOREIGN = f"raw/okx/l2_perps/{BTC}/0/x/2099-01-01/00.jsonl"
ESCAPING = ("meta/okx/instruments/../../../../escape-meta.json",
            f"raw/okx/l2_tape/{BTC}/2026-12-06/../../../../../../escape-tape/00.jsonl")


@dataclass
class Ledger:
    """Every complete line seen in the spools: records by (home, instId) → ts → line; tape lines by
    (home, instId, hour) → lines."""

    records: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=lambda: defaultdict(dict))
    tape: dict[tuple[str, str, str], set[bytes]] = field(default_factory=lambda: defaultdict(set))

    def read(self, spool: Path, home: str) -> None:
        for f in lake_walk.iter_hour_files(spool):
            if f.kind == "records":
                for line in _complete_lines(f.path):
                    self.records[(home, f.inst_id)][orjson.loads(line)["timestamp_utc"]] = line
        for f in lake_walk.iter_hour_files(spool, prefix=layout.TAPE_PREFIX):
            if f.kind == "records":
                self.tape[(home, f.inst_id, f.hour.isoformat())].update(_complete_lines(f.path))


def _complete_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # shipped meanwhile
        return []
    return data[:data.rfind(b"\n") + 1].splitlines()


@dataclass
class Homes:
    proxy: FaultProxy
    collectors: dict[str, subprocess.Popen] = field(default_factory=dict)
    pipeline: subprocess.Popen | None = None
    skew_hours: float = 2.0


def _plant(server: S3Server, bucket: str) -> None:
    client = server.client()
    old = f"raw/okx/l2_perps/{BTC}/{OLD:%Y-%m-%d}/{OLD:%H}.jsonl.gz"
    for _, _, prefix in COLLECTORS.values():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{old}", Body=gzip.compress(b"{}\n"))
        client.put_object(Bucket=bucket, Key=f"{prefix}/{FOREIGN}", Body=b"{}\n")
        for key in ESCAPING:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b'{"escaped": true}\n')


def _start_pipeline(tmp: Path, homes: Homes, rest_url: str, bucket: str) -> subprocess.Popen:
    homes.skew_hours = -homes.skew_hours
    urls = [f"s3://{bucket}/{prefix}" for _, _, prefix in COLLECTORS.values()]
    return subprocess.Popen([sys.executable, "-m", "collector_tests.soak_pipeline", str(homes.skew_hours), rest_url,
                             str(tmp / "pipeline-work"), *urls],
                            stdout=open(tmp / "pipeline.stdout", "ab"), stderr=subprocess.STDOUT)


def _inject(rng: random.Random, tmp: Path, homes: Homes, start_one, rest_url: str, bucket: str,
            faults: Counter) -> None:
    fault = rng.choice(["kill_collector", "kill_collector", "kill_pipeline", "store_500", "store_stall"])
    faults[fault] += 1
    if fault == "kill_collector":
        name = rng.choice(sorted(homes.collectors))
        stop_process(homes.collectors[name], signal.SIGKILL)
        time.sleep(rng.uniform(1, 3))
        homes.collectors[name] = start_one(name)
    elif fault == "kill_pipeline":
        stop_process(homes.pipeline, signal.SIGKILL)
        homes.pipeline = _start_pipeline(tmp, homes, rest_url, bucket)
    elif fault == "store_500":
        homes.proxy.fail_puts += rng.randint(1, 4)
    else:
        homes.proxy.get_delay_s = 2.0
        time.sleep(rng.uniform(2, 5))
        homes.proxy.get_delay_s = 0.0


@dataclass
class HomeFigures:
    written: int = 0
    found: int = 0
    duplicated: int = 0
    lost: int = 0
    wrong: list[str] = field(default_factory=list)
    tape_written: int = 0
    tape_found: int = 0
    tape_duplicated: int = 0
    tape_lost: int = 0


def _hour_objects(store: S3Store, prefix: Path) -> dict[tuple[str, str], list[bytes]]:
    """(instId, hour) → the content lines of every form of that hour in the store."""
    found: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for entry in store.list(prefix.as_posix() + "/"):
        hour_file = layout.parse_hour_file(Path(entry.key))
        if hour_file is None or hour_file.kind not in ("records", "archive") or \
                Path(entry.key).parent.parent.parent != prefix:
            continue
        data = hour_content.content_of(store.read(entry.key), entry.key)
        found[(hour_file.inst_id, hour_file.hour.isoformat())].extend(data.splitlines())
    return found


def reconcile(bucket: str, ledger: Ledger, truth_log: Path) -> tuple[dict[str, HomeFigures], Verification]:
    exactness = Verification()
    truth = load_truth(truth_log, exactness)
    figures: dict[str, HomeFigures] = {}
    for _, _, home in COLLECTORS.values():
        fig = figures[home] = HomeFigures()
        store = S3Store(parse_lake_url(f"s3://{bucket}/{home}"))
        by_inst: dict[str, Counter] = defaultdict(Counter)
        lines_at: dict[tuple[str, str], bytes] = {}
        for (inst_id, _), lines in _hour_objects(store, layout.RAW_PREFIX).items():
            for line in lines:
                rec = orjson.loads(line)
                if inst_id not in (BTC, ETH, SOL) or "timestamp_utc" not in rec:
                    continue
                by_inst[inst_id][rec["timestamp_utc"]] += 1
                lines_at[(inst_id, rec["timestamp_utc"])] = line
                check_record(inst_id, rec, truth, exactness)
        for counts in by_inst.values():
            fig.found += len(counts)
            fig.duplicated += sum(n - 1 for n in counts.values())
        for (ledger_home, inst_id), written in ledger.records.items():
            if ledger_home != home:
                continue
            fig.written += len(written)
            for ts, line in written.items():
                held = lines_at.get((inst_id, ts))
                if held is None:
                    fig.lost += 1
                elif held != line:
                    fig.wrong.append(f"{home} {inst_id} {ts}: the home holds other bytes than were written")
        tape = _hour_objects(store, layout.TAPE_PREFIX)
        for (ledger_home, inst_id, hour), written in ledger.tape.items():
            if ledger_home != home:
                continue
            held = Counter(tape.get((inst_id, hour), []))
            fig.tape_written += len(written)
            fig.tape_lost += sum(1 for line in written if not held[line])
        for lines in tape.values():
            held = Counter(lines)
            fig.tape_found += len(held)
            fig.tape_duplicated += sum(n - 1 for n in held.values())
    return figures, exactness


def run_reconciliation(tmp: Path, server: S3Server, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    proxy = FaultProxy(int(server.endpoint.rsplit(":", 1)[1]))
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint  # every process and store here goes through it
    bucket = server.create_bucket()
    _plant(server, bucket)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=10)
    start_at = (hour + timedelta(minutes=59, seconds=40)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sim = start_simulator(tmp, f"{BTC},{ETH},{SOL}", "--interval-ms", "100", "--seed", str(seed),
                          "--start-at", start_at, "--faults", "drop=0.002,bad_checksum=0.002")
    spools = {name: tmp / f"spool-{name}" for name in COLLECTORS}

    def start_one(name: str) -> subprocess.Popen:
        instruments, collector_id, prefix = COLLECTORS[name]
        extra = ["--lake-url", f"s3://{bucket}/{prefix}", "--tape"]
        if collector_id:
            extra += ["--collector-id", collector_id]
        return start_collector(tmp, sim, spools[name], instruments, *extra)

    homes = Homes(proxy)
    ledger = Ledger()
    stop_ledger = threading.Event()

    def keep_ledger() -> None:
        while not stop_ledger.is_set():
            for name, spool in spools.items():
                ledger.read(spool, COLLECTORS[name][2])
            time.sleep(0.25)

    faults: Counter = Counter()
    ledger_thread = threading.Thread(target=keep_ledger, daemon=True)
    try:
        homes.collectors = {name: start_one(name) for name in COLLECTORS}
        homes.pipeline = _start_pipeline(tmp, homes, sim.rest_url, bucket)
        ledger_thread.start()
        wait_for(lambda: all(count_records(s) >= 5 for s in spools.values()), timeout=30, what="three collecting")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(3, 7))
            _inject(rng, tmp, homes, start_one, sim.rest_url, bucket, faults)
        for name, proc in homes.collectors.items():
            assert proc.poll() is None, f"collector {name} died; see collector.stderr"
        stop_process(homes.pipeline, signal.SIGKILL)
        proxy.fail_puts, proxy.get_delay_s = 0, 0.0
        for proc in homes.collectors.values():
            stop_process(proc, timeout=10)
    finally:
        stop_ledger.set()
        for proc in [*homes.collectors.values(), homes.pipeline]:
            if proc is not None:
                stop_process(proc, signal.SIGKILL)
        sim.stop()
    ledger_thread.join(timeout=5)
    for name, spool in spools.items():
        ledger.read(spool, COLLECTORS[name][2])
    drain_at = int((datetime.now(UTC) + timedelta(hours=3)).timestamp() * 1000)  # every hour closed
    for name, spool in spools.items():
        _, collector_id, prefix = COLLECTORS[name]
        shipper = Shipper(spool, f"s3://{bucket}/{prefix}", collector_id=collector_id)
        shipper.ship_once(drain_at)
        assert shipper.backlog.pending_files == 0 and not shipper.backlog.stuck, (name, shipper.backlog)

    figures, exactness = reconcile(bucket, ledger, sim.truth_log)
    escaped = [*tmp.parent.rglob("escape*"), *Path.cwd().glob("escape*")]
    keys = {e.key for e in S3Store(parse_lake_url(f"s3://{bucket}")).list("")}
    proxy.close()
    pipeline_log = (tmp / "pipeline.stdout").read_text()
    steps = {k: sum(int(n) for n in re.findall(rf"'{k}': (\d+)", pipeline_log))
             for k in ("archived", "deleted", "failed")}
    totals = {k: sum(getattr(f, k) for f in figures.values()) for k in
              ("written", "found", "duplicated", "lost", "tape_written", "tape_found", "tape_duplicated", "tape_lost")}
    wrong = [w for f in figures.values() for w in f.wrong] + exactness.wrong
    print(f"\nRECONCILIATION seed={seed} seconds={seconds:.0f} faults={dict(faults)} "
          f"simulator_faults={dict(exactness.faults)} {totals} wrong={len(wrong)} "
          f"exact={exactness.exact} flagged={exactness.flagged} pipeline_passes={pipeline_log.count('pass ')} "
          f"pipeline_steps={steps} clock_skew_reports={pipeline_log.count('ahead of the newest data')}")
    assert totals["written"] > 0 and totals["tape_written"] > 0
    assert totals["lost"] == 0 and totals["duplicated"] == 0 and not wrong, (totals, wrong[:5])
    assert totals["tape_lost"] == 0 and totals["tape_duplicated"] == 0, totals
    assert exactness.exact == exactness.promised > 0
    assert not escaped, escaped
    for _, _, prefix in COLLECTORS.values():
        assert f"{prefix}/{FOREIGN}" in keys, "a foreign key is skipped, never deleted"
        assert not any(k.startswith(f"{prefix}/raw/okx/l2_perps/{BTC}/{OLD:%Y-%m-%d}/") for k in keys), \
            "retention deleted the six-day-old hour"
    assert "Traceback" not in (tmp / "collector.stderr").read_text()


@pytest.mark.soak
def test_reconciliation_soak_short(tmp_path: Path, s3_server_fn: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch, s3_server_fn.endpoint)
    run_reconciliation(tmp_path, s3_server_fn, float(os.environ.get("SOAK_RECONCILE_SECONDS", "50")),
                       int(os.environ.get("SOAK_SEED", "23")))


@pytest.mark.soak_long
@pytest.mark.timeout(0)
def test_reconciliation_soak_long(tmp_path: Path, s3_server_fn: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch, s3_server_fn.endpoint)
    run_reconciliation(tmp_path, s3_server_fn, float(os.environ.get("SOAK_RECONCILE_LONG_SECONDS", "1800")),
                       int(os.environ.get("SOAK_SEED", str(random.randrange(1 << 30)))))

"""Time from hour close to verified remote object (p50, p99, max) for the collector's shipper, when every
instrument's hour closes at the same moment (what happens at each UTC hour boundary), next to the local
archive step on the same hours.

Each repeat plants N closed instrument-hours (realistic hour files: 1,800 records of 400 levels a side,
i.e. a 2 s cadence, built from `bench.ship.make_source`, so they gzip about 4x like a real book) in a
fresh spool, then:
- ship: one real `collector.ship.Shipper` pass (`ship_once(now_ms)`, what the collector's supervised
  `Shipper.run` does every `--status-interval`, there in a daemon thread) with `now_ms` = hour end +
  grace, i.e. the pass starts at the very moment the hours become shippable, against moto's S3
  server running as its own process on 127.0.0.1 (`collector_tests.s3_server`). The moment each
  object is verified comes from the shipper's own `shipped` log records (`LogRecord.created`; the
  event is logged right after the object was read back and compared, and the spool copy removed);
- local: `l2_lake.tiers.archive.archive_hour` on hard links of the same hour files in another lake
  directory, one hour after another (compress, fsync, decompress and compare, rename, unlink); an
  hour's "latency" there is its completion time from the start of the serial run.
The two phases alternate in order from repeat to repeat. Latencies are pooled over the repeats.

"From hour end" adds the grace period (2 min) to the shipper's figures; in the collector a pass
starts every `--status-interval` (default 30 s) after the previous one ended, so the first pass that
may take an hour starts 0 to one interval after it became shippable: both bounds are shown.
Also reported: the gap between successive objects (the per-hour service time), the pass's
concurrency (sum of the per-hour times the `shipped` events state over the pass's wall time: 1.0 is
one instrument-hour at a time), and the CPU seconds of this process, of the moto server and of every
other process on the machine during each phase (the cores are shared; outside load inflates both
phases' times alike, as they alternate, but shows up here).
The server is moto (Python, in memory), so absolute times say more about it and this machine than
about a real store; the ratio to the local step in the same run is what this is for.
Usage: `python -m bench.ship_latency [--instruments 8] [--repeat 2] [--records 1800] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.process import CLK_TCK, instrument_ids, machine_ticks, percentile, proc_cpu_s
from bench.ship import GZIP_RATIO, make_source, record_line
from collector.ship import GRACE, Shipper
from collector_tests.s3_server import S3Server, start_s3_server
from l2_lake.format import layout
from l2_lake.tiers.archive import archive_hour

HOUR = datetime(2026, 11, 20, 10, tzinfo=UTC)  # make_source's lines are stamped 2026-11-20T10:MM:SS
RECORDS = 1_800  # one hour at the default 2 s cadence
STATUS_INTERVAL_S = 30.0  # the collector's default --status-interval: a pass starts this long after the last
_TOOK = re.compile(r" in ([0-9.]+) s$")


# -- the hour files ------------------------------------------------------------------------------------------


def hour_body(records: int, seed: int) -> bytes:
    """`records` lines of `bench.ship.make_source` (400-level books that gzip ~4x), seeded per instrument."""
    line = len(record_line(random.Random(seed), "2026-11-20T10:00:00.000Z"))
    data = make_source(records * line * 1.1 / (GZIP_RATIO * 1e6), seed)
    cut = 0
    for _ in range(records):
        cut = data.index(b"\n", cut) + 1  # ValueError if make_source made too few lines
    return data[:cut]


def plant_pristine(root: Path, inst_ids: list[str], records: int) -> int:
    """Write one closed hour per instrument under `root` (a lake layout); returns the bytes of one file."""
    size = 0
    for n, inst_id in enumerate(inst_ids):
        path = layout.records_path(root, inst_id, HOUR)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = hour_body(records, seed=n + 1)
        path.write_bytes(body)
        size = len(body)
    return size


def link_hours(pristine: Path, target: Path, inst_ids: list[str]) -> None:
    """Hard links of the pristine hours in `target` (the shipper and archive_hour only unlink them)."""
    for inst_id in inst_ids:
        dest = layout.records_path(target, inst_id, HOUR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(layout.records_path(pristine, inst_id, HOUR), dest)


# -- one ship pass ---------------------------------------------------------------------------------------------


class ShipEvents(logging.Handler):
    """Collects the shipper's `shipped` records (wall time, instId, per-hour seconds) and any warning."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.shipped: list[tuple[float, str, float | None]] = []
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == "shipped":
            took = _TOOK.search(record.getMessage())
            self.shipped.append((record.created, getattr(record, "instId", "?"),
                                 float(took.group(1)) if took else None))
        elif record.levelno >= logging.WARNING:
            self.problems.append(f"{event}: {record.getMessage()}")


@dataclass
class ShipPass:
    latencies: list[float]  # per instrument-hour: pass start (= shippable) -> object verified, in order
    pass_s: float  # the whole ship_once call
    unit_s: list[float]  # per-hour times as the `shipped` events state them (0.1 s resolution)
    cpu_self_s: float
    cpu_moto_s: float
    cpu_other_s: float
    object_bytes: int


def ship_pass(server: S3Server, bucket: str, spool: Path, prefix: str, n: int) -> ShipPass:
    """One `Shipper.ship_once` at hour end + grace over a spool holding `n` closed hours."""
    shippable_ms = int((HOUR + layout.HOUR + GRACE).timestamp() * 1000)
    shipper = Shipper(spool, f"s3://{bucket}/{prefix}")
    shipper.store().stat("warm-up")  # the collector makes its client at start and keeps its connections
    events = ShipEvents()
    logger = logging.getLogger("collector.ship")
    logger.addHandler(events)
    level = logger.level
    logger.setLevel(logging.INFO)
    assert server.proc is not None
    try:
        cpu_self, cpu_moto, busy = proc_cpu_s(os.getpid()), proc_cpu_s(server.proc.pid), machine_ticks()[0]
        start = time.time()
        shipper.ship_once(shippable_ms)
        end = time.time()
        cpu_self, cpu_moto = proc_cpu_s(os.getpid()) - cpu_self, proc_cpu_s(server.proc.pid) - cpu_moto
        cpu_other = (machine_ticks()[0] - busy) / CLK_TCK - cpu_self - cpu_moto
    finally:
        logger.removeHandler(events)
        logger.setLevel(level)
    if events.problems or len(events.shipped) != n or shipper.backlog.shipped_files != n:
        raise AssertionError(f"the pass shipped {len(events.shipped)} of {n} hours: {events.problems}")
    left = list(spool.rglob("*.jsonl*"))
    assert not left, f"spool copies left after the pass: {left[:3]}"
    return ShipPass([t - start for t, _, _ in events.shipped], end - start,
                    [s for _, _, s in events.shipped if s is not None], cpu_self, cpu_moto,
                    max(0.0, cpu_other), shipper.backlog.shipped_bytes)


def drop_objects(server: S3Server, bucket: str, prefix: str, expect: int) -> None:
    """Check the pass left `expect` hour objects under `prefix`, then delete them (moto keeps them in RAM)."""
    client = server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    hours = [k for k in keys if k.endswith(layout.ARCHIVE_SUFFIX)]
    assert len(hours) == expect, f"{len(hours)} hour objects under {prefix}, expected {expect}"
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


# -- the local archive step ------------------------------------------------------------------------------------


@dataclass
class LocalRun:
    completions: list[float]  # per hour: start of the serial run -> that hour archived
    per_hour: list[float]
    cpu_self_s: float
    cpu_other_s: float


def local_run(lake: Path, inst_ids: list[str]) -> LocalRun:
    """`archive_hour` on every hour in `lake`, serially."""
    later = HOUR + timedelta(hours=3)
    completions, per_hour = [], []
    cpu, busy = proc_cpu_s(os.getpid()), machine_ticks()[0]
    start = time.perf_counter()
    for inst_id in inst_ids:
        began = time.perf_counter()
        result = archive_hour(lake, inst_id, HOUR, later)
        done = time.perf_counter()
        assert result.status == "archived", f"{inst_id}: archive_hour said {result.status}"
        per_hour.append(done - began)
        completions.append(done - start)
    cpu = proc_cpu_s(os.getpid()) - cpu
    return LocalRun(completions, per_hour, cpu, max(0.0, (machine_ticks()[0] - busy) / CLK_TCK - cpu))


# -- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Result:
    instruments: int
    repeat: int
    records: int
    jsonl_mb: float
    gzip_mb: float
    grace_s: float
    status_interval_s: float
    ship_latency_s: list[float] = field(default_factory=list)
    ship_pass_s: list[float] = field(default_factory=list)
    ship_gap_s: list[float] = field(default_factory=list)
    ship_unit_s: list[float] = field(default_factory=list)
    ship_cpu_self_s: list[float] = field(default_factory=list)
    ship_cpu_moto_s: list[float] = field(default_factory=list)
    ship_cpu_other_s: list[float] = field(default_factory=list)
    local_completion_s: list[float] = field(default_factory=list)
    local_per_hour_s: list[float] = field(default_factory=list)
    local_cpu_self_s: list[float] = field(default_factory=list)
    local_cpu_other_s: list[float] = field(default_factory=list)


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.50), "p99": percentile(values, 0.99), "max": max(values)}


def run(n: int, repeat: int, records: int, status_interval_s: float, root: Path) -> Result:
    inst_ids = instrument_ids(n)
    pristine = root / "pristine"
    size = plant_pristine(pristine, inst_ids, records)
    server = start_s3_server(root)
    try:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            os.environ.pop(name, None)
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint,
                           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        bucket = server.create_bucket()
        result: Result | None = None
        for r in range(repeat):
            spool, lake, prefix = root / f"spool{r}", root / f"lake{r}", f"run{r}"
            link_hours(pristine, spool, inst_ids)
            link_hours(pristine, lake, inst_ids)
            ship: ShipPass | None = None
            local: LocalRun | None = None
            for phase in (("ship", "local") if r % 2 == 0 else ("local", "ship")):
                if phase == "ship":
                    ship = ship_pass(server, bucket, spool, prefix, n)
                else:
                    local = local_run(lake, inst_ids)
            assert ship is not None and local is not None
            drop_objects(server, bucket, prefix, n)
            shutil.rmtree(spool)
            shutil.rmtree(lake)
            if result is None:
                result = Result(n, repeat, records, size / 1e6, ship.object_bytes / n / 1e6, GRACE.total_seconds(),
                                status_interval_s)
            result.ship_latency_s += ship.latencies
            result.ship_pass_s.append(ship.pass_s)
            result.ship_gap_s += [b - a for a, b in zip(ship.latencies, ship.latencies[1:], strict=False)]
            result.ship_unit_s += ship.unit_s
            result.ship_cpu_self_s.append(ship.cpu_self_s)
            result.ship_cpu_moto_s.append(ship.cpu_moto_s)
            result.ship_cpu_other_s.append(ship.cpu_other_s)
            result.local_completion_s += local.completions
            result.local_per_hour_s += local.per_hour
            result.local_cpu_self_s.append(local.cpu_self_s)
            result.local_cpu_other_s.append(local.cpu_other_s)
    finally:
        server.kill()
    assert result is not None
    return result


def summary(res: Result) -> dict[str, Any]:
    ship, local = stats(res.ship_latency_s), stats(res.local_completion_s)
    concurrency = sum(res.ship_unit_s) / sum(res.ship_pass_s) if res.ship_unit_s else float("nan")
    return {
        "ship_from_shippable_s": ship,
        "ship_from_hour_end_s": {k: v + res.grace_s for k, v in ship.items()},
        "ship_from_hour_end_worst_phase_s": {k: v + res.grace_s + res.status_interval_s for k, v in ship.items()},
        "local_serial_completion_s": local,
        "ratio_ship_to_local": {k: ship[k] / local[k] for k in ship},
        "ship_first_object_s": percentile(res.ship_latency_s[::res.instruments], 0.5),
        "ship_gap_median_s": statistics.median(res.ship_gap_s) if res.ship_gap_s else float("nan"),
        "local_per_hour_median_s": statistics.median(res.local_per_hour_s),
        "ship_pass_s": statistics.median(res.ship_pass_s),
        "ship_concurrency": concurrency,
        "ship_cpu_self_s": statistics.median(res.ship_cpu_self_s),
        "ship_cpu_moto_s": statistics.median(res.ship_cpu_moto_s),
        "local_cpu_self_s": statistics.median(res.local_cpu_self_s),
        "ship_cpu_other_s": statistics.median(res.ship_cpu_other_s),
        "local_cpu_other_s": statistics.median(res.local_cpu_other_s),
        "local_serial_total_s": statistics.median(res.local_completion_s[res.instruments - 1::res.instruments]),
    }


def print_report(res: Result, s: dict[str, Any]) -> None:
    print(f"{res.instruments} instrument-hours closing together x {res.repeat} repeats; each hour {res.records} "
          f"records (400 levels a side), {res.jsonl_mb:.1f} MB JSONL -> {res.gzip_mb:.1f} MB gzip object; "
          f"store: moto server process on 127.0.0.1; grace {res.grace_s:.0f} s, pass every "
          f"{res.status_interval_s:g} s; {os.cpu_count()} cores")
    print(f"{'per instrument-hour latency (s)':58} {'p50':>8} {'p99':>8} {'max':>8}")
    rows = [
        ("ship: shippable (hour end + grace) -> object verified", s["ship_from_shippable_s"]),
        ("ship: hour end -> verified, pass starts at end + grace", s["ship_from_hour_end_s"]),
        (f"ship: hour end -> verified, pass {res.status_interval_s:g} s later (worst)",
         s["ship_from_hour_end_worst_phase_s"]),
        ("local archive_hour, serially: start -> hour archived", s["local_serial_completion_s"]),
    ]
    for label, row in rows:
        print(f"{label:58} {row['p50']:>8.2f} {row['p99']:>8.2f} {row['max']:>8.2f}")
    ratio = s["ratio_ship_to_local"]
    print(f"{'ship (from shippable) / local':58} {ratio['p50']:>7.2f}x {ratio['p99']:>7.2f}x {ratio['max']:>7.2f}x")
    serial = "one instrument-hour at a time (serial)" if s["ship_concurrency"] < 1.3 else "overlapping hours"
    print(f"ship pass: {s['ship_pass_s']:.2f} s for {res.instruments} hours; first object after "
          f"{s['ship_first_object_s']:.2f} s, then one every {s['ship_gap_median_s']:.2f} s (median gap); "
          f"concurrency {s['ship_concurrency']:.2f} -> {serial}; archive_hour per hour "
          f"{s['local_per_hour_median_s']:.2f} s (median)")
    print(f"CPU s during the ship pass: this process {s['ship_cpu_self_s']:.1f}, moto server "
          f"{s['ship_cpu_moto_s']:.1f}, other processes {s['ship_cpu_other_s']:.1f} (of {s['ship_pass_s']:.1f} s "
          f"wall); local run: this process {s['local_cpu_self_s']:.1f}, other processes "
          f"{s['local_cpu_other_s']:.1f} (of {s['local_serial_total_s']:.1f} s wall); medians over repeats")
    print(f"summary: with {res.instruments} hours closing at once, p99 time from hour end + grace to verified "
          f"object = {s['ship_from_shippable_s']['p99']:.1f} s = {ratio['p99']:.2f}x the time to gzip+verify "
          f"the same hours locally ({s['local_serial_completion_s']['p99']:.1f} s); p50 "
          f"{s['ship_from_shippable_s']['p50']:.1f} s ({ratio['p50']:.2f}x); from the hour end itself p99 "
          f"{s['ship_from_hour_end_s']['p99']:.0f}-{s['ship_from_hour_end_worst_phase_s']['p99']:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=8, help="instrument-hours closing together (default 8)")
    parser.add_argument("--repeat", type=int, default=2, help="repeats, latencies pooled (default 2)")
    parser.add_argument("--records", type=int, default=RECORDS, help=f"records per hour file (default {RECORDS})")
    parser.add_argument("--status-interval", type=float, default=STATUS_INTERVAL_S,
                        help=f"the collector's pass interval, for the worst-case row (default {STATUS_INTERVAL_S:g})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ship-latency-") as tmp:
        res = run(args.instruments, args.repeat, args.records, args.status_interval, Path(tmp))
    s = summary(res)
    if args.json:
        print(json.dumps({"summary": s, "samples": asdict(res)}, indent=2))
    else:
        print_report(res, s)


if __name__ == "__main__":
    main()

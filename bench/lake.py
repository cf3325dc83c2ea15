"""Time a sensor tick and a compression tick on a generated lake.

    python -m bench.lake                      # 5 days × 2 and × 20 instruments
    python -m bench.lake --instruments 2 --days 1 --depth 400

The lake is written under a temporary directory (removed afterwards unless --keep): `days` × 24
closed hours per instrument ending with the last closed hour before now, one record every 2 s
(1800 per hour), `depth` levels per side, built with `collector.record.build_record`. Reported:

- sensor, cold: the first tick on the untouched lake (stops at sensor_max_hours_per_tick /
  sensor_tick_budget_seconds) and the ticks until everything is registered;
- sensor, steady: a tick with nothing new, and a tick after one more closed hour per instrument;
- compression: the schedule's evaluation at the current hour's :15 and the `compress_job` runs it
  launches, one per partition range (the catch-up of every hour ≥ 6 h old), then the next hour's tick.
"""

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from dagster import DagsterInstance, build_schedule_context, build_sensor_context

from collector import layout
from collector.record import build_record, encode_line, format_ts_ms
from l2_pipeline.definitions import build_definitions
from l2_pipeline.resources import LakeResource
from l2_pipeline.schedules import compression_schedule
from l2_pipeline.sensors import raw_hours_sensor

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
KNOWN = ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "XRP-USDT-SWAP", "DOGE-USDT-SWAP"]


def instrument_ids(n: int) -> list[str]:
    return (KNOWN + [f"BENCH{i}-USDT-SWAP" for i in range(n)])[:n]


def _templates(inst_id: str, depth: int, variants: int = 16) -> list[dict[str, Any]]:
    out = []
    for v in range(variants):
        mid = 970_000 + v
        bids = [[f"{(mid - 1 - i) / 10:.1f}", f"0.{(i + v) % 9 + 1}", "0", str(1 + i % 4)] for i in range(depth)]
        asks = [[f"{(mid + 1 + i) / 10:.1f}", f"0.{(i + 2 * v) % 9 + 1}", "0", str(1 + i % 3)] for i in range(depth)]
        out.append(build_record(inst_id=inst_id, ts_ms=0, recv_ms=0, bids=bids, asks=asks, checksum=0, seq_id=0,
                                prev_seq_id=0, gap_detected=False, checksum_ok=True))
    return out


def write_hour(data_dir: Path, inst_id: str, hour: datetime, templates: list[dict], per_hour: int) -> int:
    start = int(hour.timestamp() * 1000)
    step = 3_600_000 // per_hour
    lines = []
    for i in range(per_hour):
        ts = start + 1000 + i * step
        rec = dict(templates[i % len(templates)])
        rec["timestamp_utc"] = format_ts_ms(ts)
        rec["recv_ts_utc"] = format_ts_ms(ts + 12)
        rec["seqId"], rec["prevSeqId"] = 10_000 + i, 9_999 + i
        lines.append(encode_line(rec))
    path = layout.records_path(data_dir, inst_id, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(lines)
    path.write_bytes(data)
    return len(data)


@dataclass
class Timing:
    label: str
    seconds: float
    detail: str

    def __str__(self) -> str:
        return f"  {self.label:<44} {self.seconds:8.2f} s   {self.detail}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def bench(n_instruments: int, days: int, depth: int, per_hour: int, root: Path) -> list[Timing]:
    data_dir = root / f"lake-{n_instruments}"
    insts = instrument_ids(n_instruments)
    now = datetime.now(UTC)
    last_closed = layout.hour_floor(int((now - timedelta(minutes=3)).timestamp() * 1000)) - layout.HOUR
    hours = [last_closed - timedelta(hours=h) for h in range(days * 24)][::-1]
    withheld = hours.pop()  # written later: "one new closed hour" for the steady-state tick
    out: list[Timing] = []

    def generate() -> int:
        total = 0
        for inst in insts:
            templates = _templates(inst, depth)
            total += sum(write_hour(data_dir, inst, h, templates, per_hour) for h in hours)
        return total

    size, secs = timed(generate)
    out.append(Timing("generate lake", secs, f"{len(insts)} instr × {len(hours)} h, {size / 1e9:.2f} GB"))

    lake = LakeResource(data_dir=str(data_dir), instruments=insts, curate_on_register=False)
    compress_job = build_definitions(lake).resolve_job_def("compress_job")

    def compress(requests: list) -> int:
        for request in requests:
            result = compress_job.execute_in_process(run_config=QUIET, instance=instance, tags=request.tags)
            assert result.success
        return sum(int(request.tags["l2/hours"]) for request in requests)

    # persistent (a schedule context needs one), in a temporary directory
    home = root / f"dagster-{n_instruments}"
    home.mkdir(exist_ok=True)
    with DagsterInstance.local_temp(str(home)) as instance:
        instance.add_dynamic_partitions("instrument", insts)

        def tick(cursor: str | None) -> Any:
            return raw_hours_sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake}))

        result, secs = timed(lambda: tick(None))
        n = sum(1 for e in result.asset_events if type(e).__name__ == "AssetMaterialization")
        out.append(Timing("sensor tick, cold (first tick)", secs, f"{n} hours registered ({n / secs:.0f} h/s)"))
        cursor, ticks, total_secs, total = result.cursor, 1, secs, n
        while total < len(insts) * len(hours):
            result, secs = timed(lambda c=cursor: tick(c))
            registered = sum(1 for e in result.asset_events if type(e).__name__ == "AssetMaterialization")
            if not registered:
                break
            cursor, ticks, total_secs, total = result.cursor, ticks + 1, total_secs + secs, total + registered
        out.append(Timing("sensor catch-up, all ticks", total_secs, f"{total} hours in {ticks} tick(s)"))
        result, secs = timed(lambda: tick(cursor))
        out.append(Timing("sensor tick, steady (nothing new)", secs, f"{len(result.asset_events)} events"))
        for inst in insts:
            write_hour(data_dir, inst, withheld, _templates(inst, depth), per_hour)
        result, secs = timed(lambda: tick(cursor))
        n = sum(1 for e in result.asset_events if type(e).__name__ == "AssetMaterialization")
        out.append(Timing("sensor tick, steady (1 new hour/instrument)", secs, f"{n} hours registered"))

        at = layout.hour_floor(int(now.timestamp() * 1000)).replace(minute=15)
        for label, tick_at in (("compression tick", at), ("compression tick, next hour", at + layout.HOUR)):
            with build_schedule_context(instance=instance, scheduled_execution_time=tick_at,
                                        resources={"lake": lake}) as ctx:
                requests, secs = timed(lambda c=ctx: compression_schedule(c))
            requests = requests if isinstance(requests, list) else []
            due = sum(int(request.tags["l2/hours"]) for request in requests)
            out.append(Timing(f"{label}: evaluation", secs, f"{due} hours due, {len(requests)} run(s)"))
            if requests:
                due, secs = timed(lambda r=requests: compress(r))
                out.append(Timing(f"{label}: compress_job runs", secs,
                                  f"{due} hours archived in {len(requests)} run(s) ({due / secs:.1f} h/s)"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", default="2,20", help="comma-separated instrument counts (default 2,20)")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10, help="levels per side (collector default 400)")
    parser.add_argument("--records-per-hour", type=int, default=1800)
    parser.add_argument("--keep", type=Path, help="write the lakes here and keep them")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="l2-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"lake: {args.days} days, depth {args.depth}, {args.records_per_hour} records/hour, under {root}")
    try:
        for n in (int(x) for x in args.instruments.split(",")):
            print(f"\n{n} instruments:")
            for timing in bench(n, args.days, args.depth, args.records_per_hour, root):
                print(timing, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n" + orjson.dumps({"depth": args.depth, "days": args.days}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

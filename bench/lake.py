"""Time the first registration of a lake and a compression tick, through the daemons' code paths.

    python -m bench.lake                      # 5 days × 2 and × 20 instruments
    python -m bench.lake --instruments 2 --days 1 --depth 400

The lake is written under a temporary directory (removed afterwards unless --keep): `days` × 24
closed hours per instrument ending with the last closed hour before now, one record every 2 s
(1800 per hour), `depth` levels per side, built with `l2_lake.format.record.build_record`. The Dagster
instance is a persistent SQLite one in the same directory. Reported:

- sensor ticks, end to end: the sensor daemon's own iteration (`execute_sensor_iteration`: the code
  location in a code server, the tick and its backfill stored), cold and until everything is
  requested, then a tick with nothing new and one after one more closed hour per instrument;
- the backfill daemon's first iteration over the registration backfill (`execute_backfill_iteration`,
  runs recorded by a mocked launcher) and how many runs it makes;
- the registration work itself: the `raw_hour_job` runs of those batches executed in this process
  (figures + six checks per hour, every event stored), as hours per second;
- compression: the schedule's evaluation at the current hour's :15 and the `compress_job` runs it
  launches, one per partition range (the catch-up of every hour ≥ 6 h old), then the next hour's tick;
- Dagster's own cost per instrument-hour: the events and bytes (serialized, as stored) its event log
  holds for the `raw_hour` runs, and for `curate_job` runs (curated Parquet + features) of the same
  hours with the hour figures on and off (`LakeResource.hour_figures`).
"""

import argparse
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from dagster import PartitionKeyRange, build_schedule_context, instance_for_test
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.sensor import execute_sensor_iteration

from bench.hour_cost import capture_cpu_per_instrument_hour, report, step_costs
from bench.synthetic_hours import instrument_records, write_hour
from bench.timing import Timing, timed
from l2_lake.format import layout
from l2_pipeline.definitions import build_definitions
from l2_pipeline.keys import RAW_HOUR
from l2_pipeline.resources import LakeResource

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
KNOWN = ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "XRP-USDT-SWAP", "DOGE-USDT-SWAP"]


def instrument_ids(n: int) -> list[str]:
    return (KNOWN + [f"BENCH{i}-USDT-SWAP" for i in range(n)])[:n]


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
            templates = instrument_records(inst, depth)
            total += sum(write_hour(data_dir, inst, h, templates, per_hour) for h in hours)
        return total

    size, secs = timed(generate)
    out.append(Timing("generate lake", secs, f"{len(insts)} instr × {len(hours)} h, {size / 1e9:.2f} GB"))

    lake = LakeResource(data_dir=str(data_dir), instruments=insts, curate_on_register=False)
    defs = build_definitions(lake)
    compression_schedule = defs.get_schedule_def("compression_schedule")

    run_ids: dict[str, list[str]] = {}  # job (and variant) → the runs executed in process
    run_cpu: dict[str, float] = {}  # job (and variant) → CPU seconds of its runs, Dagster's own work included

    def execute(job_name: str, requests: list, job_defs: Any = None, label: str = "") -> int:
        job = (job_defs or defs).resolve_job_def(job_name)
        for tags in requests:
            started = time.process_time()
            result = job.execute_in_process(run_config=QUIET, instance=instance, tags=tags)
            run_cpu[label or job_name] = run_cpu.get(label or job_name, 0.0) + time.process_time() - started
            assert result.success
            run_ids.setdefault(label or job_name, []).append(result.run_id)
        hours = (int(tags.get("l2/hours") or tags.get("l2/backfill_hours") or 0) for tags in requests)
        return sum(hours) or len(requests)

    home = root / f"dagster-{n_instruments}"
    home.mkdir(exist_ok=True)
    os.environ.update({"L2_DATA_DIR": str(data_dir), "L2_INSTRUMENTS": ",".join(insts),
                       "L2_CURATE_ON_REGISTER": "false"})  # read by the code server the daemon starts
    target = ModuleTarget(module_name="l2_pipeline.definitions", attribute="defs",
                          working_directory=str(Path(__file__).resolve().parents[1]), location_name="l2_pipeline")
    launcher = {"run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}}
    log = logging.getLogger("bench")
    with instance_for_test(temp_dir=str(home), overrides=launcher) as instance, \
            create_test_daemon_workspace_context(target, instance) as workspace:
        clock = [now]

        def tick() -> int:
            """One sensor daemon iteration; the number of hours its backfill requests."""
            clock[0] += timedelta(minutes=2)  # past the sensor's minimum interval
            before = {b.backfill_id for b in instance.get_backfills()}
            with freeze_time(clock[0]):
                list(execute_sensor_iteration(workspace, log, None, None))
            new = [b for b in instance.get_backfills() if b.backfill_id not in before]
            return sum(b.asset_backfill_data.target_subset.num_partitions_and_non_partitioned_assets for b in new)

        n, secs = timed(tick)
        out.append(Timing("sensor tick, cold (first tick), end to end", secs, f"{n} partitions requested"))
        ticks, total_secs, total = 1, secs, n
        while True:
            n, secs = timed(tick)
            if not n:
                break
            ticks, total_secs, total = ticks + 1, total_secs + secs, total + n
        out.append(Timing("sensor catch-up, all ticks", total_secs, f"{total} partitions in {ticks} tick(s)"))
        n, secs = timed(tick)
        out.append(Timing("sensor tick, steady (nothing new)", secs, f"{n} partitions"))

        _, secs = timed(lambda: list(execute_backfill_iteration(workspace, log)))
        runs = instance.get_runs()
        out.append(Timing("backfill daemon, first iteration", secs, f"{len(runs)} run(s) submitted"))
        batches = [{t: run.tags[t] for t in (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG)}
                   for run in runs if run.asset_selection == {RAW_HOUR}]
        sample = batches[:2]
        hours, secs = timed(lambda: execute("raw_hour_job", sample))
        partitions = defs.resolve_asset_graph().get(RAW_HOUR).partitions_def
        hours = sum(len(partitions.get_partition_keys_in_range(PartitionKeyRange(
            tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]))) for tags in sample)
        out.append(Timing("raw_hour runs (figures + 6 checks), in process", secs,
                          f"{hours} hours in {len(sample)} run(s) ({hours / secs:.1f} h/s, "
                          f"{run_cpu['raw_hour_job'] / hours:.2f} s CPU per hour with Dagster's own work); "
                          f"the catch-up is {len(batches)} such runs"))

        out += event_log_cost(instance, run_ids["raw_hour_job"], hours, "raw_hour runs (figures + 6 checks)")
        for figures in (True, False):
            label = f"curate_job runs, hour figures {'on' if figures else 'off'}"
            variant = build_definitions(LakeResource(data_dir=str(data_dir), instruments=insts,
                                                     curate_on_register=False, hour_figures=figures))
            _, secs = timed(lambda v=variant, lb=label: execute("curate_job", sample, v, lb))
            out.append(Timing(label, secs, f"{hours} hours ({hours / secs:.1f} h/s, {run_cpu[label] / hours:.2f} s "
                                           "CPU per hour with Dagster's own work)"))
            out += event_log_cost(instance, run_ids[label], hours, label)

        for inst in insts:
            write_hour(data_dir, inst, withheld, instrument_records(inst, depth), per_hour)
        n, secs = timed(tick)
        out.append(Timing("sensor tick, steady (1 new hour/instrument)", secs, f"{n} partitions requested"))

        at = layout.hour_floor(int(now.timestamp() * 1000)).replace(minute=15)
        for label, tick_at in (("compression tick", at), ("compression tick, next hour", at + layout.HOUR)):
            with build_schedule_context(instance=instance, scheduled_execution_time=tick_at,
                                        resources={"lake": lake}) as ctx:
                requests, secs = timed(lambda c=ctx: compression_schedule(c))
            requests = requests if isinstance(requests, list) else []
            due = sum(int(request.tags["l2/hours"]) for request in requests)
            out.append(Timing(f"{label}: evaluation", secs, f"{due} hours due, {len(requests)} run(s)"))
            if requests:
                due, secs = timed(lambda r=requests, lb=label: execute("compress_job", [q.tags for q in r], label=lb))
                out.append(Timing(f"{label}: compress_job runs", secs,
                                  f"{due} hours archived in {len(requests)} run(s) ({due / secs:.1f} h/s, "
                                  f"{run_cpu[label] / due:.2f} s CPU per hour with Dagster's own work)"))
    return out


def event_log_cost(instance: Any, run_ids: list[str], hours: int, what: str) -> list[Timing]:
    """Events and stored bytes per instrument-hour of `run_ids`, in all and of the kinds that dominate."""
    from dagster._serdes import serialize_value

    count: dict[str, list[int]] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            kind = entry.dagster_event.event_type_value if entry.dagster_event else "log message"
            n_bytes = len(serialize_value(entry))
            count.setdefault(kind, [0, 0])
            count[kind][0] += 1
            count[kind][1] += n_bytes
    events = sum(n for n, _ in count.values())
    stored = sum(b for _, b in count.values())
    top = sorted(count.items(), key=lambda kv: -kv[1][1])[:4]
    detail = ", ".join(f"{kind} {n / hours:.1f} ({b / hours / 1e3:.1f} kB)" for kind, (n, b) in top)
    return [Timing(f"{what}: event log per instrument-hour", 0.0,
                   f"{events / hours:.1f} events, {stored / hours / 1e3:.1f} kB; largest: {detail}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", default="2,20", help="comma-separated instrument counts (default 2,20)")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10, help="levels per side (collector default 400)")
    parser.add_argument("--records-per-hour", type=int, default=1800)
    parser.add_argument("--keep", type=Path, help="write the lakes here and keep them")
    parser.add_argument("--capture", type=int, default=0, metavar="N",
                        help="also measure the collector's capture over N simulated instruments (bench.hour_cost)")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="l2-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"lake: {args.days} days, depth {args.depth}, {args.records_per_hour} records/hour, under {root}")
    try:
        for n in (int(x) for x in args.instruments.split(",")):
            print(f"\n{n} instruments:")
            for timing in bench(n, args.days, args.depth, args.records_per_hour, root):
                print(timing, flush=True)
        print(f"\nCPU per instrument-hour of each step at depth {args.depth} (python -m bench.hour_cost):")
        costs = step_costs(root / "hour-cost", args.depth, args.records_per_hour)
        capture = capture_cpu_per_instrument_hour(args.capture, 45.0) if args.capture else None
        print("\n".join(report(costs, capture)))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n" + orjson.dumps({"depth": args.depth, "days": args.days}).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

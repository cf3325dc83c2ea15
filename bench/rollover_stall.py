"""Benchmark 7: the event loop's longest stall at an hour rollover, N instruments (default 250).

At a rollover the collector closes (fsyncs) one record file per instrument and creates the next
hour's, with a directory fsync each. Since hardening all of that runs in the writer thread; this
measures that the event loop does not notice. It starts `l2-collector simulate` with N instruments
and its exchange clock `--lead` seconds before an hour boundary, runs `l2-collector run` with a 1 s
status interval and reads the collector's own `status_process` lines: each carries the largest
lateness of a 50 ms sleeper on the loop (`loop_lag_max_ms`) over the past second. Reported in the
same run: the largest lateness in the seconds around the rollover, the largest in the steady
seconds before it, and their ratio; also the records written just after the boundary.

Usage: `python -m bench.rollover_stall [--instruments 250] [--lead 40] [--after 20]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.process import LISTENING_RE, code_version, instrument_ids, iso_s, logfmt, stop, wait_for_line
from l2_lake.format import layout

ROLLOVER_WINDOW_S = 5.0  # status lines this close to the boundary count as "at the rollover"
WARMUP_S = 15.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", type=int, default=250)
    parser.add_argument("--lead", type=float, default=40.0, help="seconds of exchange time before the boundary")
    parser.add_argument("--after", type=float, default=20.0, help="seconds to run after the boundary")
    parser.add_argument("--interval-ms", type=int, default=100)
    args = parser.parse_args(argv)
    insts = instrument_ids(args.instruments)
    boundary = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start_at = boundary - timedelta(seconds=args.lead)
    with tempfile.TemporaryDirectory(prefix="rollover-") as tmp:
        work = Path(tmp)
        sim_out, col_err = work / "sim.out", work / "collector.err"
        sim = subprocess.Popen([sys.executable, "-m", "collector", "simulate", "--port", "0", "--instruments",
                                ",".join(insts), "--interval-ms", str(args.interval_ms), "--checksum", "zero",
                                "--start-at", start_at.strftime("%Y-%m-%dT%H:%M:%SZ")],
                               stdout=open(sim_out, "wb"), stderr=subprocess.DEVNULL)  # noqa: SIM115
        launched = time.time()
        try:
            ws_url, rest_url = wait_for_line(sim_out, LISTENING_RE, sim, timeout=60).groups()
            collector = subprocess.Popen(
                [sys.executable, "-m", "collector", "run", "--data-dir", str(work / "lake"), "--instruments",
                 ",".join(insts), "--ws-url", ws_url, "--rest-url", rest_url, "--status-interval", "1"],
                stderr=open(col_err, "wb"))  # noqa: SIM115
            # The exchange clock reaches the boundary `lead` s after the simulator started.
            time.sleep(max(0.0, launched + args.lead + args.after - time.time()))
            stop(collector, collector.pid)
        finally:
            stop(sim, sim.pid)
        boundary_local = launched + args.lead
        lines = [logfmt(line) for line in col_err.read_text(errors="replace").splitlines()
                 if "event=status_process" in line]
        samples = [(iso_s(f["ts"]), int(f["loop_lag_max_ms"])) for f in lines]
        around = [lag for t, lag in samples if abs(t - boundary_local) <= ROLLOVER_WINDOW_S]
        steady = [lag for t, lag in samples if launched + WARMUP_S <= t < boundary_local - ROLLOVER_WINDOW_S]
        after_files = sum(1 for i in insts if layout.records_path(work / "lake", i, boundary).exists())
        worst_around, worst_steady = max(around, default=-1), max(steady, default=-1)
        print(f"rollover stall, {args.instruments} instruments, code {code_version()}")
        print(f"  loop lag max at the rollover (±{ROLLOVER_WINDOW_S:.0f} s): {worst_around} ms  (target < 100 ms)")
        print(f"  loop lag max in the steady window before it:       {worst_steady} ms")
        if worst_steady > 0:
            print(f"  ratio rollover / steady: {worst_around / worst_steady:.2f}x")
        print(f"  instruments with a record file for the new hour: {after_files} / {args.instruments}")
        print(f"  per-second samples around the rollover: {around}")


if __name__ == "__main__":
    main()

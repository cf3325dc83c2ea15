"""Benchmark 4: the whole `l2-collector run` process against `l2-collector simulate` on this machine.

For each instrument count N it starts the simulator (N instIds, one update per instrument every
`--interval-ms`, checksum 0 as OKX sends today), waits for its `SIMULATOR LISTENING ws://… http://…`
line, then runs the collector under `/usr/bin/time -v` for `--duration` seconds and stops it with
SIGTERM. Reported per N:
- collector CPU % of one core over its whole life (/usr/bin/time user+sys over elapsed) and in the
  steady window after `--warmup` (from /proc/<pid>/stat), peak RSS (/usr/bin/time);
- the simulator's own CPU % and peak RSS in the same window, the whole machine's busy % of its cores,
  and the msgs/s the collector actually received (its status lines) against N × 1000/interval —
  so a saturated simulator or machine shows instead of hiding behind the collector's figures;
- write lag (event time → record on disk) from the collector's `event=status` lines after warm-up;
- records on disk of the ticks in the steady window (by event time, per instrument moved to its own
  tick offset, collector.cadence) against window/cadence per instrument,
  gaps/resyncs/checksum failures (status counters), and late records (lag > cadence + 250 ms).

How lag percentiles are derived: each status line carries p50/p99 of the lags of the records written
since the previous line of that instrument (and `records=` tells how many). The reported p50 is the
median of those per-interval p50s; the reported p99 is the 99th percentile of the per-interval p99s.
With at most one record per interval (`--status-interval` below the cadence) both are exact; with
the default 5 s and a 2 s cadence an interval holds 2-3 records, its p99 is their maximum, so the
reported p99 is conservative and late records are given as an exact count or a [low-high] range.

With `--tape` the collector also writes its full-resolution tape (`run --tape`, l2_lake.book.tape) and
the tape's bytes on disk are shown. `--tape both` runs each N without and then with the tape, back to
back on the same simulator settings, and adds a table of with/without ratios (CPU, RSS, write lag):
the figure to judge the tape by, since both halves see the same machine a minute apart. CPU is also
given per message received, since a starved simulator may deliver different rates to the two runs. `--rounds R`
repeats the pair R times, alternating which variant goes first, and gives each round's ratio.

Usage: `python -m bench.process [--sizes 2,50,250] [--duration 60] [--warmup 15] [--tape [on|both]] [--rounds 1]`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from collector.cadence import tick_offset_ms

REPO = Path(__file__).resolve().parents[1]
TIME_BIN = "/usr/bin/time"
KNOWN = ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "XRP-USDT-SWAP", "DOGE-USDT-SWAP")
LISTENING_RE = re.compile(r"SIMULATOR LISTENING (ws://\S+) (http://\S+)")
LOGFMT_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
CLK_TCK = os.sysconf("SC_CLK_TCK")


def code_version() -> str:
    """The commit benchmarked, and whether the collector's sources differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--", "collector", "bench/hot_path.py")
    return f"{commit}{' + uncommitted changes in collector/' if dirty else ''}"


def instrument_ids(n: int) -> list[str]:
    """N instIds: the real USDT perpetuals the simulator knows, then synthetic AAA1-USDT-SWAP, ..."""
    synthetic = (f"AAA{i}-USDT-SWAP" for i in range(1, n + 1))
    return [*KNOWN, *synthetic][:n]


# ---- /proc sampling ----------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def machine_busy_pct(seconds: float) -> float:
    """Busy % of all cores over the next `seconds` (shows load that is not ours)."""
    busy0, total0 = machine_ticks()
    time.sleep(seconds)
    busy1, total1 = machine_ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * 100


def child_pid(parent: int, timeout: float = 10.0) -> int:
    """The process /usr/bin/time started (its only child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.02)
    raise RuntimeError(f"{TIME_BIN} (pid {parent}) started no child within {timeout} s")


@dataclass
class Window:
    """CPU of a set of processes and of the machine between two samples."""

    pids: dict[str, int]
    start: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    machine0: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    cpu_pct: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: float = 0.0

    def open(self) -> None:
        self.start = time.monotonic()
        self.cpu0 = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        self.machine0 = machine_ticks()

    def close(self) -> None:
        self.seconds = time.monotonic() - self.start
        self.cpu_pct = {name: (proc_cpu_s(pid) - self.cpu0[name]) / self.seconds * 100
                        for name, pid in self.pids.items()}
        busy, total = machine_ticks()
        self.machine_busy_pct = (busy - self.machine0[0]) / max(1, total - self.machine0[1]) * 100


# ---- parsing -----------------------------------------------------------------------------------


def logfmt(line: str) -> dict[str, str]:
    out = {}
    for key, value in LOGFMT_RE.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        out[key] = value
    return out


def iso_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_time_v(text: str) -> dict[str, float]:
    """User/system/elapsed seconds, peak RSS (kB) and exit status from `/usr/bin/time -v` output."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key == "User time (seconds)":
            out["user"] = float(value)
        elif key == "System time (seconds)":
            out["sys"] = float(value)
        elif key.startswith("Elapsed (wall clock) time"):
            seconds = 0.0
            for part in value.split(":"):
                seconds = seconds * 60 + float(part)
            out["elapsed"] = seconds
        elif key == "Maximum resident set size (kbytes)":
            out["rss_kb"] = float(value)
        elif key == "Exit status":
            out["exit"] = float(value)
    return out


@dataclass
class Interval:
    """One status line of one instrument."""

    ts: float
    inst_id: str
    state: str
    msgs_per_s: float
    feed_lag_ms: float | None
    records: int  # cumulative
    new_records: int
    p50: float | None
    p99: float | None
    gaps: int
    resyncs: int
    checksum_failures: int


def _number(text: str | None) -> float | None:
    if text is None or text in ("-", "None", ""):
        return None
    return float(text.removesuffix("ms"))


def parse_status(stderr_text: str) -> list[Interval]:
    intervals: list[Interval] = []
    last_records: dict[str, int] = {}
    for line in stderr_text.splitlines():
        if "event=status" not in line:
            continue
        f = logfmt(line)
        inst_id = f.get("instId", "")
        msg = f.get("msg", "")
        lag = re.search(r"\blag=(\S+)", msg)
        failures = re.search(r"checksum_failures=(\d+)", msg)
        records = int(f.get("records", "0"))
        intervals.append(Interval(
            ts=iso_s(f["ts"]), inst_id=inst_id, state=f.get("state", ""),
            msgs_per_s=float(f.get("msgs_per_s", "0")), feed_lag_ms=_number(lag.group(1) if lag else None),
            records=records, new_records=records - last_records.get(inst_id, 0),
            p50=_number(f.get("write_lag_p50_ms")), p99=_number(f.get("write_lag_p99_ms")),
            gaps=int(f.get("gaps", "0")), resyncs=int(f.get("resyncs", "0")),
            checksum_failures=int(failures.group(1)) if failures else 0,
        ))
        last_records[inst_id] = records
    return intervals


def late_bounds(k: int, p50: float, p99: float, threshold: float) -> tuple[int, int]:
    """Fewest and most of the interval's `k` lags above `threshold`, knowing only its p50 and p99
    (the collector reports sorted[k // 2] and sorted[min(k - 1, k * 99 // 100)])."""
    i50, i99 = k // 2, min(k - 1, k * 99 // 100)
    low = max(k - i50 if p50 > threshold else 0, k - i99 if p99 > threshold else 0)
    not_late = max(i50 + 1 if p50 <= threshold else 0, i99 + 1 if p99 <= threshold else 0)
    return low, k - not_late


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def tree_bytes(root: Path) -> int:
    """Bytes of every file under `root` (0 if it does not exist)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def records_on_disk(data_dir: Path, start_s: float, end_s: float, cadence_s: float) -> dict[str, int]:
    """Records per instrument of its ticks in [start_s, end_s) (multiples of the cadence): those whose
    event time lies in that window moved to the instrument's own ticks (collector.cadence) less half a
    cadence, since a tick's record is stamped shortly before it (by the age of the book's last message)."""
    counts: dict[str, int] = {}
    cadence_ms = round(cadence_s * 1000)
    prefix = b'{"timestamp_utc":"'
    root = data_dir / "raw" / "okx" / "l2_perps"
    for path in root.glob("*/*/*.jsonl"):
        if path.name.endswith(".events.jsonl"):
            continue
        inst_id = path.parts[-3]
        shift = (tick_offset_ms(inst_id, cadence_ms) - cadence_ms / 2) / 1000
        with open(path, "rb") as f:
            for line in f:
                if not line.startswith(prefix):
                    continue
                ts = iso_s(line[len(prefix):len(prefix) + 24].decode())
                if start_s + shift <= ts < end_s + shift:
                    counts[inst_id] = counts.get(inst_id, 0) + 1
    return counts


# ---- one run -----------------------------------------------------------------------------------


def wait_for_line(path: Path, pattern: re.Pattern[str], proc: subprocess.Popen[Any], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(path.read_text(errors="replace"))
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before printing {pattern.pattern!r}")
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern.pattern!r} within {timeout} s")


def stop(proc: subprocess.Popen[Any], pid: int, timeout: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Result:
    n: int
    tape: bool
    tape_bytes: int
    target_msgs_s: float
    time_v: dict[str, float]
    window: Window
    sim_rss_mb: float
    received_msgs_s: float
    feed_lag_p99: float
    lag_p50: float
    lag_p99: float
    lag_max: float
    late: tuple[int, int]
    records: int
    expected: int
    gaps: int
    resyncs: int
    checksum_failures: int
    not_synced: int
    exit_code: int
    background_busy_pct: float


def run_size(n: int, args: argparse.Namespace, workdir: Path, have_time: bool, tape: bool = False,
             label: str = "") -> Result:
    inst_ids = instrument_ids(n)
    instruments = ",".join(inst_ids)
    tag = f"{n}{'-tape' if tape else ''}{label}"
    data_dir = workdir / f"data-{tag}"
    sim_out, sim_err = workdir / f"sim-{tag}.out", workdir / f"sim-{tag}.err"
    col_err, time_out = workdir / f"collector-{tag}.err", workdir / f"time-{tag}.txt"
    python = sys.executable
    handles: list[IO[bytes]] = []
    background = machine_busy_pct(2.0)  # other load on the machine before we start anything

    def sink(path: Path) -> IO[bytes]:
        handle = open(path, "wb")  # noqa: SIM115 - closed below, after the process ends
        handles.append(handle)
        return handle

    sim = subprocess.Popen(
        [python, "-m", "collector", "simulate", "--port", "0", "--instruments", instruments,
         "--interval-ms", str(args.interval_ms), "--checksum", "zero"],
        cwd=REPO, stdout=sink(sim_out), stderr=sink(sim_err), start_new_session=True)
    collector: subprocess.Popen[Any] | None = None
    collector_pid = 0
    try:
        listening = wait_for_line(sim_out, LISTENING_RE, sim, timeout=120)
        ws_url, rest_url = listening.group(1), listening.group(2)
        print(f"  N={n}{' with tape' if tape else ''}: simulator pid {sim.pid} at {ws_url}; "
              f"collector for {args.duration:g} s", flush=True)
        command = [python, "-m", "collector", "run", "--data-dir", str(data_dir), "--instruments", instruments,
                   "--ws-url", ws_url, "--rest-url", rest_url, "--cadence", f"{args.cadence:g}",
                   "--status-interval", f"{args.status_interval:g}",
                   "--channels-per-connection", str(args.channels_per_connection), *(["--tape"] if tape else [])]
        timer = [TIME_BIN, "-v", "-o", str(time_out)] if have_time else []
        started = time.monotonic()
        collector = subprocess.Popen([*timer, *command], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=sink(col_err), start_new_session=True)
        collector_pid = child_pid(collector.pid) if have_time else collector.pid
        window = Window({"collector": collector_pid, "simulator": sim.pid})
        time.sleep(args.warmup)
        window.open()
        window_start = time.time()
        time.sleep(max(0.0, args.duration - args.warmup))
        window.close()
        window_end = time.time()
        sim_rss = proc_peak_rss_mb(sim.pid)
        if not have_time:  # /proc fallback: everything up to the SIGTERM, shutdown excluded
            time_out.write_text(f"User time (seconds): {proc_cpu_s(collector_pid)}\n"
                                f"System time (seconds): 0\n"
                                f"Elapsed (wall clock) time (h:mm:ss or m:ss): {time.monotonic() - started}\n"
                                f"Maximum resident set size (kbytes): {proc_peak_rss_mb(collector_pid) * 1024}\n")
        stop(collector, collector_pid)
        if not have_time:
            with open(time_out, "a") as f:
                f.write(f"Exit status: {collector.returncode}\n")
    finally:
        if collector is not None and collector.poll() is None:
            stop(collector, collector_pid or collector.pid)
        stop(sim, sim.pid)
        for handle in handles:
            handle.close()

    time_v = parse_time_v(time_out.read_text())  # written by /usr/bin/time -v, or by the fallback above
    intervals = parse_status(col_err.read_text(errors="replace"))
    steady = [iv for iv in intervals if iv.ts >= window_start]
    written = [iv for iv in steady if iv.new_records and iv.p50 is not None and iv.p99 is not None]
    threshold = args.late_ms if args.late_ms is not None else args.cadence * 1000 + 250
    low = high = 0
    for iv in written:
        lo, hi = late_bounds(iv.new_records, iv.p50 or 0.0, iv.p99 or 0.0, threshold)
        low, high = low + lo, high + hi
    final: dict[str, Interval] = {}
    for iv in intervals:
        final[iv.inst_id] = iv
    rates = [iv.msgs_per_s for iv in steady if iv.ts <= window_end]
    per_interval_total = sum(rates) / max(1, len(rates)) * n  # mean per-instrument rate × N

    cadence = args.cadence
    first_tick = math.ceil(window_start / cadence) * cadence
    last_tick = math.floor((window_end - cadence) / cadence) * cadence
    counts = records_on_disk(data_dir, first_tick, last_tick, cadence)
    expected = max(0, round((last_tick - first_tick) / cadence)) * n
    tape_bytes = tree_bytes(data_dir / "raw" / "okx" / "l2_tape")
    if not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    return Result(
        n=n, tape=tape, tape_bytes=tape_bytes, target_msgs_s=n * 1000 / args.interval_ms, time_v=time_v,
        window=window, sim_rss_mb=sim_rss,
        received_msgs_s=per_interval_total,
        feed_lag_p99=percentile([iv.feed_lag_ms for iv in steady if iv.feed_lag_ms is not None], 0.99),
        lag_p50=statistics.median([iv.p50 for iv in written if iv.p50 is not None]) if written else math.nan,
        lag_p99=percentile([iv.p99 for iv in written if iv.p99 is not None], 0.99),
        lag_max=max((iv.p99 for iv in written if iv.p99 is not None), default=math.nan),
        late=(low, high), records=sum(counts.values()), expected=expected,
        gaps=sum(iv.gaps for iv in final.values()), resyncs=sum(iv.resyncs for iv in final.values()),
        checksum_failures=sum(iv.checksum_failures for iv in final.values()),
        not_synced=sum(1 for i in inst_ids if i not in final or final[i].state != "synced"),
        exit_code=int(time_v.get("exit", -1)),
        background_busy_pct=background,
    )


# ---- output ------------------------------------------------------------------------------------


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    threshold = args.late_ms if args.late_ms is not None else args.cadence * 1000 + 250
    print(f"\ncode {code_version()}; {cores} cores; duration {args.duration:g} s, "
          f"steady window after {args.warmup:g} s warm-up; "
          f"simulator {args.interval_ms} ms/update/instrument, checksum 0; cadence {args.cadence:g} s; status every "
          f"{args.status_interval:g} s; {args.channels_per_connection} instruments per connection; "
          f"late = write lag > {threshold:g} ms")
    print("\n| instruments | collector CPU % of a core (whole run / steady) | collector peak RSS MB | "
          "simulator CPU % / RSS MB | machine busy % of all cores (before / during) | msgs/s received / sent target | "
          "write lag p50 / p99 / max ms | feed lag p99 ms | records on disk / expected | late | "
          "gaps / resyncs / checksum fails | exit |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    any_tape = any(r.tape for r in results)
    for r in results:
        tv = r.time_v
        whole = whole_cpu_pct(r)
        late = f"{r.late[0]}" if r.late[0] == r.late[1] else f"{r.late[0]}-{r.late[1]}"
        unsynced = f" ({r.not_synced} not synced at the end)" if r.not_synced else ""
        rss_mb = tv.get("rss_kb", math.nan) / 1024
        cpu = r.window.cpu_pct
        size = f"{r.n} + tape ({r.tape_bytes / 1e6:.1f} MB)" if r.tape else f"{r.n}{' no tape' if any_tape else ''}"
        print(f"| {size} | {whole:.1f} / {cpu['collector']:.1f} | {rss_mb:.0f} | "
              f"{cpu['simulator']:.1f} / {r.sim_rss_mb:.0f} | {r.background_busy_pct:.0f} / "
              f"{r.window.machine_busy_pct:.0f} | {r.received_msgs_s:.0f} / {r.target_msgs_s:.0f} | "
              f"{r.lag_p50:.0f} / {r.lag_p99:.0f} / {r.lag_max:.0f} | {r.feed_lag_p99:.0f} | "
              f"{r.records} / {r.expected} | {late} | "
              f"{r.gaps} / {r.resyncs} / {r.checksum_failures}{unsynced} | {r.exit_code} |")


def whole_cpu_pct(r: Result) -> float:
    tv = r.time_v
    return (tv.get("user", 0) + tv.get("sys", 0)) / tv["elapsed"] * 100 if tv.get("elapsed") else math.nan


def tape_ratios(pairs: list[tuple[Result, Result]], limit: float) -> None:
    """With/without-tape ratios of each (without, with) pair run back to back for the same N."""
    def ratio(a: float, b: float) -> str:
        return f"{b / a:.2f}x" if a and not math.isnan(a) and not math.isnan(b) else "-"

    print("\nwith tape / without tape, same N, back to back (a ratio > 1: the tape costs that much more)")
    print("\n| instruments | order | CPU steady % (without → with) | ratio | msgs/s received (without → with) | "
          "CPU per msg ratio | CPU whole run ratio | peak RSS ratio | write lag p50 / p99 ms (without → with) | "
          f"p99 ratio | tape MB/min | machine busy % during (without / with) | CPU ≤ {limit:g}x |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for off, on in pairs:
        steady_off, steady_on = off.window.cpu_pct["collector"], on.window.cpu_pct["collector"]
        rss_off, rss_on = off.time_v.get("rss_kb", math.nan), on.time_v.get("rss_kb", math.nan)
        minutes = on.time_v.get("elapsed", math.nan) / 60
        order = "without first" if off.window.start < on.window.start else "with first"
        ok = "yes" if steady_on <= limit * steady_off else "NO"
        per_msg_off = steady_off / off.received_msgs_s if off.received_msgs_s else math.nan
        per_msg_on = steady_on / on.received_msgs_s if on.received_msgs_s else math.nan
        print(f"| {off.n} | {order} | {steady_off:.1f} → {steady_on:.1f} | {ratio(steady_off, steady_on)} | "
              f"{off.received_msgs_s:.0f} → {on.received_msgs_s:.0f} | {ratio(per_msg_off, per_msg_on)} | "
              f"{ratio(whole_cpu_pct(off), whole_cpu_pct(on))} | {ratio(rss_off, rss_on)} | "
              f"{off.lag_p50:.0f} / {off.lag_p99:.0f} → {on.lag_p50:.0f} / {on.lag_p99:.0f} | "
              f"{ratio(off.lag_p99, on.lag_p99)} | {on.tape_bytes / 1e6 / minutes:.1f} | "
              f"{off.window.machine_busy_pct:.0f} / {on.window.machine_busy_pct:.0f} | {ok} |")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options from `argv` (the command line by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,50,250", help="instrument counts, comma-separated (default 2,50,250)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds the collector runs (default 60)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the steady window (default 15)")
    parser.add_argument("--interval-ms", type=int, default=100, help="simulator update interval (default 100)")
    parser.add_argument("--cadence", type=float, default=2.0, help="collector record cadence, s (default 2)")
    parser.add_argument("--status-interval", type=float, default=5.0, help="collector status interval (default 5)")
    parser.add_argument("--channels-per-connection", type=int, default=25)
    parser.add_argument("--late-ms", type=float, help="late threshold (default cadence + 250 ms)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directories and logs")
    parser.add_argument("--no-time", action="store_true", help=f"do not use {TIME_BIN}; sample /proc instead")
    parser.add_argument("--tape", nargs="?", const="on", default="off", choices=("off", "on", "both"),
                        help="run the collector with --tape (bare --tape or 'on'), or 'both': each N without "
                             "and then with it, plus a ratio table (default off)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --tape both: pairs per N, alternating which variant runs first (default 1)")
    parser.add_argument("--tape-cpu-limit", type=float, default=1.3,
                        help="with --tape both: the CPU ratio the table checks against (default 1.3)")
    args = parser.parse_args(argv)
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    return args


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    have_time = os.access(TIME_BIN, os.X_OK) and not args.no_time
    if not have_time:
        print(f"not using {TIME_BIN} (install GNU time: `apt-get install -y time`); whole-run CPU and peak RSS "
              "come from /proc/<pid>/stat and VmHWM, sampled just before SIGTERM", flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="bench-process-"))
    print(f"logs and data under {workdir}", flush=True)
    results = []
    pairs: list[tuple[Result, Result]] = []
    try:
        for n in sizes:
            if args.tape != "both":
                results.append(run_size(n, args, workdir, have_time, tape=args.tape == "on"))
                continue
            for round_ in range(args.rounds):
                label = f"-r{round_ + 1}" if args.rounds > 1 else ""
                done = {}
                for tape in ((False, True) if round_ % 2 == 0 else (True, False)):
                    done[tape] = run_size(n, args, workdir, have_time, tape=tape, label=label)
                    results.append(done[tape])
                pairs.append((done[False], done[True]))
    finally:
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, args)
    if pairs:
        tape_ratios(pairs, args.tape_cpu_limit)


if __name__ == "__main__":
    main()

"""Tape benchmark: what the full-resolution tape (`l2-collector run --tape`, l2_lake.book.tape) costs in
bytes against the 2 s snapshots, and how fast it replays against the hot path, from one real run.

It starts `l2-collector simulate` (default: the five USDT perpetuals it knows, one `books` update per
instrument every 100 ms, checksum 0 as OKX sends today; its updates carry ~21 levels on average,
400 levels a side in the book, like OKX BTC-USDT-SWAP) and `l2-collector run --tape --cadence 2
--depth 400` against it for `--duration` seconds, stops the collector with SIGTERM, then reads what it
wrote. `--lake DIR` skips the run and reads an existing data dir instead.

Table 1, bytes per instrument-hour. Both files are cut to the same exchange-time window: whole
cadence intervals from `--warmup` s after the instrument's first message to one cadence before its
last. Tape lines belong to the window by the exchange `ts` of their frame (other lines, e.g. `tick`,
by the frame before them); snapshot records by their `timestamp_utc`. Bytes in the window are scaled
by 1 h / window, i.e. by exchange time actually covered, not by wall time. The tape hour also opens
with one `book` line (the engine's full state, 2 × 400 levels): it is added once, unscaled, built
from the replayed engine's state at the end of the run exactly as `TapeRecorder` writes it. gzip is
`igzip.compress(level=l2_lake.format.digests.COMPRESS_LEVEL)` (3), as the archive step; window bytes are
compressed in one piece, plus the window's second half's marginal gzip bytes per ms for the rest of
the hour (deflate's window is 32 KiB, so minutes of data compress as an hour does; the compressor's
start-up, e.g. a first record with nothing to refer back to, then counts once per hour as in a real
hour file); the book line is compressed on its own. "tape / snapshots" < 1: the tape is the smaller.
The tape's archive (`l2_lake.format.tape_columns`, `{HH}.parquet`, what the pipeline's archive step and
the shipper keep of a closed tape hour) is made of the book line and the window's lines as one hour
file, extrapolated the same way from its second half. The longer the window, the closer the figures
are to a real hour file: run `--duration 3720` (an hour and 2 minutes) for the contract's figures.

Table 1b, the archive step per instrument-hour: `tape_columns.encode` (parse, columns, brotli 11,
then decode and compare) and `tape_columns.decode` of the window's archive, against
the lake's gzip (`igzip` level 3) and `gzip.decompress` of the same lines, scaled to an hour.

Table 1c, where the archive's bytes go, summed over the instruments' window archives: each leaf
column's compressed bytes and bits per value, and for the level leaves the bytes of the same values
written as a flat column with the same encoding and codec; the difference is the list's shape
(Parquet stores a list's lengths once per leaf).

Table 2, the stream: messages/s in exchange time, levels per update (mean / median / p90), mean
bytes per tape `ws` line and per snapshot record, next to the `books` updates of the real OKX
recording in collector_tests/okx_reference (2022, three instruments, ~11 s) for scale.

Table 3, replay speed, messages/s (each frame carries one message), best of `--repeat`, the rows
interleaved in every round so outside load hits them alike:
- `hot path`: bench.hot_path.measure on the tape's own `books` frames (decode → apply → sequence
  check → in-sync flag; checksum 0 so none computed), and its `orjson.loads` floor;
- `TapeReplayer … null sink`: the tape lines from memory through `TapeReplayer.feed` (slice the
  frame out of the line, decode, apply; book/tick lines parsed; a `tick` builds the 400-level record
  dict) at the live cadence, and resampled to `--resample-ms` of exchange time (a record dict per
  boundary); records are built but not serialised;
- `replay_tape … → lake`: `l2_lake.book.tape_replay.replay_tape` from the hour files into a fresh
  temporary lake (read, replay, `encode_line`, one os.write per record, fsync on close), live cadence
  and resampled: what `l2-collector replay --tape` does.
"ratio" is messages/s of the row over the hot path's, measured in the same rounds.

Usage: `python -m bench.tape [--instruments …] [--duration 180] [--warmup 10] [--resample-ms 250] [--repeat 3]
[--keep-data] [--lake DIR]`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from isal import igzip

from bench import hot_path
from bench.process import (
    KNOWN,
    LISTENING_RE,
    REPO,
    code_version,
    machine_busy_pct,
    machine_ticks,
    proc_cpu_s,
    stop,
    wait_for_line,
)
from bench.timing import timed
from l2_lake.book.tape_replay import TapeReplayer, read_lines, replay_tape, tape_files
from l2_lake.format import layout, tape_columns
from l2_lake.format.digests import COMPRESS_LEVEL
from l2_lake.format.record import parse_ts_ms
from l2_lake.store import lake_walk
from l2_lake.venues.okx.protocol import decode

WS_PREFIX = b'{"t":"ws","r":'
FRAME_AT = b',"m":'


class CountingSink:
    """The engine's Sink, keeping only a count of records."""

    def __init__(self) -> None:
        self.records = 0

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        pass

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        self.records += 1


def gz_len(data: bytes) -> int:
    return len(igzip.compress(data, COMPRESS_LEVEL, mtime=0))


def frame_of(line: bytes) -> bytes:
    """The `books` frame inside a tape `ws` line, sliced as TapeReplayer does."""
    return line[line.find(FRAME_AT, len(WS_PREFIX)) + len(FRAME_AT):line.rindex(b"}")]


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class RunInfo:
    data_dir: Path
    wall_s: float = math.nan
    collector_cpu_pct: float = math.nan
    simulator_cpu_pct: float = math.nan
    busy_before_pct: float = math.nan
    busy_during_pct: float = math.nan
    exit_code: int | None = None


def record_run(args: argparse.Namespace, workdir: Path) -> RunInfo:
    """Simulator + `collector run --tape` for `args.duration` s; the lake is left in workdir/lake."""
    info = RunInfo(data_dir=workdir / "lake")
    info.busy_before_pct = machine_busy_pct(2.0)
    python = sys.executable
    handles: list[IO[bytes]] = []

    def sink(path: Path) -> IO[bytes]:
        handle = open(path, "wb")  # noqa: SIM115 - closed below, after the process ends
        handles.append(handle)
        return handle

    sim_out = workdir / "sim.out"
    sim = subprocess.Popen(
        [python, "-m", "collector", "simulate", "--port", "0", "--instruments", args.instruments,
         "--interval-ms", str(args.interval_ms), "--checksum", args.checksum, "--seed", str(args.seed)],
        cwd=REPO, stdout=sink(sim_out), stderr=sink(workdir / "sim.err"), start_new_session=True)
    collector: subprocess.Popen[Any] | None = None
    try:
        listening = wait_for_line(sim_out, LISTENING_RE, sim, timeout=120)
        command = [python, "-m", "collector", "run", "--tape", "--data-dir", str(info.data_dir),
                   "--instruments", args.instruments, "--ws-url", listening.group(1),
                   "--rest-url", listening.group(2), "--cadence", f"{args.cadence:g}", "--depth", str(args.depth),
                   "--status-interval", "30"]
        print(f"collector run --tape for {args.duration:g} s against the simulator (pid {sim.pid})", flush=True)
        collector = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=sink(workdir / "collector.err"), start_new_session=True)
        started = time.monotonic()
        busy0, total0 = machine_ticks()
        sim_cpu0 = proc_cpu_s(sim.pid)
        time.sleep(args.duration)
        info.wall_s = time.monotonic() - started
        info.collector_cpu_pct = proc_cpu_s(collector.pid) / info.wall_s * 100
        info.simulator_cpu_pct = (proc_cpu_s(sim.pid) - sim_cpu0) / info.wall_s * 100
        busy1, total1 = machine_ticks()
        info.busy_during_pct = (busy1 - busy0) / max(1, total1 - total0) * 100
        stop(collector, collector.pid)
        info.exit_code = collector.returncode
    finally:
        if collector is not None and collector.poll() is None:
            stop(collector, collector.pid)
        stop(sim, sim.pid)
        for handle in handles:
            handle.close()
    return info


# ---- sizes -------------------------------------------------------------------------------------


@dataclass
class Instrument:
    """One instrument's tape and snapshot records, as written."""

    inst_id: str
    tape_files: list[Path]
    tape_lines: list[bytes]  # without newlines
    record_lines: list[bytes] = field(default_factory=list)  # without newlines

    def frames(self) -> list[bytes]:
        return [frame_of(line) for line in self.tape_lines if line.startswith(WS_PREFIX)]


def load(data_dir: Path) -> list[Instrument]:
    """Every instrument with a tape under `data_dir`, with its tape lines and snapshot records."""
    out = []
    for inst_id, files in tape_files([layout.raw_root(data_dir, layout.TAPE_PREFIX)]).items():
        inst = Instrument(inst_id, files, [line for path in files for line in read_lines(path)])
        for hour_file in lake_walk.iter_hour_files(data_dir, inst_id):
            if hour_file.kind == "records":
                inst.record_lines.extend(read_lines(hour_file.path))
        out.append(inst)
    return out


@dataclass
class ColumnBytes:
    """One leaf column of a tape archive: its compressed bytes, its values, and the bytes of the same
    values written as a flat column with the same encoding and codec (None for a column not in a list)."""

    stored: int
    values: int
    flat: int | None = None


def column_bytes(parquet: bytes) -> dict[str, int]:
    """Compressed bytes of each leaf column of a Parquet file, summed over its row groups."""
    metadata = pq.ParquetFile(io.BytesIO(parquet)).metadata
    out: dict[str, int] = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            out[column.path_in_schema] = out.get(column.path_in_schema, 0) + column.total_compressed_size
    return out


def archive_columns(archive: bytes) -> dict[str, ColumnBytes]:
    """Where a tape archive's bytes go. Each level leaf (`asks.list.element.px`, …) also written flat,
    without its list: Parquet stores a list's lengths (repetition levels) once per leaf, so the
    difference is what storing the lists' shape costs that leaf."""
    table = tape_columns.read_table(archive)
    leaves = {}
    for side in ("asks", "bids", "asks_deleted", "bids_deleted"):
        flat = pc.list_flatten(table.column(side))
        if pa.types.is_struct(flat.type):
            leaves.update({f"{side}.list.element.{f.name}": pc.struct_field(flat, f.name) for f in flat.type})
        else:
            leaves[f"{side}.list.element"] = flat
    flat_bytes = {}
    for path, values in leaves.items():  # a file per leaf: the sides' lists differ in length
        buffer = io.BytesIO()
        pq.write_table(pa.table({"values": values}), buffer, use_dictionary=False,
                       column_encoding={"values": tape_columns.ENCODINGS[path]}, **tape_columns.WRITE_OPTIONS)
        flat_bytes[path] = column_bytes(buffer.getvalue())["values"]
    stored = column_bytes(archive)
    return {path: ColumnBytes(stored=n, values=len(leaves[path]) if path in leaves else table.num_rows,
                              flat=flat_bytes.get(path))
            for path, n in stored.items()}


@dataclass
class Sizes:
    inst_id: str
    window_s: float
    tape_raw_h: float
    tape_gz_h: float
    tape_pq_h: float  # the tape's archive, l2_lake.format.tape_columns
    encode_s_h: float  # its encode, decode, and the lake's gzip / gunzip of the same lines, s per instrument-hour
    decode_s_h: float
    gzip_s_h: float
    gunzip_s_h: float
    snap_raw_h: float
    snap_gz_h: float
    book_line: int
    book_line_gz: int
    messages: int  # in the window
    levels: list[int]  # per update in the window
    ws_line_bytes: float
    records: int  # in the window
    record_bytes: float
    updates_per_s: float
    tape_file_bytes: int
    record_file_bytes: int
    columns: dict[str, ColumnBytes]  # the window's archive, by leaf column



def frame_info(line: bytes) -> tuple[int, int | None]:
    """(exchange ts of a `ws` line's frame, levels if it is an update else None)."""
    frame = orjson.loads(frame_of(line))
    data = frame["data"][0]
    return int(data["ts"]), len(data["bids"]) + len(data["asks"]) if frame.get("action") == "update" else None


def book_line(inst: Instrument, depth: int) -> bytes:
    """The `book` line an hour file would open with at the end of the run (the replayed engine's state)."""
    replayer = TapeReplayer(inst.inst_id, depth, CountingSink())
    for line in inst.tape_lines:
        replayer.feed(line)
    return orjson.dumps({"t": "book", "r": replayer.sync.recv_ms, **replayer.sync.state_fields()},
                        option=orjson.OPT_APPEND_NEWLINE)


def sizes(inst: Instrument, warmup_s: float, cadence_s: float, depth: int) -> Sizes:
    cadence_ms = round(cadence_s * 1000)
    stamped = []  # (exchange ts the line belongs to, line, levels)
    ts: int | None = None
    for line in inst.tape_lines:
        levels = None
        if line.startswith(WS_PREFIX):
            ts, levels = frame_info(line)
        if ts is not None and not line.startswith(b'{"t":"book"'):
            stamped.append((ts, line, levels))
    ws_ts = [t for t, line, _ in stamped if line.startswith(WS_PREFIX)]
    if len(ws_ts) < 2:
        raise SystemExit(f"{inst.inst_id}: fewer than 2 frames on the tape")
    start = math.ceil((ws_ts[0] + warmup_s * 1000) / cadence_ms) * cadence_ms
    end = (ws_ts[-1] // cadence_ms - 1) * cadence_ms
    if end <= start:
        raise SystemExit(f"{inst.inst_id}: the tape covers {(ws_ts[-1] - ws_ts[0]) / 1000:.0f} s, too short "
                         f"for a window after {warmup_s:g} s of warm-up")
    middle = start + (end - start) // 2 // cadence_ms * cadence_ms
    window = [(t, line, levels) for t, line, levels in stamped if start <= t < end]
    tape_bytes = b"".join(line + b"\n" for _, line, _ in window)
    tape_first = b"".join(line + b"\n" for t, line, _ in window if t < middle)
    records = [(parse_ts_ms(orjson.loads(line)["timestamp_utc"]), line) for line in inst.record_lines]
    record_bytes = b"".join(line + b"\n" for t, line in records if start <= t < end)
    record_first = b"".join(line + b"\n" for t, line in records if start <= t < middle)
    scale = 3_600_000 / (end - start)
    book = book_line(inst, depth)
    ws_lines = [line for _, line, _ in window if line.startswith(WS_PREFIX)]
    levels = [n for _, _, n in window if n is not None]

    def hour_bytes(size_of: Callable[[bytes], int], data: bytes, first: bytes) -> float:
        """Compressed bytes of an hour: the window's, plus the marginal rate of its second half for the
        rest of the hour (so the compressor's start, e.g. a first record with nothing to refer back to,
        is counted once per hour as in a real hour file, not once per window)."""
        whole = size_of(data)
        return whole + (whole - size_of(first)) / (end - middle) * (3_600_000 - (end - start))

    def gz_hour(data: bytes, first: bytes) -> float:
        return hour_bytes(gz_len, data, first)

    archive_input = book + tape_bytes
    archive, encode_s = timed(lambda: tape_columns.encode(archive_input))
    _, decode_s = timed(lambda: tape_columns.decode(archive))
    gzipped, gzip_s = timed(lambda: igzip.compress(archive_input, COMPRESS_LEVEL, mtime=0))
    _, gunzip_s = timed(lambda: gzip.decompress(gzipped))

    return Sizes(
        inst_id=inst.inst_id, window_s=(end - start) / 1000,
        tape_raw_h=len(book) + len(tape_bytes) * scale, tape_gz_h=gz_len(book) + gz_hour(tape_bytes, tape_first),
        tape_pq_h=hour_bytes(lambda data: len(tape_columns.encode(book + data)), tape_bytes, tape_first),
        encode_s_h=encode_s * scale, decode_s_h=decode_s * scale, gzip_s_h=gzip_s * scale,
        gunzip_s_h=gunzip_s * scale,
        snap_raw_h=len(record_bytes) * scale, snap_gz_h=gz_hour(record_bytes, record_first),
        book_line=len(book), book_line_gz=gz_len(book), messages=len(ws_lines), levels=levels,
        ws_line_bytes=statistics.mean(len(line) + 1 for line in ws_lines),
        records=len(record_bytes.splitlines()), record_bytes=len(record_bytes) / max(1, len(record_bytes.splitlines())),
        updates_per_s=len(ws_lines) / ((end - start) / 1000),
        tape_file_bytes=sum(p.stat().st_size for p in inst.tape_files),
        record_file_bytes=sum(len(line) + 1 for line in inst.record_lines),
        columns=archive_columns(archive),
    )


def reference_stream() -> list[tuple[str, int, float, float]]:
    """(instId, updates, mean levels per update, mean bytes per frame) of the real OKX recording."""
    by_inst: dict[str, list[tuple[int, int]]] = {}
    for line in hot_path.REFERENCE.read_bytes().splitlines():
        frame = orjson.loads(line)
        if frame.get("action") == "update":
            data = frame["data"][0]
            by_inst.setdefault(frame["arg"]["instId"], []).append((len(data["bids"]) + len(data["asks"]), len(line)))
    return [(inst_id, len(v), statistics.mean(n for n, _ in v), statistics.mean(b for _, b in v))
            for inst_id, v in by_inst.items()]


def mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def print_sizes(rows: list[Sizes]) -> None:
    print("\n## 1. bytes per instrument-hour (scaled from the exchange-time window; gzip level "
          f"{COMPRESS_LEVEL})\n")
    print("| instrument | window s | tape raw MB/h | snapshots raw MB/h | tape / snapshots raw | tape gzip MB/h | "
          "snapshots gzip MB/h | tape / snapshots gzip | gzip tape ≤ gzip snapshots | tape gzip ratio | "
          "snapshots gzip ratio | of which tape `book` line raw / gzip kB | tape archive (Parquet) MB/h | "
          "tape archive / snapshots gzip | tape archive ≤ gzip snapshots |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.inst_id} | {r.window_s:.0f} | {mb(r.tape_raw_h)} | {mb(r.snap_raw_h)} | "
              f"{r.tape_raw_h / r.snap_raw_h:.2f}x | {mb(r.tape_gz_h)} | {mb(r.snap_gz_h)} | "
              f"{r.tape_gz_h / r.snap_gz_h:.2f}x | {'yes' if r.tape_gz_h <= r.snap_gz_h else 'NO'} | "
              f"{r.tape_raw_h / r.tape_gz_h:.1f}x | {r.snap_raw_h / r.snap_gz_h:.1f}x | "
              f"{r.book_line / 1e3:.1f} / {r.book_line_gz / 1e3:.1f} | {mb(r.tape_pq_h)} | "
              f"{r.tape_pq_h / r.snap_gz_h:.2f}x | {'yes' if r.tape_pq_h <= r.snap_gz_h else 'NO'} |")
    if len(rows) > 1:
        tr, tg = sum(r.tape_raw_h for r in rows), sum(r.tape_gz_h for r in rows)
        sr, sg = sum(r.snap_raw_h for r in rows), sum(r.snap_gz_h for r in rows)
        tp = sum(r.tape_pq_h for r in rows)
        print(f"| all (sum) | | {mb(tr)} | {mb(sr)} | {tr / sr:.2f}x | {mb(tg)} | {mb(sg)} | {tg / sg:.2f}x | "
              f"{'yes' if tg <= sg else 'NO'} | {tr / tg:.1f}x | {sr / sg:.1f}x | | {mb(tp)} | {tp / sg:.2f}x | "
              f"{'yes' if tp <= sg else 'NO'} |")
    print("\n## 1b. the tape's archive step, s per instrument-hour (scaled from the window)\n")
    print("| instrument | encode (tape_columns) | decode | the lake's gzip of the same lines | gunzip "
          "| encode / gzip |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.inst_id} | {r.encode_s_h:.1f} | {r.decode_s_h:.1f} | {r.gzip_s_h:.1f} | {r.gunzip_s_h:.2f} | "
              f"{r.encode_s_h / r.gzip_s_h:.1f}x |")


def print_columns(rows: list[Sizes]) -> None:
    total: dict[str, ColumnBytes] = {}
    for r in rows:
        for path, c in r.columns.items():
            t = total.setdefault(path, ColumnBytes(0, 0, None if c.flat is None else 0))
            t.stored, t.values = t.stored + c.stored, t.values + c.values
            if c.flat is not None:
                t.flat += c.flat
    archive = sum(c.stored for c in total.values())
    print(f"\n## 1c. where the tape archive's bytes go ({len(rows)} instrument(s), the window's archives; "
          "\"flat\": the same values as a column of their own, same encoding and codec)\n")
    print("| column | bytes | share | bits per value | flat bytes | list shape, bytes | list shape, bits per value |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path, c in sorted(total.items(), key=lambda item: -item[1].stored):
        shape = "" if c.flat is None else f"{c.stored - c.flat} | {8 * (c.stored - c.flat) / max(1, c.values):.2f}"
        print(f"| {path} | {c.stored} | {c.stored / archive:.1%} | {8 * c.stored / max(1, c.values):.2f} | "
              f"{'' if c.flat is None else c.flat} | {shape or ' |'} |")
    shape = sum(c.stored - c.flat for c in total.values() if c.flat is not None)
    print(f"\nlist shape (lengths stored once per level leaf): {shape} of {archive} bytes, {shape / archive:.1%}")


def print_stream(rows: list[Sizes]) -> None:
    print("\n## 2. the stream in the window (simulator) and the real OKX recording\n")
    print("| instrument | updates/s (exchange time) | levels per update mean / median / p90 | bytes per tape ws "
          "line | records in window | bytes per record | tape file bytes (whole run) | record bytes (whole run) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lv = sorted(r.levels)
        p90 = lv[min(len(lv) - 1, int(len(lv) * 0.9))] if lv else math.nan
        mean = statistics.mean(lv) if lv else math.nan
        median = statistics.median(lv) if lv else math.nan
        print(f"| {r.inst_id} | {r.updates_per_s:.2f} | {mean:.1f} / {median:g} / {p90} | "
              f"{r.ws_line_bytes:.0f} | {r.records} | {r.record_bytes:.0f} | {r.tape_file_bytes} | "
              f"{r.record_file_bytes} |")
    for inst_id, n, levels, size in reference_stream():
        print(f"| OKX recording 2022: {inst_id} | ({n} updates in ~11 s) | {levels:.1f} / - / - | "
              f"{size:.0f} (frame only) | | | | |")


# ---- replay ------------------------------------------------------------------------------------


def replay_lines(insts: list[Instrument], depth: int, cadence_ms: int | None) -> tuple[int, int]:
    """Every instrument's tape lines from memory through a fresh TapeReplayer: (messages, records)."""
    messages = records = 0
    for inst in insts:
        sink = CountingSink()
        replayer = TapeReplayer(inst.inst_id, depth, sink, cadence_ms=cadence_ms)
        feed = replayer.feed
        for line in inst.tape_lines:
            feed(line)
        messages += replayer.finish().messages
        records += sink.records
    return messages, records


def replay_files(insts: list[Instrument], depth: int, cadence_ms: int | None) -> tuple[int, int]:
    """`replay_tape` from the hour files into a fresh temporary lake: (messages, records)."""
    with tempfile.TemporaryDirectory(prefix="bench-tape-replay-") as tmp:
        stats = replay_tape([p for inst in insts for p in inst.tape_files], Path(tmp),
                            cadence_s=None if cadence_ms is None else cadence_ms / 1000, depth=depth)
    return sum(s.messages for s in stats.values()), sum(s.records for s in stats.values())


@dataclass
class Timed:
    name: str
    run: Callable[[], tuple[int, int]]
    best_s: float = math.inf
    messages: int = 0
    records: int = 0


def print_replay(insts: list[Instrument], depth: int, resample_ms: int, repeat: int) -> None:
    frames = [f for inst in insts for f in inst.frames()]
    messages = sum(len(decode(f)) for f in frames)
    rows = [
        Timed("TapeReplayer, live cadence (tick lines), null sink",
              lambda: replay_lines(insts, depth, None)),
        Timed(f"TapeReplayer, resampled every {resample_ms} ms, null sink",
              lambda: replay_lines(insts, depth, resample_ms)),
        Timed("replay_tape files → lake, live cadence", lambda: replay_files(insts, depth, None)),
        Timed(f"replay_tape files → lake, every {resample_ms} ms", lambda: replay_files(insts, depth, resample_ms)),
    ]
    hot_us = floor_us = math.inf
    for round_ in range(repeat):
        print(f"  replay round {round_ + 1}/{repeat}", flush=True)
        hot = hot_path.measure("tape frames", frames, 1)  # warm-up call + one timed pass, as bench.hot_path
        hot_us, floor_us = min(hot_us, hot["ours_us"]), min(floor_us, hot["floor_us"])
        for row in rows:
            start = time.perf_counter()
            row.messages, row.records = row.run()
            row.best_s = min(row.best_s, time.perf_counter() - start)
    hot_rate = messages / (hot_us * len(frames) / 1e6)
    floor_rate = messages / (floor_us * len(frames) / 1e6)
    tape_mb = sum(len(line) + 1 for inst in insts for line in inst.tape_lines) / 1e6
    print(f"\n## 3. replay speed: {messages} messages in {len(frames)} frames, {tape_mb:.1f} MB of tape, "
          f"best of {repeat}\n")
    print("| path | messages | records | s | messages/s | ratio to the hot path | tape MB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| `orjson.loads` floor (bench.hot_path) | {messages} | | {floor_us * len(frames) / 1e6:.3f} | "
          f"{floor_rate:,.0f} | {floor_rate / hot_rate:.2f}x | |")
    print(f"| hot path: decode → apply → seq check (bench.hot_path.measure) | {messages} | | "
          f"{hot_us * len(frames) / 1e6:.3f} | {hot_rate:,.0f} | 1.00x | |")
    for row in rows:
        rate = row.messages / row.best_s
        print(f"| {row.name} | {row.messages} | {row.records} | {row.best_s:.3f} | {rate:,.0f} | "
              f"{rate / hot_rate:.2f}x | {tape_mb / row.best_s:.1f} |")


# ---- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruments", default=",".join(KNOWN),
                        help="comma-separated instIds the simulator knows (default: its five USDT perpetuals)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds the collector runs (default 180)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="exchange seconds after an instrument's first message before the window (default 10)")
    parser.add_argument("--interval-ms", type=int, default=100, help="simulator update interval (default 100)")
    parser.add_argument("--checksum", choices=("zero", "real"), default="zero",
                        help="simulator checksums (default zero, as OKX since 2026-06-23)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cadence", type=float, default=2.0, help="collector record cadence, s (default 2)")
    parser.add_argument("--depth", type=int, default=400, help="levels per side in records (default 400)")
    parser.add_argument("--resample-ms", type=int, default=250, help="replay resampling cadence (default 250)")
    parser.add_argument("--repeat", type=int, default=3, help="replay rounds; best of (default 3)")
    parser.add_argument("--keep-data", action="store_true", help="keep the run's lake and logs")
    parser.add_argument("--lake", type=Path, help="read this data dir (written by `run --tape`) instead of a run")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-tape-"))
    try:
        if args.lake is not None:
            info = RunInfo(data_dir=args.lake)
        else:
            print(f"logs and data under {workdir}", flush=True)
            info = record_run(args, workdir)
        insts = load(info.data_dir)
        if not insts:
            raise SystemExit(f"no tape under {info.data_dir}")
        if args.lake is not None:
            print(f"\ncode {code_version()}; tape and records read from {args.lake}; cadence {args.cadence:g} s "
                  f"and depth {args.depth} assumed")
        else:
            print(f"\ncode {code_version()}; run: {info.wall_s:.0f} s wall, collector (with --tape) "
                  f"{info.collector_cpu_pct:.1f} % of a core, simulator {info.simulator_cpu_pct:.1f} %, exit "
                  f"{info.exit_code}; machine busy {info.busy_before_pct:.0f} % of all cores before the run, "
                  f"{info.busy_during_pct:.0f} % during; simulator {args.interval_ms} ms/update, checksum "
                  f"{args.checksum}; cadence {args.cadence:g} s, depth {args.depth}")
        rows = [sizes(inst, args.warmup, args.cadence, args.depth) for inst in insts]
        print_sizes(rows)
        print_columns(rows)
        print_stream(rows)
        print_replay(insts, args.depth, args.resample_ms, args.repeat)
    finally:
        if args.keep_data:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark 3: snapshot records per second, serialised to JSONL the way the collector does it.

Books come from the simulator (400 levels a side after some churn, loaded through `decode` and
`InstrumentSync`). Each record is made as on a cadence tick: `InstrumentSync.snapshot_record()`
(top 400 of each side, `build_record`: timestamps, exact decimal mid, CRC32 of the record's own
top 25) followed by `encode_line`. Reported next to `orjson.dumps` alone of the very same dicts,
measured in the same run, and next to the full store path (`LakeWriter.record`: duplicate check,
hour file, one `os.write` per line, no fsync: the page cache absorbs it) into a temporary directory.

Usage: `python -m bench.write_records [--records 5000] [--repeat 5] [--instruments 5]`.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.hot_path import NullSink
from bench.process import code_version
from collector.simulator.instruments import instrument_spec
from collector.simulator.market import DUMP_TICK_MS, MarketBook, SyntheticClock
from l2_lake.book.engine import InstrumentSync
from l2_lake.format.record import encode_line
from l2_lake.store.hour_files import LakeWriter
from l2_lake.venues.okx.protocol import decode

KNOWN = ("BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "XRP-USDT-SWAP", "DOGE-USDT-SWAP")
DEPTH = 400


def load_books(n_instruments: int, churn: int, seed: int = 1) -> list[InstrumentSync]:
    """Engines holding simulated 400-level books: a WS snapshot, then `churn` updates each."""
    inst_ids = [*KNOWN, *(f"AAA{i}-USDT-SWAP" for i in range(max(0, n_instruments - len(KNOWN))))][:n_instruments]
    clock = SyntheticClock()
    markets = [MarketBook(instrument_spec(i), seed, clock, "zero") for i in inst_ids]
    sink = NullSink()
    syncs = []
    for market in markets:
        sync = InstrumentSync(market.inst_id, DEPTH, sink)
        sync.subscribed()
        syncs.append(sync)
    for step in range(churn + 1):
        clock.advance(DUMP_TICK_MS)
        for market, sync in zip(markets, syncs, strict=True):
            message = market.snapshot_message() if step == 0 else market.next_update()
            for msg in decode(orjson.dumps(message)):
                sync.on_book(msg, msg.ts_ms)
    for sync in syncs:
        if not sync.in_sync or len(sync.book.bids) < DEPTH or len(sync.book.asks) < DEPTH:
            raise AssertionError(f"{sync.inst_id}: book not loaded to {DEPTH} levels a side")
    return syncs


def next_record(sync: InstrumentSync) -> dict[str, Any]:
    """What a cadence tick builds for this book; the event time moves on so every record is new."""
    sync.ts_ms += 1
    sync.changed = True
    record = sync.snapshot_record()
    assert record is not None
    return record


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000, help="records per pass (default 5000)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved passes, best kept (default 5)")
    parser.add_argument("--instruments", type=int, default=5, help="distinct books cycled through (default 5)")
    parser.add_argument("--churn", type=int, default=600, help="updates applied to each book first (default 600)")
    args = parser.parse_args(argv)

    syncs = load_books(args.instruments, args.churn)
    order = [syncs[i % len(syncs)] for i in range(args.records)]
    records = [next_record(s) for s in order]  # the same dicts `orjson.dumps` alone is timed on
    line_bytes = sum(len(encode_line(r)) for r in records) / len(records)

    def dumps_only() -> None:
        dumps = orjson.dumps
        for record in records:
            dumps(record)

    def build_only() -> None:
        for sync in order:
            next_record(sync)

    def build_and_encode() -> None:
        for sync in order:
            encode_line(next_record(sync))

    lake = Path(tempfile.mkdtemp(prefix="bench-write-"))
    writer = LakeWriter(lake, clock_ms=lambda: 0)

    def store_path() -> None:
        before = sum(writer.records_written.values())
        for sync in order:
            record = next_record(sync)
            writer.record(sync.inst_id, sync.ts_ms, record)
        written = sum(writer.records_written.values()) - before
        if written != len(order):
            raise AssertionError(f"LakeWriter wrote {written} of {len(order)} records")

    passes = {"orjson.dumps alone (same dicts)": dumps_only,
              "build only (snapshot_record)": build_only,
              "collector: snapshot_record + encode_line": build_and_encode,
              "  + LakeWriter.record (os.write to file)": store_path}
    best = dict.fromkeys(passes, float("inf"))
    try:
        for _ in range(args.repeat):
            for name, fn in passes.items():
                best[name] = min(best[name], timed(fn))
    finally:
        writer.close()
        shutil.rmtree(lake, ignore_errors=True)

    n = args.records
    floor = best["orjson.dumps alone (same dicts)"]
    print(f"code {code_version()}; {n} records per pass over {len(syncs)} books of {DEPTH}x2 levels, "
          f"{line_bytes / 1024:.1f} KiB per line, "
          f"best of {args.repeat}")
    print("\n| stage | records/s | µs/record | MB/s of JSONL | ratio to orjson.dumps |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in best.items():
        rate = n / seconds
        print(f"| {name} | {rate:,.0f} | {seconds / n * 1e6:.1f} | {rate * line_bytes / 1e6:.0f} | "
              f"{seconds / floor:.2f}x |")
    collector_rate = n / best["collector: snapshot_record + encode_line"]
    for instruments, cadence in ((250, 2.0), (250, 1.0)):
        need = instruments / cadence
        print(f"\n{instruments} instruments every {cadence:g} s need {need:.0f} records/s: "
              f"{need / collector_rate:.1%} of one core at the measured rate", end="")
    print()


if __name__ == "__main__":
    main()

"""Time `read_books` against `pyarrow.parquet.read_table` on the same curated files.

    python -m bench.read                     # one day of one instrument, depth 25 and 400
    python -m bench.read --hours 6 --records-per-hour 1800 --depth 400

Writes `hours` hours of one instrument (`bench.synthetic_hours.write_hour`, `depth` levels a side) under a
temporary directory, converts each to curated Parquet, then times, best of `--repeat`:
- the floor: `pq.read_table` of the hours' files (the whole day, every column);
- `read_books` over the same day, all levels, and with `depth=25`.
Reported as ratios to the floor, measured in the same run.
"""

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.synthetic_hours import instrument_records, write_hour
from l2_lake.format import layout
from l2_lake.tiers.curated import write_parquet
from l2_pipeline import read_books

INST = "BTC-USDT-SWAP"


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--depth", type=int, default=400, help="levels per side written (collector default 400)")
    parser.add_argument("--records-per-hour", type=int, default=1800)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="l2-bench-read-"))
    try:
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
        hours = [start + timedelta(hours=h) for h in range(args.hours)]
        templates = instrument_records(INST, args.depth)
        for hour in hours:
            write_hour(root, INST, hour, templates, args.records_per_hour)
            write_parquet(root, INST, hour, datetime.now(UTC))
        files = [layout.curated_path(root, INST, hour) for hour in hours]
        size = sum(f.stat().st_size for f in files)
        end = hours[-1] + layout.HOUR
        floor = best_of(args.repeat, lambda: [pq.read_table(f) for f in files])
        rows = read_books(INST, start, end, lake=root).num_rows
        print(f"{args.hours} h × {args.records_per_hour} records, depth {args.depth}: {rows} rows, "
              f"{size / 1e6:.0f} MB of Parquet")
        print(f"  pq.read_table (floor)          {floor:7.2f} s   1.00x")
        for label, depth in (("read_books, all levels", None), ("read_books, depth=25", 25)):
            secs = best_of(args.repeat, lambda d=depth: read_books(INST, start, end, lake=root, depth=d))
            print(f"  {label:<30} {secs:7.2f} s   {secs / floor:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

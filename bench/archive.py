"""Archive and Parquet steps on one realistic hour: MB/s of JSONL in, next to `gzip -6` on the same file.

The hour is made the way production makes it: a deterministic simulated stream (400-level books,
~20 level changes per 100 ms) replayed through the collector's engine at the default 2 s cadence,
so the file is a real `{HH}.jsonl` of 1800 records. Then, in the same run:
- `gzip -6 -c FILE > /dev/null` (the baseline the issue names);
- `l2_lake.tiers.archive.archive_hour` (compress, fsync, decompress-and-compare sha256 and line count,
  atomic rename, remove the original);
- `l2_lake.tiers.curated.write_parquet` (typed zstd Parquet, atomic).
Usage: `python -m bench.archive [--minutes 60] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.timing import timed
from collector.simulator.market import DUMP_START_MS, dump_frames
from l2_lake.book.replay import replay_file
from l2_lake.format import layout
from l2_lake.tiers.archive import archive_hour
from l2_lake.tiers.curated import write_parquet

INST = "BTC-USDT-SWAP"


def make_hour(root: Path, minutes: int) -> Path:
    frames = root / "frames.jsonl"
    dump_frames(frames, [INST], minutes * 600 + 1, seed=1, checksum_mode="zero")
    replay_file(frames, root / "lake", cadence_s=2.0)
    return layout.records_path(root / "lake", INST, layout.hour_floor(DUMP_START_MS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60, help="minutes of data in the hour file (default 60)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = make_hour(root, args.minutes)
        size_mb = source.stat().st_size / 1e6
        lines = source.read_bytes().count(b"\n")
        hour = layout.hour_floor(DUMP_START_MS)
        later = datetime.fromtimestamp(DUMP_START_MS / 1000, tz=UTC) + timedelta(hours=7)
        pristine = root / "pristine.jsonl"
        shutil.copyfile(source, pristine)
        best = {"gzip -6": float("inf"), "archive_hour (verified)": float("inf"), "write_parquet": float("inf")}
        for _ in range(args.repeat):
            shutil.copyfile(pristine, source)
            layout.archive_path(root / "lake", INST, hour).unlink(missing_ok=True)
            best["gzip -6"] = min(best["gzip -6"], timed(lambda: subprocess.run(
                f"gzip -6 -c {source} > /dev/null", shell=True, check=True))[1])
            best["write_parquet"] = min(best["write_parquet"], timed(
                lambda: write_parquet(root / "lake", INST, hour, later))[1])
            best["archive_hour (verified)"] = min(best["archive_hour (verified)"], timed(
                lambda: archive_hour(root / "lake", INST, hour, later))[1])
        archive_mb = layout.archive_path(root / "lake", INST, hour).stat().st_size / 1e6
        parquet_mb = layout.curated_path(root / "lake", INST, hour).stat().st_size / 1e6
    print(f"hour file: {lines} records, {size_mb:.1f} MB JSONL -> {archive_mb:.1f} MB gzip, "
          f"{parquet_mb:.1f} MB Parquet")
    print(f"{'step':26} {'seconds':>8} {'MB/s in':>8} {'vs gzip -6':>11}")
    for step, seconds in best.items():
        print(f"{step:26} {seconds:>8.2f} {size_mb / seconds:>8.1f} {best['gzip -6'] / seconds:>10.2f}x")


if __name__ == "__main__":
    main()

"""Which gzip the lake's archives are made with: CPU and size of each candidate on one real hour.

    .venv/bin/python -m bench.gzip_levels HOUR.jsonl [--repeat 3]

For the hour's bytes, best of `--repeat` in CPU seconds (process time, so a shared machine's other
load does not count): the standard library's zlib at level 6 (what the archives were made with
before), ISA-L's igzip (python-isal) at levels 1-3, and zlib-ng's gzip at levels 1, 3 and 6 when
`zlib-ng` is installed (it is not a dependency). Every output is decompressed by the standard
library's gzip and compared with the input. Ratios are to zlib -6 measured in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from pathlib import Path

from isal import igzip


def cpu_best(work: Callable[[], bytes], repeat: int) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(repeat):
        start = time.process_time()
        out = work()
        best = min(best, time.process_time() - start)
    return best, out


def candidates() -> dict[str, Callable[[bytes], bytes]]:
    found: dict[str, Callable[[bytes], bytes]] = {"zlib -6 (stdlib)": lambda d: gzip.compress(d, 6, mtime=0)}
    for level in (1, 2, 3):
        found[f"igzip {level} (python-isal)"] = lambda d, lv=level: igzip.compress(d, lv, mtime=0)
    try:
        from zlib_ng import gzip_ng
    except ImportError:
        return found
    for level in (1, 3, 6):
        found[f"zlib-ng {level}"] = lambda d, lv=level: gzip_ng.compress(d, lv, mtime=0)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hour", type=Path, help="an hour's .jsonl")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = args.hour.read_bytes()
    rows = []
    for name, compress in candidates().items():
        seconds, out = cpu_best(lambda c=compress: c(data), args.repeat)
        gunzip, back = cpu_best(lambda o=out: gzip.decompress(o), args.repeat)
        assert back == data, f"{name} does not decompress to the hour"
        rows.append((name, seconds, gunzip, len(out)))
    base_s, base_size = rows[0][1], rows[0][3]
    print(f"{args.hour} ({len(data) / 1e6:.1f} MB), best of {args.repeat}, CPU seconds\n")
    print("| gzip | compress | vs zlib -6 | gunzip (stdlib) | archive | vs zlib -6 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, gunzip, size in rows:
        print(f"| {name} | {seconds:.3f} s | {seconds / base_s:.2f}x | {gunzip:.3f} s | {size / 1e6:.2f} MB | "
              f"{size / base_size:.2f}x |")


if __name__ == "__main__":
    main()

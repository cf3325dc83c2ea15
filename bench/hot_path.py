"""Hot-path benchmark: parse → apply → sequence check → checksum (when non-zero) → in-sync flag.

Reports µs per frame for our engine next to the parse-only floor (`orjson.loads` of the same frames),
measured in the same run, on (a) the real OKX recording (every message carries a checksum) and (b) a
simulated 400-level stream with real checksums and (c) with checksum 0, as OKX sends since 2026-06-23.
Usage: `python -m bench.hot_path [--frames 200000] [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from collector.simulator.market import dump_frames
from l2_lake.book.engine import InstrumentSync
from l2_lake.venues.okx.protocol import decode

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "collector_tests" / "okx_reference"
REFERENCE = REFERENCE_DIR / "cryptofeed_OKX_books_only.jsonl"


class NullSink:
    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        pass

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        pass


def parse_floor(frames: list[bytes]) -> None:
    loads = orjson.loads
    for raw in frames:
        loads(raw)


class EngineDriver:
    """Our engine over raw frames as the feed drives it, minus I/O: one InstrumentSync per instId.

    Calling it runs the frames through and returns how many messages left their book in sync.
    """

    def __init__(self) -> None:
        self.sink = NullSink()
        self.syncs: dict[str, InstrumentSync] = {}

    def __call__(self, frames: list[bytes] | list[str]) -> int:
        syncs, in_sync = self.syncs, 0
        for raw in frames:
            for msg in decode(raw):
                sync = syncs.get(msg.inst_id)
                if sync is None:
                    sync = syncs[msg.inst_id] = InstrumentSync(msg.inst_id, 400, self.sink)
                    sync.subscribed()
                sync.on_book(msg, msg.ts_ms)
                in_sync += sync.in_sync
        return in_sync


def best_time(fn: Callable[[list[bytes]], Any], frames: list[bytes], repeat: int) -> float:
    """Best-of-`repeat` seconds per call (the minimum is the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(frames)
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, frames: list[bytes], repeat: int) -> dict[str, Any]:
    engine = EngineDriver()
    in_sync = engine(frames)  # warm-up, and proves every message was applied in sync
    floor_s = best_time(parse_floor, frames, repeat)
    ours_s = best_time(engine, frames, repeat)
    n = len(frames)
    return {"input": name, "frames": n, "in_sync_msgs": in_sync, "floor_us": floor_s / n * 1e6,
            "ours_us": ours_s / n * 1e6, "ratio": ours_s / floor_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="simulated frames (default 200000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [measure("okx recording (290 frames x 200)", REFERENCE.read_bytes().splitlines() * 200, args.repeat)]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("real", "zero"):
            path = Path(tmp) / f"frames-{mode}.jsonl"
            dump_frames(path, ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP"], args.frames, seed=1,
                        checksum_mode=mode)
            rows.append(measure(f"simulated 400-level, checksum {mode} ({args.frames})",
                                path.read_bytes().splitlines(), args.repeat))
    print(f"{'input':44} {'frames':>8} {'orjson.loads µs':>16} {'ours µs':>9} {'ours/floor':>11}")
    for r in rows:
        print(f"{r['input']:44} {r['frames']:>8} {r['floor_us']:>16.2f} {r['ours_us']:>9.2f} {r['ratio']:>10.2f}x")


if __name__ == "__main__":
    main()

"""Closed hours of synthetic 400-level records for the benchmarks: `instrument_records` makes an instrument's
records (16 books of `depth` levels a side, built by `l2_lake.format.record.build_record`) and
`write_hour` writes `per_hour` of them, evenly spaced, as an hour's `.jsonl` in the lake layout."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from l2_lake.format import layout
from l2_lake.format.record import build_record, encode_line, format_ts_ms


def instrument_records(inst_id: str, depth: int, variants: int = 16) -> list[dict[str, Any]]:
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

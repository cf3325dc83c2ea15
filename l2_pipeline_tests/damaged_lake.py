"""A recent lake with one damaged hour per quality check, for looking at the Dagster UI (and for tests).

`plant_damaged_lake(data_dir, now)` writes BTC-USDT-SWAP and ETH-USDT-SWAP hours relative to `now`:
the `hours` hours before the current one in full (1800 records at the 2 s cadence, a few missing
here and there, depth 5), plus the current (open) hour up to `now`, so `collector_freshness` sees
a live collector for a few minutes. Six closed hours, on distinct hours and alternating instruments,
are damaged so that exactly one of the six hour checks (`l2_lake.quality.verdicts.HOUR_CHECKS`) fails on each:

- `no_gaps`: a gap marker record (`gap_detected=true`) plus `gap`, `resync_start`, `resync_done` events;
- `no_checksum_failures`: a checksum marker (`checksum_ok=false`, OKX's checksum non-zero, the
  record's own `book_crc32` valid) plus `checksum_mismatch` and resync events;
- `coverage`: 400 records (the collector started late in the hour), 22 % of 1800;
- `no_crossed_books`: one record whose best bid is above its best ask;
- `schema_valid`: a torn last line (cut mid-write, no newline);
- `timestamps_valid`: a last record stamped 0.5 s after the hour's end.

Records and damage come from `l2_pipeline_tests.lake_factory`; planting needs no Dagster instance.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from l2_lake.format.layout import hour_floor
from l2_lake.format.record import build_record, encode_line, okx_checksum
from l2_lake.quality.verdicts import (
    COVERAGE,
    NO_CHECKSUM_FAILURES,
    NO_CROSSED_BOOKS,
    NO_GAPS,
    SCHEMA_VALID,
    TIMESTAMPS_VALID,
)
from l2_pipeline.partitions import partition_key
from l2_pipeline_tests.lake_factory import (
    BTC,
    ETH,
    crossed_record,
    event,
    make_records,
    ms,
    plant_good_hour,
    torn,
    with_gap,
    write_hour,
)

INSTRUMENTS: tuple[str, ...] = (BTC, ETH)
DEFAULT_HOURS = 30
RECORDS_PER_HOUR = 1800  # 3600 s / 2 s cadence
LOW_COVERAGE_RECORDS = 400
# check → (index of the damaged hour among the planted closed hours, oldest first; instrument)
DAMAGE_PLAN: dict[str, tuple[int, str]] = {
    NO_GAPS: (3, BTC),
    NO_CHECKSUM_FAILURES: (7, ETH),
    COVERAGE: (11, BTC),
    NO_CROSSED_BOOKS: (15, ETH),
    SCHEMA_VALID: (19, BTC),
    TIMESTAMPS_VALID: (23, ETH),
}
MIN_HOURS = max(index for index, _ in DAMAGE_PLAN.values()) + 1


def planted_hours(now: datetime, hours: int = DEFAULT_HOURS) -> list[datetime]:
    """The `hours` full hours before `now`'s hour, oldest first (the first is the partitions start)."""
    current = hour_floor(ms(now))
    return [current - timedelta(hours=n) for n in range(hours, 0, -1)]


def good_count(index: int, inst_id: str) -> int:
    """Records of an undamaged hour: 1800, minus a few now and then (coverage ≥ 99 %), so the
    coverage_pct plot over partitions is not a flat line."""
    return RECORDS_PER_HOUR - (index * 7 + len(inst_id)) % 11


def _checksum_marker(inst_id: str, record: dict) -> dict:
    """The collector's checksum marker in place of `record`: OKX sent a non-zero checksum that does
    not match the book (so `checksum_ok` false); the record's own `book_crc32` stays valid."""
    bids, asks = record["bids_top400"], record["asks_top400"]
    return build_record(inst_id=inst_id, ts_ms=ms(datetime.fromisoformat(record["timestamp_utc"])),
                        recv_ms=ms(datetime.fromisoformat(record["recv_ts_utc"])), bids=bids, asks=asks,
                        checksum=okx_checksum(bids, asks) ^ 0x5A5A, seq_id=record["seqId"],
                        prev_seq_id=record["prevSeqId"], gap_detected=False, checksum_ok=False)


def plant_damaged_hour(data_dir: Path, check: str, inst_id: str, hour: datetime, count: int) -> None:
    """Write `inst_id`'s `hour` damaged so that `check` (and only it) fails."""
    records = make_records(inst_id, hour, count=count)
    middle = count // 2
    if check == NO_GAPS:
        records, events = with_gap(records, middle, inst_id, hour)
        write_hour(data_dir, inst_id, hour, records, events=events)
    elif check == NO_CHECKSUM_FAILURES:
        marker = _checksum_marker(inst_id, records[middle])
        records[middle] = marker
        at = hour + timedelta(seconds=middle * 2 + 1)
        events = [
            event(inst_id, "checksum_mismatch", at, expected=marker["checksum"], computed=marker["book_crc32"],
                  seqId=marker["seqId"], action="resync"),
            event(inst_id, "resync_start", at, reason="checksum_mismatch", seqId=marker["seqId"]),
            event(inst_id, "resync_done", at + timedelta(seconds=1), how="ws_snapshot", seqId=marker["seqId"] + 1,
                  reason="checksum_mismatch"),
        ]
        write_hour(data_dir, inst_id, hour, records, events=events)
    elif check == COVERAGE:  # the collector started 400 records before the hour's end
        late = make_records(inst_id, hour, count=LOW_COVERAGE_RECORDS,
                            first_offset_ms=3_600_000 - LOW_COVERAGE_RECORDS * 2000 + 1000)
        start = hour + timedelta(hours=1) - timedelta(seconds=LOW_COVERAGE_RECORDS * 2)
        write_hour(data_dir, inst_id, hour, late,
                   events=[event(inst_id, "resync_done", start, how="ws_snapshot", seqId=999, reason="unsynced")])
    elif check == NO_CROSSED_BOOKS:
        rec = records[middle]
        records[middle] = crossed_record(inst_id, ms(datetime.fromisoformat(rec["timestamp_utc"])), rec["seqId"])
        write_hour(data_dir, inst_id, hour, records)
    elif check == SCHEMA_VALID:  # a crash mid-write left the hour's last line torn
        extra = make_records(inst_id, hour, count=count + 1)[-1]
        write_hour(data_dir, inst_id, hour, lines=[*map(encode_line, records), torn(encode_line(extra))])
    elif check == TIMESTAMPS_VALID:  # a record stamped 0.5 s after the hour's end, filed in this hour
        last = records[-1]
        late = build_record(inst_id=inst_id, ts_ms=ms(hour + timedelta(hours=1)) + 500,
                            recv_ms=ms(hour + timedelta(hours=1)) + 515, bids=last["bids_top400"],
                            asks=last["asks_top400"], checksum=0, seq_id=last["seqId"] + 1,
                            prev_seq_id=last["seqId"], gap_detected=False, checksum_ok=True)
        write_hour(data_dir, inst_id, hour, [*records, late])
    else:
        raise ValueError(f"no damage defined for check {check!r}")


def plant_damaged_lake(data_dir: Path, now: datetime, *, hours: int = DEFAULT_HOURS,
                       open_hour: bool = True) -> dict[str, str]:
    """Plant the lake described in the module docstring under `data_dir` (relative to `now`, an
    aware UTC datetime). Returns check name → the partition key (`YYYY-MM-DD-HH:MM|instId`) of the
    hour damaged for it. `open_hour` also writes the current hour's records up to `now`."""
    if hours < MIN_HOURS:
        raise ValueError(f"hours={hours}: the damaged hours need at least {MIN_HOURS}")
    data_dir = Path(data_dir)
    damaged = {(index, inst_id): check for check, (index, inst_id) in DAMAGE_PLAN.items()}
    out: dict[str, str] = {}
    for index, hour in enumerate(planted_hours(now, hours)):
        for inst_id in INSTRUMENTS:
            count = good_count(index, inst_id)
            check = damaged.get((index, inst_id))
            if check is None:
                plant_good_hour(data_dir, inst_id, hour, count=count)
            else:
                plant_damaged_hour(data_dir, check, inst_id, hour, count)
                out[check] = str(partition_key(inst_id, hour))
    if open_hour:
        current = hour_floor(ms(now))
        so_far = max(0, (ms(now) - ms(current) - 1000) // 2000 + 1)
        for inst_id in INSTRUMENTS:
            plant_good_hour(data_dir, inst_id, current, count=so_far)
    return dict(sorted(out.items()))

"""The lake writer on real files: hour routing, torn-line repair, dedup across restarts, disk full."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from l2_lake.format import layout
from l2_lake.format.record import RECORD_FIELDS, build_record, record_problems
from l2_lake.store.hour_files import LakeWriter, last_record_ts_ms, repair_torn_tail

INST = "BTC-USDT-SWAP"
H10 = 1_764_064_800_000  # 2025-11-25T10:00:00Z
DAY = 86_400_000


def rec(ts_ms: int, bids: list | None = None) -> dict:
    return build_record(inst_id=INST, ts_ms=ts_ms, recv_ms=ts_ms + 3, bids=bids or [["100.5", "1", "0", "1"]],
                        asks=[["101", "2", "0", "1"]], checksum=0, seq_id=ts_ms, prev_seq_id=ts_ms - 1,
                        gap_detected=False, checksum_ok=True)


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_records_route_by_event_hour_and_events_by_local_hour(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path, clock_ms=lambda: H10 + 7_200_000)
    writer.record(INST, H10 + 3_599_999, rec(H10 + 3_599_999))
    writer.record(INST, H10 + 3_600_000, rec(H10 + 3_600_000))
    writer.event(INST, "gap", expected=1, received=3)
    writer.close()
    hour10 = layout.records_path(tmp_path, INST, layout.hour_floor(H10))
    hour11 = layout.records_path(tmp_path, INST, layout.hour_floor(H10 + 3_600_000))
    assert [r["timestamp_utc"] for r in lines(hour10)] == ["2025-11-25T10:59:59.999Z"]
    assert [r["timestamp_utc"] for r in lines(hour11)] == ["2025-11-25T11:00:00.000Z"]
    assert all(not record_problems(r) and tuple(r) == RECORD_FIELDS for r in lines(hour10) + lines(hour11))
    events = lines(layout.events_path(tmp_path, INST, layout.hour_floor(H10 + 7_200_000)))
    assert events == [{"ts_utc": "2025-11-25T12:00:00.000Z", "instId": INST, "type": "gap", "expected": 1,
                       "received": 3}]


def test_restart_never_duplicates_a_timestamp(tmp_path: Path) -> None:
    first = LakeWriter(tmp_path, clock_ms=lambda: H10)
    for ts in (H10 + 1_000, H10 + 3_000):
        first.record(INST, ts, rec(ts))
    first.close()
    second = LakeWriter(tmp_path, clock_ms=lambda: H10)
    for ts in (H10 + 1_000, H10 + 3_000, H10 + 5_000):  # a replay of the same data after restart
        second.record(INST, ts, rec(ts))
    second.close()
    stamps = [r["timestamp_utc"] for r in lines(layout.records_path(tmp_path, INST, layout.hour_floor(H10)))]
    assert stamps == sorted(set(stamps)) and len(stamps) == 3
    assert second.duplicates_skipped[INST] == 2


def test_torn_tail_is_repaired_before_append(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path, clock_ms=lambda: H10)
    writer.record(INST, H10 + 1_000, rec(H10 + 1_000))
    writer.close()
    path = layout.records_path(tmp_path, INST, layout.hour_floor(H10))
    good = path.read_bytes()
    torn = orjson.dumps(rec(H10 + 2_000))[:57]
    path.write_bytes(good + torn)  # what kill -9 in the middle of a write could leave
    assert last_record_ts_ms(tmp_path, INST, not_after_ms=H10 + DAY) == H10 + 1_000
    writer = LakeWriter(tmp_path, clock_ms=lambda: H10)
    writer.record(INST, H10 + 4_000, rec(H10 + 4_000))
    writer.close()
    assert [r["timestamp_utc"][-10:] for r in lines(path)] == ["00:01.000Z", "00:04.000Z"]
    repair = lines(layout.events_path(tmp_path, INST, layout.hour_floor(H10)))[0]
    assert repair["type"] == "repair" and repair["dropped_bytes"] == len(torn)


@pytest.mark.parametrize("content", [b"", b"abc", b"{}\n", b"{}\n{\"a\"", b"x" * 200_000])
def test_repair_torn_tail_cases(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    dropped = repair_torn_tail(path)
    kept = content[: content.rfind(b"\n") + 1] if b"\n" in content else b""
    assert path.read_bytes() == kept and dropped == len(content) - len(kept)


def test_unwritable_directory_reports_and_recovers(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path, clock_ms=lambda: H10)
    blocker = tmp_path / "raw"
    blocker.write_text("a file where the lake directory should be")
    writer.record(INST, H10 + 1_000, rec(H10 + 1_000))
    assert writer.write_failures == 1 and writer.records_written[INST] == 0
    blocker.unlink()
    writer.record(INST, H10 + 2_000, rec(H10 + 2_000))
    writer.close()
    assert writer.records_written[INST] == 1


@pytest.fixture
def tiny_fs(tmpfs) -> Path:
    return tmpfs("256k")


def test_disk_full_leaves_no_torn_line_and_resumes(tiny_fs: Path) -> None:
    writer = LakeWriter(tiny_fs, clock_ms=lambda: H10)
    filler = tiny_fs / "filler"
    with open(filler, "wb") as f:  # leave only a few KB free
        f.write(b"\0" * (256 * 1024 - 24 * 1024))
    big_bids = [[f"{100 - i / 10:.1f}", "12345", "0", "9"] for i in range(400)]
    ts = H10
    while writer.write_failures == 0:
        ts += 1_000
        writer.record(INST, ts, rec(ts, big_bids))
    written = writer.records_written[INST]
    path = layout.records_path(tiny_fs, INST, layout.hour_floor(H10))
    assert path.read_bytes().endswith(b"\n") and len(lines(path)) == written  # nothing torn
    os.unlink(filler)  # space returns
    writer.record(INST, ts + 1_000, rec(ts + 1_000))
    writer.close()
    assert writer.records_written[INST] == written + 1
    assert all(not record_problems(r) for r in lines(path))


def test_far_future_record_never_becomes_the_dedup_high_water_mark(tmp_path: Path) -> None:
    """A garbage far-future ts in the lake (e.g. microseconds read as ms, from an older version) must
    not silence every later record, also across restarts; such a record is never written either."""
    future = H10 + 400 * DAY
    planted = layout.records_path(tmp_path, INST, layout.hour_floor(future))
    planted.parent.mkdir(parents=True)
    planted.write_bytes(orjson.dumps(rec(future)) + b"\n")
    writer = LakeWriter(tmp_path, clock_ms=lambda: H10)
    writer.record(INST, H10 + 1_000, rec(H10 + 1_000))
    writer.record(INST, H10 + 2 * DAY, rec(H10 + 2 * DAY))  # more than a day ahead of the local clock
    writer.close()
    assert writer.records_written[INST] == 1 and writer.last_ts(INST) == H10 + 1_000
    restarted = LakeWriter(tmp_path, clock_ms=lambda: H10 + 10_000)
    restarted.record(INST, H10 + 5_000, rec(H10 + 5_000))
    restarted.close()
    stamps = [r["timestamp_utc"] for r in lines(layout.records_path(tmp_path, INST, layout.hour_floor(H10)))]
    assert stamps == ["2025-11-25T10:00:01.000Z", "2025-11-25T10:00:05.000Z"]


def test_start_repairs_torn_tails_of_closed_hours(tmp_path: Path) -> None:
    """kill -9 mid-line, restart after the hour rolled over: the closed hour is repaired at start
    (records and events, last 48 h), with a `repair` event; older hours are left alone."""
    writer = LakeWriter(tmp_path, clock_ms=lambda: H10 + 1_000)
    for ts in (H10 - 3 * DAY, H10 + 1_000):
        writer.record(INST, ts, rec(ts))
    writer.close()
    torn_paths = [layout.records_path(tmp_path, INST, layout.hour_floor(ts)) for ts in (H10, H10 - 3 * DAY)]
    for path in torn_paths:
        path.write_bytes(path.read_bytes() + b'{"timestamp_utc":"2025-11-25T10:0')
    events = layout.events_path(tmp_path, INST, layout.hour_floor(H10))
    events.write_bytes(b'{"ts_utc":"2025-11-25T10:00:02.000Z","instId":"BTC-USDT-SWAP","type":"gap"}\n{"ts_u')
    restarted = LakeWriter(tmp_path, clock_ms=lambda: H10 + 3_700_000)  # 11:01, the 10:00 hour is closed
    assert restarted.repair_recent([INST]) == 2
    restarted.close()
    assert torn_paths[0].read_bytes().endswith(b"}\n") and len(lines(torn_paths[0])) == 1
    assert not torn_paths[1].read_bytes().endswith(b"\n")  # 3 days old: outside the window
    assert lines(events)[-1]["type"] == "gap"
    repairs = lines(layout.events_path(tmp_path, INST, layout.hour_floor(H10 + 3_700_000)))
    assert sorted(e["path"] for e in repairs if e["type"] == "repair") == sorted(
        str(p.relative_to(tmp_path)) for p in (torn_paths[0], events))

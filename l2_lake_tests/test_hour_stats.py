"""hour_stats and quality verdicts on planted hours: exact numbers, .jsonl and .jsonl.gz alike."""

from __future__ import annotations

import fcntl
import hashlib
import os
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest

from l2_lake.format import layout
from l2_lake.format.record import encode_line
from l2_lake.quality.hour_stats import compute_hour_stats, scan_events
from l2_lake.quality.verdicts import (
    COVERAGE,
    HOUR_CHECKS,
    NO_CHECKSUM_FAILURES,
    NO_CROSSED_BOOKS,
    NO_GAPS,
    SCHEMA_VALID,
    TIMESTAMPS_VALID,
    collector_freshness,
    evaluate_hour,
)
from l2_lake.store.collector_lock import COLLECTOR_LOCK
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    bad_crc,
    crossed_record,
    event,
    make_record,
    make_records,
    ms,
    plant_good_hour,
    torn,
    unsorted_record,
    with_gap,
    write_hour,
)


def verdicts(stats, threshold: float = 95.0) -> dict:
    return {v.check_name: v for v in evaluate_hour(stats, threshold)}


def test_good_hour_numbers_and_all_checks_pass(tmp_path):
    records = plant_good_hour(tmp_path, BTC, BASE_HOUR)
    path = layout.records_path(tmp_path, BTC, BASE_HOUR)
    stats = compute_hour_stats(tmp_path, BTC, BASE_HOUR, cadence_seconds=2.0)
    meta = stats.metadata()
    assert meta["records"] == 1800 and meta["coverage_pct"] == 100.0
    assert (meta["gaps"], meta["checksum_failures"], meta["resyncs"], meta["reconnects"]) == (0, 0, 0, 0)
    assert meta["bytes"] == path.stat().st_size == meta["raw_bytes"]
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["first_ts"] == ms(BASE_HOUR) / 1000 + 1
    assert meta["last_ts"] == ms(BASE_HOUR) / 1000 + 1 + 1799 * 2
    bid_ask = [(Decimal(r["best_bid"]), Decimal(r["best_ask"])) for r in records]
    spreads = [(ask - bid) / ((ask + bid) / 2) * 10_000 for bid, ask in bid_ask]
    assert meta["max_spread_bps"] == pytest.approx(float(max(spreads)), abs=1e-4)
    assert meta["crossed_records"] == 0 and meta["invalid_lines"] == 0
    assert all(v.passed for v in evaluate_hour(stats, 95.0))
    assert [v.check_name for v in evaluate_hour(stats, 95.0)] == list(HOUR_CHECKS)


def test_archived_hour_reads_the_same(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR)
    plain = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    plant_good_hour(tmp_path, ETH, BASE_HOUR, archived=True)
    stats = compute_hour_stats(tmp_path, ETH, BASE_HOUR, 2.0)
    assert stats.source_kind == "archive" and stats.source.name == "00.jsonl.gz"
    assert stats.records == plain.records == 1800
    assert stats.scan.raw_bytes > stats.source_bytes  # compressed on disk, raw bytes counted decompressed
    assert all(v.passed for v in evaluate_hour(stats, 95.0))


def test_cadence_and_threshold_boundary(tmp_path):
    write_hour(tmp_path, BTC, BASE_HOUR, make_records(BTC, BASE_HOUR, count=1710))
    stats = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    assert stats.coverage_pct == pytest.approx(95.0)
    assert verdicts(stats)[COVERAGE].passed
    assert not verdicts(stats, 95.01)[COVERAGE].passed
    assert compute_hour_stats(tmp_path, BTC, BASE_HOUR, 1.0).coverage_pct == pytest.approx(47.5)


def test_planted_bad_hour_counts_every_defect(tmp_path):
    hour = BASE_HOUR + timedelta(hours=3)
    records = make_records(BTC, hour, count=1800)
    records, gap_events_1 = with_gap(records, 100, BTC, hour)
    records, gap_events_2 = with_gap(records, 900, BTC, hour)
    records[1200] = make_record(BTC, ms(hour) + 1200 * 2000 + 1000, seq=5000, checksum_ok=False)
    records[1300] = crossed_record(BTC, ms(hour) + 1300 * 2000 + 1000, seq=6000)
    records[1400] = unsorted_record(BTC, ms(hour) + 1400 * 2000 + 1000, seq=7000)
    records[1500] = bad_crc(records[1500])
    records[1600] = {**records[1600], "instId": ETH}
    lines = [encode_line(r) for r in records]
    lines[1700] = encode_line(make_record(BTC, ms(hour + timedelta(hours=1)) + 5, seq=8000))  # next hour
    lines[1701] = lines[1699]  # goes back after the next-hour record
    lines[1750] = lines[1749]  # duplicate timestamp
    lines.insert(50, b"this is not json\n")
    lines.append(torn(lines[10]))
    events = [*gap_events_1, *gap_events_2,
              event(BTC, "checksum_mismatch", hour + timedelta(minutes=40), expected=1, computed=2),
              event(BTC, "reconnect", hour + timedelta(minutes=41), reason="stale"),
              event(BTC, "stale", hour + timedelta(minutes=41)),
              event(BTC, "reconnect", hour + timedelta(minutes=42), reason="closed")]
    write_hour(tmp_path, BTC, hour, lines=lines, events=events)

    stats = compute_hour_stats(tmp_path, BTC, hour, 2.0)
    scan = stats.scan
    assert scan.lines == 1802 and stats.records == 1800
    assert stats.gaps == 2 and scan.gap_markers == 2 and stats.resyncs == 2
    assert stats.checksum_failures == 1 and stats.reconnects == 2
    assert scan.crossed_records == 1
    assert scan.bad_json == 2  # the garbage line and the torn last line
    assert scan.torn_tail
    assert scan.invalid_records == 3  # unsorted levels, bad book_crc32, wrong instId
    assert stats.metadata()["invalid_lines"] == 5
    assert scan.out_of_hour == 1
    assert scan.non_increasing == 2  # back after the next-hour record, and the duplicate
    result = verdicts(stats)
    assert not result[NO_GAPS].passed and result[NO_GAPS].warn and result[NO_GAPS].metadata["gaps"] == 2
    assert not result[NO_CHECKSUM_FAILURES].passed and result[NO_CHECKSUM_FAILURES].warn
    assert not result[NO_CROSSED_BOOKS].passed and not result[NO_CROSSED_BOOKS].warn
    assert not result[SCHEMA_VALID].passed and "not JSON" in result[SCHEMA_VALID].description
    assert not result[TIMESTAMPS_VALID].passed
    assert result[COVERAGE].passed  # 1800 parsed records


def test_torn_last_line_that_parses_is_still_invalid(tmp_path):
    lines = [encode_line(r) for r in make_records(BTC, BASE_HOUR, count=10)]
    lines[-1] = lines[-1].rstrip(b"\n")
    write_hour(tmp_path, BTC, BASE_HOUR, lines=lines)
    stats = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    assert stats.records == 10 and stats.scan.invalid_records == 1 and stats.scan.torn_tail


def test_missing_hour_and_events_only_hour(tmp_path):
    stats = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    assert not stats.has_data and stats.source_kind == "none"
    result = verdicts(stats)
    assert not result[COVERAGE].passed and "no records file" in result[COVERAGE].description
    layout.events_path(tmp_path, BTC, BASE_HOUR).parent.mkdir(parents=True)
    layout.events_path(tmp_path, BTC, BASE_HOUR).write_bytes(
        encode_line(event(BTC, "reconnect", BASE_HOUR, reason="x")) + b"garbage\n")
    stats = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    assert stats.has_data and stats.reconnects == 1 and stats.events.bad_lines == 1


def test_scan_events_counts_types():
    lines = [encode_line(event(BTC, t, BASE_HOUR)) for t in ("gap", "gap", "resync_start", "notice")]
    scan = scan_events([*lines, b"\n", b"{}\n"])
    assert scan.count("gap") == 2 and scan.count("notice") == 1 and scan.bad_lines == 1


def test_collector_freshness_at_chosen_time(tmp_path):
    now = BASE_HOUR + timedelta(hours=5, minutes=30)
    current = BASE_HOUR + timedelta(hours=5)
    plant_good_hour(tmp_path, BTC, current, count=5, mtime=now - timedelta(minutes=1))
    plant_good_hour(tmp_path, ETH, current - timedelta(hours=1), count=5, mtime=now - timedelta(minutes=20))
    fresh = collector_freshness(tmp_path, [BTC], now, timedelta(minutes=5))
    assert fresh.passed and fresh.ages_seconds[BTC] == pytest.approx(60, abs=1)
    stale = collector_freshness(tmp_path, [BTC, ETH], now, timedelta(minutes=5))
    assert not stale.passed and stale.stale == [ETH]
    verdict = stale.verdict()
    assert verdict.description.startswith("stopped:") and "ETH-USDT-SWAP: 1200s" in verdict.description
    assert verdict.metadata["stale_instruments"] == 1
    # right after a rollover the previous hour's file counts
    rollover = collector_freshness(tmp_path, [BTC], current + timedelta(hours=1, seconds=30), timedelta(minutes=5))
    assert not rollover.passed  # BTC's last write was 31 min before
    late = (current + timedelta(minutes=59)).timestamp()
    os.utime(layout.records_path(tmp_path, BTC, current), (late, late))
    assert collector_freshness(tmp_path, [BTC], current + timedelta(hours=1, seconds=30), timedelta(minutes=5)).passed
    missing = collector_freshness(tmp_path, ["SOL-USDT-SWAP"], now, timedelta(minutes=5))
    assert not missing.passed and missing.ages_seconds == {"SOL-USDT-SWAP": None}


def test_freshness_with_replicas_looks_at_the_spools(tmp_path):
    """With redundant capture the lake's raw hours are written by the merge after the hour: one
    replica writing now is a fresh collector, whatever the lake holds."""
    now = BASE_HOUR + timedelta(hours=5, minutes=30)
    current = BASE_HOUR + timedelta(hours=5)
    lake, spool_a, spool_b = tmp_path / "lake", tmp_path / "a", tmp_path / "b"
    plant_good_hour(spool_a, BTC, current, count=5, mtime=now - timedelta(minutes=20))  # a stopped 20 min ago
    assert not collector_freshness(lake, [BTC], now, timedelta(minutes=5), replicas=[spool_a, spool_b]).passed
    plant_good_hour(spool_b, BTC, current, count=5, mtime=now - timedelta(minutes=1))  # b writes
    fresh = collector_freshness(lake, [BTC], now, timedelta(minutes=5), replicas=[spool_a, spool_b])
    assert fresh.passed and fresh.ages_seconds[BTC] == pytest.approx(60, abs=1)
    assert not collector_freshness(lake, [BTC], now, timedelta(minutes=5)).passed  # the lake alone has no file


def test_merged_hour_counts_its_markers_not_the_replicas_events(tmp_path):
    """A gap replica a saw and replica b covered leaves no marker in the canonical hour: no gap."""
    records = make_records(BTC, BASE_HOUR, count=10)
    a_events = [{**event(BTC, "gap", BASE_HOUR, expected=1, received=5, seqId=6), "replica": "a"},
                {**event(BTC, "checksum_mismatch", BASE_HOUR, expected=1, computed=2, seqId=7, action="resync"),
                 "replica": "a"}]
    write_hour(tmp_path, BTC, BASE_HOUR, records, events=a_events)
    stats = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    assert stats.events.merged and (stats.gaps, stats.checksum_failures) == (0, 0)
    write_hour(tmp_path, BTC, BASE_HOUR, records, events=[{k: v for k, v in e.items() if k != "replica"}
                                                          for e in a_events])
    one_collector = compute_hour_stats(tmp_path, BTC, BASE_HOUR, 2.0)
    assert (one_collector.gaps, one_collector.checksum_failures) == (1, 1)  # one collector: its events count


def test_freshness_carries_the_ship_backlog(tmp_path):
    """With --lake-url the collector publishes its backlog (.l2-ship-backlog.json, CONTRACT.md §1):
    collector_freshness shows it, so it is in Dagster's check history, plotted over time."""
    now = BASE_HOUR + timedelta(hours=5, minutes=30)
    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=5), count=5, mtime=now - timedelta(minutes=1))
    shipping_off = collector_freshness(tmp_path, [BTC], now, timedelta(minutes=5)).verdict()
    assert "ship_pending_hours" not in shipping_off.metadata
    (tmp_path / ".l2-ship-backlog.json").write_bytes(orjson.dumps({
        "lake_url": "s3://lake/okx", "pending_hours": 3, "pending_files": 7, "pending_bytes": 12_300_000,
        "oldest_pending_hour": "2026-11-20T02:00Z", "stuck_files": [], "consecutive_failures": 4,
        "last_error": "PUT s3://lake/okx/raw/… failed (HTTP 500 InternalError)"}))
    verdict = collector_freshness(tmp_path, [BTC], now, timedelta(minutes=5)).verdict()
    assert verdict.passed  # a backlog is not staleness: capture goes on
    assert {k: verdict.metadata[k] for k in ("ship_pending_hours", "ship_pending_bytes", "ship_consecutive_failures",
                                             "ship_oldest_pending_hour")} == {
        "ship_pending_hours": 3, "ship_pending_bytes": 12_300_000, "ship_consecutive_failures": 4,
        "ship_oldest_pending_hour": "2026-11-20T02:00Z"}
    assert "ship backlog 3 hour(s), 12.3 MB, oldest 2026-11-20T02:00Z" in verdict.description


def test_a_stopped_collector_is_not_a_stale_one(tmp_path):
    """The collector's lock tells them apart: free, the check warns "stopped"; held, it fails "stale"."""
    now = BASE_HOUR + timedelta(hours=5, minutes=30)
    plant_good_hour(tmp_path, BTC, BASE_HOUR + timedelta(hours=5), count=5, mtime=now - timedelta(minutes=20))
    stopped = collector_freshness(tmp_path, [BTC], now, timedelta(minutes=5)).verdict()
    assert not stopped.passed and stopped.warn and stopped.metadata["collector"] == "stopped"
    assert stopped.description.startswith("stopped: no l2-collector is running in")
    with open(tmp_path / COLLECTOR_LOCK, "w") as lock:  # what `l2-collector run` holds while it runs
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        lock.write("4242\n")
        lock.flush()
        stale = collector_freshness(tmp_path, [BTC], now, timedelta(minutes=5)).verdict()
    assert not stale.passed and not stale.warn and stale.metadata["collector"] == "running"
    assert stale.description.startswith("stale: the collector is running (PID 4242) but BTC-USDT-SWAP wrote nothing")

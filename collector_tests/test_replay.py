"""`l2-collector replay`: recorded frames through the engine into a lake, checked record by record."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson

from collector.simulator.market import dump_frames
from collector_tests.harness import digest, lake_events, lake_records, reference_file
from l2_lake.book.replay import replay_file
from l2_lake.format.record import parse_ts_ms, record_problems
from l2_lake.store import lake_walk


def test_replay_of_real_okx_recording(tmp_path: Path) -> None:
    frames = reference_file("cryptofeed_OKX_books_only.jsonl")
    stats = replay_file(frames, tmp_path, cadence_s=1.0)
    assert stats.book_messages == 290 and stats.bad_frames == 0
    # Each record must carry the book exactly as OKX checksummed it at that message.
    checksum_at: dict[tuple[str, int], int] = {}
    for line in frames.read_bytes().splitlines():
        msg = orjson.loads(line)
        checksum_at[(msg["arg"]["instId"], int(msg["data"][0]["ts"]))] = msg["data"][0]["checksum"]
    records = lake_records(tmp_path)
    assert set(records) == {"BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT"}
    total = 0
    for inst_id, recs in records.items():
        for rec in recs:
            assert not record_problems(rec)
            assert rec["book_crc32"] == rec["checksum"] == checksum_at[(inst_id, parse_ts_ms(rec["timestamp_utc"]))]
            assert rec["gap_detected"] is False and rec["checksum_ok"] is True
            total += 1
    assert total == stats.records > 20
    assert not [e for e in lake_events(tmp_path) if e["type"] in ("gap", "checksum_mismatch")]


def test_replay_of_simulated_stream_matches_truth(tmp_path: Path) -> None:
    frames = tmp_path / "frames.jsonl"
    dump_frames(frames, ["BTC-USDT-SWAP", "ETH-USDT-SWAP"], 3000, seed=5)
    # Truth: apply the stream naively and remember the top 400 at each (instId, ts).
    truth: dict[tuple[str, int], str] = {}
    books: dict[str, tuple[dict, dict]] = {}
    for line in frames.read_bytes().splitlines():
        msg = orjson.loads(line)
        inst_id, data = msg["arg"]["instId"], msg["data"][0]
        if msg["action"] == "snapshot":
            books[inst_id] = ({}, {})
        bids, asks = books[inst_id]
        for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
            for lv in levels:
                if lv[1] == "0":
                    side.pop(lv[0], None)
                else:
                    side[lv[0]] = lv
        top_b = [bids[p] for p in sorted(bids, key=Decimal, reverse=True)][:400]
        top_a = [asks[p] for p in sorted(asks, key=Decimal)][:400]
        truth[(inst_id, int(data["ts"]))] = digest(top_b, top_a)
    stats = replay_file(frames, tmp_path / "lake", cadence_s=2.0)
    recs = lake_records(tmp_path / "lake")
    checked = 0
    for inst_id, records in recs.items():
        for rec in records:
            assert truth[(inst_id, parse_ts_ms(rec["timestamp_utc"]))] == digest(rec["bids_top400"], rec["asks_top400"])
            checked += 1
    # 3000 frames over 2 instruments at 100 ms = 150 s of event time → ~75 cadence ticks each.
    assert checked == stats.records >= 140


def test_replay_cli_and_idempotence(tmp_path: Path) -> None:
    frames = reference_file("cryptofeed_OKX_books_only.jsonl")
    cmd = [sys.executable, "-m", "collector", "replay", "--input", str(frames), "--data-dir", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "290 frames" in first.stdout
    before = {f.path: f.path.read_bytes() for f in lake_walk.iter_hour_files(tmp_path) if f.kind == "records"}
    subprocess.run(cmd, capture_output=True, text=True, check=True)  # same input again: nothing new
    after = {f.path: f.path.read_bytes() for f in lake_walk.iter_hour_files(tmp_path) if f.kind == "records"}
    assert before == after

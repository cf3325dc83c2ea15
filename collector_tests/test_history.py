"""`l2-collector history` (the demo's history): closed hours of the simulator's books through the
same engine and writer, whose planted faults are caught the way live ones are, and nothing else is
flagged. Real files, read back."""

from __future__ import annotations

import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path

import orjson

from collector.simulator.history import default_plants, write_history
from collector_tests.harness import cli
from l2_lake.format import layout
from l2_lake.format.record import parse_ts_ms, record_problems
from l2_lake.store import lake_walk
from l2_lake.venues.okx.checksum import okx_checksum

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
END = layout.hour_floor(1_795_600_000_000)
HOURS = 4
PER_HOUR = 1800  # a record every 2 s


def hour_records(lake: Path) -> dict[tuple[str, int], list[dict]]:
    found = {}
    for f in lake_walk.iter_hour_files(lake):
        if f.kind == "records":
            offset = int((f.hour - (END - timedelta(hours=HOURS))).total_seconds()) // 3600
            found[(f.inst_id, offset)] = [orjson.loads(line) for line in f.path.read_bytes().splitlines()]
    return found


def test_history_holds_exact_hours_flagged_only_where_planted(tmp_path: Path) -> None:
    stats, plants = write_history(tmp_path, [BTC, ETH], END, HOURS)
    first = END - timedelta(hours=HOURS)
    assert plants == default_plants([BTC, ETH], first, HOURS)
    records = hour_records(tmp_path)
    assert sorted(records) == [(inst, h) for inst in (BTC, ETH) for h in range(HOURS)]
    assert stats.records == sum(map(len, records.values()))
    flags: Counter = Counter()
    for (inst_id, offset), hour in records.items():
        start_ms = int((first + timedelta(hours=offset)).timestamp() * 1000)
        for rec in hour:
            assert not record_problems(rec), (inst_id, rec["timestamp_utc"])
            assert start_ms <= parse_ts_ms(rec["timestamp_utc"]) < start_ms + 3_600_000
            assert rec["book_crc32"] == okx_checksum(rec["bids_top400"][:25], rec["asks_top400"][:25])
            assert len(rec["bids_top400"]) == len(rec["asks_top400"]) == 400
            flags[(inst_id, offset, "gap")] += rec["gap_detected"]
            flags[(inst_id, offset, "checksum")] += rec["checksum_ok"] is False
    assert +flags == Counter({(BTC, 1, "gap"): 1, (ETH, 2, "checksum"): 1})  # a marker each, nothing else
    assert len(records[(BTC, 2)]) == PER_HOUR - 15 * 30  # the 15-minute outage, to the record
    assert all(len(records[k]) in (PER_HOUR, PER_HOUR + 1) for k in records if k != (BTC, 2))


def test_history_command_says_what_it_planted_and_refuses_bad_input(tmp_path: Path) -> None:
    done = subprocess.run(cli("history", "--data-dir", str(tmp_path), "--instruments", BTC, "--hours", "1"),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {PER_HOUR}") and "planted: nothing" in done.stdout
    bad = subprocess.run(cli("history", "--data-dir", str(tmp_path), "--instruments", "btc usdt"),
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "give instIds such as BTC-USDT-SWAP" in bad.stderr

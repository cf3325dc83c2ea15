"""The cadence schedule (collector/cadence.py): one tick per instrument per cadence, each at its own offset.

- `CadenceSchedule` against a brute-force enumeration of every instrument's ticks, for several
  cadences and stretches (also stretches longer than a period and a clock that went back);
- a cadence pass's records reach the writer thread as one job (`BackgroundWriter.batch`) and land in
  the lake in order, each in its instrument's hour file;
- end to end (simulator and collector as processes on loopback, with `--tape`, whose `tick` lines
  carry the wall time of each tick): every instrument ticks once per period at its own offset,
  instruments with different offsets at different moments, each tick writes one record, and every
  record is exactly the simulator's book at its seqId and ts.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from collector.cadence import SLOT_MS, CadenceSchedule, tick_offset_ms
from collector.writer import BackgroundWriter
from collector_tests.harness import (
    count_records,
    lake_records,
    read_jsonl,
    start_collector,
    start_simulator,
    stop_process,
    verify_lake,
    wait_for,
)
from l2_lake.format import layout
from l2_lake.format.record import build_record, parse_ts_ms
from l2_lake.store import lake_walk
from l2_lake.store.hour_files import LakeWriter

INST_IDS = [f"AAA{i}-USDT-SWAP" for i in range(1, 101)] + ["BTC-USDT-SWAP", "ETH-USDT-SWAP"]


def brute_force_due(inst_ids: list[str], cadence_ms: int, since_ms: int, until_ms: int) -> list[str]:
    """Instruments with a tick in (since_ms, until_ms], each once, by listing every tick."""
    due = []
    for inst_id in inst_ids:
        offset = tick_offset_ms(inst_id, cadence_ms)
        first = (since_ms - offset) // cadence_ms * cadence_ms + offset
        if any(since_ms < t <= until_ms for t in range(first, until_ms + 1, cadence_ms)):
            due.append(inst_id)
    return sorted(due)


@pytest.mark.parametrize("cadence_s", [2.0, 0.2, 0.05, 0.001, 3.7])
def test_schedule_matches_every_instruments_ticks(cadence_s: float) -> None:
    schedule = CadenceSchedule(INST_IDS, cadence_s)
    cadence_ms = schedule.cadence_ms
    assert cadence_ms == max(1, round(cadence_s * 1000))
    rng = random.Random(7)
    for _ in range(2000):
        since = rng.randrange(1_700_000_000_000, 1_700_000_100_000)
        until = since + rng.choice([rng.randrange(-5, 3 * cadence_ms), rng.randrange(0, cadence_ms)])
        assert sorted(schedule.due(since, until)) == brute_force_due(INST_IDS, cadence_ms, since, until)
        tick = schedule.next_tick_ms(since)
        assert tick > since and schedule.due(since, tick) and not schedule.due(since, tick - 1)


def test_offsets_are_slots_spread_over_the_period() -> None:
    offsets = {inst_id: tick_offset_ms(inst_id, 2000) for inst_id in INST_IDS}
    assert all(0 <= o < 2000 and o % SLOT_MS == 0 for o in offsets.values())
    per_slot = defaultdict(int)
    for offset in offsets.values():
        per_slot[offset] += 1
    assert len(per_slot) >= 30 and max(per_slot.values()) <= 10  # 102 instruments over 40 slots


def test_a_batch_is_one_writer_job_and_its_records_land_in_order(tmp_path: Path) -> None:
    now_ms = 1_796_551_406_000
    writer = BackgroundWriter(LakeWriter(tmp_path, clock_ms=lambda: now_ms), clock_ms=lambda: now_ms)
    levels = ([["100.5", "2", "0", "1"]], [["101", "3", "0", "2"]])
    stamps = {"BTC-USDT-SWAP": [now_ms - 3000, now_ms - 1000], "ETH-USDT-SWAP": [now_ms - 2000]}

    def record(inst_id: str, ts_ms: int) -> dict:
        return build_record(inst_id=inst_id, ts_ms=ts_ms, recv_ms=ts_ms + 5, bids=levels[0], asks=levels[1],
                            checksum=0, seq_id=ts_ms, prev_seq_id=ts_ms - 1, gap_detected=False, checksum_ok=True)

    async def run() -> None:
        with writer.batch():
            for inst_id, ts_list in stamps.items():
                for ts_ms in ts_list:
                    writer.record(inst_id, ts_ms, record(inst_id, ts_ms))
            assert writer.backlog == 0  # nothing handed over inside the block
        assert writer.backlog == 1  # the whole pass as one job
        writer.start()
        assert await writer.close(5.0)

    asyncio.run(run())
    written = {inst_id: [parse_ts_ms(r["timestamp_utc"]) for r in records]
               for inst_id, records in lake_records(tmp_path).items()}
    assert written == stamps
    assert writer.store.records_written == {inst_id: len(ts) for inst_id, ts in stamps.items()}


@pytest.mark.e2e
def test_each_instrument_ticks_once_per_cadence_at_its_own_offset(tmp_path: Path) -> None:
    insts = ["BTC-USDT-SWAP", "ETH-USDT-SWAP", "SOL-USDT-SWAP", "XRP-USDT-SWAP"]
    cadence_ms = 1000
    offsets = {inst_id: tick_offset_ms(inst_id, cadence_ms) for inst_id in insts}
    assert len(set(offsets.values())) == len(insts), offsets  # the check below tells them apart
    sim = start_simulator(tmp_path, ",".join(insts), "--interval-ms", "50", "--seed", "5")
    data = tmp_path / "lake"
    collector = start_collector(tmp_path, sim, data, ",".join(insts), "--tape", "--cadence", "1")
    try:
        wait_for(lambda: count_records(data) >= 2 * len(insts), what="first records")
        time.sleep(4.0)
        assert stop_process(collector) < 5.0 and collector.returncode == 0
    finally:
        stop_process(collector, signal.SIGKILL)
        sim.stop()

    ticks: dict[str, list[int]] = defaultdict(list)
    for f in lake_walk.iter_hour_files(data, prefix=layout.TAPE_PREFIX):
        ticks[f.inst_id] += [line["r"] for line in read_jsonl(f.path) if line["t"] == "tick"]
    records = lake_records(data)
    for inst_id in insts:
        late_ms = [(r - offsets[inst_id]) % cadence_ms for r in ticks[inst_id]]
        periods = [(r - offsets[inst_id]) // cadence_ms for r in ticks[inst_id]]
        assert len(periods) >= 3 and len(set(periods)) == len(periods), (inst_id, ticks[inst_id])
        assert sorted(late_ms)[len(late_ms) // 2] < 100, (inst_id, offsets[inst_id], ticks[inst_id])
        assert len(records[inst_id]) == len(ticks[inst_id]), inst_id  # one record per tick, none lost
    result = verify_lake(data, sim.truth_log)
    assert result.promised > 0 and not result.wrong and result.exact == result.promised

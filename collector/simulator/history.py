"""Demo history: closed hours of the bundled simulator's books, made in seconds on a synthetic
exchange clock and written through the same engine and writer as a live run
(`l2_lake.book.replay.Replayer`), with faults planted so the pipeline's checks have something to
fail (`l2-collector history`; `scripts/demo.sh` runs it before the live collector).

The hours end where the current hour begins, so they are closed and a live collector started
afterwards continues the lake. Updates come every `tick_ms` of exchange time (500 ms: a quarter of
the live simulator's rate, to stay fast) and records every 2 s, 400 levels a side, as live. The
planted faults are what a live feed suffers, fed to the engine as a live session would see them:
- `gap`: one update is not delivered; the next one does not chain, the engine flags the gap and
  resubscribes, and the next message is a fresh snapshot;
- `checksum`: one update carries a wrong CRC32; the engine flags it and resubscribes likewise;
- `outage`: nothing arrives for `minutes`, then a fresh snapshot (a reconnect): the hour's coverage
  falls short.
Nothing in the engine or writer is relaxed for this: a planted fault is caught the way a live one is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from collector.simulator.instruments import instrument_spec
from collector.simulator.market import MarketBook, SyntheticClock
from l2_lake.book.replay import Replayer, ReplayStats

TICK_MS = 500
CADENCE_S = 2.0
DEPTH = 400


@dataclass(frozen=True)
class Plant:
    """One planted fault: `fault` in instrument `inst_id`, at `at`, lasting `minutes` (outage)."""

    fault: str  # "gap" | "checksum" | "outage"
    inst_id: str
    at: datetime
    minutes: int = 0

    def describe(self) -> str:
        lasting = f" for {self.minutes} min" if self.minutes else ""
        return f"{self.fault} in {self.inst_id} at {self.at:%Y-%m-%dT%H:%M}Z{lasting}"


def default_plants(inst_ids: list[str], first_hour: datetime, hours: int) -> list[Plant]:
    """A gap, a checksum failure and an outage, each in an hour of its own (as many as `hours` allows)."""
    other = inst_ids[1 % len(inst_ids)]
    plants = [Plant("gap", inst_ids[0], first_hour + timedelta(hours=1, minutes=20)),
              Plant("checksum", other, first_hour + timedelta(hours=2, minutes=40)),
              Plant("outage", inst_ids[0], first_hour + timedelta(hours=hours - 2, minutes=10), minutes=15)]
    return [p for p in plants if first_hour <= p.at < first_hour + timedelta(hours=hours)]


def _frames(books: dict[str, MarketBook], clock: SyntheticClock, end_ms: int, tick_ms: int,
            plants: list[Plant]) -> Iterator[bytes]:
    """Every message the engine receives, in exchange-time order."""
    at_ms = {(p.inst_id, int(p.at.timestamp() * 1000) // tick_ms * tick_ms): p for p in plants}
    silent_until: dict[str, int] = {}
    gapped: set[str] = set()  # an update of these was lost: the next one does not chain
    resync: set[str] = set()  # the next message of these is a fresh snapshot (resubscribed)
    for book in books.values():
        yield orjson.dumps(book.snapshot_message())
    while clock() + tick_ms < end_ms:
        clock.advance(tick_ms)
        now = clock()
        for inst_id, book in books.items():
            message = book.next_update()  # the true book moves on whatever is delivered
            plant = at_ms.get((inst_id, now))
            fault = plant.fault if plant is not None else ""
            if fault == "outage":
                silent_until[inst_id] = now + plant.minutes * 60_000
            if now < silent_until.get(inst_id, 0):
                resync.add(inst_id)
            elif inst_id in resync:
                resync.discard(inst_id)
                yield orjson.dumps(book.snapshot_message())
            elif fault == "gap":
                gapped.add(inst_id)
            else:
                if fault == "checksum":
                    message["data"][0]["checksum"] = (book.true_checksum() ^ 0x5A5A) or 1
                if fault == "checksum" or inst_id in gapped:  # the engine flags it and resubscribes
                    gapped.discard(inst_id)
                    resync.add(inst_id)
                yield orjson.dumps(message)


def write_history(data_dir: Path, inst_ids: list[str], end_hour: datetime, hours: int, seed: int = 7,
                  tick_ms: int = TICK_MS, plants: list[Plant] | None = None) -> tuple[ReplayStats, list[Plant]]:
    """Write `hours` closed hours of `inst_ids` ending at `end_hour` into the lake at `data_dir`."""
    first_hour = end_hour - timedelta(hours=hours)
    plants = default_plants(inst_ids, first_hour, hours) if plants is None else plants
    clock = SyntheticClock(int(first_hour.timestamp() * 1000))
    books = {inst_id: MarketBook(instrument_spec(inst_id), seed, clock) for inst_id in inst_ids}
    replayer = Replayer(data_dir, CADENCE_S, DEPTH)
    for frame in _frames(books, clock, int(end_hour.timestamp() * 1000), tick_ms, plants):
        replayer.feed(frame)
    return replayer.finish(), plants

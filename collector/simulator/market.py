"""The simulator's true order books: a deterministic, independent model of OKX `books` data.

This is the oracle the collector is tested against, so it shares no code with `l2_lake.book.order_book`
(only the published checksum formula is imported). Prices are integer ticks and sizes integer
lots; both are printed the way OKX prints them (plain decimals, no trailing zeros). Each update
is the exact difference between two consecutive true states, best level first on each side.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from collector.simulator.instruments import InstrumentSpec, instrument_spec
from l2_lake.venues.okx.checksum import CHECKSUM_DEPTH, okx_checksum

DEPTH = 400
CHECKSUM_MODES = ("real", "zero")
DUMP_START_MS = 1_795_564_800_000  # 2026-11-25T00:00:00Z, first timestamp of dump_frames
DUMP_TICK_MS = 100

Level = list[str]


def parse_scaled(text: str) -> tuple[int, int]:
    """A positive decimal string as (units, decimals): "0.01" → (1, 2), "5" → (5, 0)."""
    value = Decimal(text)
    if not value.is_finite() or value <= 0:
        raise ValueError(f"expected a positive decimal, got {text!r}")
    decimals = max(0, -value.normalize().as_tuple().exponent)
    return int(value.scaleb(decimals)), decimals


def format_scaled(units: int, decimals: int) -> str:
    """`units` × 10^-decimals as OKX prints it: "30316", "30238.8", "0.0001617"."""
    if decimals == 0:
        return str(units)
    digits = str(units).rjust(decimals + 1, "0")
    whole, frac = digits[:-decimals], digits[-decimals:].rstrip("0")
    return f"{whole}.{frac}" if frac else whole


class SyntheticClock:
    """A millisecond clock that only moves when told to (for reproducible streams)."""

    def __init__(self, start_ms: int = DUMP_START_MS) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


class _Side:
    """One side of a book: tick → level strings, and the occupied ticks in ascending order.

    Remembers the level each touched tick had before the current update, so the update can be
    computed as a diff.
    """

    __slots__ = ("before", "is_bid", "levels", "ticks")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, Level] = {}
        self.ticks: list[int] = []
        self.before: dict[int, Level | None] = {}

    def __len__(self) -> int:
        return len(self.ticks)

    def tick_at(self, rank: int) -> int:
        """Tick of the level `rank` places from the best (0 = best)."""
        return self.ticks[-1 - rank] if self.is_bid else self.ticks[rank]

    def best(self) -> int:
        return self.tick_at(0)

    def worst(self) -> int:
        return self.ticks[0] if self.is_bid else self.ticks[-1]

    def away(self, tick: int, distance: int) -> int:
        """The tick `distance` ticks further from the spread than `tick`."""
        return tick - distance if self.is_bid else tick + distance

    def top(self, n: int) -> list[Level]:
        if self.is_bid:
            return [self.levels[t] for t in reversed(self.ticks[-n:])]
        return [self.levels[t] for t in self.ticks[:n]]

    def _remember(self, tick: int) -> None:
        if tick not in self.before:
            self.before[tick] = self.levels.get(tick)

    def put(self, tick: int, level: Level) -> None:
        self._remember(tick)
        if tick not in self.levels:
            insort(self.ticks, tick)
        self.levels[tick] = level

    def remove(self, tick: int) -> None:
        self._remember(tick)
        del self.levels[tick]
        del self.ticks[bisect_left(self.ticks, tick)]

    def take_changes(self, deletion: Callable[[int], Level]) -> list[Level]:
        """The levels that differ from before the update, best first; forgets the old state."""
        changes: list[tuple[int, Level]] = []
        for tick, old in self.before.items():
            new = self.levels.get(tick)
            if new is None:
                if old is not None:
                    changes.append((tick, deletion(tick)))
            elif new != old:
                changes.append((tick, new))
        self.before.clear()
        changes.sort(reverse=self.is_bid)
        return [level for _, level in changes]


class MarketBook:
    """The true book of one instrument and the OKX messages that describe its evolution.

    `clock_ms` supplies event time; `ts` is forced strictly increasing. The same `seed` and
    instId always give the same sequence of books, seqIds and level strings.
    """

    def __init__(
        self,
        spec: InstrumentSpec,
        seed: int,
        clock_ms: Callable[[], int],
        checksum_mode: str = "real",
    ) -> None:
        if checksum_mode not in CHECKSUM_MODES:
            raise ValueError(f"checksum mode must be one of {CHECKSUM_MODES}, got {checksum_mode!r}")
        self.spec = spec
        self.inst_id = spec.inst_id
        self.checksum_mode = checksum_mode
        self._rng = random.Random(f"{seed}:{spec.inst_id}")
        self._clock = clock_ms
        self._px_units, self._px_decimals = parse_scaled(spec.tick_sz)
        self._lot_units, self._lot_decimals = parse_scaled(spec.lot_sz)
        self._size_mu = 5.5 if self._lot_decimals else 3.5
        self.bids = _Side(is_bid=True)
        self.asks = _Side(is_bid=False)
        mid = max(2, int(Decimal(spec.start_px) / Decimal(spec.tick_sz)))
        self.bids.put(mid - 1, self._new_level(mid - 1))
        self.asks.put(mid + 1, self._new_level(mid + 1))
        self._refill(self.bids)
        self._refill(self.asks)
        self.bids.before.clear()
        self.asks.before.clear()
        self.seq_id = self._rng.randint(1_000_000_000, 9_000_000_000)
        self.prev_seq_id = -1
        self.ts_ms = clock_ms()

    # ---- reading the true state

    def top(self, depth: int = DEPTH) -> tuple[list[Level], list[Level]]:
        """(bids, asks), best first, at most `depth` levels each."""
        return self.bids.top(depth), self.asks.top(depth)

    def best_bid(self) -> str:
        return self.bids.levels[self.bids.best()][0]

    def best_ask(self) -> str:
        return self.asks.levels[self.asks.best()][0]

    def true_checksum(self) -> int:
        """OKX's CRC32 of the current top 25, whatever the checksum mode."""
        return okx_checksum(self.bids.top(CHECKSUM_DEPTH), self.asks.top(CHECKSUM_DEPTH))

    # ---- messages

    def snapshot_message(self) -> dict[str, Any]:
        """The full current book as an OKX `snapshot` push (prevSeqId -1, the state's own ts)."""
        bids, asks = self.top()
        return self._message("snapshot", bids, asks, -1)

    def next_update(self, reset: bool = False) -> dict[str, Any]:
        """Advance the book by one 100 ms step and return the `update` push describing it.

        `reset` makes the new seqId lower than the last one (prevSeqId still chains)."""
        bids: list[Level] = []
        asks: list[Level] = []
        while not bids and not asks:
            self._mutate()
            bids = self.bids.take_changes(self._deletion)
            asks = self.asks.take_changes(self._deletion)
        self._advance(reset)
        return self._message("update", bids, asks, self.prev_seq_id)

    def heartbeat_update(self) -> dict[str, Any]:
        """An unchanged-book heartbeat: empty sides, seqId == prevSeqId == last seqId."""
        self._advance(reset=False, step=0)
        return self._message("update", [], [], self.prev_seq_id)

    def _message(self, action: str, bids: list[Level], asks: list[Level], prev_seq_id: int) -> dict[str, Any]:
        checksum = self.true_checksum() if self.checksum_mode == "real" else 0
        return {
            "arg": {"channel": "books", "instId": self.inst_id},
            "action": action,
            "data": [
                {
                    "asks": asks,
                    "bids": bids,
                    "ts": str(self.ts_ms),
                    "checksum": checksum,
                    "seqId": self.seq_id,
                    "prevSeqId": prev_seq_id,
                }
            ],
        }

    def _advance(self, reset: bool, step: int | None = None) -> None:
        self.prev_seq_id = self.seq_id
        if reset and self.seq_id > 1:
            self.seq_id = self._rng.randint(1, max(1, (self.seq_id - 1) // 1000))
        else:
            self.seq_id += self._rng.randint(1, 5) if step is None else step
        self.ts_ms = max(self._clock(), self.ts_ms + 1)

    # ---- the random walk

    def _px(self, tick: int) -> str:
        return format_scaled(tick * self._px_units, self._px_decimals)

    def _deletion(self, tick: int) -> Level:
        return [self._px(tick), "0", "0", "0"]

    def _new_level(self, tick: int) -> Level:
        rng = self._rng
        lots = max(1, round(rng.lognormvariate(self._size_mu, 1.2)))
        orders = min(lots, 999, max(1, round(rng.lognormvariate(0.8, 0.9))))
        return [self._px(tick), format_scaled(lots * self._lot_units, self._lot_decimals), "0", str(orders)]

    def _mutate(self) -> None:
        rng = self._rng
        if rng.random() < 0.25:
            self._move(rng.choice((1, -1)) * (1 + min(4, int(rng.expovariate(1.2)))))
        # ~20 level changes per 100 ms, most near the top but reaching deep into the 400 (as in the
        # recorded OKX stream, ~25 levels per update).
        for _ in range(4 + min(60, int(rng.expovariate(0.06)))):
            side = self.bids if rng.random() < 0.5 else self.asks
            roll = rng.random()
            if roll < 0.6:
                tick = side.tick_at(min(int(rng.expovariate(0.03)), len(side) - 1))
                side.put(tick, self._new_level(tick))
            elif roll < 0.8:
                if len(side) > 1:
                    side.remove(side.tick_at(min(int(rng.expovariate(0.1)), len(side) - 1)))
            else:
                self._insert(side)
        for side in (self.bids, self.asks):
            while len(side) > DEPTH:
                side.remove(side.worst())
            self._refill(side)

    def _insert(self, side: _Side) -> None:
        rng = self._rng
        bid, ask = self.bids.best(), self.asks.best()
        if ask - bid > 1 and rng.random() < 0.5:
            tick = rng.randint(bid + 1, ask - 1)
        else:
            tick = side.away(side.best(), int(rng.expovariate(0.08)))
        if tick >= 1:
            side.put(tick, self._new_level(tick))

    def _move(self, delta: int) -> None:
        """Trade through the spread: `delta` > 0 lifts asks, < 0 hits bids; the other side follows."""
        rng = self._rng
        taken, behind = (self.asks, self.bids) if delta > 0 else (self.bids, self.asks)
        target = taken.away(taken.best(), abs(delta))
        if target < 1:
            return
        while taken.ticks and (taken.best() < target if delta > 0 else taken.best() > target):
            taken.remove(taken.best())
        if target not in taken.levels:
            taken.put(target, self._new_level(target))
        old_best = behind.best()
        new_best = behind.away(target, 1 + (rng.random() < 0.3))
        if new_best > old_best if behind.is_bid else new_best < old_best:
            for tick in range(min(old_best, new_best) + 1, max(old_best, new_best)):
                if rng.random() < 0.6:
                    behind.put(tick, self._new_level(tick))
            behind.put(new_best, self._new_level(new_best))

    def _refill(self, side: _Side) -> None:
        """Levels beyond the 400 window enter it when nearer ones go (OKX keeps 400 per side)."""
        rng = self._rng
        while len(side) < DEPTH:
            gap = 1 if rng.random() < 0.8 else 2 + int(rng.expovariate(0.7))
            tick = side.away(side.worst(), gap)
            if tick < 1:
                return
            side.put(tick, self._new_level(tick))


def dump_frames(
    path: Path | str,
    inst_ids: Iterable[str],
    n_frames: int,
    seed: int,
    checksum_mode: str = "real",
) -> int:
    """Write `n_frames` raw frames (one JSON per line): one snapshot per instrument, then one
    update per instrument per 100 ms of a synthetic clock, interleaved. Returns frames written.

    Equal arguments give byte-identical files."""
    clock = SyntheticClock()
    books = [MarketBook(instrument_spec(i), seed, clock, checksum_mode) for i in inst_ids]
    if not books:
        raise ValueError("dump_frames needs at least one instrument")
    written = 0
    with open(path, "wb") as out:
        for book in books[:n_frames]:
            out.write(orjson.dumps(book.snapshot_message()) + b"\n")
            written += 1
        while written < n_frames:
            clock.advance(DUMP_TICK_MS)
            for book in books[: n_frames - written]:
                out.write(orjson.dumps(book.next_update()) + b"\n")
                written += 1
    return written

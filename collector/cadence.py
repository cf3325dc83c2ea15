"""When each instrument's snapshot record is due: one tick per cadence, at the instrument's own offset.

Every instrument gets one tick every `cadence` seconds of wall time, at a fixed offset within the
period, so the work of a tick (copying the top levels, the record's CRC32 and mid, serialising some
20 kB of JSON, the write) is spread over the period instead of being done for every instrument at
the same instant. At 250 instruments that single burst held the event loop ~30 ms and queued 250
lines for the writer thread, the last of them on disk ~110 ms after its tick (docs/PERFORMANCE.md).

The offset is one of `cadence / SLOT_MS` slots, picked by the CRC32 of the instId: it depends on
nothing else, so it is the same across restarts, configurations and replicas, whose records then
mostly coincide (`l2_lake.tiers.replicas`). Times are integer epoch milliseconds.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Iterable

# Ticks fall on multiples of this: at most cadence / 50 ms passes per period (each costs a wake-up of the
# loop and one writer job), and two phases of a 100 ms update cycle, so not every record's age is set by
# the same phase of the feed.
SLOT_MS = 50


def tick_offset_ms(inst_id: str, cadence_ms: int) -> int:
    """The instrument's tick within each period of `cadence_ms`, in [0, cadence_ms)."""
    slots = max(1, cadence_ms // SLOT_MS)
    return zlib.crc32(inst_id.encode()) % slots * cadence_ms // slots


class CadenceSchedule:
    """The ticks of a set of instruments: the next one after a moment, and which fall in a stretch."""

    def __init__(self, inst_ids: Iterable[str], cadence_s: float) -> None:
        self.cadence_ms = max(1, round(cadence_s * 1000))
        self._at: dict[int, list[str]] = {}
        for inst_id in inst_ids:
            self._at.setdefault(tick_offset_ms(inst_id, self.cadence_ms), []).append(inst_id)
        self._offsets = sorted(self._at)

    def next_tick_ms(self, after_ms: int) -> int:
        """The first tick of any instrument strictly after `after_ms`."""
        start, phase = divmod(after_ms, self.cadence_ms)
        i = bisect_right(self._offsets, phase)
        if i < len(self._offsets):
            return start * self.cadence_ms + self._offsets[i]
        return (start + 1) * self.cadence_ms + self._offsets[0]

    def due(self, since_ms: int, until_ms: int) -> list[str]:
        """Instruments with a tick in (since_ms, until_ms], each once however long the stretch
        (a wall clock that jumped ahead gives every instrument one record, not a record per period)."""
        if until_ms - since_ms >= self.cadence_ms:
            offsets = self._offsets
        elif until_ms <= since_ms:
            offsets = []
        else:
            first, second = since_ms % self.cadence_ms, until_ms % self.cadence_ms
            lo, hi = bisect_right(self._offsets, first), bisect_right(self._offsets, second)
            # (first, second] within one period, or (first, end) + [0, second] across a period boundary
            offsets = self._offsets[lo:hi] if second > first else self._offsets[lo:] + self._offsets[:hi]
        return [inst_id for offset in offsets for inst_id in self._at[offset]]

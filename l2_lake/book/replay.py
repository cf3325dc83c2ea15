"""`l2-collector replay`: recorded frames through the same engine and store as a live run.

The cadence runs on exchange event time: before the first message at or after each cadence
boundary, every in-sync book that changed gets its record, exactly as the live cadence would
have written it. Events are stamped with the event time being replayed, so they land in the hour
they happened. Resubscribe requests are honoured immediately; REST alignment is impossible offline,
so a book that lost sync waits for the next snapshot in the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from l2_lake.book.engine import InstrumentSync, Resync, write_due_snapshots
from l2_lake.logs import log_event
from l2_lake.store.hour_files import LakeWriter
from l2_lake.venues.messages import BadFrame, BookMessage
from l2_lake.venues.registry import DEFAULT_VENUE

log = logging.getLogger("l2_lake.book.replay")


@dataclass
class ReplayStats:
    frames: int = 0
    book_messages: int = 0
    bad_frames: int = 0
    records: int = 0


class Replayer:
    """Feeds frames in file order; `finish()` writes the last cadence tick and closes files."""

    def __init__(self, data_dir: Path, cadence_s: float, depth: int) -> None:
        self._now_ms = 0
        self.store = LakeWriter(data_dir, clock_ms=lambda: self._now_ms)
        self.depth = depth
        self.cadence_ms = max(1, round(cadence_s * 1000))
        self.syncs: dict[str, InstrumentSync] = {}
        self._next_tick: int | None = None
        self.stats = ReplayStats()

    def _sync(self, inst_id: str) -> InstrumentSync:
        sync = self.syncs.get(inst_id)
        if sync is None:
            sync = self.syncs[inst_id] = InstrumentSync(inst_id, self.depth, self.store)
            sync.subscribed()
        return sync

    def _advance(self, ts_ms: int) -> None:
        if self._next_tick is None:
            self._next_tick = (ts_ms // self.cadence_ms + 1) * self.cadence_ms
        elif ts_ms >= self._next_tick:
            write_due_snapshots(self.syncs, self.store)
            self._next_tick = (ts_ms // self.cadence_ms + 1) * self.cadence_ms

    def feed(self, raw: bytes) -> None:
        self.stats.frames += 1
        try:
            decoded = DEFAULT_VENUE.decode(raw)
        except BadFrame as exc:
            self.stats.bad_frames += 1
            if self.stats.bad_frames == 1:
                log_event(log, logging.WARNING, "bad_frame", exc.inst_id,
                          f"frame {self.stats.frames} skipped: {exc} (further bad frames are only counted)")
            return
        if not isinstance(decoded, list):
            return
        for msg in decoded:
            self._apply(msg)

    def _apply(self, msg: BookMessage) -> None:
        self.stats.book_messages += 1
        self._advance(msg.ts_ms)
        self._now_ms = msg.ts_ms
        sync = self._sync(msg.inst_id)
        if sync.on_book(msg, msg.ts_ms) is Resync.RESUBSCRIBE:
            sync.subscribed()

    def finish(self) -> ReplayStats:
        write_due_snapshots(self.syncs, self.store)
        self.store.close()
        self.stats.records = sum(self.store.records_written.values())
        return self.stats


def replay_file(frames_path: Path, data_dir: Path, cadence_s: float, depth: int = 400) -> ReplayStats:
    """Replay one JSONL file of raw frames (one frame per line) into the lake at `data_dir`."""
    replayer = Replayer(data_dir, cadence_s, depth)
    with open(frames_path, "rb") as f:
        for line in f:
            if line.strip():
                replayer.feed(line.rstrip(b"\r\n"))
    return replayer.finish()

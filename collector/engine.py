"""Per-instrument synchronisation: sequence rule, checksum, resync and REST alignment (DESIGN.md §3–§5).

`InstrumentSync` is the hot path. It is synchronous and does no I/O: it applies book messages,
reports integrity events and flagged marker records to a sink, and tells its caller what to do when
the book cannot be trusted (`Resync.RESUBSCRIBE` or `Resync.REST`). The asyncio feed, the replay
command, tests and benchmarks all drive the same object.

States: WAIT_ACK (subscription requested; pushes still in flight belong to the old subscription),
WAIT_FIRST (acknowledged; the first push tells whether OKX sends a WS snapshot), ALIGNING (updates
buffered while a REST snapshot is fetched), SYNCED (book is exactly the exchange's).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

from collector.book import BadLevel, OrderBook
from collector.frames import BookMessage
from collector.record import build_record

MAX_BUFFERED_UPDATES = 3000  # 5 min of 100 ms updates while a REST snapshot is awaited
MAX_REST_ATTEMPTS = 10


class Resync(enum.Enum):
    RESUBSCRIBE = "resubscribe"  # unsubscribe + subscribe to get a fresh WS snapshot
    REST = "rest"  # fetch GET /api/v5/market/books and call on_rest_snapshot


class State(enum.Enum):
    WAIT_ACK = "wait_ack"
    WAIT_FIRST = "wait_first"
    ALIGNING = "aligning"
    SYNCED = "synced"


class Sink(Protocol):
    """Where the engine reports; the store writes these, tests collect them."""

    def event(self, inst_id: str, event_type: str, **details: Any) -> None: ...

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None: ...


class InstrumentSync:
    """Book, sequence state and counters of one instrument."""

    def __init__(self, inst_id: str, depth: int, sink: Sink) -> None:
        self.inst_id = inst_id
        self.depth = depth
        self.sink = sink
        self.book = OrderBook()
        self.state = State.WAIT_ACK
        self._buffer: list[tuple[BookMessage, int]] = []  # (update, recv_ms)
        self._bridge: tuple[int, int] | None = None  # (seqId, ts) of the snapshot the next update must follow
        self._bridge_contained = False  # an update contained in that snapshot has been seen
        self._rest_attempts = 0
        self._resync_reason: str | None = None
        self.changed = False
        # last applied message
        self.seq_id: int | None = None
        self.prev_seq_id: int | None = None
        self.ts_ms = 0
        self.recv_ms = 0
        self.checksum = 0
        # counters for status and tests
        self.messages = 0
        self.gaps = 0
        self.checksum_failures = 0
        self.resyncs = 0
        self.bad_levels = 0

    @property
    def in_sync(self) -> bool:
        return self.state is State.SYNCED

    # -- subscription lifecycle (driven by the feed) -------------------------------------------

    def drop(self, reason: str) -> None:
        """Forget the book (reconnect, stale feed, resubscribe); wait for a new subscription ack."""
        if self.state is State.SYNCED:
            self._start_resync(reason)
        elif self._resync_reason is None and reason != "start":
            self._resync_reason = reason
        self._reset(State.WAIT_ACK)

    def subscribed(self) -> None:
        """The subscribe ack arrived: the next push decides WS-snapshot or REST path."""
        if self.state is State.WAIT_ACK:
            self.state = State.WAIT_FIRST

    # -- messages ------------------------------------------------------------------------------

    def on_book(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        """Apply one pushed book message; returns what the caller must do, if anything."""
        self.messages += 1
        if msg.is_snapshot:
            return self._load_snapshot(msg, recv_ms, how="ws_snapshot")
        state = self.state
        if state is State.SYNCED:
            return self._apply_update(msg, recv_ms)
        if state is State.WAIT_ACK:
            return None  # pushed under the previous subscription
        if len(self._buffer) >= MAX_BUFFERED_UPDATES:
            del self._buffer[0]
        self._buffer.append((msg, recv_ms))
        if state is State.WAIT_FIRST:
            self.state = State.ALIGNING
            if self._resync_reason is None:
                self._resync_reason = "no_ws_snapshot"
            self._rest_attempts = 0
            return Resync.REST
        return None

    def on_rest_snapshot(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        """A REST `/market/books` result for an ALIGNING book (OKX's alignment procedure)."""
        if self.state is not State.ALIGNING:
            return None  # a WS snapshot won the race
        if self._older_than_buffer(msg):
            return self.rest_failed()  # the updates between snapshot and buffer are lost to us
        return self._load_snapshot(msg, recv_ms, how="rest")

    def _older_than_buffer(self, snap: BookMessage) -> bool:
        """True when the first buffered update the snapshot does not contain cannot follow it."""
        for index, (update, _) in enumerate(self._buffer):
            follow = _follows(update, snap.seq_id, snap.ts_ms, after_contained=index > 0)
            if follow is not Follow.SKIP:
                return follow is Follow.HOLE
        return False

    def rest_failed(self) -> Resync:
        """The REST snapshot failed or was too old; retry, or resubscribe after repeated failures."""
        self._rest_attempts += 1
        if self._rest_attempts >= MAX_REST_ATTEMPTS:
            self._reset(State.WAIT_ACK)
            return Resync.RESUBSCRIBE
        return Resync.REST

    # -- cadence -------------------------------------------------------------------------------

    def snapshot_record(self) -> dict[str, Any] | None:
        """The record for this cadence tick: only from a synced book that changed since the last one."""
        if self.state is not State.SYNCED or not self.changed:
            return None
        self.changed = False
        return self._record(self.ts_ms, self.seq_id, self.prev_seq_id, gap=False, checksum_ok=True)

    # -- internals -----------------------------------------------------------------------------

    def _record(self, ts_ms: int, seq_id: int | None, prev_seq_id: int | None, *, gap: bool,
                checksum_ok: bool, checksum: int | None = None) -> dict[str, Any]:
        return build_record(
            inst_id=self.inst_id, ts_ms=ts_ms, recv_ms=self.recv_ms,
            bids=self.book.bids.top(self.depth), asks=self.book.asks.top(self.depth),
            checksum=self.checksum if checksum is None else checksum,
            seq_id=seq_id, prev_seq_id=prev_seq_id, gap_detected=gap, checksum_ok=checksum_ok,
        )

    def _reset(self, state: State) -> None:
        self.book.clear()
        self._buffer.clear()
        self._bridge = None
        self._bridge_contained = False
        self.changed = False
        self.state = state

    def _start_resync(self, reason: str) -> None:
        self.resyncs += 1
        self._resync_reason = reason
        self.sink.event(self.inst_id, "resync_start", reason=reason, seqId=self.seq_id)

    def _desync(self, reason: str) -> Resync:
        self._start_resync(reason)
        self._reset(State.WAIT_ACK)
        return Resync.RESUBSCRIBE

    def _load_snapshot(self, msg: BookMessage, recv_ms: int, how: str) -> Resync | None:
        buffered = self._buffer[:] if self.state is State.ALIGNING else []
        self._reset(State.SYNCED)
        try:
            self.book.apply(msg.bids, msg.asks)
        except BadLevel as exc:
            return self._bad_levels(exc)
        if self._checksum_mismatch(msg):
            return self._desync("checksum_mismatch")
        self._accept(msg, recv_ms)
        self._bridge = None if msg.seq_id is None else (msg.seq_id, msg.ts_ms)
        self.sink.event(self.inst_id, "resync_done", how=how, seqId=msg.seq_id,
                        reason=self._resync_reason or "start")
        self._resync_reason = None
        for update, update_recv_ms in buffered:
            resync = self._apply_update(update, update_recv_ms)
            if resync is not None:
                return resync
        return None

    def _apply_update(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        prev, seq = msg.prev_seq_id, msg.seq_id
        if prev is not None and self.seq_id is not None:
            if self._bridge is not None:
                follow = _follows(msg, *self._bridge, after_contained=self._bridge_contained)
                if follow is Follow.SKIP:
                    self._bridge_contained = True
                    return None  # already contained in the snapshot
                if follow is Follow.HOLE:
                    return self._gap(msg, expected=self._bridge[0])
            elif prev != self.seq_id:
                return self._gap(msg, expected=self.seq_id)
        self._bridge = None
        try:
            self.book.apply(msg.bids, msg.asks)
        except BadLevel as exc:
            return self._bad_levels(exc)
        if self._checksum_mismatch(msg):
            # Marker record: the book as the bad message left it, flagged checksum_ok=false.
            self.recv_ms = recv_ms
            self.sink.record(self.inst_id, msg.ts_ms, self._record(
                msg.ts_ms, seq, prev, gap=False, checksum_ok=False, checksum=msg.checksum))
            return self._desync("checksum_mismatch")
        if msg.bids or msg.asks:
            self.changed = True
        self._accept(msg, recv_ms)
        return None

    def _checksum_mismatch(self, msg: BookMessage) -> bool:
        """True (and reported) when OKX sent a non-zero checksum that the applied book does not match."""
        if not msg.checksum:
            return False  # 0 means absent (OKX production since 2026-06-23)
        computed = self.book.checksum()
        if computed == msg.checksum:
            return False
        self.checksum_failures += 1
        self.sink.event(self.inst_id, "checksum_mismatch", expected=msg.checksum, computed=computed,
                        seqId=msg.seq_id, action=msg.action)
        return True

    def _accept(self, msg: BookMessage, recv_ms: int) -> None:
        self.seq_id, self.prev_seq_id = msg.seq_id, msg.prev_seq_id
        self.ts_ms, self.recv_ms, self.checksum = msg.ts_ms, recv_ms, msg.checksum
        if msg.is_snapshot:
            self.changed = True

    def _gap(self, msg: BookMessage, expected: int | None) -> Resync:
        self.gaps += 1
        self.sink.event(self.inst_id, "gap", expected=expected, received=msg.prev_seq_id, seqId=msg.seq_id)
        # Marker record: the last trusted book, stamped where the gap was seen, flagged.
        self.sink.record(self.inst_id, msg.ts_ms, self._record(msg.ts_ms, msg.seq_id, msg.prev_seq_id,
                                                              gap=True, checksum_ok=True))
        return self._desync("gap")

    def _bad_levels(self, exc: BadLevel) -> Resync:
        self.bad_levels += 1
        self.sink.event(self.inst_id, "bad_frame", kind="bad_level", detail=str(exc))
        return self._desync("bad_level")


class Follow(enum.Enum):
    SKIP = "skip"  # contained in the snapshot
    APPLY = "apply"  # the first update after the snapshot
    HOLE = "hole"  # updates between the snapshot and this one are missing


def _follows(update: BookMessage, snap_seq: int, snap_ts: int, after_contained: bool) -> Follow:
    """How an update relates to a snapshot taken at (seqId, ts), per OKX's alignment rules.

    OKX's rule alone (skip seqId ≤ snapshot; apply prevSeqId ≤ snapshot < seqId) is ambiguous after
    a sequence reset, when seqIds repeat: an update older than the snapshot can carry a larger
    seqId. Event time settles it: an update stamped before the snapshot is contained in it. An
    update that straddles the snapshot is trusted only right after one it contains
    (`after_contained`); as the very first update it could belong to another seqId epoch. (This
    assumes the snapshot's `ts` is not older than the updates it contains; if it ever were, alignment
    would find a hole and fall back to retrying and resubscribing, never to a wrong book.)
    """
    seq, prev, ts = update.seq_id, update.prev_seq_id, update.ts_ms
    if ts < snap_ts or (ts == snap_ts and prev != snap_seq):
        return Follow.SKIP
    if prev == snap_seq or (after_contained and prev <= snap_seq < seq):
        return Follow.APPLY
    return Follow.HOLE


def write_due_snapshots(syncs: Mapping[str, InstrumentSync], sink: Sink) -> None:
    """One cadence tick: a record for every in-sync instrument whose book changed since its last one."""
    for inst_id, sync in syncs.items():
        record = sync.snapshot_record()
        if record is not None:
            sink.record(inst_id, sync.ts_ms, record)

"""Per-instrument synchronisation: sequence rule, checksum, resync and REST alignment (docs/CONTRACT.md §2, §6).

`InstrumentSync` is the hot path. It is synchronous and does no I/O: it applies book messages,
reports integrity events and flagged marker records to a sink, and tells its caller what to do when
the book cannot be trusted (`Resync.RESUBSCRIBE` or `Resync.REST`). The asyncio feed, the replay
command, tests and benchmarks all drive the same object.

States: WAIT_ACK (subscription requested; pushes still in flight belong to the old subscription),
WAIT_FIRST (acknowledged; the first push tells whether OKX sends a WS snapshot), ALIGNING (updates
buffered while a REST snapshot is fetched), SYNCED (book is exactly the exchange's).

Records are stamped only with the event time of a WS message the book has absorbed, never with a
REST snapshot's `ts` (OKX may stamp that later than its content), and never with a `ts` that is not
plausible epoch milliseconds within a day of the local clock (`bad_ts`: the book resyncs).

With a tape (`l2_lake.book.tape`), every input besides the WS frames (which the feed tapes as received)
is taped as it arrives: subscribe acks, drops, REST snapshots and failures, cadence ticks, and the
moments the book is lost and trusted again. `state_fields` / `restore` carry the whole state across
an hour file's start, so a tape hour replays on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

from l2_lake.book.inputs import message_fields, message_from, plausible_ts
from l2_lake.book.order_book import BadLevel, OrderBook
from l2_lake.format.record import build_record
from l2_lake.venues.messages import BookMessage
from l2_lake.venues.registry import DEFAULT_VENUE
from l2_lake.venues.venue import Unaligned, Venue

MAX_BUFFERED_UPDATES = 3000  # 5 min of 100 ms updates while a REST snapshot is awaited
MAX_REST_ATTEMPTS = 10
MAX_AHEAD_UPDATES = 50  # a REST snapshot newer than every buffered update waits ~5 s for its successor
class InputTape(Protocol):
    """Where the engine tapes its inputs besides the WS frames (`l2_lake.book.tape.TapeRecorder`)."""

    def marker(self, sync: InstrumentSync, kind: str, **fields: Any) -> None: ...

    def rest(self, sync: InstrumentSync, msg: BookMessage, recv_ms: int) -> None: ...


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

    def __init__(self, inst_id: str, depth: int, sink: Sink, venue: Venue = DEFAULT_VENUE) -> None:
        self.inst_id = inst_id
        self.depth = depth
        self.sink = sink
        self.venue = venue
        self._follows = venue.follows
        self.book = OrderBook(venue)
        self.state = State.WAIT_ACK
        self._buffer: list[tuple[BookMessage, int]] = []  # (update, recv_ms)
        self._pending_rest: BookMessage | None = None  # a REST snapshot newer than every buffered update
        self._ahead_updates = 0  # updates buffered since `_pending_rest` arrived
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
        self.bad_ts = 0
        # kept by the feed's watchdog: monotonic time the book was last lost, and a runtime 60018
        self.unsynced_since: float | None = None
        self.delisted = False
        self.tape: InputTape | None = None

    @property
    def in_sync(self) -> bool:
        return self.state is State.SYNCED

    # -- subscription lifecycle (driven by the feed) -------------------------------------------

    def drop(self, reason: str) -> None:
        """Forget the book (reconnect, stale feed, resubscribe); wait for a new subscription ack."""
        if self.tape is not None:
            self.tape.marker(self, "drop", reason=reason)
        if self.state is State.SYNCED:
            self._start_resync(reason)
        elif self._resync_reason is None and reason != "start":
            self._resync_reason = reason
        self._reset(State.WAIT_ACK)

    def subscribed(self) -> None:
        """The subscribe ack arrived: the next push decides WS-snapshot or REST path."""
        if self.tape is not None:
            self.tape.marker(self, "sub")
        if self.state is State.WAIT_ACK:
            self.state = State.WAIT_FIRST

    # -- messages ------------------------------------------------------------------------------

    def on_book(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        """Apply one pushed book message; returns what the caller must do, if anything."""
        self.messages += 1
        if not plausible_ts(msg.ts_ms, recv_ms):
            return self._bad_ts(msg, recv_ms)
        if msg.action == "snapshot":
            return self._load_snapshot(msg, recv_ms)
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
        if self._pending_rest is not None:
            self._ahead_updates += 1
            return self._align(self._pending_rest)
        return None

    def on_rest_snapshot(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        """A REST `/market/books` result for an ALIGNING book (OKX's alignment procedure)."""
        if self.tape is not None:
            self.tape.rest(self, msg, recv_ms)
        if self.state is not State.ALIGNING:
            return None  # a WS snapshot won the race, or the book was dropped meanwhile
        self._ahead_updates = 0
        return self._align(msg)

    def rest_failed(self) -> Resync:
        """The REST snapshot failed or could not be aligned; retry, or resubscribe after repeated failures."""
        if self.tape is not None:
            self.tape.marker(self, "rest_failed")
        self._pending_rest = None
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
        if self.tape is not None:
            self.tape.marker(self, "tick")
        self.changed = False
        return self._record(self.ts_ms, self.seq_id, self.prev_seq_id, gap=False, checksum_ok=True)

    # -- state across a tape's hour files -------------------------------------------------------

    def state_fields(self) -> dict[str, Any]:
        """Everything the records and the book depend on, as JSON-able values (a tape hour's `book` line)."""
        fields: dict[str, Any] = {"state": self.state.value}
        if self.state is State.SYNCED:
            fields.update(ts=self.ts_ms, seqId=self.seq_id, prevSeqId=self.prev_seq_id, recv=self.recv_ms,
                          checksum=self.checksum, changed=self.changed,
                          bids=self.book.bids.top(len(self.book.bids)), asks=self.book.asks.top(len(self.book.asks)))
        elif self.state is State.ALIGNING:
            fields.update(buffer=[message_fields(m, r) for m, r in self._buffer], attempts=self._rest_attempts,
                          ahead=self._ahead_updates, reason=self._resync_reason,
                          pending=None if self._pending_rest is None else message_fields(self._pending_rest, 0))
        return fields

    def restore(self, fields: dict[str, Any]) -> None:
        """Take the state `state_fields` gave (replaying a tape from an hour file's start)."""
        self._reset(State(fields["state"]))
        if self.state is State.SYNCED:
            self.book.apply(fields["bids"], fields["asks"])
            self.seq_id, self.prev_seq_id = fields["seqId"], fields["prevSeqId"]
            self.ts_ms, self.recv_ms, self.checksum = fields["ts"], fields["recv"], fields["checksum"]
            self.changed = fields["changed"]
        elif self.state is State.ALIGNING:
            self._buffer = [message_from(self.inst_id, f) for f in fields["buffer"]]
            self._rest_attempts, self._ahead_updates = fields["attempts"], fields["ahead"]
            self._resync_reason = fields["reason"]
            pending = fields["pending"]
            self._pending_rest = None if pending is None else message_from(self.inst_id, pending)[0]

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
        self._pending_rest = None
        self.changed = False
        self.state = state

    def _start_resync(self, reason: str) -> None:
        if self.tape is not None:
            self.tape.marker(self, "lost", reason=reason)
        self.resyncs += 1
        self._resync_reason = reason
        self.sink.event(self.inst_id, "resync_start", reason=reason, seqId=self.seq_id)

    def _desync(self, reason: str) -> Resync:
        self._start_resync(reason)
        self._reset(State.WAIT_ACK)
        return Resync.RESUBSCRIBE

    def _synced(self, how: str, seq_id: int | None, **details: Any) -> None:
        if self.tape is not None:
            self.tape.marker(self, "synced", how=how, seqId=seq_id)
        self.sink.event(self.inst_id, "resync_done", how=how, seqId=seq_id,
                        reason=self._resync_reason or "start", **details)
        self._resync_reason = None

    def _load_snapshot(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        """A WS snapshot: everything pushed before it (buffered or not) is older and dropped."""
        self._reset(State.SYNCED)
        try:
            self.book.apply(msg.bids, msg.asks)
        except BadLevel as exc:
            return self._bad_levels(exc)
        if self._checksum_mismatch(msg):
            return self._desync("checksum_mismatch")
        self._accept(msg, recv_ms)
        self.changed = True
        self._synced("ws_snapshot", msg.seq_id)
        return None

    def _align(self, snap: BookMessage) -> Resync | None:
        start = self.venue.alignment_start([u for u, _ in self._buffer], snap.seq_id, snap.ts_ms)
        if start is Unaligned.AHEAD and self._ahead_updates < MAX_AHEAD_UPDATES:
            self._pending_rest = snap
            return None
        if isinstance(start, Unaligned):
            return self.rest_failed()
        return self._load_rest_snapshot(snap, start)

    def _load_rest_snapshot(self, snap: BookMessage, start: int) -> Resync | None:
        """Splice the buffer onto a REST snapshot placed before `self._buffer[start]`."""
        buffered = self._buffer[:]
        attempts = self._rest_attempts + 1
        self._reset(State.SYNCED)
        try:
            self.book.apply(snap.bids, snap.asks)
        except BadLevel as exc:
            return self._bad_levels(exc)
        self._synced("rest", snap.seq_id, attempts=attempts)
        self.changed = True
        if start == len(buffered):
            # The snapshot is exactly the book after the last buffered update: take its stamp.
            last, last_recv_ms = buffered[-1]
            if self._checksum_mismatch(last):
                return self._desync("checksum_mismatch")
            self._accept(last, last_recv_ms)
            return None
        self.seq_id = buffered[start][0].prev_seq_id  # the first kept update follows (or straddles) it
        for update, update_recv_ms in buffered[start:]:
            resync = self._apply_update(update, update_recv_ms)
            if resync is not None:
                return resync
        return None

    def _apply_update(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        prev, seq = msg.prev_seq_id, msg.seq_id
        if not self._follows(prev, self.seq_id):
            return self._gap(msg, expected=self.seq_id)
        try:
            self.book.apply(msg.bids, msg.asks)
        except BadLevel as exc:
            return self._bad_levels(exc)
        if msg.checksum and self._checksum_mismatch(msg):
            # Marker record: the book as the bad message left it, flagged checksum_ok=false.
            self.recv_ms = recv_ms
            self.sink.record(self.inst_id, msg.ts_ms, self._record(
                msg.ts_ms, seq, prev, gap=False, checksum_ok=False, checksum=msg.checksum))
            return self._desync("checksum_mismatch")
        if msg.bids or msg.asks:
            self.changed = True
        self.seq_id, self.prev_seq_id = seq, prev  # `_accept`, inlined on the hot path
        self.ts_ms, self.recv_ms, self.checksum = msg.ts_ms, recv_ms, msg.checksum
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

    def _bad_ts(self, msg: BookMessage, recv_ms: int) -> Resync | None:
        """A `ts` no record may carry: the message is not applied, so the book cannot stay in sync."""
        if self.state is State.WAIT_ACK:
            return None  # pushed under the previous subscription: ignored whatever it carries
        self.bad_ts += 1
        self.sink.event(self.inst_id, "bad_frame", kind="bad_ts", seqId=msg.seq_id,
                        detail=f"ts={msg.ts_ms} is not epoch milliseconds within a day of the local clock "
                               f"({recv_ms})")
        if self.state is State.SYNCED:
            return self._desync("bad_ts")
        self._resync_reason = self._resync_reason or "bad_ts"
        self._reset(State.WAIT_ACK)
        return Resync.RESUBSCRIBE


def write_due_snapshots(syncs: Mapping[str, InstrumentSync], sink: Sink) -> None:
    """One cadence tick: a record for every in-sync instrument whose book changed since its last one."""
    for inst_id, sync in syncs.items():
        record = sync.snapshot_record()
        if record is not None:
            sink.record(inst_id, sync.ts_ms, record)

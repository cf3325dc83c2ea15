"""The full-resolution tape (`--tape`; docs/CONTRACT.md §7): every input of an instrument's book
engine, in the order the engine took it, one JSON line each, in hourly files
`raw/okx/l2_tape/{instId}/{YYYY-MM-DD}/{HH}.jsonl` written by the lake writer like the snapshots
(one `os.write` per line, torn tails repaired, fsync on hour close).

Because the engine (`l2_lake.book.engine.InstrumentSync`) is deterministic in its inputs, replaying
a tape through a fresh engine (`l2_lake.book.tape_replay`) rebuilds the book after every message and
every record the live process wrote, byte for byte. Lines (`t` is the kind, `r` the local receive
or wall time in epoch ms):

- `{"t":"ws","r":…,"m":<frame>}`: a `books` push exactly as received (the frame's JSON text inline);
- `{"t":"rest","r":…,"action":"snapshot","ts":…,"seqId":…,"prevSeqId":…,"checksum":…,"bids":[…],"asks":[…]}`:
  a REST `/market/books` snapshot taken to align the book (levels as the exact strings received);
- `{"t":"sub","r":…}` the subscribe ack, `{"t":"drop","r":…,"reason":…}` the engine forgot the
  book (reconnect, stale feed, resubscribe), `{"t":"rest_failed","r":…}` an alignment attempt failed;
- `{"t":"tick","r":…}`: a cadence tick wrote this instrument's snapshot record;
- `{"t":"lost","r":…,"reason":…}` / `{"t":"synced","r":…,"how":…}`: the engine stopped / started
  trusting its book (informational: replay finds the same by itself; readers see the stretches);
- `{"t":"book","r":…,"state":…, …}`: the first line of every hour file: the engine's state when
  the hour began (`InstrumentSync.state_fields`). `synced` carries the full book (`bids`, `asks`,
  every level) with `ts`, `seqId`, `prevSeqId`, `recv`, `checksum` and `changed`; `aligning` the
  buffered updates and the pending REST snapshot; so an hour replays on its own.

The hour of a line is that of its exchange time for `ws` (the frame's first message) and `rest`
(when that time is plausible, as the engine judges it), otherwise the instrument's current tape
hour, or once that ended more than `LATE_AFTER_MS` ago, the local clock's hour (a closed hour is
never reopened); a tape hour never goes back, so lines stay in engine order across files. Inputs before an
instrument's first message (the start's drop and subscribe ack) are not written: the first file's
`book` line holds the state they led to. Lines are batched per instrument-hour (`TapeRecorder`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from l2_lake.book.inputs import message_fields, plausible_ts
from l2_lake.format import layout
from l2_lake.format.tape_lines import FRAME_AT, WS_PREFIX, frame_bytes

if TYPE_CHECKING:
    from l2_lake.book.engine import InstrumentSync
    from l2_lake.venues.messages import BookMessage


# A line without exchange time goes to the current tape hour until this long after its end, then to
# the local clock's hour: well before the hour counts as closed (`hours.DEFAULT_GRACE`, 2 min), so no
# line ever reopens an hour the shipper or the archive step may have taken.
LATE_AFTER_MS = 60_000  # by the exchange's clock: the local one less the latest frame's lag behind it


class TapeSink(Protocol):
    def tape(self, inst_id: str, hour: datetime, lines: bytes) -> None: ...


class TapeRecorder:
    """The live side: the feed hands it each `books` frame, the engine each of its other inputs.

    Lines are batched per instrument-hour and handed to the lake writer once per pass of the event
    loop (one queue job and one `os.write` for many lines; without a running loop, at once), so the
    writer thread does not wake for every frame. `flush()` hands over what is pending (at shutdown,
    before the writer closes)."""

    def __init__(self, sink: TapeSink, clock_ms: Callable[[], int]) -> None:
        self.sink = sink
        self._clock_ms = clock_ms
        self._hours: dict[str, tuple[datetime, int]] = {}  # instId -> (current tape hour, its end in ms)
        self._lag_ms: dict[str, int] = {}  # instId -> local clock minus exchange time, at its latest frame
        self._pending: dict[tuple[str, datetime], list[bytes]] = {}
        self._flush_scheduled = False

    def frame(self, sync: InstrumentSync, raw: str | bytes, recv_ms: int, ts_ms: int) -> None:
        plausible = plausible_ts(ts_ms, recv_ms)
        if plausible:
            self._lag_ms[sync.inst_id] = recv_ms - ts_ms
        self._put(sync, ts_ms if plausible else None,
                  b"%b%d%b%b}\n" % (WS_PREFIX, recv_ms, FRAME_AT, frame_bytes(raw)))

    def rest(self, sync: InstrumentSync, msg: BookMessage, recv_ms: int) -> None:
        self._put(sync, msg.ts_ms if plausible_ts(msg.ts_ms, recv_ms) else None,
                  _line({"t": "rest", **message_fields(msg, recv_ms)}))

    def marker(self, sync: InstrumentSync, kind: str, **fields: Any) -> None:
        self._put(sync, None, _line({"t": kind, "r": self._clock_ms(), **fields}))

    def _put(self, sync: InstrumentSync, ts_ms: int | None, line: bytes) -> None:
        current = self._hours.get(sync.inst_id)
        if current is None and ts_ms is None:
            return  # before the first message: the first file's `book` line carries the state this led to
        if ts_ms is not None and (current is None or ts_ms >= current[1]):
            current = self._begin_hour(sync, layout.hour_floor(ts_ms))
        elif ts_ms is None and (now := self._exchange_now(sync.inst_id)) >= current[1] + LATE_AFTER_MS:
            # no exchange time, and by the exchange's clock the tape hour ended a while ago (an outage, a
            # delisted instrument's retries): the line opens the hour it belongs to now, never reopens
            # one that may be closed
            current = self._begin_hour(sync, layout.hour_floor(now))
        self._pending.setdefault((sync.inst_id, current[0]), []).append(line)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _exchange_now(self, inst_id: str) -> int:
        """The exchange's time now, as the local clock less the latest frame's lag behind it."""
        return self._clock_ms() - self._lag_ms.get(inst_id, 0)

    def _begin_hour(self, sync: InstrumentSync, hour: datetime) -> tuple[datetime, int]:
        """Open a tape hour with the engine's state now (before the input that opens it is applied)."""
        current = self._hours[sync.inst_id] = (hour, int(hour.timestamp() * 1000) + layout.HOUR_MS)
        self._pending.setdefault((sync.inst_id, hour), []).append(
            _line({"t": "book", "r": self._clock_ms(), **sync.state_fields()}))
        return current

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand every pending line to the sink, one batch per instrument-hour, in order."""
        pending, self._pending, self._flush_scheduled = self._pending, {}, False
        for (inst_id, hour), lines in pending.items():
            self.sink.tape(inst_id, hour, b"".join(lines))


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)

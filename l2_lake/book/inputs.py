"""The book engine's inputs as plain values: whether a message's event time is believable, and a book
message to and from JSON-able fields (levels as their exact strings), as the tape stores them and
an engine's saved state holds its buffered updates.
"""

from __future__ import annotations

from typing import Any

from l2_lake.venues.messages import BookMessage

TS_MIN_MS = 946_684_800_000  # 2000-01-01: below this a ts is in seconds, or garbage
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01: above this a ts is in micro- or nanoseconds
MAX_CLOCK_DISTANCE_MS = 86_400_000  # a ts more than a day from the local clock is not trusted


def plausible_ts(ts_ms: int, recv_ms: int) -> bool:
    """Whether `ts_ms` can be a message's event time: epoch ms, within a day of the local clock."""
    return TS_MIN_MS <= ts_ms <= TS_MAX_MS and -MAX_CLOCK_DISTANCE_MS <= ts_ms - recv_ms <= MAX_CLOCK_DISTANCE_MS


def message_fields(msg: BookMessage, recv_ms: int) -> dict[str, Any]:
    """A book message as JSON-able values (levels as their exact strings)."""
    return {"action": msg.action, "ts": msg.ts_ms, "seqId": msg.seq_id, "prevSeqId": msg.prev_seq_id,
            "checksum": msg.checksum, "bids": msg.bids, "asks": msg.asks, "r": recv_ms}


def message_from(inst_id: str, fields: dict[str, Any]) -> tuple[BookMessage, int]:
    """(message, receive time) back from `message_fields`."""
    return BookMessage(inst_id, fields["action"], fields["bids"], fields["asks"], fields["ts"], fields["checksum"],
                       fields["seqId"], fields["prevSeqId"]), fields["r"]

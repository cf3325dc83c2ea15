"""OKX's sequence rules: when an update follows the book, and where a REST snapshot fits into the
updates buffered while it was fetched (OKX's alignment procedure for a missing WS snapshot).

The engine (`l2_lake.book.engine`) owns the state machine; it asks the venue these two questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from l2_lake.venues.messages import BookMessage
from l2_lake.venues.venue import Unaligned


def follows(prev_seq_id: int | None, last_seq_id: int | None) -> bool:
    """An update continues the book iff its `prevSeqId` is the last applied `seqId` (heartbeats and
    sequence resets included; without seqIds, as in pre-2022 recordings, only the checksum guards)."""
    return prev_seq_id is None or last_seq_id is None or prev_seq_id == last_seq_id


def alignment_start(updates: Sequence[BookMessage], snap_seq: int, snap_ts: int) -> int | Unaligned:
    """Index of the first buffered update to apply on top of a REST snapshot at `snap_seq`.

    OKX's seqId rule decides: the snapshot sits before update i when i's `prevSeqId` equals its
    seqId, or (after an update it contains) when i straddles it (`prevSeqId < seqId_snap < seqId`).
    `len(updates)` means it holds them all (the last one's `seqId` equals its own). seqIds repeat
    after a sequence reset, so more than one place can fit; only then does event time break the
    tie: a snapshot cannot hold an update stamped after it. A tie that stays between books that
    differ is treated as a hole (fetch again), never guessed.
    """
    n = len(updates)
    if not n or any(u.seq_id is None or u.prev_seq_id is None for u in updates):
        return Unaligned.HOLE  # nothing to place it against (frames without seqId cannot be aligned)
    fits = []
    for i, u in enumerate(updates):
        prev = u.prev_seq_id
        if prev == snap_seq or (i and prev < snap_seq < u.seq_id and updates[i - 1].seq_id <= snap_seq):
            fits.append(i)
    if updates[-1].seq_id == snap_seq:
        fits.append(n)
    if len(fits) > 1:
        fits = [i for i in fits if i == 0 or updates[i - 1].ts_ms <= snap_ts]
        if len(fits) > 1 and any(u.bids or u.asks for u in updates[fits[0]:fits[-1]]):
            return Unaligned.HOLE  # places holding different books fit: ambiguous, fetch again
    if fits:
        return fits[-1]
    return Unaligned.AHEAD if snap_seq > updates[-1].seq_id else Unaligned.HOLE

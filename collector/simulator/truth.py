"""Truth log: every state of every simulated book, and every fault, one JSON object per line.

A test compares a collected record with the line of the same (instId, seqId, ts): the record's
`sha256(orjson.dumps([bids_top400, asks_top400]))` must equal that line's `digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import orjson

from collector.simulator.market import MarketBook


def book_digest(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> str:
    """sha256 hex of `orjson.dumps([bids, asks])`, levels best first as lists of 4 strings."""
    return hashlib.sha256(orjson.dumps([bids, asks])).hexdigest()


class TruthLog:
    """Appends truth lines to `path` (no-op without a path); `flush()` once per tick."""

    def __init__(self, path: Path | str | None) -> None:
        self._file: IO[bytes] | None = open(path, "wb") if path else None  # noqa: SIM115

    def state(self, book: MarketBook) -> None:
        """The book's current state (call after every snapshot-creating or update step)."""
        if self._file is None:
            return
        bids, asks = book.top()
        line = {
            "instId": book.inst_id,
            "seqId": book.seq_id,
            "prevSeqId": book.prev_seq_id,
            "ts": book.ts_ms,
            "digest": book_digest(bids, asks),
            "best_bid": book.best_bid(),
            "best_ask": book.best_ask(),
        }
        self._file.write(orjson.dumps(line) + b"\n")

    def fault(self, name: str, inst_id: str | None, ts_ms: int, conn_id: str | None = None, **details: object) -> None:
        """A fired fault; `details` are extra fields of its line (e.g. rest_ts_skew's `skew_ms`)."""
        if self._file is None:
            return
        line: dict[str, object] = {"fault": name, "instId": inst_id, "ts": ts_ms}
        if conn_id is not None:
            line["connId"] = conn_id
        line.update(details)
        self._file.write(orjson.dumps(line) + b"\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

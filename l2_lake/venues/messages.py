"""The messages a venue's decoder hands the engine: book messages, events, pongs, and `BadFrame`
for anything unusable. Venue-neutral: `l2_lake.venues.okx.protocol` produces them from OKX's wire format."""

from __future__ import annotations

from dataclasses import dataclass


class BadFrame(ValueError):
    """A frame we cannot use. `kind` is a short stable label for counting and log de-duplication."""

    def __init__(self, kind: str, detail: str, inst_id: str | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.inst_id = inst_id


@dataclass(slots=True)
class BookMessage:
    """One book message (an OKX `books` push element or REST `/market/books` snapshot)."""

    inst_id: str
    action: str  # "snapshot" | "update"
    bids: list
    asks: list
    ts_ms: int
    checksum: int
    seq_id: int | None  # None only in pre-2022-08 recordings, which predate seqId
    prev_seq_id: int | None

    @property
    def is_snapshot(self) -> bool:
        return self.action == "snapshot"


@dataclass(slots=True)
class EventMessage:
    """A WS event: subscribe/unsubscribe ack, error, notice."""

    event: str
    inst_id: str | None
    code: str | None
    msg: str | None


@dataclass(slots=True)
class Pong:
    """The reply to our text `ping`."""


PONG = Pong()

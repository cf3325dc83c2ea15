"""Snapshot record and event schema (docs/CONTRACT.md §2–§3): the one definition writer and readers share.

A record is one JSON object per line with the fields of `RECORD_FIELDS`, in that order. Prices and
sizes are the exact strings OKX sent; the mid price is computed with `decimal`, never float.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any

import orjson

from collector.okx.checksum import okx_checksum  # book_crc32 is OKX's CRC32 by contract, whatever the venue
from collector.venues import DEFAULT_VENUE

RECORD_FIELDS: tuple[str, ...] = (
    "timestamp_utc",
    "exchange",
    "market",
    "channel",
    "instId",
    "bids_top400",
    "asks_top400",
    "best_bid",
    "best_ask",
    "mid_price",
    "checksum",
    "seqId",
    "prevSeqId",
    "gap_detected",
    "book_crc32",
    "recv_ts_utc",
    "checksum_ok",
)

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "gap",
        "checksum_mismatch",
        "resync_start",
        "resync_done",
        "reconnect",
        "notice",
        "error",
        "stale",
        "bad_frame",
        "write_error",
        "repair",
        "subscribe_budget",
    }
)


def format_ts_ms(ts_ms: int) -> str:
    """Epoch milliseconds → ISO-8601 UTC with milliseconds and `Z`, e.g. 2026-11-25T13:00:00.123Z."""
    dt = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


def parse_ts_ms(text: str) -> int:
    """Inverse of `format_ts_ms` (accepts any ISO-8601 UTC string with a `Z`)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.utcoffset() is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return round(dt.timestamp() * 1000)


def exact_mid(best_bid: str, best_ask: str) -> str:
    """(bid + ask) / 2 as a plain decimal string, computed exactly."""
    mid = (Decimal(best_bid) + Decimal(best_ask)) / 2
    text = format(mid, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def build_record(
    *,
    inst_id: str,
    ts_ms: int,
    recv_ms: int,
    bids: Sequence[Sequence[str]],
    asks: Sequence[Sequence[str]],
    checksum: int,
    seq_id: int | None,
    prev_seq_id: int | None,
    gap_detected: bool,
    checksum_ok: bool,
) -> dict[str, Any]:
    """One snapshot record; `bids`/`asks` are already cut to the configured depth, best first."""
    best_bid = bids[0][0] if bids else None
    best_ask = asks[0][0] if asks else None
    return {
        "timestamp_utc": format_ts_ms(ts_ms),
        "exchange": DEFAULT_VENUE.name,
        "market": DEFAULT_VENUE.market,
        "channel": DEFAULT_VENUE.channel,
        "instId": inst_id,
        "bids_top400": bids,
        "asks_top400": asks,
        "best_bid": best_bid,
        "best_ask": best_ask,
        "mid_price": exact_mid(best_bid, best_ask) if best_bid and best_ask else None,
        "checksum": checksum,
        "seqId": seq_id,
        "prevSeqId": prev_seq_id,
        "gap_detected": gap_detected,
        "book_crc32": okx_checksum(bids, asks),
        "recv_ts_utc": format_ts_ms(recv_ms),
        "checksum_ok": checksum_ok,
    }


def encode_line(obj: dict[str, Any]) -> bytes:
    """One JSONL line (orjson keeps dict order, so records keep `RECORD_FIELDS` order)."""
    return orjson.dumps(obj) + b"\n"


def _is_level(level: Any) -> bool:
    return (type(level) is list and len(level) == 4 and type(level[0]) is str and type(level[1]) is str
            and type(level[2]) is str and type(level[3]) is str)


def _prices(levels: list) -> list[float] | None:
    """Prices as floats for ordering checks (exact for tick prices), None if one is not a positive number."""
    try:
        prices = [float(level[0]) for level in levels]
    except ValueError:
        return None
    return prices if all(0.0 < p < math.inf for p in prices) else None


def _strictly_sorted(prices: list[float], descending: bool) -> bool:
    pairs = pairwise(prices)
    return all(a > b for a, b in pairs) if descending else all(a < b for a, b in pairs)


def is_crossed(rec: dict[str, Any]) -> bool:
    """Best bid at or above best ask (exact decimals); False when a side is empty or malformed."""
    try:
        return Decimal(rec["best_bid"]) >= Decimal(rec["best_ask"])
    except (TypeError, KeyError, InvalidOperation):
        return False


def record_problems(rec: Any, *, check_crossed: bool = True) -> list[str]:
    """Everything wrong with one parsed record line; empty when it honours the contract.

    Checks field presence and order, types, level shape, strict sorting, best/mid consistency,
    that `book_crc32` matches the record's own top 25 and (unless `check_crossed` is False, for
    callers that count crossed books separately) that the book is not crossed.
    """
    if not isinstance(rec, dict):
        return [f"record is {type(rec).__name__}, not an object"]
    missing = [f for f in RECORD_FIELDS if f not in rec]
    if missing:
        return [f"missing fields: {', '.join(missing)}"]
    problems: list[str] = []
    if tuple(k for k in rec if k in RECORD_FIELDS) != RECORD_FIELDS:
        problems.append("fields out of order")
    try:
        parse_ts_ms(rec["timestamp_utc"])
    except (TypeError, ValueError, AttributeError):
        problems.append(f"bad timestamp_utc {rec['timestamp_utc']!r}")
    bids, asks = rec["bids_top400"], rec["asks_top400"]
    if not isinstance(bids, list) or not isinstance(asks, list):
        return [*problems, "levels are not lists"]
    if not all(map(_is_level, bids)) or not all(map(_is_level, asks)):
        return [*problems, "a level is not a list of 4 strings"]
    bid_prices, ask_prices = _prices(bids), _prices(asks)
    if bid_prices is None or ask_prices is None:
        return [*problems, "a price is not a positive decimal number"]
    if not _strictly_sorted(bid_prices, descending=True):
        problems.append("bids not strictly descending")
    if not _strictly_sorted(ask_prices, descending=False):
        problems.append("asks not strictly ascending")
    if rec["best_bid"] != (bids[0][0] if bids else None) or rec["best_ask"] != (asks[0][0] if asks else None):
        problems.append("best_bid/best_ask disagree with levels")
    elif check_crossed and is_crossed(rec):
        problems.append("crossed book: best bid >= best ask")
    if not isinstance(rec["gap_detected"], bool):
        problems.append("gap_detected is not a bool")
    if rec["book_crc32"] != okx_checksum(bids, asks):
        problems.append("book_crc32 does not match the record's own top 25")
    return problems


def build_event(inst_id: str, event_type: str, ts_ms: int, **details: Any) -> dict[str, Any]:
    """One events-sidecar line: `ts_utc` (local time), `instId`, `type`, then the details."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; known: {sorted(EVENT_TYPES)}")
    return {"ts_utc": format_ts_ms(ts_ms), "instId": inst_id, "type": event_type, **details}

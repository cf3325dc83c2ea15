"""Snapshot record and event schema (docs/CONTRACT.md §2–§3): the one definition writer and readers share.

A record is one JSON object per line with the fields of `RECORD_FIELDS`, in that order. Prices and
sizes are the exact strings OKX sent; the mid price is computed with `decimal`, never float.

The collector writes the extended format (`RECORD_FIELDS`). Readers also accept the deployment's
original format, `ORIGINAL_FIELDS`: the same record without the `ADDED_FIELDS` (CONTRACT.md §2.1);
`record_format` says which one a record is in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any, Literal

import orjson

from l2_lake.venues.okx.checksum import okx_checksum  # book_crc32 is OKX's CRC32 by contract, whatever the venue
from l2_lake.venues.registry import DEFAULT_VENUE

ORIGINAL_FIELDS: tuple[str, ...] = (
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
)
"""The deployment's original record format: readers accept records with only these fields."""
ADDED_FIELDS: tuple[str, ...] = ("book_crc32", "recv_ts_utc", "checksum_ok")
"""Our fields after the original ones: a record has all of them (extended) or none (original)."""
RECORD_FIELDS: tuple[str, ...] = ORIGINAL_FIELDS + ADDED_FIELDS
"""The extended format: what the collector writes."""

RecordFormat = Literal["original", "extended", "incomplete"]
ORIGINAL: RecordFormat = "original"
EXTENDED: RecordFormat = "extended"
INCOMPLETE: RecordFormat = "incomplete"  # some but not all ADDED_FIELDS: neither format, never valid
FORMAT_FIELDS: dict[RecordFormat, tuple[str, ...]] = {ORIGINAL: ORIGINAL_FIELDS, EXTENDED: RECORD_FIELDS}

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


def record_format(rec: Mapping[str, Any]) -> RecordFormat:
    """The format of a record, from which `ADDED_FIELDS` it has: all → EXTENDED, none → ORIGINAL,
    some → INCOMPLETE (a contract violation `record_problems` reports)."""
    present = sum(name in rec for name in ADDED_FIELDS)
    if present == len(ADDED_FIELDS):
        return EXTENDED
    return ORIGINAL if present == 0 else INCOMPLETE


def _is_timestamp(value: Any) -> bool:
    try:
        parse_ts_ms(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _scalar_problems(rec: dict[str, Any]) -> list[str]:
    """Type problems of the scalar fields that are checked, each only where present."""
    problems = [f"bad {name} {rec[name]!r}" for name in ("timestamp_utc", "recv_ts_utc")
                if name in rec and not _is_timestamp(rec[name])]
    problems += [f"{name} is not a bool" for name in ("gap_detected", "checksum_ok")
                 if name in rec and not isinstance(rec[name], bool)]
    if "book_crc32" in rec and type(rec["book_crc32"]) is not int:
        problems.append("book_crc32 is not an integer")
    return problems


def field_problems(rec: dict[str, Any]) -> tuple[list[str], bool]:
    """(problems of a record's fields, leaving out its levels' content, and whether its levels can be
    checked): field presence and order, the scalar fields' types. The levels cannot be checked when
    an original field is missing (`record_problems`)."""
    fmt = record_format(rec)
    missing = [f for f in FORMAT_FIELDS.get(fmt, RECORD_FIELDS) if f not in rec]  # INCOMPLETE: all fields
    if any(f in ORIGINAL_FIELDS for f in missing):
        return [f"missing fields: {', '.join(missing)}"], False
    problems: list[str] = []
    if missing:  # only added fields (INCOMPLETE): reported, and the rest checked where present
        problems.append(f"missing fields: {', '.join(missing)} (a record has all or none of "
                        f"{', '.join(ADDED_FIELDS)})")
    if tuple(k for k in rec if k in RECORD_FIELDS) != tuple(f for f in RECORD_FIELDS if f in rec):
        problems.append("fields out of order")
    return problems + _scalar_problems(rec), True


def record_problems(rec: Any, *, check_crossed: bool = True) -> list[str]:
    """Everything wrong with one parsed record line; empty when it honours the contract.

    Accepts both formats (`record_format`): the `ORIGINAL_FIELDS` are always required, the
    `ADDED_FIELDS` all or none (a record with some of them is reported with the missing ones).
    Checks field presence and order, types (`field_problems`), level shape, strict sorting,
    best/mid consistency, that `book_crc32` (where present) matches the record's own top 25 and
    (unless `check_crossed` is False, for callers that count crossed books separately) that the
    book is not crossed. `l2_lake.quality.level_checks` checks the same of an hour's levels at once.
    """
    if not isinstance(rec, dict):
        return [f"record is {type(rec).__name__}, not an object"]
    problems, checkable = field_problems(rec)
    if not checkable:
        return problems
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
    if type(rec.get("book_crc32")) is int and rec["book_crc32"] != okx_checksum(bids, asks):
        problems.append("book_crc32 does not match the record's own top 25")
    return problems


def build_event(inst_id: str, event_type: str, ts_ms: int, **details: Any) -> dict[str, Any]:
    """One events-sidecar line: `ts_utc` (local time), `instId`, `type`, then the details."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; known: {sorted(EVENT_TYPES)}")
    return {"ts_utc": format_ts_ms(ts_ms), "instId": inst_id, "type": event_type, **details}

"""OKX order-book checksum: signed CRC32 over the top 25 levels, from the raw strings.

The string is `bid1px:bid1sz:ask1px:ask1sz:bid2px:...`, interleaving bids and asks level by level
and skipping a side once it runs out (docs/CONTRACT.md §6). Prices and sizes are used exactly as OKX sent
them, which is why the book never converts them to numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

CHECKSUM_DEPTH = 25

Level = Sequence[str]


def join_interleaved(bid_texts: Sequence[str], ask_texts: Sequence[str]) -> str:
    """`b1:a1:b2:a2:...` from per-level `px:sz` texts (already cut to the checksum depth)."""
    n = min(len(bid_texts), len(ask_texts))
    parts: list[str] = [""] * (2 * n)
    parts[0::2] = bid_texts[:n]
    parts[1::2] = ask_texts[:n]
    parts.extend(bid_texts[n:])
    parts.extend(ask_texts[n:])
    return ":".join(parts)


def level_text(level: Level) -> str:
    return f"{level[0]}:{level[1]}"


def signed_crc32(text: str) -> int:
    crc = zlib.crc32(text.encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc


def checksum_string(bids: Sequence[Level], asks: Sequence[Level]) -> str:
    """The text OKX hashes; `bids` best (highest) first, `asks` best (lowest) first."""
    return join_interleaved([level_text(lv) for lv in bids[:CHECKSUM_DEPTH]],
                            [level_text(lv) for lv in asks[:CHECKSUM_DEPTH]])


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX's signed 32-bit CRC32 of the top 25 levels of each side, best first."""
    return signed_crc32(checksum_string(bids, asks))


def book_checksum(bid_prices: list[str], bid_sizes: list[str], ask_prices: list[str], ask_sizes: list[str]) -> int:
    """`okx_checksum` of a book from its best levels' price and size texts (at most CHECKSUM_DEPTH a
    side, best first), interleaved by slice assignment rather than level by level."""
    n = min(len(bid_prices), len(ask_prices))
    parts = [""] * (4 * n)
    parts[0::4], parts[1::4], parts[2::4], parts[3::4] = bid_prices[:n], bid_sizes[:n], ask_prices[:n], ask_sizes[:n]
    for prices, sizes in ((bid_prices, bid_sizes), (ask_prices, ask_sizes)):
        if len(prices) > n:
            tail = [""] * (2 * (len(prices) - n))
            tail[0::2], tail[1::2] = prices[n:], sizes[n:]
            parts += tail
    return signed_crc32(":".join(parts))

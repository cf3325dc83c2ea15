"""OKX order-book checksum: signed CRC32 over the top 25 levels, from the raw strings.

The string is `bid1px:bid1sz:ask1px:ask1sz:bid2px:...`, interleaving bids and asks level by level
and skipping a side once it runs out (DESIGN.md §5). Prices and sizes are used exactly as OKX sent
them, which is why the book never converts them to numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

CHECKSUM_DEPTH = 25

Level = Sequence[str]


def checksum_string(bids: Sequence[Level], asks: Sequence[Level]) -> str:
    """The text OKX hashes; `bids` best (highest) first, `asks` best (lowest) first."""
    parts: list[str] = []
    for i in range(CHECKSUM_DEPTH):
        if i < len(bids):
            bid = bids[i]
            parts.append(bid[0])
            parts.append(bid[1])
        if i < len(asks):
            ask = asks[i]
            parts.append(ask[0])
            parts.append(ask[1])
    return ":".join(parts)


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX's signed 32-bit CRC32 of the top 25 levels of each side."""
    crc = zlib.crc32(checksum_string(bids, asks).encode())
    return crc - 0x1_0000_0000 if crc & 0x8000_0000 else crc

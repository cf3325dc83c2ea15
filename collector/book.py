"""In-memory order book of one instrument: exact OKX levels behind a sorted price index.

Levels are kept as the lists OKX sent (`[px, sz, liq, orders]`, all strings) so records and
checksums use the exchange's own text. The numeric value of the price is used only as a sort key:
prices are tick multiples with far fewer than 15 significant digits, so distinct prices map to
distinct doubles and the order is exact. Each side keeps a sorted key list maintained with
`bisect`, so an update costs O(levels changed × log n) plus a short memmove, and the top N is a slice.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from collector.checksum import CHECKSUM_DEPTH, join_interleaved, signed_crc32

Level = list[str]


class BadLevel(ValueError):
    """A level that cannot be applied: wrong shape, non-positive or non-finite price, bad size."""


class BookSide:
    """One side of the book. Keys are floats ascending; bids store negated prices.

    Parallel to the sorted keys it keeps each level's `px:sz` checksum text, so the checksum input
    is a slice, and it notes whether anything in the top 25 changed, so the checksum is rebuilt only
    when it can differ.
    """

    __slots__ = ("_keys", "_levels", "_sign", "_texts", "top_changed")

    def __init__(self, descending: bool) -> None:
        self._sign = -1.0 if descending else 1.0
        self._keys: list[float] = []
        self._texts: list[str] = []
        self._levels: dict[float, Level] = {}
        self.top_changed = True

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._keys.clear()
        self._texts.clear()
        self._levels.clear()
        self.top_changed = True

    def apply(self, levels: Iterable[Sequence[str]]) -> None:
        """Apply OKX levels: size 0 deletes the price, any other size replaces or inserts it.

        Raises BadLevel on the first malformed level; the side is then partly updated and the
        caller must treat the whole book as untrustworthy.
        """
        keys, texts, book, sign = self._keys, self._texts, self._levels, self._sign
        lowest_index = CHECKSUM_DEPTH
        for level in levels:
            try:
                px, sz = level[0], level[1]
                key = float(px) * sign
                size = 0.0 if sz == "0" else float(sz)
            except (TypeError, ValueError, IndexError, KeyError) as exc:
                raise BadLevel(f"malformed level {level!r}") from exc
            if not (0.0 < key * sign < math.inf and 0.0 <= size < math.inf) or len(level) != 4 \
                    or type(px) is not str or type(sz) is not str or type(level[2]) is not str \
                    or type(level[3]) is not str:
                raise BadLevel(f"level {level!r}: expected [price, size, liquidated, orders] as 4 strings "
                               "with a positive price and a non-negative size")
            index = bisect_left(keys, key)
            if size == 0.0:
                if book.pop(key, None) is not None:
                    del keys[index]
                    del texts[index]
                else:
                    continue
            elif key in book:
                texts[index] = f"{px}:{sz}"
                book[key] = level if type(level) is list else list(level)
            else:
                keys.insert(index, key)
                texts.insert(index, f"{px}:{sz}")
                book[key] = level if type(level) is list else list(level)
            if index < lowest_index:
                lowest_index = index
        if lowest_index < CHECKSUM_DEPTH:
            self.top_changed = True

    def top(self, n: int) -> list[Level]:
        """The best `n` levels, best first (the lists themselves, not copies)."""
        book = self._levels
        return [book[k] for k in self._keys[:n]]

    def top_texts(self) -> list[str]:
        """`px:sz` of the best 25 levels, for the checksum."""
        return self._texts[:CHECKSUM_DEPTH]


class OrderBook:
    """Both sides of one instrument's book."""

    __slots__ = ("_checksum", "asks", "bids")

    def __init__(self) -> None:
        self.bids = BookSide(descending=True)
        self.asks = BookSide(descending=False)
        self._checksum = 0

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def apply(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        self.bids.apply(bids)
        self.asks.apply(asks)

    def checksum(self) -> int:
        """OKX CRC32 of the current top 25 (recomputed only if the top 25 changed)."""
        bids, asks = self.bids, self.asks
        if bids.top_changed or asks.top_changed:
            self._checksum = signed_crc32(join_interleaved(bids.top_texts(), asks.top_texts()))
            bids.top_changed = asks.top_changed = False
        return self._checksum

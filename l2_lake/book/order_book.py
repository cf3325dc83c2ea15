"""In-memory order book of one instrument: exact OKX levels behind a sorted price index.

Levels are kept as the exchange's own text, `(px, sz, liq, orders)`, all strings, so records and
checksums use exactly what OKX sent. They are tuples, not the lists the JSON parser made: a tuple
of strings drops out of the cyclic garbage collector's lists, so 250 books of 800 levels do not
make every collection traverse 200,000 objects (that stalled the event loop for 100-400 ms).
Each side maps the price string to its sort key and keeps
two parallel lists in price order: the keys (for `bisect`) and the levels (so the top N is a
slice). The key is the price as a float, used only for ordering: prices are tick multiples with
far fewer than 15 significant digits, so distinct prices map to distinct doubles and the order is
exact. A price written two ways ("100" and "100.0") is a bad level, whether it inserts, updates or
deletes: it is never stored twice, and a delete spelled differently never leaves a stale level. An
update costs O(levels changed × log n) plus a short memmove, and known prices are never re-parsed.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from l2_lake.venues.registry import DEFAULT_VENUE
from l2_lake.venues.venue import Venue

Level = tuple[str, str, str, str]
_INF = math.inf


class BadLevel(ValueError):
    """A level that cannot be applied: wrong shape, non-positive or non-finite price, bad size."""


def _bad(level: object, why: str) -> BadLevel:
    return BadLevel(f"level {level!r}: {why}; expected [price, size, liquidated, orders] as 4 strings")


def _stored_as_other_text(px: str, keys: list[float], ordered: list[Level], sign: float) -> bool:
    """True when a price text we do not hold names a stored level's price ("100.0" vs "100")."""
    try:
        key = float(px) * sign
    except (TypeError, ValueError):
        return False
    i = bisect_left(keys, key)
    return i < len(keys) and keys[i] == key


class BookSide:
    """One side of the book. Keys are floats ascending; bids store negated prices.

    Notes whether anything in the top `top_depth` levels (those the checksum covers) changed, so the
    checksum is rebuilt only when it can differ.
    """

    __slots__ = ("_index", "_keys", "_levels", "_sign", "_top_depth", "top_changed")

    def __init__(self, descending: bool, top_depth: int) -> None:
        self._sign = -1.0 if descending else 1.0
        self._top_depth = top_depth
        self._index: dict[str, float] = {}  # price string -> sort key
        self._keys: list[float] = []
        self._levels: list[Level] = []
        self.top_changed = True

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._index.clear()
        self._keys.clear()
        self._levels.clear()
        self.top_changed = True

    def apply(self, levels: Iterable[Sequence[str]]) -> None:
        """Apply OKX levels: size 0 deletes the price, any other size replaces or inserts it.

        Raises BadLevel on the first malformed level; the side is then partly updated and the
        caller must treat the whole book as untrustworthy.
        """
        index, keys, ordered, sign = self._index, self._keys, self._levels, self._sign
        top_depth = lowest = self._top_depth
        for level in levels:
            try:
                px, sz, liq, orders = level
                key = index.get(px)
                if sz == "0":
                    if key is None:
                        if _stored_as_other_text(px, keys, ordered, sign):
                            raise _bad(level, "deletes a stored price written differently")
                        continue  # deleting an unknown price changes nothing
                    del index[px]
                    i = bisect_left(keys, key)
                    del keys[i]
                    del ordered[i]
                else:
                    size = float(sz)
                    if not 0.0 <= size < _INF or type(sz) is not str or type(liq) is not str \
                            or type(orders) is not str:
                        raise _bad(level, "bad size or field type")
                    level = (px, sz, liq, orders)
                    if key is None:
                        price = float(px)
                        if not 0.0 < price < _INF or type(px) is not str:
                            raise _bad(level, "price not a positive number")
                        key = price * sign
                        i = bisect_left(keys, key)
                        if i < len(keys) and keys[i] == key:
                            raise _bad(level, f"same price as {ordered[i][0]!r} written differently")
                        if size == 0.0:
                            continue  # "0.0" for an unknown price
                        index[px] = key
                        keys.insert(i, key)
                        ordered.insert(i, level)
                    else:
                        i = bisect_left(keys, key)
                        if size == 0.0:
                            del index[px]
                            del keys[i]
                            del ordered[i]
                        else:
                            ordered[i] = level
            except (TypeError, ValueError) as exc:
                if isinstance(exc, BadLevel):
                    raise
                raise _bad(level, str(exc)) from exc
            if i < lowest:
                lowest = i
        if lowest < top_depth:
            self.top_changed = True

    def top(self, n: int) -> list[Level]:
        """The best `n` levels, best first (the lists themselves, not copies)."""
        return self._levels[:n]

    def top_texts(self) -> list[str]:
        """`px:sz` of the best levels the checksum covers."""
        return [f"{level[0]}:{level[1]}" for level in self._levels[:self._top_depth]]


class OrderBook:
    """Both sides of one instrument's book, checksummed by the venue's rule."""

    __slots__ = ("_book_checksum", "_checksum", "asks", "bids")

    def __init__(self, venue: Venue = DEFAULT_VENUE) -> None:
        self.bids = BookSide(descending=True, top_depth=venue.checksum_depth)
        self.asks = BookSide(descending=False, top_depth=venue.checksum_depth)
        self._book_checksum = venue.book_checksum
        self._checksum = 0

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def apply(self, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]) -> None:
        self.bids.apply(bids)
        self.asks.apply(asks)

    def checksum(self) -> int:
        """The venue's checksum of the current top levels (recomputed only if they changed)."""
        bids, asks = self.bids, self.asks
        if bids.top_changed or asks.top_changed:
            self._checksum = self._book_checksum(bids.top_texts(), asks.top_texts())
            bids.top_changed = asks.top_changed = False
        return self._checksum

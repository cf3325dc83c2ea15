"""In-memory order book of one instrument: exact OKX levels keyed by price, behind a sorted price index.

Levels are kept as the exchange's own text, `(px, sz, liq, orders)`, all strings, so records and
checksums use exactly what OKX sent. They are tuples, not the lists the JSON parser made: a tuple
of strings drops out of the cyclic garbage collector's lists, so 250 books of 800 levels do not
make every collection traverse 200,000 objects (that stalled the event loop for 100-400 ms).

Each side holds a dict price text → level, a dict price text → sort key, and two parallel lists in
price order: the keys (for `bisect`) and the price texts (so the top N is a slice and N lookups).
A new size for a known price, the most common update, is two dict look-ups and a store: no bisect,
no list move. Only an insert or a delete touches the sorted lists (O(log n) plus a short memmove).
The key is the price as a float, used only for ordering: prices are tick multiples with far fewer
than 15 significant digits, so distinct prices map to distinct doubles and the order is exact. A
price written two ways ("100" and "100.0") is a bad level, whether it inserts, updates or deletes:
it is never stored twice, and a delete spelled differently never leaves a stale level.

`float()` of a text is the dearest step per level (~0.2 µs), so a size is parsed once per distinct
text: `_POSITIVE_SIZES` remembers the texts already found to be valid non-zero sizes. It is only a
shortcut: a text it lacks takes the full check, and levels are stored as received either way.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from operator import itemgetter

from l2_lake.venues.registry import DEFAULT_VENUE
from l2_lake.venues.venue import Venue

Level = tuple[str, str, str, str]
_INF = math.inf
_POSITIVE_SIZES: set[str] = set()  # size texts that parsed as 0 < size < inf
_POSITIVE_SIZES_MAX = 16_384  # emptied when full: a few MB at most, refilled by the next updates


class BadLevel(ValueError):
    """A level that cannot be applied: wrong shape, non-positive or non-finite price, bad size."""


def _bad(level: object, why: str) -> BadLevel:
    return BadLevel(f"level {level!r}: {why}; expected [price, size, liquidated, orders] as 4 strings")


class BookSide:
    """One side of the book. Keys are floats ascending; bids store negated prices.

    Notes whether anything in the top `top_depth` levels (those the checksum covers) changed, so the
    checksum is rebuilt only when it can differ.
    """

    __slots__ = ("_index", "_keys", "_levels", "_prices", "_sign", "_top_depth", "top_changed")

    def __init__(self, descending: bool, top_depth: int) -> None:
        self._sign = -1.0 if descending else 1.0
        self._top_depth = top_depth
        self._index: dict[str, float] = {}  # price text -> sort key
        self._levels: dict[str, Level] = {}  # price text -> level
        self._keys: list[float] = []
        self._prices: list[str] = []  # price texts in key order
        self.top_changed = True

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._index.clear()
        self._levels.clear()
        self._keys.clear()
        self._prices.clear()
        self.top_changed = True

    def apply(self, levels: Iterable[Sequence[str]]) -> None:
        """Apply OKX levels: size 0 deletes the price, any other size replaces or inserts it.

        Raises BadLevel on the first malformed level; the side is then partly updated and the
        caller must treat the whole book as untrustworthy.
        """
        if not levels:
            return
        index, stored, keys, prices = self._index, self._levels, self._keys, self._prices
        positive, sign = _POSITIVE_SIZES, self._sign
        depth = self._top_depth
        # A change reaches the top `depth` levels iff its key is at most the depth-th best key; that
        # bound only moves once such a change has happened, so it is read once per call.
        top_key = keys[depth - 1] if len(keys) >= depth else _INF
        top_changed = False
        for level in levels:
            try:
                px, sz, liq, orders = level
                key = index.get(px)
                if sz in positive and type(liq) is str and type(orders) is str:
                    if key is None:  # a new price: `_place`, inlined
                        price = float(px)
                        if not 0.0 < price < _INF or type(px) is not str:
                            raise _bad(level, "price not a positive number")
                        key = price * sign
                        i = bisect_left(keys, key)
                        if i < len(keys) and keys[i] == key:
                            raise _bad(level, f"same price as {prices[i]!r} written differently")
                        index[px] = key
                        keys.insert(i, key)
                        prices.insert(i, px)
                    stored[px] = (px, sz, liq, orders)
                elif sz == "0":
                    if key is None:
                        if self._stored_as_other_text(px):
                            raise _bad(level, "deletes a stored price written differently")
                        continue  # deleting an unknown price changes nothing
                    del index[px]
                    del stored[px]
                    i = bisect_left(keys, key)
                    del keys[i]
                    del prices[i]
                else:
                    key = self._apply_other(level, px, sz, liq, orders, key)
                    if key is None:
                        continue
            except (TypeError, ValueError) as exc:
                if isinstance(exc, BadLevel):
                    raise
                raise _bad(level, str(exc)) from exc
            if key <= top_key:
                top_changed = True
        if top_changed:
            self.top_changed = True

    def _insert(self, level: Sequence[str], px: str) -> float:
        """Place a new price in the sorted lists (the caller stores its level); its key."""
        key, i = self._place(level, px)
        self._index[px] = key
        self._keys.insert(i, key)
        self._prices.insert(i, px)
        return key

    def _place(self, level: Sequence[str], px: str) -> tuple[float, int]:
        """Key and list position of a price we do not hold, or BadLevel if it is no valid new price."""
        price = float(px)
        if not 0.0 < price < _INF or type(px) is not str:
            raise _bad(level, "price not a positive number")
        keys = self._keys
        key = price * self._sign
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            raise _bad(level, f"same price as {self._prices[i]!r} written differently")
        return key, i

    def _apply_other(self, level: Sequence[str], px: str, sz: str, liq: str, orders: str,
                     key: float | None) -> float | None:
        """A level the fast cases in `apply` leave: a size text not seen yet or spelling zero, or a bad
        level (raised). Returns the key it changed, None if nothing changed."""
        size = float(sz)
        if not 0.0 <= size < _INF or type(sz) is not str or type(liq) is not str or type(orders) is not str:
            raise _bad(level, "bad size or field type")
        if size:
            if len(_POSITIVE_SIZES) >= _POSITIVE_SIZES_MAX:
                _POSITIVE_SIZES.clear()
            _POSITIVE_SIZES.add(sz)
            if key is None:
                key = self._insert(level, px)
            self._levels[px] = (px, sz, liq, orders)
            return key
        if key is None:  # "0.0" for an unknown price: a valid new price, then nothing to do
            self._place(level, px)
            return None
        del self._index[px]
        del self._levels[px]
        i = bisect_left(self._keys, key)
        del self._keys[i]
        del self._prices[i]
        return key

    def _stored_as_other_text(self, px: str) -> bool:
        """True when a price text we do not hold names a stored level's price ("100.0" vs "100")."""
        try:
            key = float(px) * self._sign
        except (TypeError, ValueError):
            return False
        keys = self._keys
        i = bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def top(self, n: int) -> list[Level]:
        """The best `n` levels, best first."""
        return list(_pick(self._levels, self._prices[:n]))

    def top_texts(self) -> tuple[list[str], list[str]]:
        """Prices and sizes, best first, of the levels the checksum covers."""
        prices = self._prices[:self._top_depth]
        return prices, [level[1] for level in _pick(self._levels, prices)]


def _pick(levels: dict[str, Level], prices: list[str]) -> Sequence[Level]:
    """`levels[p] for p in prices`, looked up in one C call."""
    if len(prices) > 1:
        return itemgetter(*prices)(levels)
    return [levels[p] for p in prices]


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
            self._checksum = self._book_checksum(*bids.top_texts(), *asks.top_texts())
            bids.top_changed = asks.top_changed = False
        return self._checksum

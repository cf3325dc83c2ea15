"""The level checks of `l2_lake.format.record.record_problems` over a whole hour at once, vectorised
with pyarrow and numpy on the hour's source table (`l2_lake.format.source_json`).

`levels_honour_contract(src)` is True only when every record's levels do: each level a list of 4
strings, every price a positive finite number, bids strictly descending and asks strictly
ascending, `best_bid`/`best_ask` the first levels' prices (null for an empty side) and `book_crc32`,
where set, the OKX checksum of the record's own top 25. Prices are compared as float64, as
`record_problems` compares them (both parse a decimal string to the nearest double). False sends
the hour to the line-by-line check, which says which record is wrong and why.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from l2_lake.venues.okx.checksum import CHECKSUM_DEPTH, join_interleaved, signed_crc32

LEVEL_FIELDS = 4  # price, size, liquidated orders (always "0"), orders


def _side_ok(side: pa.Array, best: pa.Array, descending: bool) -> bool:
    """Shape, prices, order and best price of one side's levels (list<list<string>>) of every record."""
    if side.null_count:
        return False
    levels = side.flatten()
    if len(levels) == 0:
        return best.null_count == len(best)
    if levels.null_count or pc.any(pc.not_equal(pc.list_value_length(levels), LEVEL_FIELDS)).as_py():
        return False
    if levels.flatten().null_count:
        return False
    price_text = pc.list_element(levels, 0)
    try:
        prices = pc.cast(price_text, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    if not bool(np.all((prices > 0) & (prices < np.inf))):
        return False
    starts = side.offsets.to_numpy()[:-1] - side.offsets[0].as_py()  # each record's first level
    ordered = prices[:-1] > prices[1:] if descending else prices[:-1] < prices[1:]
    boundaries = starts[(starts > 0) & (starts < len(prices))]
    ordered[boundaries - 1] = True  # a record's last level is not compared with the next record's first
    if not bool(np.all(ordered)):
        return False
    filled = pc.list_value_length(side).to_numpy(zero_copy_only=False) > 0
    first_prices = price_text.take(pa.array(starts[filled]))
    best_filled, best_empty = best.filter(pa.array(filled)), best.filter(pa.array(~filled))
    return (best_filled.null_count == 0 and best_empty.null_count == len(best_empty)
            and bool(pc.all(pc.equal(first_prices, best_filled)).as_py() is not False))


def _top_texts(side: pa.Array) -> list[list[str]]:
    """Per record, the `px:sz` texts of its best `CHECKSUM_DEPTH` levels."""
    top = pc.list_slice(side, 0, CHECKSUM_DEPTH)
    levels = top.flatten()
    texts = pc.binary_join_element_wise(pc.list_element(levels, 0), pc.list_element(levels, 1), ":")
    offsets = pc.subtract(top.offsets, top.offsets[0])
    return pa.ListArray.from_arrays(offsets, texts).to_pylist()


def _crc_ok(src: pa.Table) -> bool:
    crc = src["book_crc32"].combine_chunks()
    if crc.null_count == len(crc):
        return True
    bids = _top_texts(src["bids_top400"].combine_chunks())
    asks = _top_texts(src["asks_top400"].combine_chunks())
    return all(expected is None or expected == signed_crc32(join_interleaved(b, a))
               for expected, b, a in zip(crc.to_pylist(), bids, asks, strict=True))


def levels_honour_contract(src: pa.Table) -> bool:
    """Whether every record's levels in `src` (`SOURCE_JSON_SCHEMA`) honour the contract (module doc)."""
    return (_side_ok(src["bids_top400"].combine_chunks(), src["best_bid"].combine_chunks(), descending=True)
            and _side_ok(src["asks_top400"].combine_chunks(), src["best_ask"].combine_chunks(), descending=False)
            and _crc_ok(src))

"""Liquidity features of order-book snapshots: one row per record of a curated table, vectorised.

`book_features(books)` takes a table with the curated schema (`l2_lake.tiers.curated.PARQUET_SCHEMA`,
docs/CONTRACT.md §5) and returns a table with `FEATURES_SCHEMA`: the same number of rows, in the same
order, keyed by `timestamp_utc` and `instId`. Pure pyarrow/numpy, no Dagster: usable from a notebook
on `read_books(...)` output as well as from the pipeline. No Python loop runs over rows or levels.

Formulas (sizes in OKX's units as sent, i.e. contracts for swaps; bid1/ask1 are the first level's
prices of `bids`/`asks`, q_b/q_a their sizes):

- `exact` = not `gap_detected` and `checksum_ok` is not false and both sides are non-empty.
  `checksum_ok` null (an original-format record, not validated) counts as not false; `gap_detected`
  null counts as not a gap marker, as in `l2_lake.research.read.flagged`.
- `mid` = (bid1 + ask1) / 2
- `spread_bps` = (ask1 - bid1) / mid * 1e4
- `microprice` = (ask1 * q_b + bid1 * q_a) / (q_b + q_a)
- `bid_depth_{X}bps` = Σ bid sizes with price >= mid * (1 - X/1e4)
  `ask_depth_{X}bps` = Σ ask sizes with price <= mid * (1 + X/1e4), for X in `DEPTH_BANDS_BPS`.
  The bounds are inclusive up to a relative tolerance of `EDGE_RTOL` (1e-9 of the edge): a level
  whose decimal price equals the decimal edge counts even when float rounding puts the computed
  edge an ulp beyond it (500 * (1 + 10/1e4) is 500.49999999999994 in float64). 1e-9 is far below
  any tick/price ratio (~1e-6 for BTC at 0.1 tick), so no level one tick outside the edge can count.
- `imbalance_{N}` = (B_N - A_N) / (B_N + A_N), B_N and A_N the summed sizes of the best N levels of
  each side (all of them when the side has fewer than N), for N in `IMBALANCE_LEVELS`; in [-1, 1].
- `mid_log_return` = ln(mid_t / mid_{t-1}), t-1 the previous row of the table; null on the first
  row and wherever either row is not exact or the two rows are of different instruments (a return
  never bridges a gap, a flagged record or an instrument change).

Every feature column is null where `exact` is false. A feature is also null where it cannot be
computed: a record with a level whose price or size is null (only invalid records, which fail the
`schema_valid` check) has all its features null, and a zero denominator gives null, not inf/NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEPTH_BANDS_BPS = (10, 25, 100)
IMBALANCE_LEVELS = (5, 25, 400)
EDGE_RTOL = 1e-9

FEATURES_SCHEMA = pa.schema(
    [
        ("timestamp_utc", pa.timestamp("ms", tz="UTC")),
        ("instId", pa.string()),
        ("exact", pa.bool_()),
        ("mid", pa.float64()),
        ("spread_bps", pa.float64()),
        ("microprice", pa.float64()),
        *[(f"{side}_depth_{bps}bps", pa.float64()) for bps in DEPTH_BANDS_BPS for side in ("bid", "ask")],
        *[(f"imbalance_{n}", pa.float64()) for n in IMBALANCE_LEVELS],
        ("mid_log_return", pa.float64()),
    ]
)


@dataclass(frozen=True)
class _Side:
    """One side's levels flattened (row after row, best level first), with per level its row and rank
    (0 = best) and per row its number of levels and the index of its first level."""

    prices: np.ndarray
    sizes: np.ndarray
    rows: np.ndarray
    ranks: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray

    def best(self, values: np.ndarray) -> np.ndarray:
        """Per row, `values` at the best level (NaN for an empty side)."""
        padded = np.append(values, np.nan)
        return padded[np.where(self.lengths > 0, self.starts, len(values))]

    def row_sum(self, keep: np.ndarray) -> np.ndarray:
        """Per row, the summed sizes of the levels where `keep` is true (0 for an empty side)."""
        # a NaN size makes its row's sum NaN even where not kept: such rows are nulled anyway (all_numeric)
        return self._reduce(np.add, self.sizes * keep, 0.0)

    def all_numeric(self) -> np.ndarray:
        """Per row, whether every level has a finite price and size."""
        bad = ~(np.isfinite(self.prices) & np.isfinite(self.sizes))
        return ~self._reduce(np.logical_or, bad, False)

    def _reduce(self, ufunc: np.ufunc, values: np.ndarray, empty: float | bool) -> np.ndarray:
        # reduceat over the non-empty rows only: consecutive non-empty rows' starts bound each row's levels
        out = np.full(len(self.lengths), empty, dtype=values.dtype)
        nonempty = self.lengths > 0
        if values.size:
            out[nonempty] = ufunc.reduceat(values, self.starts[nonempty])
        return out


def _side(column: pa.ChunkedArray) -> _Side:
    levels = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(levels), 0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(levels)  # null lists emit nothing, consistent with their length 0
    starts = np.cumsum(lengths) - lengths
    # not pc.list_parent_indices: it also emits the values backing a null list, which list_flatten skips
    rows = np.repeat(np.arange(len(lengths)), lengths)
    return _Side(
        prices=_floats(pc.struct_field(flat, "price")),
        sizes=_floats(pc.struct_field(flat, "size")),
        rows=rows,
        ranks=np.arange(len(rows)) - starts[rows],
        lengths=lengths,
        starts=starts,
    )


def _floats(values: pa.Array) -> np.ndarray:
    """float64 values with null as NaN."""
    return values.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _exact(books: pa.Table, bids: _Side, asks: _Side) -> np.ndarray:
    gap = pc.fill_null(books["gap_detected"], False).to_numpy(zero_copy_only=False).astype(bool)
    bad_checksum = pc.fill_null(pc.invert(books["checksum_ok"]), False).to_numpy(zero_copy_only=False).astype(bool)
    return ~gap & ~bad_checksum & (bids.lengths > 0) & (asks.lengths > 0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def _depth_bands(bids: _Side, asks: _Side, mid: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    bid_mid, ask_mid = mid[bids.rows], mid[asks.rows]  # each level's row mid
    for bps in DEPTH_BANDS_BPS:
        bid_floor = bid_mid * ((1 - bps / 1e4) * (1 - EDGE_RTOL))
        ask_ceiling = ask_mid * ((1 + bps / 1e4) * (1 + EDGE_RTOL))
        out[f"bid_depth_{bps}bps"] = bids.row_sum(bids.prices >= bid_floor)
        out[f"ask_depth_{bps}bps"] = asks.row_sum(asks.prices <= ask_ceiling)
    return out


def _imbalances(bids: _Side, asks: _Side) -> dict[str, np.ndarray]:
    out = {}
    for n in IMBALANCE_LEVELS:
        bid_sum = bids.row_sum(bids.ranks < n)
        ask_sum = asks.row_sum(asks.ranks < n)
        out[f"imbalance_{n}"] = _ratio(bid_sum - ask_sum, bid_sum + ask_sum)
    return out


def _log_returns(mid: np.ndarray, usable: np.ndarray, inst: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(ln(mid_t / mid_{t-1}), where it is defined); the first row never is."""
    returns = np.full(len(mid), np.nan)
    defined = np.zeros(len(mid), dtype=bool)
    if len(mid) > 1:
        same_inst = pc.fill_null(pc.equal(inst[1:], inst[:-1]), False).to_numpy(zero_copy_only=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            returns[1:] = np.log(mid[1:] / mid[:-1])
        defined[1:] = usable[1:] & usable[:-1] & same_inst.astype(bool)
    return returns, defined


def _column(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=~(valid & np.isfinite(values)))


def book_features(books: pa.Table) -> pa.Table:
    """The liquidity features of every record of `books` (curated schema), one row each, in order."""
    bids = _side(books["bids"])
    asks = _side(books["asks"])
    exact = _exact(books, bids, asks)
    usable = exact & bids.all_numeric() & asks.all_numeric()

    bid1, ask1 = bids.best(bids.prices), asks.best(asks.prices)
    q_b, q_a = bids.best(bids.sizes), asks.best(asks.sizes)
    mid = (bid1 + ask1) / 2
    values = {
        "mid": mid,
        "spread_bps": _ratio(ask1 - bid1, mid) * 1e4,
        "microprice": _ratio(ask1 * q_b + bid1 * q_a, q_b + q_a),
        **_depth_bands(bids, asks, mid),
        **_imbalances(bids, asks),
    }
    inst = books["instId"].combine_chunks().cast(pa.string())
    returns, defined = _log_returns(mid, usable, inst)
    columns = {
        "timestamp_utc": books["timestamp_utc"].combine_chunks().cast(FEATURES_SCHEMA.field("timestamp_utc").type),
        "instId": inst,
        "exact": pa.array(exact, pa.bool_()),
        **{name: _column(v, usable) for name, v in values.items()},
        "mid_log_return": _column(returns, defined),
    }
    return pa.Table.from_arrays([columns[f.name] for f in FEATURES_SCHEMA], schema=FEATURES_SCHEMA)

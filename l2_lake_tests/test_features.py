"""`l2_lake.tiers.features.book_features` against hand-computed numbers on small books, and against a
slow per-row reference in exact decimal arithmetic on an hour of 1800 records at depth 400."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from l2_lake.tiers.curated import PARQUET_SCHEMA, records_to_table
from l2_lake.tiers.features import DEPTH_BANDS_BPS, FEATURES_SCHEMA, IMBALANCE_LEVELS, book_features
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    levels,
    make_record,
    make_records,
    ms,
    with_gap,
    without_fields,
)

T0 = ms(BASE_HOUR) + 1000
FEATURE_COLUMNS = [f.name for f in FEATURES_SCHEMA][3:]


def side(*levels_: tuple[str, str]) -> list[list[str]]:
    """Levels [price, size, "0", orders] from (price, size) pairs, best first."""
    return [[price, size, "0", "1"] for price, size in levels_]


# A 3-level book. mid = (100 + 100.1)/2 = 100.05.
BIDS_3 = side(("100", "2"), ("99.9", "3"), ("99.5", "5"))
ASKS_3 = side(("100.1", "1"), ("100.2", "4"), ("101", "6"))


def record(i: int, bids: list | None = None, asks: list | None = None, *, inst_id: str = BTC, gap: bool = False,
           checksum_ok: bool = True) -> dict[str, Any]:
    return make_record(inst_id, T0 + 2000 * i, seq=1000 + i, bids=BIDS_3 if bids is None else bids,
                       asks=ASKS_3 if asks is None else asks, gap=gap, checksum_ok=checksum_ok)


def features(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = book_features(records_to_table(records))
    assert table.schema == FEATURES_SCHEMA
    assert table.num_rows == len(records)
    return table.to_pylist()


def shifted(levels_: list[list[str]], by: str) -> list[list[str]]:
    return [[str(Decimal(price) + Decimal(by)), size, liq, orders] for price, size, liq, orders in levels_]


def test_schema_and_constants():
    assert DEPTH_BANDS_BPS == (10, 25, 100)
    assert IMBALANCE_LEVELS == (5, 25, 400)
    assert FEATURES_SCHEMA.names == [
        "timestamp_utc", "instId", "exact", "mid", "spread_bps", "microprice",
        "bid_depth_10bps", "ask_depth_10bps", "bid_depth_25bps", "ask_depth_25bps",
        "bid_depth_100bps", "ask_depth_100bps", "imbalance_5", "imbalance_25", "imbalance_400", "mid_log_return",
    ]
    assert FEATURES_SCHEMA.field("timestamp_utc").type == pa.timestamp("ms", tz="UTC")
    assert FEATURES_SCHEMA.field("instId").type == pa.string()
    assert FEATURES_SCHEMA.field("exact").type == pa.bool_()
    assert all(FEATURES_SCHEMA.field(name).type == pa.float64() for name in FEATURE_COLUMNS)


def test_every_formula_on_a_three_level_book():
    (row,) = features([record(0)])
    assert row["timestamp_utc"] == BASE_HOUR.replace(second=1)
    assert row["instId"] == BTC
    assert row["exact"] is True
    mid = (100 + 100.1) / 2  # 100.05
    assert row["mid"] == pytest.approx(100.05)
    assert row["spread_bps"] == pytest.approx((100.1 - 100) / mid * 1e4)  # 0.1 / 100.05 * 1e4 = 9.995002…
    assert row["spread_bps"] == pytest.approx(9.995002498750625)
    # (ask1 * q_b + bid1 * q_a) / (q_b + q_a) = (100.1 * 2 + 100 * 1) / 3 = 300.2 / 3
    assert row["microprice"] == pytest.approx(300.2 / 3)
    # 10 bps: bids >= 100.05 * 0.999 = 99.94995 → 100 (2); asks <= 100.05 * 1.001 = 100.15005 → 100.1 (1)
    assert (row["bid_depth_10bps"], row["ask_depth_10bps"]) == (2, 1)
    # 25 bps: bids >= 99.799875 → 100, 99.9 (2 + 3); asks <= 100.300125 → 100.1, 100.2 (1 + 4)
    assert (row["bid_depth_25bps"], row["ask_depth_25bps"]) == (5, 5)
    # 100 bps: bids >= 99.0495 → all (2 + 3 + 5); asks <= 101.0505 → all (1 + 4 + 6)
    assert (row["bid_depth_100bps"], row["ask_depth_100bps"]) == (10, 11)
    # every N >= 3 levels: B = 10, A = 11 → (10 - 11) / 21; imbalance_5 on a 3-level book uses its 3 levels
    for n in IMBALANCE_LEVELS:
        assert row[f"imbalance_{n}"] == pytest.approx(-1 / 21)
    assert row["mid_log_return"] is None  # first row


def test_depth_band_edges_are_inclusive():
    # mid = (499.5 + 500.5) / 2 = 500. Edges: 10 bps 499.5 / 500.5, 25 bps 498.75 / 501.25, 100 bps 495 / 505,
    # each the price of a level; one level beyond the 100 bps edge on each side. In float64,
    # 500 * (1 + 10/1e4) is 500.49999999999994 < 500.5: the ask at the 10 bps edge counts by the tolerance.
    assert 500 * (1 + 10 / 1e4) < 500.5
    bids = side(("499.5", "1"), ("499", "2"), ("498.75", "4"), ("498.5", "8"), ("495", "16"), ("494.5", "32"))
    asks = side(("500.5", "1"), ("501", "2"), ("501.25", "4"), ("501.5", "8"), ("505", "16"), ("505.5", "32"))
    (row,) = features([record(0, bids, asks)])
    assert row["mid"] == 500
    assert (row["bid_depth_10bps"], row["ask_depth_10bps"]) == (1, 1)  # the edge level only
    assert (row["bid_depth_25bps"], row["ask_depth_25bps"]) == (1 + 2 + 4, 1 + 2 + 4)
    assert (row["bid_depth_100bps"], row["ask_depth_100bps"]) == (1 + 2 + 4 + 8 + 16, 1 + 2 + 4 + 8 + 16)  # not 32


def test_imbalance_uses_the_best_n_levels_or_all_there_are():
    bids_30 = side(*[(str(Decimal("100") - Decimal("0.1") * i), "1") for i in range(30)])
    asks_30 = side(*[(str(Decimal("100.1") + Decimal("0.1") * i), "3" if i < 5 else "0.5") for i in range(30)])
    deep, lopsided = features([record(0, bids_30, asks_30), record(1, bids_30[:3], asks_30)])
    # 30 levels each: B_5 = 5, A_5 = 5 * 3 = 15; B_25 = 25, A_25 = 15 + 20 * 0.5 = 25; B_400 = 30, A_400 = 15 + 25 * 0.5
    assert deep["imbalance_5"] == pytest.approx((5 - 15) / (5 + 15))  # -0.5
    assert deep["imbalance_25"] == pytest.approx(0.0)
    assert deep["imbalance_400"] == pytest.approx((30 - 27.5) / (30 + 27.5))  # 1/23: all 30 levels, not 400
    # 3 bid levels against 30 ask levels: B_N = 3 for every N
    assert lopsided["imbalance_5"] == pytest.approx((3 - 15) / (3 + 15))
    assert lopsided["imbalance_25"] == pytest.approx((3 - 25) / (3 + 25))
    assert lopsided["imbalance_400"] == pytest.approx((3 - 27.5) / (3 + 27.5))
    for row in (deep, lopsided):
        assert all(-1 <= row[f"imbalance_{n}"] <= 1 for n in IMBALANCE_LEVELS)


def test_flagged_rows_have_null_features_and_unvalidated_rows_are_exact():
    gap_marker = record(1, [], [], gap=True)
    bad_checksum = record(2, checksum_ok=False)
    original = without_fields(record(3))  # original format: checksum_ok null, not validated
    one_side = record(4, BIDS_3, [])
    rows = features([record(0), gap_marker, bad_checksum, original, one_side])
    assert [row["exact"] for row in rows] == [True, False, False, True, False]
    for row in (rows[1], rows[2], rows[4]):
        assert all(row[name] is None for name in FEATURE_COLUMNS), row
    assert rows[3]["mid"] == pytest.approx(100.05)
    assert rows[3]["microprice"] == pytest.approx(300.2 / 3)


def test_gap_marker_holding_a_book_is_not_exact():
    records, _ = with_gap([record(0), record(1)], 1, BTC, BASE_HOUR)  # a marker keeps the last trusted book
    rows = features(records)
    assert records[1]["bids_top400"] and rows[1]["exact"] is False
    assert all(rows[1][name] is None for name in FEATURE_COLUMNS)


def test_mid_log_return_never_bridges_a_flagged_row():
    up = (shifted(BIDS_3, "0.1"), shifted(ASKS_3, "0.1"))  # mid 100.15
    rows = features([
        record(0),                  # mid 100.05, first row: null
        record(1, *up),             # ln(100.15 / 100.05)
        record(2, [], [], gap=True),  # flagged: null
        record(3),                  # after a flagged row: null
        record(4, checksum_ok=False),  # flagged: null
        record(5, *up),             # after a flagged row: null
        record(6),                  # ln(100.05 / 100.15)
        record(7),                  # ln(100.05 / 100.05) = 0
    ])
    returns = [row["mid_log_return"] for row in rows]
    assert returns[0] is None
    assert returns[1] == pytest.approx(math.log(100.15 / 100.05))  # 0.000999001…
    assert returns[1] == pytest.approx(9.99000999e-4, rel=1e-6)
    assert returns[2:6] == [None, None, None, None]
    assert returns[6] == pytest.approx(math.log(100.05 / 100.15))
    assert returns[7] == 0.0


def test_mid_log_return_never_bridges_instruments():
    rows = features([record(0), record(1, inst_id=ETH), record(2, inst_id=ETH)])
    assert [row["mid_log_return"] for row in rows] == [None, None, 0.0]


def test_unparseable_level_gives_null_features():
    rec = record(0)
    rec["asks_top400"] = [["100.1", "abc", "0", "1"], *ASKS_3[1:]]  # an invalid record: size null in the table
    (row,) = features([rec])
    assert row["exact"] is True  # by its flags; its numbers cannot be computed
    assert all(row[name] is None for name in FEATURE_COLUMNS)


def test_empty_table():
    for table in (PARQUET_SCHEMA.empty_table(), records_to_table([])):
        out = book_features(table)
        assert out.schema == FEATURES_SCHEMA
        assert out.num_rows == 0


def test_chunks_slices_and_null_lists_do_not_shift_levels():
    records = [record(0), record(1, shifted(BIDS_3, "0.1"), shifted(ASKS_3, "0.1")), record(2), record(3)]
    table = records_to_table(records)
    whole = book_features(table).to_pylist()
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 2), table.slice(3)])
    assert book_features(chunked).to_pylist() == whole
    assert book_features(table.slice(1)).to_pylist()[1:] == whole[2:]
    # a null bids list backed by non-empty child values (pc.list_parent_indices would still count them)
    bids = table["bids"].combine_chunks()
    masked = pa.ListArray.from_arrays(bids.offsets, bids.values, mask=pa.array([False, True, False, False]))
    rows = book_features(table.set_column(table.schema.get_field_index("bids"), "bids", masked)).to_pylist()
    assert [row["exact"] for row in rows] == [True, False, True, True]
    assert all(rows[1][name] is None for name in FEATURE_COLUMNS)
    assert rows[0] == whole[0]
    assert rows[2] == {**whole[2], "mid_log_return": None}  # its predecessor is no longer exact
    assert rows[3] == whole[3]


# --- cross-check against a slow per-row reference ------------------------------------------------


def reference(rec: dict[str, Any]) -> dict[str, Any]:
    """The features of one record, computed level by level in exact decimal arithmetic from its strings."""
    bids = [(Decimal(p), Decimal(s)) for p, s, *_ in rec["bids_top400"]]
    asks = [(Decimal(p), Decimal(s)) for p, s, *_ in rec["asks_top400"]]
    exact = not rec["gap_detected"] and rec.get("checksum_ok") is not False and bool(bids) and bool(asks)
    if not exact:
        return {"exact": False, **dict.fromkeys(FEATURE_COLUMNS)}
    (bid1, q_b), (ask1, q_a) = bids[0], asks[0]
    mid = (bid1 + ask1) / 2
    out: dict[str, Any] = {
        "exact": True,
        "mid": mid,
        "spread_bps": (ask1 - bid1) / mid * 10_000,
        "microprice": (ask1 * q_b + bid1 * q_a) / (q_b + q_a),
    }
    for bps in DEPTH_BANDS_BPS:
        out[f"bid_depth_{bps}bps"] = sum(s for p, s in bids if p >= mid * (1 - Decimal(bps) / 10_000))
        out[f"ask_depth_{bps}bps"] = sum(s for p, s in asks if p <= mid * (1 + Decimal(bps) / 10_000))
    for n in IMBALANCE_LEVELS:
        b, a = sum(s for _, s in bids[:n]), sum(s for _, s in asks[:n])
        out[f"imbalance_{n}"] = (b - a) / (b + a)
    return out


def reference_return(prev: dict[str, Any], cur: dict[str, Any]) -> float | None:
    if not (prev["exact"] and cur["exact"]):
        return None
    return math.log(float(cur["mid"]) / float(prev["mid"]))


def assert_matches_reference(rows: list[dict[str, Any]], records: list[dict[str, Any]], indices: list[int]) -> None:
    for i in indices:
        expected = reference(records[i])
        expected["mid_log_return"] = reference_return(reference(records[i - 1]), expected) if i else None
        for name, value in expected.items():
            if value is None or isinstance(value, bool):
                assert rows[i][name] == value, (i, name)
            else:  # float64 vs exact decimal: ask1 - bid1 near 97000 keeps ~10 significant digits of a 0.1 spread
                assert rows[i][name] == pytest.approx(float(value), rel=1e-9, abs=1e-12), (i, name)


@pytest.fixture(scope="module")
def hour_400() -> list[dict[str, Any]]:
    """An hour of 1800 records at depth 400 (mid 96997.5 … 97002.4), record 900 a gap marker holding a book."""
    records, _ = with_gap(make_records(BTC, BASE_HOUR, count=1800, depth=400), 900, BTC, BASE_HOUR)
    return records


def test_hour_at_depth_400_matches_reference(hour_400):
    rows = features(hour_400)
    assert [row["exact"] for row in rows] == [i != 900 for i in range(1800)]
    assert all(row["mid_log_return"] is not None for i, row in enumerate(rows) if i not in (0, 900, 901))
    # these books span 40 USD (≈ 4 bps) per side, so every band holds all 400 levels here
    assert rows[1]["bid_depth_10bps"] == rows[1]["bid_depth_100bps"] == pytest.approx(
        sum(float(s) for _, s, *_ in hour_400[1]["bids_top400"]))
    assert_matches_reference(rows, hour_400, [0, 1, 2, 25, 449, 899, 900, 901, 902, 1350, 1798, 1799])


def test_band_edges_on_levels_at_depth_400_match_reference():
    # tick 0.5, mid = mid_ticks * 0.5: 400 levels span 40 % of the price, so each band cuts the book, and the
    # 10 / 25 / 100 bps edges fall exactly on a level when mid_ticks is a multiple of 1000 / 400 / 100
    records = []
    for i, mid_ticks in enumerate([1000, 1200, 2000, 4000, 1001, 1333, 2400, 1100]):
        bids, asks = levels(mid_ticks, 400, tick=Decimal("0.5"), seed=i)
        records.append(record(i, bids, asks))
    rows = features(records)
    assert_matches_reference(rows, records, list(range(len(records))))
    # mid 500: 10 bps edges 499.5 / 500.5 are the best levels themselves, sizes 0.01 * (1 + seed % 7) etc.
    assert rows[0]["bid_depth_10bps"] == pytest.approx(float(records[0]["bids_top400"][0][1]))
    assert rows[0]["ask_depth_10bps"] == pytest.approx(float(records[0]["asks_top400"][0][1]))

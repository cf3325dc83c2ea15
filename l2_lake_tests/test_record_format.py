"""`record_problems` and `record_format` on both record formats (CONTRACT.md §2, §2.1): the
extended format the collector writes and the deployment's original one without `ADDED_FIELDS`."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest

from l2_lake.format.record import (
    ADDED_FIELDS,
    EXTENDED,
    INCOMPLETE,
    ORIGINAL,
    ORIGINAL_FIELDS,
    RECORD_FIELDS,
    build_record,
    record_format,
    record_problems,
)

BIDS = [["100.5", "1", "0", "1"], ["100.4", "2", "0", "3"]]
ASKS = [["101", "2", "0", "1"], ["101.5", "0.25", "0", "2"]]
PARTIAL_ADDED = [kept for n in (1, 2) for kept in combinations(ADDED_FIELDS, n)]


def extended(bids: list = BIDS, asks: list = ASKS, **changes: Any) -> dict[str, Any]:
    """A record the collector would write of the book `bids`/`asks`, then the fields in `changes` replaced."""
    rec = build_record(inst_id="BTC-USDT-SWAP", ts_ms=1_764_064_800_123, recv_ms=1_764_064_800_140, bids=bids,
                       asks=asks, checksum=0, seq_id=10, prev_seq_id=9, gap_detected=False, checksum_ok=True)
    return {**rec, **changes}


def keeping(rec: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k in fields}


def original(bids: list = BIDS, asks: list = ASKS, **changes: Any) -> dict[str, Any]:
    return keeping(extended(bids, asks, **changes), ORIGINAL_FIELDS)


def test_field_tuples_are_one_definition():
    assert RECORD_FIELDS == ORIGINAL_FIELDS + ADDED_FIELDS
    assert ADDED_FIELDS == ("book_crc32", "recv_ts_utc", "checksum_ok")
    assert (len(ORIGINAL_FIELDS), len(RECORD_FIELDS)) == (14, 17)
    assert tuple(extended()) == RECORD_FIELDS and tuple(original()) == ORIGINAL_FIELDS


def test_both_formats_are_valid_and_named():
    assert record_problems(extended()) == [] and record_format(extended()) == EXTENDED
    assert record_problems(original()) == [] and record_format(original()) == ORIGINAL


@pytest.mark.parametrize("make", [original, extended], ids=["original", "extended"])
def test_original_fields_are_checked_in_both_formats(make):
    rec = make()
    del rec["seqId"]
    assert record_problems(rec) == ["missing fields: seqId"]
    swapped = dict(reversed(list(make().items())))
    assert record_problems(swapped) == ["fields out of order"]
    assert record_problems(make(timestamp_utc="yesterday")) == ["bad timestamp_utc 'yesterday'"]
    assert record_problems(make(gap_detected="no")) == ["gap_detected is not a bool"]
    assert record_problems(make(bids=BIDS[::-1])) == ["bids not strictly descending"]
    assert record_problems(make(best_bid="100.4")) == ["best_bid/best_ask disagree with levels"]
    assert record_problems(make(bids_top400=[["x", "1", "0", "1"]])) == ["a price is not a positive decimal number"]
    crossed = make(asks=[["100.5", "1", "0", "1"]])
    assert record_problems(crossed) == ["crossed book: best bid >= best ask"]
    assert record_problems(crossed, check_crossed=False) == []


def test_added_fields_are_checked_where_present():
    assert record_problems(extended(book_crc32=extended()["book_crc32"] ^ 1)) == [
        "book_crc32 does not match the record's own top 25"]
    assert record_problems(extended(book_crc32="123")) == ["book_crc32 is not an integer"]
    assert record_problems(extended(recv_ts_utc=17)) == ["bad recv_ts_utc 17"]
    assert record_problems(extended(checksum_ok=None)) == ["checksum_ok is not a bool"]
    added_first = {**keeping(extended(), ADDED_FIELDS), **original()}
    assert record_format(added_first) == EXTENDED and record_problems(added_first) == ["fields out of order"]


@pytest.mark.parametrize("kept", PARTIAL_ADDED, ids="+".join)
def test_some_added_fields_name_the_missing_ones(kept):
    rec = keeping(extended(), ORIGINAL_FIELDS + kept)
    missing = [f for f in ADDED_FIELDS if f not in kept]
    assert record_format(rec) == INCOMPLETE
    assert record_problems(rec) == [
        f"missing fields: {', '.join(missing)} (a record has all or none of book_crc32, recv_ts_utc, checksum_ok)"]
    # the fields it has are still checked
    broken = keeping(extended(gap_detected=1, book_crc32=-1, recv_ts_utc="?", checksum_ok="yes"),
                     ORIGINAL_FIELDS + kept)
    expected = {"book_crc32": "book_crc32 does not match the record's own top 25", "recv_ts_utc": "bad recv_ts_utc '?'",
                "checksum_ok": "checksum_ok is not a bool"}
    assert set(record_problems(broken)[1:]) == {"gap_detected is not a bool", *(expected[f] for f in kept)}


def test_missing_original_and_added_fields_are_named_together():
    rec = keeping(extended(), tuple(f for f in RECORD_FIELDS if f not in ("mid_price", "checksum_ok")))
    assert record_problems(rec) == ["missing fields: mid_price, checksum_ok"]
    assert record_problems(keeping(original(), ORIGINAL_FIELDS[1:])) == ["missing fields: timestamp_utc"]
    assert record_problems([]) == ["record is list, not an object"]


@pytest.mark.parametrize(("bids", "problem"), [
    ([["100.5", "1", "0", "1"], ["nan", "1", "0", "1"]], "a price is not a positive decimal number"),
    ([["nan", "1", "0", "1"], ["100.4", "1", "0", "1"]], "a price is not a positive decimal number"),
    ([["100.5", "1", "0", "1"], ["inf", "1", "0", "1"]], "a price is not a positive decimal number"),
    ([["100.5", "1", "0", "1"], ["0", "1", "0", "1"]], "a price is not a positive decimal number"),
    ([["100.5", "1", "0", "1"], ["100.4", "1", "0"]], "a level is not a list of 4 strings"),
    ([["100.5", "1", "0", 1], ["100.4", "1", "0", "1"]], "a level is not a list of 4 strings"),
    ([("100.5", "1", "0", "1")], "a level is not a list of 4 strings"),
    ([["100.5", "1", "0", "1"], ["100.5", "1", "0", "1"]], "bids not strictly descending"),
])
def test_every_level_is_checked(bids, problem):
    """The level checks run as C-level iteration over every level; each bad level is still found."""
    rec = extended(bids=BIDS)
    rec["bids_top400"] = bids
    rec["best_bid"] = bids[0][0]
    assert problem in record_problems(rec)

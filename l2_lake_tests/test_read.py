"""`read_books` / `book_at` on real planted lakes: the same answer whichever tier (curated Parquet,
`.jsonl`, `.jsonl.gz`) serves an hour, across hour boundaries, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from l2_lake import ReadError, book_at, read_books
from l2_lake.tiers.curated import write_parquet
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, ETH, make_records, with_gap, write_hour

HOURS = 3


def plant(lake: Path, tier: str) -> None:
    """Three hours of BTC (a gap marker in the second) served from `tier`; "mixed" uses all three."""
    for h in range(HOURS):
        hour = BASE_HOUR + timedelta(hours=h)
        records = make_records(BTC, hour, count=60, cadence_ms=60_000, depth=8)
        events: list = []
        if h == 1:
            records, events = with_gap(records, 10, BTC, hour)
        use = tier if tier != "mixed" else ("jsonl", "gz", "parquet")[h]
        write_hour(lake, BTC, hour, records, events=events, archived=use == "gz")
        if use == "parquet":
            write_parquet(lake, BTC, hour, datetime.now(UTC))
            write_hour(lake, BTC, hour, records[:5])  # the curated file wins over a (here: different) .jsonl


@pytest.fixture(scope="module")
def lakes(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for tier in ("jsonl", "gz", "parquet", "mixed"):
        out[tier] = tmp_path_factory.mktemp(tier)
        plant(out[tier], tier)
    return out


def test_every_tier_gives_the_same_table(lakes):
    start, end = BASE_HOUR + timedelta(minutes=30), BASE_HOUR + timedelta(hours=2, minutes=30)
    tables = {tier: read_books(BTC, start, end, lake=lake) for tier, lake in lakes.items()}
    reference = tables["jsonl"]
    assert reference.num_rows == 30 + 59 + 30  # across two hour boundaries; the gap marker left out
    for tier, table in tables.items():
        assert table.equals(reference), tier
    stamps = reference["timestamp_utc"].to_pylist()
    assert stamps == sorted(stamps) and stamps[0] >= start and stamps[-1] < end


def test_flagged_depth_and_columns(lakes):
    end = BASE_HOUR + timedelta(hours=HOURS)
    full = read_books(BTC, BASE_HOUR, end, lake=lakes["mixed"], include_flagged=True)
    assert full.num_rows == 180 and sum(full["gap_detected"].to_pylist()) == 1
    top2 = read_books(BTC, BASE_HOUR, end, lake=lakes["mixed"], depth=2, columns=["timestamp_utc", "bids", "asks"])
    assert top2.column_names == ["timestamp_utc", "bids", "asks"]
    exact = read_books(BTC, BASE_HOUR, end, lake=lakes["mixed"])
    for side in ("bids", "asks"):
        assert all(len(levels) == 2 for levels in top2[side].to_pylist())
        assert [levels[:2] for levels in exact[side].to_pylist()] == top2[side].to_pylist()
    first_bid = exact["bids"][0].as_py()[0]
    assert isinstance(first_bid["price_str"], str) and first_bid["price"] == float(first_bid["price_str"])


def test_book_at_is_the_last_exact_book_at_or_before(lakes):
    at = BASE_HOUR + timedelta(hours=1, minutes=10, seconds=30)  # the gap marker is at 01:10:01
    book = book_at(BTC, at, lake=lakes["mixed"])
    assert book.num_rows == 1
    assert book["timestamp_utc"][0].as_py() == BASE_HOUR + timedelta(hours=1, minutes=9, seconds=1)
    assert not book["gap_detected"][0].as_py()


@pytest.mark.parametrize(("call", "message"), [
    (lambda lake: read_books(ETH, BASE_HOUR, BASE_HOUR + timedelta(hours=1), lake=lake), "unknown instrument"),
    (lambda lake: read_books("btc", BASE_HOUR, BASE_HOUR + timedelta(hours=1), lake=lake), "invalid instrument id"),
    (lambda lake: read_books(BTC, BASE_HOUR + timedelta(hours=1), BASE_HOUR, lake=lake), "is after end"),
    (lambda lake: read_books(BTC, BASE_HOUR - timedelta(days=2), BASE_HOUR - timedelta(days=1), lake=lake),
     "no exact record"),
    (lambda lake: read_books(BTC, "yesterday", BASE_HOUR, lake=lake), "is not a time"),
    (lambda lake: read_books(BTC, BASE_HOUR, BASE_HOUR, lake=lake / "nope"), "does not exist"),
    (lambda lake: read_books(BTC, BASE_HOUR, BASE_HOUR, lake=lake, columns=["price"]), "unknown column"),
])
def test_errors_say_what_is_wrong(lakes, call, message):
    with pytest.raises(ReadError, match=message):
        call(lakes["jsonl"])

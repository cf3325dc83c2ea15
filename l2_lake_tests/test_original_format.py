"""Hours in the deployment's original record format (CONTRACT.md §2.1: no `book_crc32`,
`recv_ts_utc`, `checksum_ok`) on real files: they pass the checks an extended hour passes, fail
those it fails, say their format in the metadata, and become the same Parquet with those three
columns null. Mixed and incomplete records are reported as such."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from itertools import combinations
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from l2_lake.format.record import ADDED_FIELDS, encode_line
from l2_lake.quality.hour_stats import HourStats, compute_hour_stats
from l2_lake.quality.verdicts import (
    COVERAGE,
    HOUR_CHECKS,
    NO_CHECKSUM_FAILURES,
    NO_CROSSED_BOOKS,
    SCHEMA_VALID,
    Verdict,
    evaluate_hour,
)
from l2_lake.tiers.curated import PARQUET_SCHEMA, write_parquet
from l2_pipeline_tests.lake_factory import (
    BASE_HOUR,
    BTC,
    ETH,
    crossed_record,
    event,
    make_record,
    make_records,
    ms,
    unsorted_record,
    with_gap,
    without_fields,
    write_hour,
)

NOW = BASE_HOUR + timedelta(days=1)
EXTENDED_FORMAT = "extended (17 fields)"
ORIGINAL_FORMAT = "original (14 fields)"
PARTIAL_ADDED = [kept for n in (1, 2) for kept in combinations(ADDED_FIELDS, n)]  # one or two of the three


def verdicts(stats: HourStats) -> dict[str, Verdict]:
    return {v.check_name: v for v in evaluate_hour(stats, 95.0)}


def damaged_hour() -> tuple[list[bytes], list[dict], list[dict]]:
    """An extended hour with every defect both formats can carry (as records, so each can be
    written in either format): (extra raw lines, records, events)."""
    hour = BASE_HOUR
    records = make_records(BTC, hour)
    records, gap_events = with_gap(records, 100, BTC, hour)
    records[1200] = make_record(BTC, ms(hour) + 1200 * 2000 + 1000, seq=5000, checksum_ok=False)
    records[1300] = crossed_record(BTC, ms(hour) + 1300 * 2000 + 1000, seq=6000)
    records[1400] = unsorted_record(BTC, ms(hour) + 1400 * 2000 + 1000, seq=7000)
    records[1500] = {**records[1500], "instId": ETH}
    records[1600] = make_record(BTC, ms(hour + timedelta(hours=1)) + 5, seq=8000)  # next hour
    records[1650] = {**records[1650], "timestamp_utc": records[1649]["timestamp_utc"]}  # not increasing
    events = [*gap_events, event(BTC, "checksum_mismatch", hour + timedelta(minutes=40), expected=1, computed=2)]
    return [b"this is not json\n"], records, events


def plant(data_dir: Path, records: list[dict], *, original: bool, extra_lines: Sequence[bytes] = (),
          events: Sequence[dict] = (), archived: bool = False) -> HourStats:
    """Write `records` (stripped to the original format if `original`) as BTC's BASE_HOUR; its stats."""
    lines = [encode_line(without_fields(r) if original else r) for r in records]
    write_hour(data_dir, BTC, BASE_HOUR, lines=[*extra_lines, *lines], events=events, archived=archived)
    return compute_hour_stats(data_dir, BTC, BASE_HOUR, 2.0)


@pytest.mark.parametrize("archived", [False, True])
def test_original_hour_passes_every_check_and_names_its_format(tmp_path, archived):
    records = make_records(BTC, BASE_HOUR)
    extended = plant(tmp_path / "extended", records, original=False, archived=archived)
    original = plant(tmp_path / "original", records, original=True, archived=archived)

    result = verdicts(original)
    assert [name for name in HOUR_CHECKS if not result[name].passed] == []
    assert result[SCHEMA_VALID].description == "0 invalid line(s) of 1800, record format original (14 fields)"
    assert result[SCHEMA_VALID].metadata["record_format"] == ORIGINAL_FORMAT
    assert result[NO_CHECKSUM_FAILURES].metadata["checksum_not_recorded"] == 1800
    assert "1800 record(s) without checksum_ok (not validated)" in result[NO_CHECKSUM_FAILURES].description

    meta, ext_meta = original.metadata(), extended.metadata()
    assert meta["record_format"] == ORIGINAL_FORMAT and ext_meta["record_format"] == EXTENDED_FORMAT
    assert (meta["original_records"], meta["extended_records"], meta["incomplete_records"]) == (1800, 0, 0)
    assert (ext_meta["original_records"], ext_meta["extended_records"], ext_meta["incomplete_records"]) == (0, 1800, 0)
    assert ext_meta["checksum_not_recorded"] == 0
    differ = {"record_format", "original_records", "extended_records", "checksum_not_recorded", "bytes",
              "raw_bytes", "sha256", "source"}
    assert {k: v for k, v in meta.items() if k not in differ} == {k: v for k, v in ext_meta.items() if k not in differ}


def test_damaged_original_hour_gets_the_extended_hours_verdicts(tmp_path):
    extra, records, events = damaged_hour()
    extended = verdicts(plant(tmp_path / "extended", records, original=False, extra_lines=extra, events=events))
    original = verdicts(plant(tmp_path / "original", records, original=True, extra_lines=extra, events=events))

    assert {n: (v.passed, v.warn) for n, v in original.items()} == {n: (v.passed, v.warn) for n, v in extended.items()}
    assert [n for n in HOUR_CHECKS if original[n].passed] == [COVERAGE] == [n for n in HOUR_CHECKS
                                                                              if extended[n].passed]
    same_meta = {k: v for k, v in original[SCHEMA_VALID].metadata.items() if k != "record_format"}
    assert same_meta == {k: v for k, v in extended[SCHEMA_VALID].metadata.items() if k != "record_format"}
    assert same_meta["invalid_records"] == 2 and same_meta["unparseable_lines"] == 1  # unsorted, wrong instId
    for name in set(HOUR_CHECKS) - {SCHEMA_VALID, NO_CHECKSUM_FAILURES}:
        assert original[name].metadata == extended[name].metadata, name
        assert original[name].description == extended[name].description, name
    # The failure is known from the event either way; only the extended hour also has its marker record.
    assert original[NO_CHECKSUM_FAILURES].metadata["checksum_failures"] == 1
    assert (original[NO_CHECKSUM_FAILURES].metadata["checksum_markers"],
            extended[NO_CHECKSUM_FAILURES].metadata["checksum_markers"]) == (0, 1)
    assert original[NO_CROSSED_BOOKS].metadata["crossed_records"] == 1


def test_mixed_hour_is_valid_and_reported_as_mixed(tmp_path):
    records = make_records(BTC, BASE_HOUR)
    records[:1000] = [without_fields(r) for r in records[:1000]]  # the deployment switched mid-hour
    stats = plant(tmp_path, records, original=False)
    meta = stats.metadata()
    assert meta["record_format"] == "mixed: 1000 original, 800 extended"
    assert (meta["original_records"], meta["extended_records"], meta["checksum_not_recorded"]) == (1000, 800, 1000)
    result = verdicts(stats)
    assert all(result[name].passed for name in HOUR_CHECKS)
    assert result[SCHEMA_VALID].metadata["record_format"] == "mixed: 1000 original, 800 extended"


@pytest.mark.parametrize("kept", PARTIAL_ADDED, ids="+".join)
def test_record_with_some_added_fields_fails_schema_valid_naming_the_missing(tmp_path, kept):
    missing = [f for f in ADDED_FIELDS if f not in kept]
    records = make_records(BTC, BASE_HOUR)
    records[10] = without_fields(records[10], missing)
    stats = plant(tmp_path, records, original=False)
    result = verdicts(stats)
    schema = result[SCHEMA_VALID]
    assert not schema.passed and schema.metadata["invalid_records"] == 1
    assert f"line 11: missing fields: {', '.join(missing)} (" in schema.description
    assert stats.metadata()["record_format"] == "mixed: 1799 extended, 1 incomplete"
    assert [name for name in HOUR_CHECKS if not result[name].passed] == [SCHEMA_VALID]


def _curated(data_dir: Path, records: list[dict], *, original: bool, extra_lines: list[bytes] = ()):
    plant(data_dir, records, original=original, extra_lines=extra_lines)
    result = write_parquet(data_dir, BTC, BASE_HOUR, NOW)
    assert result.status == "written" and result.rows == len(records)
    table = pq.read_table(result.path)
    assert table.schema.remove_metadata() == PARQUET_SCHEMA
    return table


@pytest.mark.parametrize("extra_lines", [[], [b"garbage\n"]], ids=["vectorised", "line_by_line"])
def test_original_hour_parquet_has_added_columns_null_and_the_rest_equal(tmp_path, extra_lines):
    records = make_records(BTC, BASE_HOUR, count=300, depth=7)
    extended = _curated(tmp_path / "extended", records, original=False, extra_lines=extra_lines)
    original = _curated(tmp_path / "original", records, original=True, extra_lines=extra_lines)

    for name in ADDED_FIELDS:
        assert original.column(name).null_count == 300, name
        assert extended.column(name).null_count == 0, name
    assert original.drop_columns(list(ADDED_FIELDS)).equals(extended.drop_columns(list(ADDED_FIELDS)))
    row = original.slice(0, 1).to_pylist()[0]
    assert row["best_bid_str"] == records[0]["best_bid"] and row["mid_price_str"] == records[0]["mid_price"]
    assert [(lv["price_str"], lv["size_str"]) for lv in row["bids"]] == [(lv[0], lv[1]) for lv in
                                                                         records[0]["bids_top400"]]


def test_mixed_hour_parquet_nulls_only_the_original_rows(tmp_path):
    records = make_records(BTC, BASE_HOUR, count=100)
    mixed = [without_fields(r) if i % 3 == 0 else r for i, r in enumerate(records)]
    extended = _curated(tmp_path / "extended", records, original=False)
    table = _curated(tmp_path / "mixed", mixed, original=False)
    for name in ADDED_FIELDS:
        assert [v is None for v in table.column(name).to_pylist()] == [i % 3 == 0 for i in range(100)], name
    assert table.drop_columns(list(ADDED_FIELDS)).equals(extended.drop_columns(list(ADDED_FIELDS)))

"""Parquet of an hour: typed schema, values equal to the source, row count, atomic write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l2_lake.format import layout
from l2_lake.format.record import encode_line, parse_ts_ms
from l2_lake.tiers.archive import OpenHourError, archive_hour
from l2_lake.tiers.curated import PARQUET_SCHEMA, records_to_table, table_from_jsonl_bytes, write_parquet
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, make_records, ms, plant_good_hour, torn, write_hour

NOW = BASE_HOUR + timedelta(days=1)


def test_parquet_types_and_values_equal_the_source(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=300, depth=7)
    source = layout.records_path(tmp_path, BTC, BASE_HOUR).read_bytes().splitlines()
    result = write_parquet(tmp_path, BTC, BASE_HOUR, NOW)
    assert result.status == "written" and result.path == layout.curated_path(tmp_path, BTC, BASE_HOUR)
    assert result.rows == result.source_lines == len(source) == 300 and result.skipped_lines == 0
    table = pq.read_table(result.path)
    assert table.schema.remove_metadata() == PARQUET_SCHEMA
    assert table.schema.field("timestamp_utc").type == pa.timestamp("ms", tz="UTC")
    assert pq.ParquetFile(result.path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert table.schema.metadata[b"okx_l2.source"] == b"raw/okx/l2_perps/BTC-USDT-SWAP/2026-11-20/00.jsonl"
    rows = table.to_pylist()
    for row, line in zip(rows, source, strict=True):
        rec = orjson.loads(line)
        assert int(row["timestamp_utc"].timestamp() * 1000) == parse_ts_ms(rec["timestamp_utc"])
        assert int(row["recv_ts_utc"].timestamp() * 1000) == parse_ts_ms(rec["recv_ts_utc"])
        assert row["best_bid_str"] == rec["best_bid"] and row["best_bid"] == float(rec["best_bid"])
        assert row["mid_price_str"] == rec["mid_price"] and row["mid_price"] == float(rec["mid_price"])
        assert [(lv["price_str"], lv["size_str"], str(lv["orders"])) for lv in row["bids"]] == \
            [(lv[0], lv[1], lv[3]) for lv in rec["bids_top400"]]
        assert [lv["price"] for lv in row["asks"]] == [float(lv[0]) for lv in rec["asks_top400"]]
        for name in ("instId", "seqId", "prevSeqId", "book_crc32", "checksum", "gap_detected", "checksum_ok"):
            assert row[name] == rec[name], name


def test_from_archive_gives_the_same_table(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=100)
    first = pq.read_table(write_parquet(tmp_path, BTC, BASE_HOUR, NOW).path)
    assert archive_hour(tmp_path, BTC, BASE_HOUR, NOW).status == "archived"
    result = write_parquet(tmp_path, BTC, BASE_HOUR, NOW)
    assert result.source.name == "00.jsonl.gz" and result.rows == 100
    assert pq.read_table(result.path).remove_column(0).equals(first.remove_column(0))
    assert pq.read_table(result.path).column(0).equals(first.column(0))


def test_fast_and_line_by_line_paths_agree():
    records = make_records(BTC, BASE_HOUR, count=50, depth=4)
    records[3] = {**records[3], "seqId": None, "prevSeqId": None, "best_bid": None, "bids_top400": []}
    fast = table_from_jsonl_bytes(b"".join(encode_line(r) for r in records))
    assert fast is not None
    assert fast.equals(records_to_table(records))


def test_hour_with_invalid_lines_keeps_every_record(tmp_path):
    lines = [encode_line(r) for r in make_records(BTC, BASE_HOUR, count=30)]
    lines.insert(7, b"garbage\n")
    lines.append(torn(lines[0]))
    write_hour(tmp_path, BTC, BASE_HOUR, lines=lines)
    result = write_parquet(tmp_path, BTC, BASE_HOUR, NOW)
    assert (result.source_lines, result.rows, result.skipped_lines) == (32, 30, 2)
    assert pq.read_metadata(result.path).num_rows == 30


def test_open_hour_refused_and_missing_hour(tmp_path):
    now = datetime.now(UTC)
    current = layout.hour_floor(ms(now))
    plant_good_hour(tmp_path, BTC, current, count=3)
    with pytest.raises(OpenHourError):
        write_parquet(tmp_path, BTC, current, now)
    assert not layout.curated_path(tmp_path, BTC, current).exists()
    assert write_parquet(tmp_path, BTC, BASE_HOUR, NOW).status == "no_data"


def test_rewrite_is_atomic_and_cleans_stray_temps(tmp_path):
    plant_good_hour(tmp_path, BTC, BASE_HOUR, count=10)
    target = write_parquet(tmp_path, BTC, BASE_HOUR, NOW).path
    (target.parent / ".data.parquet.dead.tmp").write_bytes(b"partial")
    write_parquet(tmp_path, BTC, BASE_HOUR, NOW)
    assert [p.name for p in target.parent.iterdir()] == ["data.parquet"]

"""An hour's JSONL read into Arrow as written: one row per line, each record field typed as the
contract says (levels as lists of strings), in one vectorised pass of pyarrow's JSON reader.

This is the hour's one parse: `l2_lake.quality.hour_stats` checks it, `l2_lake.tiers.curated` types
it. Prices and sizes stay the strings OKX sent. `read_source_table` gives None unless every line is
a JSON object of record fields of the contract's types; callers then read the hour line by line.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.json as pa_json

LEVELS_JSON = pa.list_(pa.list_(pa.string()))
SOURCE_JSON_SCHEMA = pa.schema(
    [
        ("timestamp_utc", pa.string()),
        ("exchange", pa.string()),
        ("market", pa.string()),
        ("channel", pa.string()),
        ("instId", pa.string()),
        ("bids_top400", LEVELS_JSON),
        ("asks_top400", LEVELS_JSON),
        ("best_bid", pa.string()),
        ("best_ask", pa.string()),
        ("mid_price", pa.string()),
        ("checksum", pa.int64()),
        ("seqId", pa.int64()),
        ("prevSeqId", pa.int64()),
        ("gap_detected", pa.bool_()),
        ("book_crc32", pa.int64()),
        ("recv_ts_utc", pa.string()),
        ("checksum_ok", pa.bool_()),
    ]
)


def line_count(data: bytes) -> int:
    """Lines of `data`, a last one without its newline included."""
    return data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


def read_source_table(data: bytes) -> pa.Table | None:
    """The hour's lines as a table of `SOURCE_JSON_SCHEMA`, one row per line, or None when a line is
    not such an object (a field absent from a line is null: only a line-by-line parse tells it from
    a JSON null). One thread: the hour is one block, and steps of other hours run beside it."""
    lines = line_count(data)
    if not lines:
        return None
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(1 << 20, min(len(data) + 1, 1 << 30))),
            parse_options=pa_json.ParseOptions(explicit_schema=SOURCE_JSON_SCHEMA, unexpected_field_behavior="error",
                                               newlines_in_values=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return table if table.num_rows == lines else None

"""The tape's archive form (docs/CONTRACT.md §7): one closed tape hour as a Parquet table, one row per
tape line, that decodes back to the hour's exact bytes.

Gzip of the tape's JSON lines costs about twice the gzip of the same hour's 2 s snapshots: each
snapshot repeats its predecessor within deflate's window, while the tape's messages are mostly new
level strings. In columns, a level's price and size are decimals stored as integers, byte-stream-
split and brotli-compressed, which brings the tape to about the snapshots' gzip (docs/TAPE.md).
Columns:

| column | type | what |
|---|---|---|
| `kind` | string | the line's `t` (`ws`, `tick`, `book`, …; null for a line that is not a JSON object) |
| `recv_ms` | int64 | the line's `r` |
| `action` | string | `snapshot` / `update` (`ws` rows) |
| `ts` | timestamp[ms, UTC] | the message's exchange time |
| `seq_id`, `prev_seq_id`, `checksum` | int64 | the message's `seqId`, `prevSeqId`, `checksum` |
| `asks`, `bids` | list<struct<px, sz: decimal64(18, s), orders: int32>> | levels that set a size, in order |
| `asks_deleted`, `bids_deleted` | list<decimal64(18, s)> | prices of levels deleted (`["px","0","0","0"]`) |
| `frame_template` | string | the frame with those fields cut out (one value per instrument and action) |
| `line` | binary | the exact line of every row the other columns do not hold (see below) |

A row keeps its `line` when it is not a `ws` line, or when its frame could not be given back from
columns: JSON that is not compact canonical, numbers that are not canonical decimals (at most 18
digits at the hour's scale) or do not fit an int64, a level whose deprecated third field (liquidated
orders) is not "0", a side not in OKX's order (asks ascending, bids descending, each price once:
decoding merges a side's two lists by price). Archives of the first layout (no `*_deleted` columns,
every level in `asks`/`bids`) still decode.

A researcher can query `asks`/`bids` directly (DuckDB, pyarrow). `decode` rebuilds every line byte
for byte; `encode` proves that before it returns (a row the columns cannot rebuild exactly keeps its
`line`), and the file's metadata carries the content's sha256 and line count.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from l2_lake.format.tape_lines import FRAME_AT, WS_PREFIX

CODEC = "brotli"
CODEC_LEVEL = 11  # measured (bench.tape): brotli 11 is the only standard codec below the snapshots' gzip
MAX_DIGITS = 18  # decimal64
# the frame fields cut out of a frame's template, each replaced by a placeholder
_HOLE = {name: f"\x01{name}" for name in ("asks", "bids", "ts", "checksum", "seqId", "prevSeqId")}
_HOLE_JSON = {name: orjson.dumps(hole) for name, hole in _HOLE.items()}
_INT_RE = re.compile(r"0|[1-9][0-9]*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TRAILING_ZEROS = r"\.?0+$"
_META_SHA, _META_LINES, _META_FINAL_NEWLINE = b"l2.content_sha256", b"l2.content_lines", b"l2.final_newline"


class TapeColumnsError(OSError):
    """The bytes are not a tape archive this module wrote, or it does not decode to its recorded content."""


def _level_type(px_scale: int, sz_scale: int) -> pa.StructType:
    # not nullable: fewer definition levels to store per level
    return pa.struct([pa.field("px", pa.decimal64(MAX_DIGITS, px_scale), nullable=False),
                      pa.field("sz", pa.decimal64(MAX_DIGITS, sz_scale), nullable=False),
                      pa.field("orders", pa.int32(), nullable=False)])


def _schema(px_scale: int, sz_scale: int) -> pa.Schema:
    levels = pa.list_(pa.field("element", _level_type(px_scale, sz_scale), nullable=False))
    deleted = pa.list_(pa.field("element", pa.decimal64(MAX_DIGITS, px_scale), nullable=False))
    return pa.schema([
        ("kind", pa.string()), ("recv_ms", pa.int64()), ("action", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")), ("seq_id", pa.int64()), ("prev_seq_id", pa.int64()),
        ("checksum", pa.int64()), ("asks", levels), ("bids", levels), ("asks_deleted", deleted),
        ("bids_deleted", deleted), ("frame_template", pa.string()), ("line", pa.binary()),
    ])


_COLUMNS = _schema(0, 0).names
# archives written before deleted levels had their own lists: `asks`/`bids` hold every level, in message order
_FIRST_LAYOUT_COLUMNS = [name for name in _COLUMNS if not name.endswith("_deleted")]


def _canonical_int(value: Any) -> int | None:
    """`value` if it is an integer an int64 column holds, else None."""
    return value if type(value) is int and _INT64_MIN <= value <= _INT64_MAX else None


def _int_text(text: str) -> int | None:
    """The integer a canonical digit string spells, if an int64 column holds it."""
    return _canonical_int(int(text)) if len(text) <= 19 and _INT_RE.fullmatch(text) else None


def _kept(line: bytes) -> dict[str, Any]:
    """A row that keeps its line as it is (its kind and receive time as columns where it has them)."""
    kind = recv = None
    try:
        parsed = orjson.loads(line)
        if isinstance(parsed, dict):
            kind = parsed.get("t") if isinstance(parsed.get("t"), str) else None
            recv = _canonical_int(parsed.get("r"))
    except orjson.JSONDecodeError:
        pass
    return {"kind": kind, "recv_ms": recv, "line": line}


def _message(line: bytes) -> dict[str, Any] | None:
    """A `ws` line as columns (its levels still the strings received, checked by `_Levels`), or None
    when its frame is not one the columns can give back."""
    if not line.startswith(WS_PREFIX) or not line.endswith(b"}"):
        return None
    at = line.find(FRAME_AT, len(WS_PREFIX))
    recv = _int_text(line[len(WS_PREFIX):at].decode("ascii", "replace"))
    if at < 0 or recv is None:
        return None
    frame = line[at + len(FRAME_AT):-1]
    try:
        parsed = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or orjson.dumps(parsed) != frame:
        return None
    data = parsed.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        return None
    message = data[0]
    row: dict[str, Any] = {"kind": "ws", "recv_ms": recv, "action": parsed.get("action")}
    if not isinstance(row["action"], str):
        return None
    if "ts" in message:
        row["ts"] = _int_text(message["ts"]) if isinstance(message["ts"], str) else None
        if row["ts"] is None:
            return None
    for field, column in (("seqId", "seq_id"), ("prevSeqId", "prev_seq_id"), ("checksum", "checksum")):
        if field in message:
            row[column] = _canonical_int(message[field])
            if row[column] is None:
                return None
    for side in ("asks", "bids"):
        if side in message:
            if not isinstance(message[side], list):
                return None
            row[side] = message[side]
    template = dict(parsed)
    template["data"] = [{key: _HOLE.get(key, value) for key, value in message.items()}]
    row["frame_template"] = orjson.dumps(template).decode()
    return row


class _Levels:
    """One side's levels of every row, checked all at once: each level four strings, a canonical
    decimal price and size (at most 18 digits), "0" liquidated orders and an integer order count."""

    def __init__(self, per_row: list[list[Any] | None]) -> None:
        self.per_row = per_row
        counts = [len(levels) if levels else 0 for levels in per_row]
        self.offsets = pa.array([0, *itertools.accumulate(counts)], pa.int32())
        self.row_of_level = np.repeat(np.arange(len(per_row)), counts)
        flat = [level for levels in per_row if levels for level in levels]
        try:
            self.strings = pa.array(flat, pa.list_(pa.string()))
        except (pa.ArrowException, TypeError):  # a level that is not a list of strings: find its rows
            self.strings = None

    def valid(self) -> pa.Array | None:
        """Per level: four strings, canonical decimals, "0", an order count (None: not even strings).
        Sets `fields`, the levels' four strings ("0" for a level that is not four strings)."""
        if self.strings is None:
            return None
        ok = pc.fill_null(pc.equal(pc.list_value_length(self.strings), 4), False)
        four = pc.if_else(ok, self.strings, pa.scalar(["0", "0", "0", "0"], self.strings.type))
        self.fields = [pc.list_element(four, i) for i in range(4)]
        px, sz, liq, orders = self.fields
        ok = pc.and_(ok, pc.and_(_is_decimal(px), _is_decimal(sz)))
        ok = pc.and_(ok, pc.and_(pc.equal(liq, "0"), pc.match_substring_regex(orders, _ORDERS_PATTERN)))
        return pc.fill_null(ok, False)

    def scales(self, valid: pa.Array) -> tuple[int, int]:
        """Fractional digits the valid levels' price and size need (the most any has)."""
        return _fraction_digits(pc.filter(self.fields[0], valid)), _fraction_digits(pc.filter(self.fields[1], valid))

    def bad_rows(self, valid: pa.Array | None, scales: tuple[int, int]) -> set[int]:
        """Rows with a level that is not valid, or whose integer digits and the hour's scale exceed 18."""
        if valid is None:
            return {i for i, levels in enumerate(self.per_row) if levels and not all(
                isinstance(level, list) and all(type(v) is str for v in level) for level in levels)}
        ok = valid
        for strings, scale in zip(self.fields[:2], scales, strict=True):
            ok = pc.and_(ok, pc.less_equal(pc.add(_integer_digits(strings), scale), MAX_DIGITS))
        bad = np.flatnonzero(~pc.fill_null(ok, False).to_numpy(zero_copy_only=False))
        return set(self.row_of_level[bad].tolist())

    def arrays(self, list_type: pa.ListType, deleted_type: pa.ListType) -> tuple[pa.ListArray, pa.ListArray]:
        """Every row's levels (all valid) as two lists: the levels that set a size (`list_type`), and
        the prices of those that delete one (`["px","0","0","0"]`: `deleted_type`), each in message order."""
        strings = [pc.list_element(self.strings, i) if len(self.strings) else pa.array([], pa.string())
                   for i in range(4)]
        fields = [pc.cast(strings[i], pa.decimal128(MAX_DIGITS, field.type.scale)).cast(field.type)
                  if pa.types.is_decimal(field.type) else pc.cast(strings[i], field.type)
                  for i, field in zip((0, 1, 3), list_type.value_type, strict=True)]
        values = pa.StructArray.from_arrays(fields, fields=list(list_type.value_type))
        deleted = pc.and_(pc.equal(strings[1], "0"), pc.equal(strings[3], "0")).to_numpy(zero_copy_only=False)
        counts = np.diff(self.offsets.to_numpy())
        deleted_counts = np.bincount(self.row_of_level[deleted], minlength=len(counts))
        mask = pa.array([levels is None for levels in self.per_row], pa.bool_())
        kept = pa.ListArray.from_arrays(_offsets(counts - deleted_counts), values.filter(pa.array(~deleted)),
                                        type=list_type, mask=mask)
        gone = pa.ListArray.from_arrays(_offsets(deleted_counts), fields[0].filter(pa.array(deleted)),
                                        type=deleted_type, mask=mask)
        return kept, gone


def _offsets(counts: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())


_DECIMAL_PATTERN = "^(0|[1-9][0-9]*)(\\.[0-9]*[1-9])?$"
_ORDERS_PATTERN = "^(0|[1-9][0-9]{0,8})$"


def _is_decimal(strings: pa.Array) -> pa.Array:
    digits = pc.subtract(pc.utf8_length(strings), pc.cast(pc.match_substring(strings, "."), pa.int32()))
    return pc.and_(pc.match_substring_regex(strings, _DECIMAL_PATTERN), pc.less_equal(digits, MAX_DIGITS))


def _fraction_digits(strings: pa.Array) -> int:
    dot = pc.find_substring(strings, ".")
    digits = pc.if_else(pc.less(dot, 0), 0, pc.subtract(pc.subtract(pc.utf8_length(strings), dot), 1))
    return int(pc.max(digits).as_py() or 0)


def _integer_digits(strings: pa.Array) -> pa.Array:
    dot = pc.find_substring(strings, ".")
    return pc.if_else(pc.less(dot, 0), pc.utf8_length(strings), dot)


def _table(rows: list[dict[str, Any]], lines: list[bytes]) -> pa.Table:
    """The rows as the archive's table. A `ws` row whose levels fail `_Levels`' checks is first made
    to keep its line (in `rows`, so a second call does not check again)."""
    sides = {side: _Levels([row.get(side) for row in rows]) for side in ("asks", "bids")}
    valid = {side: levels.valid() for side, levels in sides.items()}
    scales = tuple(max((levels.scales(valid[side])[i] for side, levels in sides.items() if valid[side] is not None),
                       default=0) for i in (0, 1))
    bad = set().union(*(levels.bad_rows(valid[side], scales) for side, levels in sides.items()))
    if bad:
        for i in bad:
            rows[i] = _kept(lines[i])
        sides = {side: _Levels([row.get(side) for row in rows]) for side in ("asks", "bids")}
    schema = _schema(*scales)
    columns: dict[str, pa.Array] = {}
    for name in ("kind", "recv_ms", "action", "seq_id", "prev_seq_id", "checksum", "frame_template", "line"):
        columns[name] = pa.array([row.get(name) for row in rows], schema.field(name).type)
    columns["ts"] = pa.array([row.get("ts") for row in rows], pa.int64()).cast(schema.field("ts").type)
    for name, side in sides.items():
        columns[name], columns[f"{name}_deleted"] = side.arrays(schema.field(name).type,
                                                                schema.field(f"{name}_deleted").type)
    return pa.table([columns[field.name] for field in schema], schema=schema)


def _level_texts(kept: pa.ListArray, deleted: pa.ListArray | None, descending: bool) -> list[str | None]:
    """Each row's levels of one side as the JSON text OKX sent, None where null: the kept levels
    (`["px","sz","0","orders"]`) and the deleted prices (`["px","0","0","0"]`) merged in price order,
    ascending (asks) or `descending` (bids), as OKX orders a side. A side that was not in that order
    comes out otherwise, so `encode` keeps that row's line. Without `deleted` (the first layout), the
    kept levels are all the levels, in message order."""
    flat = kept.flatten()
    texts = []
    for name in ("px", "sz", "orders"):
        column = flat.field(name)
        texts.append(_decimal_text(column) if pa.types.is_decimal(column.type) else pc.cast(column, pa.string()))
    merged = pc.binary_join_element_wise('["', texts[0], '","', texts[1], '","0","', texts[2], '"]', "")
    counts = pc.fill_null(pc.list_value_length(kept), 0).to_numpy()
    if deleted is not None:
        prices = deleted.flatten()
        deleted_counts = pc.fill_null(pc.list_value_length(deleted), 0).to_numpy()
        rows = np.concatenate([np.repeat(np.arange(len(kept)), n) for n in (counts, deleted_counts)])
        order = pc.sort_indices(pa.table({"row": rows, "px": np.concatenate([_unscaled(flat.field("px")),
                                                                              _unscaled(prices)])}),
                                sort_keys=[("row", "ascending"), ("px", "descending" if descending else "ascending")])
        deleted_texts = pc.binary_join_element_wise('["', _decimal_text(prices), '","0","0","0"]', "")
        merged = pa.concat_arrays([merged, deleted_texts]).take(order)
        counts = counts + deleted_counts
    joined = pc.binary_join(pa.ListArray.from_arrays(_offsets(counts), merged, mask=kept.is_null()), ",")
    return [None if text is None else f"[{text}]" for text in joined.to_pylist()]


def _unscaled(column: pa.Array) -> np.ndarray:
    """A decimal64 column's unscaled integers."""
    return pa.Array.from_buffers(pa.int64(), len(column), [None, column.buffers()[1]],
                                 offset=column.offset).to_numpy(zero_copy_only=False)


def _decimal_text(column: pa.Array) -> pa.Array:
    """Non-negative decimals as OKX prints them: plain digits, no trailing zeros (pyarrow's own cast
    writes small values in exponent form, e.g. `1E-7`)."""
    scale = column.type.scale
    digits = pc.cast(pa.array(_unscaled(column)), pa.string())
    if scale == 0:
        return digits
    padded = pc.utf8_lpad(digits, scale + 1, "0")
    text = pc.binary_join_element_wise(pc.utf8_slice_codeunits(padded, 0, -scale),
                                       pc.utf8_slice_codeunits(padded, -scale, 2**31 - 1), ".")
    return pc.replace_substring_regex(text, _TRAILING_ZEROS, "")


def _one_chunk(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)  # after combine_chunks: one chunk, or none in an empty table
    return column.chunk(0) if column.num_chunks else pa.array([], table.schema.field(name).type)


def decode_lines(table: pa.Table) -> list[bytes]:
    """Every row's line, exactly as the tape held it (without its newline)."""
    table = table.combine_chunks()
    kept = table.column("line").to_pylist()
    recv = table.column("recv_ms").to_pylist()
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    numbers = {field: table.column(column).to_pylist()
               for field, column in (("seqId", "seq_id"), ("prevSeqId", "prev_seq_id"), ("checksum", "checksum"))}
    sides = {side: _level_texts(_one_chunk(table, side), _one_chunk(table, f"{side}_deleted")
                                if f"{side}_deleted" in table.column_names else None, descending=side == "bids")
             for side in ("asks", "bids")}
    templates = table.column("frame_template").to_pylist()
    lines = []
    for i, line in enumerate(kept):
        if line is not None:
            lines.append(line)
            continue
        frame = templates[i].encode()
        for side in ("asks", "bids"):
            if sides[side][i] is not None:
                frame = frame.replace(_HOLE_JSON[side], sides[side][i].encode(), 1)
        if ts[i] is not None:
            frame = frame.replace(_HOLE_JSON["ts"], b'"%d"' % ts[i], 1)
        for field, values in numbers.items():
            if values[i] is not None:
                frame = frame.replace(_HOLE_JSON[field], b"%d" % values[i], 1)
        lines.append(b"%b%d%b%b}" % (WS_PREFIX, recv[i], FRAME_AT, frame))
    return lines


def _split(data: bytes) -> tuple[list[bytes], bool]:
    final_newline = data.endswith(b"\n")
    lines = data.split(b"\n")
    if final_newline or not data:
        lines.pop()
    return lines, final_newline


def _joined(lines: Iterable[bytes], final_newline: bool) -> bytes:
    body = b"\n".join(lines)
    return body + b"\n" if final_newline else body


def encode(data: bytes) -> bytes:
    """The Parquet archive of a tape hour's bytes, proven to decode to exactly `data`."""
    lines, final_newline = _split(data)
    rows = [_message(line) or _kept(line) for line in lines]
    archive = _write(_table(rows, lines), data, final_newline)
    rebuilt = decode_lines(read_table(archive))
    if rebuilt != lines:  # rows the columns do not give back exactly keep their line as it is
        for i, (got, want) in enumerate(zip(rebuilt, lines, strict=True)):
            if got != want:
                rows[i] = _kept(want)
        archive = _write(_table(rows, lines), data, final_newline)
        if decode(archive) != data:
            raise TapeColumnsError(f"the Parquet form of the tape hour (sha256 {recorded_sha256(archive)[:16]}…) "
                                   "does not decode to it")
    return archive


def _write(table: pa.Table, data: bytes, final_newline: bool) -> bytes:
    metadata = {_META_SHA: hashlib.sha256(data).hexdigest().encode(), _META_LINES: str(data.count(b"\n")).encode(),
                _META_FINAL_NEWLINE: b"1" if final_newline else b"0"}
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buffer, use_dictionary=["kind", "action", "frame_template"],
                   column_encoding=ENCODINGS, **WRITE_OPTIONS)
    return buffer.getvalue()


def recorded_sha256(archive: bytes) -> str:
    """The sha256 of the content an archive says it holds (from its footer alone)."""
    try:
        metadata = pq.read_metadata(io.BytesIO(archive)).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise TapeColumnsError(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    if _META_SHA not in metadata:
        raise TapeColumnsError("a Parquet file, but not a tape archive (no l2.content_sha256 metadata)")
    return metadata[_META_SHA].decode()


def encode_isolated(data: bytes) -> bytes:
    """`encode` in a child process (`python -m l2_lake.format.tape_columns`), for a process with an event
    loop to keep: encoding an hour holds the GIL for up to a few hundred ms at a time (measured 282 ms
    while converting an hour's levels), and takes ~10 s of CPU. The archive's recorded sha256 must be
    `data`'s."""
    child = subprocess.run([sys.executable, "-m", __name__], input=data, capture_output=True, check=False)
    if child.returncode != 0:
        raise TapeColumnsError(f"encoding the tape hour in a child process failed (exit {child.returncode}): "
                               f"{child.stderr.decode(errors='replace').strip()[-500:]}")
    if recorded_sha256(child.stdout) != hashlib.sha256(data).hexdigest():
        raise TapeColumnsError("the child process returned an archive of other content")
    return child.stdout


# how each column is written (bench.tape writes the level columns flat with the same options to
# measure what their list structure costs)
WRITE_OPTIONS: dict[str, Any] = {"compression": CODEC, "compression_level": CODEC_LEVEL,
                                 "store_decimal_as_integer": True}
ENCODINGS = {"recv_ms": "DELTA_BINARY_PACKED", "ts": "DELTA_BINARY_PACKED", "seq_id": "DELTA_BINARY_PACKED",
             "prev_seq_id": "DELTA_BINARY_PACKED", "checksum": "BYTE_STREAM_SPLIT",
             **{f"{side}.list.element.{name}": "BYTE_STREAM_SPLIT"
                for side in ("asks", "bids") for name in ("px", "sz", "orders")},
             "asks_deleted.list.element": "BYTE_STREAM_SPLIT", "bids_deleted.list.element": "BYTE_STREAM_SPLIT"}


def read_table(source: bytes | Path | IO[bytes]) -> pa.Table:
    """The archive's table; TapeColumnsError if it is not a tape archive."""
    try:
        table = pq.read_table(io.BytesIO(source) if isinstance(source, bytes) else source)
        columns = table.column_names
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: e.g. a damaged name's UTF-8
        if isinstance(exc, FileNotFoundError):
            raise
        raise TapeColumnsError(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    if not (table.schema.metadata or {}).get(_META_SHA) or columns not in (_COLUMNS, _FIRST_LAYOUT_COLUMNS):
        raise TapeColumnsError("a Parquet file, but not a tape archive (no l2.content_sha256 metadata, or other "
                               "columns)")
    return table


def decode(source: bytes | Path | IO[bytes]) -> bytes:
    """The tape hour's exact bytes from its archive; TapeColumnsError if they are not what it recorded."""
    table = read_table(source)
    metadata = table.schema.metadata
    try:
        data = _joined(decode_lines(table), metadata.get(_META_FINAL_NEWLINE) == b"1")
    except (pa.ArrowException, KeyError, AttributeError, TypeError, ValueError) as exc:  # damaged columns
        raise TapeColumnsError(f"the archive's columns do not decode ({type(exc).__name__}: {exc})") from exc
    if hashlib.sha256(data).hexdigest().encode() != metadata[_META_SHA]:
        raise TapeColumnsError("the archive decodes to other bytes than it recorded (sha256 differs)")
    return data


if __name__ == "__main__":  # encode_isolated's child: a tape hour on stdin, its archive on stdout
    sys.stdout.buffer.write(encode(sys.stdin.buffer.read()))

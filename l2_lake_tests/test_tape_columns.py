"""The tape's Parquet archive (l2_lake.format.tape_columns): `decode(encode(data)) == data` for real OKX
`books` frames, for frames and lines the columns cannot hold (kept as their exact `line`), for
hypothesis-generated tapes, and at the edges of a file (empty, torn, blank lines); `ws` frames that
are compact canonical JSON are held in decimal columns with the values OKX sent; a damaged or foreign
file raises TapeColumnsError (hour_content: DamagedArchive); DuckDB reads the levels; and the archive
of the simulator's stream is well below the gzip of the same lines.
"""

import gzip
import io
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from collector.simulator.market import dump_frames
from collector_tests.harness import REFERENCE_DIR
from l2_lake.format import hour_content
from l2_lake.format.tape_columns import TapeColumnsError, decode, encode, read_table
from l2_lake.format.tape_lines import FRAME_AT, WS_PREFIX, frame_bytes

REF = REFERENCE_DIR
CRYPTOFEED = (REF / "cryptofeed_OKX_books_only.jsonl").read_bytes().splitlines()
T0 = 1652459225300  # about the cryptofeed capture's first book ts
BOOK_LINE = b'{"t":"book","r":%d,"instId":"BTC-USD-220527","asks":[],"bids":[]}' % T0


def ws_line(recv, frame):
    return b'{"t":"ws","r":%d,"m":%b}' % (recv, frame)


def tick_line(recv):
    return b'{"t":"tick","r":%d}' % recv


def tape(lines, final_newline=True):
    return b"\n".join(lines) + (b"\n" if final_newline else b"")


def round_trip(data):
    """The archive's table, after asserting the archive decodes to exactly `data`."""
    archive = encode(data)
    assert decode(archive) == data
    return read_table(archive)


def is_compact_canonical(frame):
    return orjson.dumps(orjson.loads(frame)) == frame


def tape_of(frames, tick_every=50):
    """A leading book line, then each frame as a ws line (recv 10 ms apart) and a tick line every
    `tick_every` frames; returns the bytes and the row index of each frame."""
    lines, rows = [BOOK_LINE], []
    for i, frame in enumerate(frames):
        rows.append(len(lines))
        lines.append(ws_line(T0 + 10 * i, frame))
        if i % tick_every == tick_every - 1:
            lines.append(tick_line(T0 + 10 * i + 5))
    return tape(lines), rows


def is_delete(level) -> bool:
    return level[1] == "0" and level[3] == "0"


def levels_of(side):
    """The levels of a side that set a size (`asks`/`bids`), as decimals and integers."""
    return [{"px": Decimal(level[0]), "sz": Decimal(level[1]), "orders": int(level[3])}
            for level in side if not is_delete(level)]


def deleted_of(side):
    """The prices a side deletes (`asks_deleted`/`bids_deleted`)."""
    return [Decimal(level[0]) for level in side if is_delete(level)]


def assert_row_holds(row, frame):
    """The row's columns are the frame's values (the strings OKX sent, as decimals and integers)."""
    message = orjson.loads(frame)["data"][0]
    assert row["line"] is None
    assert row["kind"] == "ws"
    assert row["action"] == orjson.loads(frame)["action"]
    for side in ("asks", "bids"):
        assert row[side] == (levels_of(message[side]) if side in message else None)
        assert row[f"{side}_deleted"] == (deleted_of(message[side]) if side in message else None)
    assert (None if row["ts"] is None else int(row["ts"].timestamp() * 1000)) == (
        int(message["ts"]) if "ts" in message else None)
    assert row["seq_id"] == message.get("seqId")
    assert row["prev_seq_id"] == message.get("prevSeqId")
    assert row["checksum"] == message.get("checksum")


@pytest.fixture(scope="module")
def cryptofeed_archive():
    data, rows = tape_of(CRYPTOFEED)
    return data, rows, encode(data)


# --- 1. real OKX frames ---------------------------------------------------------------------------


def test_real_okx_frames_round_trip(cryptofeed_archive):
    data, rows, archive = cryptofeed_archive
    assert len(CRYPTOFEED) == 290
    assert all(is_compact_canonical(frame) for frame in CRYPTOFEED)
    assert decode(archive) == data
    table = read_table(archive)
    assert table.num_rows == data.count(b"\n") == 1 + 290 + 5
    kinds = table.column("kind").to_pylist()
    assert kinds[0] == "book" and kinds.count("ws") == 290 and kinds.count("tick") == 5
    assert [kinds[i] for i in rows] == ["ws"] * 290
    assert table.column("recv_ms").to_pylist()[rows[7]] == T0 + 70
    # the non-ws lines keep their exact text
    lines = table.column("line").to_pylist()
    assert lines[0] == BOOK_LINE
    assert all(line is not None for line, kind in zip(lines, kinds, strict=True) if kind != "ws")


def test_real_okx_frames_are_held_in_columns(cryptofeed_archive):
    _, rows, archive = cryptofeed_archive
    lines = read_table(archive).column("line").to_pylist()
    assert [i for i in rows if lines[i] is not None] == []


def test_real_okx_integer_size_frames_held_in_columns_with_their_values():
    # BTC-USD-220527 (futures) and UNI-USD-SWAP: contract sizes, no fractional digits
    frames = [f for f in CRYPTOFEED if orjson.loads(f)["arg"]["instId"] != "BTC-USDT"]
    assert len(frames) == 192
    data, rows = tape_of(frames)
    table = round_trip(data)
    assert table.schema.field("asks").type.value_type.field("px").type == pa.decimal64(18, 3)
    assert table.schema.field("asks").type.value_type.field("sz").type == pa.decimal64(18, 0)
    records = table.to_pylist()
    for i, frame in zip(rows, frames, strict=True):
        assert_row_holds(records[i], frame)
    first = records[rows[0]]  # the first snapshot: spelled out once more
    message = orjson.loads(frames[0])["data"][0]
    assert first["asks"][0] == {"px": Decimal(message["asks"][0][0]), "sz": Decimal(message["asks"][0][1]),
                                "orders": int(message["asks"][0][3])}
    assert first["checksum"] == message["checksum"] != 0
    assert first["seq_id"] is None and first["prev_seq_id"] is None  # the 2022 capture predates seqId
    assert len(first["asks"]) == len(message["asks"]) and len(first["bids"]) == len(message["bids"])


def test_real_okx_frame_held_where_it_fits_in_the_full_capture(cryptofeed_archive):
    """In the full capture (sz scale 8) the frames whose sizes all render plainly are held."""
    _, rows, archive = cryptofeed_archive
    records = read_table(archive).to_pylist()
    held = [(i, frame) for i, frame in zip(rows, CRYPTOFEED, strict=True) if records[i]["line"] is None]
    assert held
    for i, frame in held:
        assert_row_holds(records[i], frame)


def nautilus_frames():
    """The two nautilus fixtures: pretty-printed JSON on disk; the collector receives compact text."""
    pretty = [(REF / name).read_bytes() for name in ("nautilus_ws_books_rpi_snapshot.json",
                                                      "nautilus_ws_books_rpi_update.json")]
    return pretty, [orjson.dumps(orjson.loads(text)) for text in pretty]


def test_nautilus_rpi_frames_round_trip_and_keep_their_line():
    pretty, compact = nautilus_frames()
    assert all(b"\n" in text for text in pretty)  # the files differ from what OKX sends
    # compact, and the pretty text as the recorder would write it (newlines turned into spaces)
    frames = [*compact, *(frame_bytes(text) for text in pretty)]
    data, rows = tape_of(frames, tick_every=2)
    table = round_trip(data)
    lines = table.column("line").to_pylist()
    # books-rpi levels carry RPI size in the third field (not "0"), and the pretty ones have spaces
    assert all(lines[i] is not None for i in rows)
    assert [lines[i] for i in rows] == [ws_line(T0 + 10 * i, f) for i, f in enumerate(frames)]


def test_nautilus_frames_with_zero_third_field_held_in_either_seq_order():
    _, compact = nautilus_frames()
    frames = []
    for text in compact:
        parsed = orjson.loads(text)
        message = parsed["data"][0]
        for side in ("asks", "bids"):
            message[side] = [[px, sz, "0", orders] for px, sz, _, orders in message[side]]
        frames.append(orjson.dumps(parsed))
        # the same message with prevSeqId before seqId (real captures have both orders)
        reordered = {k: v for k, v in message.items() if k not in ("seqId", "prevSeqId")}
        reordered.update(prevSeqId=message["prevSeqId"], seqId=message["seqId"])
        frames.append(orjson.dumps({**parsed, "data": [reordered]}))
    assert frames[0].index(b'"seqId"') < frames[0].index(b'"prevSeqId"')
    assert frames[1].index(b'"prevSeqId"') < frames[1].index(b'"seqId"')
    data, rows = tape_of(frames, tick_every=3)
    records = round_trip(data).to_pylist()
    for i, frame in zip(rows, frames, strict=True):
        assert_row_holds(records[i], frame)
    snapshot = records[rows[0]]
    assert (snapshot["seq_id"], snapshot["prev_seq_id"], snapshot["checksum"]) == (1082831226, -1, None)
    assert snapshot["asks"][0]["px"] == Decimal("0.0001617")
    update = records[rows[2]]
    assert (update["seq_id"], update["prev_seq_id"], update["bids"]) == (1082831230, 1082831226, [])
    assert update["asks_deleted"] == [Decimal("0.0001617")]  # ["0.0001617","0","0","0"]
    assert [level["px"] for level in update["asks"]] == [Decimal("0.0001625")]


def test_first_layout_archive_still_decodes():
    # written by the first layout (before asks_deleted/bids_deleted), where asks/bids held every level in
    # message order: here the cryptofeed tape and an update whose asks are not in price order
    archive = Path(__file__).parent / "data" / "tape_archive_first_layout.parquet"
    unsorted = variant(b'[["97000.1","1.5","0","3"]]', b'[["97000.2","1","0","1"],["97000.1","0","0","0"]]')
    data, rows = tape_of([*CRYPTOFEED, unsorted])
    table = read_table(archive)
    assert "asks_deleted" not in table.column_names and table.column("line").to_pylist()[rows[-1]] is None
    assert decode(archive) == data
    assert decode(encode(data)) == data  # the current layout keeps that update's line instead


# --- 2. frames and lines the columns cannot hold ----------------------------------------------------

BASE = (b'{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"update","data":[{"asks":'
        b'[["97000.1","1.5","0","3"]],"bids":[["96999.9","0.25","0","1"]],"ts":"1750000000100",'
        b'"checksum":0,"prevSeqId":10,"seqId":11}]}')


def variant(old, new):
    assert old in BASE
    return BASE.replace(old, new, 1)


def two_entries():
    parsed = orjson.loads(BASE)
    parsed["data"].append(parsed["data"][0])
    return orjson.dumps(parsed)


# (frame, whether its row keeps its line)
FRAMES = {
    "base": (BASE, False),
    "whitespace": (variant(b'{"arg":{', b'{"arg": {'), True),
    "whitespace_in_levels": (variant(b'[["97000.1"', b'[ ["97000.1"'), True),
    "price_trailing_zero": (variant(b'"97000.1"', b'"97000.10"'), True),
    "size_trailing_zero_point": (variant(b'"1.5"', b'"1.0"'), True),
    "price_leading_zero": (variant(b'"97000.1"', b'"097000.1"'), True),
    "size_leading_point": (variant(b'"0.25"', b'".25"'), True),
    "size_trailing_point": (variant(b'"1.5"', b'"1."'), True),
    "price_plus": (variant(b'"97000.1"', b'"+97000.1"'), True),
    "price_minus": (variant(b'"97000.1"', b'"-97000.1"'), True),
    "price_exponent": (variant(b'"97000.1"', b'"9.70001e4"'), True),
    "price_space": (variant(b'"97000.1"', b'" 97000.1"'), True),
    "price_over_18_digits": (variant(b'"97000.1"', b'"97000.12345678901234"'), True),
    "price_18_digits": (variant(b'"97000.1"', b'"97000.1234567890123"'), False),
    "liquidated_orders_1": (variant(b'"1.5","0","3"', b'"1.5","1","3"'), True),
    "five_fields": (variant(b'"1.5","0","3"]', b'"1.5","0","3","x"]'), True),
    "three_fields": (variant(b'"1.5","0","3"]', b'"1.5","0"]'), True),
    "empty_level": (variant(b'[["97000.1","1.5","0","3"]]', b"[[]]"), True),
    "level_not_a_list": (variant(b'[["97000.1","1.5","0","3"]]', b'["97000.1"]'), True),
    "size_a_number": (variant(b'"1.5"', b"1.5"), True),
    "orders_a_number": (variant(b'"0","3"', b'"0",3'), True),
    "orders_leading_zero": (variant(b'"0","3"', b'"0","03"'), True),
    "orders_ten_digits": (variant(b'"0","3"', b'"0","1234567890"'), True),
    "orders_decimal": (variant(b'"0","3"', b'"0","3.5"'), True),
    "ts_int": (variant(b'"ts":"1750000000100"', b'"ts":1750000000100'), True),
    "ts_leading_zero": (variant(b'"ts":"1750000000100"', b'"ts":"01750000000100"'), True),
    "seqId_string": (variant(b'"seqId":11', b'"seqId":"11"'), True),
    "seqId_float": (variant(b'"seqId":11', b'"seqId":11.0'), True),
    "seqId_null": (variant(b'"seqId":11', b'"seqId":null'), True),
    "checksum_string": (variant(b'"checksum":0', b'"checksum":"0"'), True),
    "asks_null": (variant(b'[["97000.1","1.5","0","3"]]', b"null"), True),
    "action_number": (variant(b'"action":"update"', b'"action":1'), True),
    "data_two_entries": (two_entries(), True),
    "data_empty": (orjson.dumps({**orjson.loads(BASE), "data": []}), True),
    "duplicate_key": (variant(b'"checksum":0', b'"checksum":0,"checksum":0'), True),
    "hole_text_in_arg": (variant(b'"BTC-USDT-SWAP"', b'"\\u0001asks"'), None),  # either: round trip only
    "missing_checksum": (variant(b',"checksum":0', b""), False),
    "missing_ts": (variant(b',"ts":"1750000000100"', b""), False),
    "missing_seq_ids": (variant(b',"prevSeqId":10,"seqId":11', b""), False),
    "missing_bids": (variant(b',"bids":[["96999.9","0.25","0","1"]]', b""), False),
    "empty_asks": (variant(b'[["97000.1","1.5","0","3"]]', b"[]"), False),
    "snapshot_negative_prev": (variant(b'"update"', b'"snapshot"').replace(b"10,", b"-1,"), False),
    "extra_key": (variant(b'"checksum":0', b'"checksum":0,"rpi":"x"'), False),
    "fields_reordered": (b'{"action":"update","data":[{"seqId":11,"ts":"1750000000100","bids":[],"asks":'
                         b'[["1","2","0","3"]],"checksum":-5,"prevSeqId":10}],"arg":{"instId":"X"}}', False),
}


@pytest.mark.parametrize("name", list(FRAMES))
def test_frames_the_columns_cannot_hold_keep_their_line(name):
    frame, kept = FRAMES[name]
    lines = [BOOK_LINE, ws_line(T0, frame), tick_line(T0 + 5), ws_line(T0 + 10, BASE)]
    table = round_trip(tape(lines))
    records = table.to_pylist()
    assert [r["kind"] for r in records] == ["book", "ws", "tick", "ws"]
    assert_row_holds(records[3], BASE)  # a row that cannot be held does not spoil the others
    if kept is True:
        assert records[1]["line"] == ws_line(T0, frame)
        assert records[1]["recv_ms"] == T0
    elif kept is False:
        assert is_compact_canonical(frame)
        assert_row_holds(records[1], frame)


# whole lines (between a book line and a tick line) whose row keeps its line
LINES = {
    "not_json": b"hello, tape",
    "open_brace": b"{",
    "json_array": b"[1,2]",
    "carriage_return": b'{"t":"tick","r":5}\r',
    "nul_byte": b"\x00",
    "non_ascii_utf8": '{"t":"tick","r":5,"note":"é€😀"}'.encode(),
    "kind_not_string": b'{"t":5,"r":5}',
    "recv_float": b'{"t":"tick","r":5.5}',
    "ws_recv_string": b'{"t":"ws","r":"5","m":%b}' % BASE,
    "ws_recv_leading_zero": b'{"t":"ws","r":05,"m":%b}' % BASE,
    "ws_recv_negative": b'{"t":"ws","r":-5,"m":%b}' % BASE,
    "ws_frame_not_object": b'{"t":"ws","r":5,"m":[1,2]}',
    "ws_trailing_garbage": ws_line(5, BASE) + b"x",
    "ws_no_frame": b'{"t":"ws","r":5}',
    "ws_key_after_frame": b'{"t":"ws","r":5,"m":%b,"x":1}' % BASE,
    "ws_prefix_only": WS_PREFIX,
    "ws_prefix_frame_at": WS_PREFIX + b"5" + FRAME_AT + b"}",
}


@pytest.mark.parametrize("name", list(LINES))
def test_lines_that_are_not_frames_keep_their_line(name):
    line = LINES[name]
    table = round_trip(tape([BOOK_LINE, line, tick_line(T0)]))
    kept = table.column("line").to_pylist()[1]
    assert kept is not None and kept == line


# whole files: the edges of the content
FILES = {
    "empty": b"",
    "newline_only": b"\n",
    "two_newlines": b"\n\n",
    "three_newlines": b"\n\n\n",
    "empty_line_in_middle": tape([BOOK_LINE, ws_line(T0, BASE)]) + b"\n" + tape([tick_line(T0 + 1)]),
    "leading_empty_line": b"\n" + tape([ws_line(T0, BASE)]),
    "torn_frame_last": tape([BOOK_LINE, ws_line(T0, BASE)], final_newline=False),
    "torn_half_frame": tape([BOOK_LINE, ws_line(T0, BASE)]) + ws_line(T0 + 1, BASE)[:57],
    "torn_tick": tape([BOOK_LINE, tick_line(T0)], final_newline=False),
    "one_line_no_newline": b"x",
    "only_a_frame": ws_line(T0, BASE),
    "non_ascii_utf8_line": tape([BOOK_LINE, "Ω ≠ ∞".encode(), ws_line(T0, BASE)]),
    "invalid_utf8_line": tape([BOOK_LINE, b"\xff\xfe\x80", ws_line(T0, BASE)]),
    "invalid_utf8_torn": b"\xc3",
}


@pytest.mark.parametrize("data", list(FILES.values()), ids=list(FILES))
def test_file_edges_round_trip(data):
    table = round_trip(data)
    assert table.num_rows == len(data.split(b"\n")) - (1 if data.endswith(b"\n") or not data else 0)


def test_torn_frame_is_still_held_in_columns():
    table = round_trip(tape([BOOK_LINE, ws_line(T0, BASE)], final_newline=False))
    assert_row_holds(table.to_pylist()[1], BASE)
    assert table.schema.metadata[b"l2.final_newline"] == b"0"


def test_empty_line_in_the_middle_keeps_an_empty_row():
    data = tape([BOOK_LINE, b"", ws_line(T0, BASE)])
    records = round_trip(data).to_pylist()
    assert [(r["kind"], r["line"]) for r in records[:2]] == [("book", BOOK_LINE), (None, b"")]
    assert_row_holds(records[2], BASE)


# Inputs that once made encode raise: beyond int64, null levels, more than 18 digits at the hour's scale.
# Each keeps its line (the rest of the hour stays in columns) and round-trips.
MAX_INT64 = 2**63 - 1
KEPT_EDGES = {
    "ws_recv_over_int64": tape([ws_line(MAX_INT64 + 1, BASE)]),
    "tick_recv_uint64": tape([b'{"t":"tick","r":18446744073709551615}']),
    "ts_over_int64": tape([ws_line(T0, variant(b'"1750000000100"', b'"99999999999999999999"'))]),
    "seqId_uint64": tape([ws_line(T0, variant(b'"seqId":11', b'"seqId":18446744073709551615'))]),
    "null_level": tape([ws_line(T0, variant(b'[["97000.1","1.5","0","3"]]', b"[null]"))]),
    "null_level_field": tape([ws_line(T0, variant(b'"1.5"', b"null"))]),
    "precision_one_side": tape([ws_line(T0, variant(b'"97000.1"', b'"123456789012345678"').replace(
        b'"96999.9"', b'"0.5"'))]),
    # asks not ascending, bids not descending, a price twice: the columns rebuild a side in price order
    "asks_out_of_order": tape([ws_line(T0, variant(b'[["97000.1","1.5","0","3"]]',
                                                   b'[["97000.2","1","0","1"],["97000.1","0","0","0"]]'))]),
    "bids_out_of_order": tape([ws_line(T0, variant(b'[["96999.9","0.25","0","1"]]',
                                                   b'[["96999.8","0","0","0"],["96999.9","2","0","1"]]'))]),
    "price_twice": tape([ws_line(T0, variant(b'[["97000.1","1.5","0","3"]]',
                                             b'[["97000.1","0","0","0"],["97000.1","2","0","1"]]'))]),
}


@pytest.mark.parametrize("name", list(KEPT_EDGES))
def test_edge_inputs_keep_their_line(name):
    data = KEPT_EDGES[name]
    row = round_trip(data).to_pylist()[0]
    assert row["line"] == data.rstrip(b"\n")


def test_too_many_digits_at_the_hours_scale_keeps_that_row_only():
    wide = ws_line(T0, variant(b'"97000.1"', b'"1234567890123456"'))
    fine = ws_line(T0 + 1, variant(b'"97000.1"', b'"0.001"'))
    records = round_trip(tape([wide, fine])).to_pylist()
    assert records[0]["line"] == wide and records[1]["line"] is None


def test_int64_edges_that_fit_are_held():
    frame = variant(b'"seqId":11', b'"seqId":%d' % MAX_INT64).replace(b'"prevSeqId":10', b'"prevSeqId":%d' % -2**63)
    table = round_trip(tape([ws_line(MAX_INT64, frame)]))
    row = table.to_pylist()[0]
    assert row["line"] is None and row["recv_ms"] == MAX_INT64
    assert (row["seq_id"], row["prev_seq_id"]) == (MAX_INT64, -2**63)


@pytest.mark.parametrize("asks", [b'[["1","0.0000001","0","1"]]', b'[["1","0","0","0"],["2","0.1234567","0","1"]]',
                                  b'[["0.00000001","1","0","1"]]'])
def test_small_decimals_are_held_in_columns(asks):
    frame = variant(b'[["97000.1","1.5","0","3"]]', asks)
    assert is_compact_canonical(frame)
    assert_row_holds(round_trip(tape([ws_line(T0, frame)])).to_pylist()[0], frame)


def test_decimals_up_to_six_fractional_digits_are_held():
    frame = variant(b'[["97000.1","1.5","0","3"]]', b'[["0.000001","0","0","0"],["1","0.000001","0","1"],'
                                                       b'["999999999999.123456","0.5","0","2"]]')
    assert_row_holds(round_trip(tape([ws_line(T0, frame)])).to_pylist()[0], frame)


# --- 3. hypothesis ----------------------------------------------------------------------------------

FIELDS = ("asks", "bids", "ts", "checksum", "seqId", "prevSeqId")


@st.composite
def decimal_texts(draw, max_frac):
    """A canonical decimal string: no leading zeros, no trailing fractional zeros."""
    whole = draw(st.one_of(st.just(0), st.integers(0, 9), st.integers(0, 9_999_999)))
    digits = draw(st.integers(0, max_frac))
    fraction = f"{draw(st.integers(0, 10**digits - 1)):0{digits}d}".rstrip("0") if digits else ""
    return f"{whole}.{fraction}" if fraction else str(whole)


NONCANONICAL = [lambda s: s + "0" if "." in s else s + ".0", lambda s: "0" + s, lambda s: "+" + s,
                lambda s: s + "e0", lambda s: " " + s, lambda s: s + ".", lambda s: "-" + s]


@st.composite
def ws_lines(draw, max_frac=8, canonical_only=False):
    """A ws tape line and whether the columns can hold it."""
    canonical = True

    def number(default):
        nonlocal canonical
        if canonical_only or draw(st.integers(0, 30)):
            return default
        canonical = False
        return draw(st.sampled_from(NONCANONICAL))(default)

    def level(price):
        nonlocal canonical
        deleted = draw(st.integers(0, 4)) == 0
        sz = "0" if deleted else number(draw(decimal_texts(max_frac)))
        orders = "0" if deleted else str(draw(st.integers(0, 10**6)))
        liquidated = "0"
        if not canonical_only and not draw(st.integers(0, 40)):
            canonical = False
            liquidated = draw(st.sampled_from(["1", "00", ""]))
        return [number(price), sz, liquidated, orders]

    message = {}
    for field in draw(st.permutations(FIELDS)):
        if not draw(st.integers(0, 9)):
            continue  # now and then a field is missing
        if field in ("asks", "bids"):
            # OKX sends a side's prices once each, asks ascending and bids descending
            prices = draw(st.lists(decimal_texts(max_frac), max_size=6, unique_by=Decimal))
            message[field] = [level(price) for price in sorted(prices, key=Decimal, reverse=field == "bids")]
        elif field == "ts":
            message[field] = str(draw(st.integers(1_500_000_000_000, 2_000_000_000_000)))
        else:
            message[field] = draw(st.integers(-1, 2**40) if field != "checksum" else st.integers(-2**31, 2**31 - 1))
    arg = {"channel": "books", "instId": draw(st.sampled_from(["BTC-USDT-SWAP", "ETH-USDT", "OMI-USD"]))}
    parsed = {"arg": arg, "action": draw(st.sampled_from(["snapshot", "update"])), "data": [message]}
    if draw(st.booleans()):
        parsed = {"action": parsed["action"], "arg": arg, "data": [message]}
    frame = orjson.dumps(parsed)
    if not canonical_only and not draw(st.integers(0, 20)):
        canonical = False
        frame = frame.replace(b":", b": ", 1)
    return ws_line(draw(st.integers(0, 2**53)), frame), canonical


text_lines = st.text(max_size=40).map(lambda s: s.replace("\n", "").encode())
binary_lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
tick_lines = st.integers(0, 2**53).map(tick_line)


def assemble(lines, final_newline):
    return b"\n".join(lines) + (b"\n" if final_newline and lines else b"")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(ws_lines().map(lambda x: x[0]), text_lines, tick_lines), max_size=25), st.booleans())
def test_property_round_trip_ws_and_text_lines(lines, final_newline):
    data = assemble(lines, final_newline)
    assert decode(encode(data)) == data


def assert_held_or_kept(items, final_newline):
    data = assemble([line for line, _ in items], final_newline)
    kept = round_trip(data).column("line").to_pylist()
    for (line, canonical), text in zip(items, kept, strict=True):
        assert text is None if canonical else text == line


def mixed_items(max_frac):
    return st.lists(st.one_of(ws_lines(max_frac), ws_lines(max_frac, canonical_only=True),
                              tick_lines.map(lambda line: (line, False))), min_size=1, max_size=25)


@settings(max_examples=100, deadline=None)
@given(mixed_items(max_frac=6), st.booleans())
def test_property_canonical_ws_lines_held_others_kept(items, final_newline):
    assert_held_or_kept(items, final_newline)


@settings(max_examples=60, deadline=None, derandomize=True, phases=[Phase.generate])
@given(mixed_items(max_frac=8), st.booleans())
def test_property_canonical_ws_lines_held_up_to_8_digits(items, final_newline):
    assert_held_or_kept(items, final_newline)


@settings(max_examples=60, deadline=None, derandomize=True, phases=[Phase.generate])
@given(st.lists(st.one_of(ws_lines().map(lambda x: x[0]), binary_lines, tick_lines), max_size=25), st.booleans())
def test_property_round_trip_binary_lines(lines, final_newline):
    data = assemble(lines, final_newline)
    assert decode(encode(data)) == data


# --- 4. damage --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_archive():
    data = tape([BOOK_LINE, ws_line(T0, BASE), tick_line(T0 + 5), ws_line(T0 + 10, BASE)])
    return data, encode(data)


@pytest.mark.parametrize("cut", [0, 4, 100, -1, -8, "half"])
def test_truncated_archive_raises(small_archive, cut):
    _, archive = small_archive
    damaged = archive[:len(archive) // 2] if cut == "half" else archive[:cut]
    with pytest.raises(TapeColumnsError) as raised:
        decode(damaged)
    assert isinstance(raised.value, OSError)
    with pytest.raises(hour_content.DamagedArchive):
        hour_content.content_of(damaged, "10.parquet")


@pytest.fixture(scope="module")
def flipped_outcomes(small_archive):
    """Every 5th byte of the archive flipped in turn: what decode does with it."""
    data, archive = small_archive
    outcomes = {}
    for i in range(0, len(archive), 5):
        damaged = bytearray(archive)
        damaged[i] ^= 0xFF
        try:
            outcomes[i] = "same" if decode(bytes(damaged)) == data else "other bytes"
        except TapeColumnsError:
            outcomes[i] = "TapeColumnsError"
        except Exception as exc:  # the outcome is what the tests look at
            outcomes[i] = type(exc).__name__
    return outcomes


def test_flipped_byte_never_decodes_to_other_bytes(flipped_outcomes):
    assert "other bytes" not in flipped_outcomes.values()
    assert list(flipped_outcomes.values()).count("TapeColumnsError") > len(flipped_outcomes) / 2


def test_flipped_byte_raises_tape_columns_error(flipped_outcomes):
    assert set(flipped_outcomes.values()) <= {"same", "TapeColumnsError"}


def test_foreign_parquet_raises(tmp_path):
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2], "line": ["x", "y"]}), buffer)
    with pytest.raises(TapeColumnsError, match="not a tape archive"):
        decode(buffer.getvalue())
    path = tmp_path / "10.parquet"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(TapeColumnsError):
        read_table(path)
    with pytest.raises(hour_content.DamagedArchive), hour_content.open_content(path):
        pass
    with pytest.raises(TapeColumnsError, match="not a readable Parquet"):
        decode(b"this is a jsonl line\n")
    with pytest.raises(FileNotFoundError):
        decode(tmp_path / "absent.parquet")


def test_altered_table_fails_the_recorded_sha256(small_archive, tmp_path):
    data, archive = small_archive
    table = read_table(archive)
    asks = table.column("asks").to_pylist()
    assert asks[1][0]["px"] == Decimal("97000.1")
    asks[1][0]["px"] = Decimal("97000.2")
    index = table.schema.get_field_index("asks")
    altered = table.set_column(index, table.schema.field(index), pa.array(asks, table.schema.field(index).type))
    altered = altered.replace_schema_metadata(table.schema.metadata)
    path = tmp_path / "10.parquet"
    pq.write_table(altered, path)
    assert read_table(path).column("asks").to_pylist()[1][0]["px"] == Decimal("97000.2")
    with pytest.raises(TapeColumnsError, match="sha256"):
        decode(path)
    with pytest.raises(hour_content.DamagedArchive, match="sha256"):
        hour_content.content_of(path.read_bytes(), "10.parquet")
    # the same table written back unaltered decodes
    pq.write_table(table, path)
    assert decode(path) == data


def test_hour_content_reads_the_archive(small_archive, tmp_path):
    data, archive = small_archive
    assert hour_content.content_of(archive, "10.parquet") == data
    path = tmp_path / "10.parquet"
    path.write_bytes(archive)
    with hour_content.open_content(path) as f:
        assert f.read() == data
    assert decode(path) == decode(io.BytesIO(archive)) == data


# --- 5. research access -----------------------------------------------------------------------------


def test_duckdb_reads_the_levels(tmp_path):
    frames = [f for f in CRYPTOFEED if orjson.loads(f)["arg"]["instId"] != "BTC-USDT"]
    data, _ = tape_of(frames)
    path = tmp_path / "10.parquet"
    path.write_bytes(encode(data))
    first_recv, first = min(((T0 + 10 * i, f) for i, f in enumerate(frames)),
                            key=lambda x: (int(orjson.loads(x[1])["data"][0]["ts"]), x[0]))
    message = orjson.loads(first)["data"][0]
    rows = duckdb.sql(f"select epoch_ms(ts), recv_ms, asks[1].px as px, asks[1].sz as sz, asks[1].orders "
                      f"from read_parquet('{path}') where kind = 'ws' order by ts, recv_ms limit 1").fetchall()
    assert rows == [(int(message["ts"]), first_recv, Decimal(message["asks"][0][0]),
                     Decimal(message["asks"][0][1]), int(message["asks"][0][3]))]
    assert isinstance(rows[0][2], Decimal)
    (levels,), = duckdb.sql("select sum(len(asks) + len(bids) + len(asks_deleted) + len(bids_deleted)) "
                            f"from read_parquet('{path}')").fetchall()
    assert levels == sum(len(orjson.loads(f)["data"][0][side]) for f in frames for side in ("asks", "bids"))
    (deletes,), = duckdb.sql(f"select sum(len(asks_deleted) + len(bids_deleted)) from read_parquet('{path}')"
                             ).fetchall()
    assert 0 < deletes == sum(is_delete(level) for f in frames for side in ("asks", "bids")
                              for level in orjson.loads(f)["data"][0][side])


# --- 6. size ------------------------------------------------------------------------------------------


def test_simulator_hour_is_smaller_than_its_gzip(tmp_path):
    frames_path = tmp_path / "frames.jsonl"
    assert dump_frames(frames_path, ["BTC-USDT-SWAP"], 3000, seed=5, checksum_mode="zero") == 3000
    lines = []
    for i, frame in enumerate(frames_path.read_bytes().splitlines()):
        ts = int(orjson.loads(frame)["data"][0]["ts"])
        lines.append(ws_line(ts + 3, frame))
        if i % 20 == 19:
            lines.append(tick_line(ts + 50))
    data = tape(lines)
    archive = encode(data)
    assert decode(archive) == data
    table = read_table(archive)
    assert table.num_rows == 3150 and table.column("line").null_count == 3000  # every frame in columns
    gzipped = len(gzip.compress(data, 6))
    assert len(archive) < 0.6 * gzipped, (len(archive), gzipped)

"""The hour's one-parse scan (`scan_content`: Arrow read, levels checked at once) against the
line-by-line reference (`scan_records`) on hours with one mutation planted: wherever the fast path
gives a scan it is the reference's, and on clean hours of every valid kind it does give one."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2_lake.format.record import ADDED_FIELDS, encode_line, okx_checksum
from l2_lake.format.source_json import read_source_table
from l2_lake.quality.hour_stats import scan_content, scan_records, scan_source_table
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, ETH, make_records, without_fields

Record = dict[str, Any]


def _set(name: str, value: Any) -> Callable[[Record], Record]:
    return lambda rec: {**rec, name: value}


def _level(side: str, index: int, position: int, value: Any) -> Callable[[Record], Record]:
    def mutate(rec: Record) -> Record:
        levels = [list(level) for level in rec[side]]
        if levels:
            levels[min(index, len(levels) - 1)][position] = value
        return {**rec, side: levels}
    return mutate


def _levels(side: str, change: Callable[[list], list]) -> Callable[[Record], Record]:
    return lambda rec: {**rec, side: change([list(level) for level in rec[side]])}


def _reordered(rec: Record) -> Record:
    keys = list(rec)
    keys.insert(keys.index("bids_top400"), keys.pop(keys.index("best_bid")))
    return {key: rec[key] for key in keys}


def _between_levels(names: tuple[str, ...]) -> Callable[[Record], Record]:
    """The fields `names` moved between the bids and the asks (an original-format record once cut out)."""
    def mutate(rec: Record) -> Record:
        keys = [key for key in rec if key not in names]
        at = keys.index("asks_top400")
        return {key: rec[key] for key in [*keys[:at], *names, *keys[at:]]}
    return mutate


def _recrc(rec: Record) -> Record:
    return {**rec, "book_crc32": okx_checksum(rec["bids_top400"], rec["asks_top400"])}


RECORD_MUTATIONS: dict[str, Callable[[Record], Record]] = {
    "gap marker": _set("gap_detected", True),
    "checksum marker": _set("checksum_ok", False),
    "original format": without_fields,
    "incomplete format": lambda rec: without_fields(rec, ADDED_FIELDS[:1]),
    "gap_detected null": _set("gap_detected", None),
    "checksum_ok text": _set("checksum_ok", "true"),
    "book_crc32 null": _set("book_crc32", None),
    "book_crc32 off": lambda rec: {**rec, "book_crc32": rec["book_crc32"] + 1},
    "other instrument": _set("instId", ETH),
    "bad timestamp": _set("timestamp_utc", "2026-11-20 00:00:01"),
    "timestamp without zone": _set("timestamp_utc", "2026-11-20T00:00:01.000"),
    "timestamp of another hour": _set("timestamp_utc", "2026-11-20T03:00:01.000Z"),
    "bad recv_ts": _set("recv_ts_utc", "yesterday"),
    "best bid not the first level": _set("best_bid", "1.5"),
    "best ask null": _set("best_ask", None),
    "best bid a number": _set("best_bid", 97000.5),
    "crossed": lambda rec: {**rec, "best_bid": rec["best_ask"], "bids_top400": [[rec["best_ask"], "1", "0", "1"]]},
    "price zero": _level("bids_top400", 0, 0, "0"),
    "price negative": _level("asks_top400", 2, 0, "-1"),
    "price text": _level("asks_top400", 1, 0, "abc"),
    "price with underscore": _level("bids_top400", 3, 0, "9_0"),
    "price infinite": _level("asks_top400", 4, 0, "inf"),
    "price nan": _level("bids_top400", 2, 0, "nan"),
    "price with spaces": _level("bids_top400", 1, 0, " 97000.1"),
    "price exponent": _level("asks_top400", 3, 0, "1e9"),
    "price holding a key": _level("asks_top400", 1, 0, '":'),
    "size a number": _level("bids_top400", 0, 1, 1.5),
    "orders null": _level("asks_top400", 0, 3, None),
    "level of 3": _levels("bids_top400", lambda lv: [lv[0][:3], *lv[1:]]),
    "level of 5": _levels("asks_top400", lambda lv: [[*lv[0], "1"], *lv[1:]]),
    "levels swapped": _levels("bids_top400", lambda lv: [lv[1], lv[0], *lv[2:]]),
    "price repeated": _levels("asks_top400", lambda lv: [lv[0], lv[0], *lv[2:]]),
    "empty bids": lambda rec: _recrc({**_levels("bids_top400", lambda lv: [])(rec), "best_bid": None,
                                      "mid_price": None}),
    "empty asks, crc kept": lambda rec: _recrc({**_levels("asks_top400", lambda lv: [])(rec), "best_ask": None}),
    "levels not a list": _set("asks_top400", "none"),
    "fields out of order": _reordered,
    "added fields between the levels": _between_levels(ADDED_FIELDS),
    "seqId between the levels": _between_levels(("seqId",)),
    "extra field": _set("note", "x"),
    "field missing": lambda rec: {k: v for k, v in rec.items() if k != "seqId"},
    "seqId null": _set("seqId", None),
}

LINE_MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "spaces": lambda line: orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).replace(b"\n", b"") + b"\n",
    "not json": lambda line: line[: len(line) // 2] + b"\n",
    "blank": lambda line: b"\n",
    "array": lambda line: b"[1, 2]\n",
    "carriage return": lambda line: line[:-1] + b"\r\n",
    "key repeated": lambda line: line[:-2] + b',"seqId":1}\n',
}


def _lines(records: list[Record]) -> list[bytes]:
    return [encode_line(rec) for rec in records]


def _same_as_reference(data: bytes) -> tuple[bool, bool]:
    """(the fast path held, its scan is the reference's) for an hour whose content is `data`."""
    reference = scan_records(io.BytesIO(data), BTC, BASE_HOUR)
    scan, _ = scan_content(data, BTC, BASE_HOUR)
    src = read_source_table(data) if data.endswith(b"\n") else None
    fast = scan_source_table(data.split(b"\n")[:-1], src, BTC, BASE_HOUR) if src is not None else None
    return fast is not None, scan == reference and (fast is None or fast.records == reference.records)


HOUR = make_records(BTC, BASE_HOUR, count=12, depth=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(RECORD_MUTATIONS)), st.integers(0, len(HOUR) - 1), st.booleans())
def test_a_record_mutation_gives_the_reference_scan(name: str, index: int, everywhere: bool) -> None:
    mutate = RECORD_MUTATIONS[name]
    records = [mutate(rec) if everywhere or i == index else rec for i, rec in enumerate(HOUR)]
    _, same = _same_as_reference(b"".join(_lines(records)))
    assert same, name


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(LINE_MUTATIONS)), st.integers(0, len(HOUR) - 1))
def test_a_line_mutation_gives_the_reference_scan(name: str, index: int) -> None:
    lines = _lines(HOUR)
    lines[index] = LINE_MUTATIONS[name](lines[index])
    _, same = _same_as_reference(b"".join(lines))
    assert same, name


def test_the_fast_path_holds_on_every_valid_kind_of_hour() -> None:
    valid = ["gap marker", "checksum marker", "original format", "empty bids", "empty asks, crc kept", "seqId null"]
    for name in valid:
        held, same = _same_as_reference(b"".join(_lines([RECORD_MUTATIONS[name](rec) for rec in HOUR])))
        assert held and same, name
    mixed = [without_fields(rec) if i % 2 else rec for i, rec in enumerate(HOUR)]
    assert _same_as_reference(b"".join(_lines(mixed))) == (True, True)


def test_the_fast_path_refuses_a_torn_last_line() -> None:
    data = b"".join(_lines(HOUR))[:-1]
    held, same = _same_as_reference(data)
    assert not held and same
    assert scan_content(data, BTC, BASE_HOUR)[0].torn_tail

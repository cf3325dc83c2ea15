"""Fuzzing the frame decoder and the engine with hypothesis: hostile input is rejected with
`BadFrame`/`BadLevel` or applied, never crashes, and never leaves a synced book inconsistent.

Example counts come from the hypothesis profile: `ci` by default (seconds), `HYPOTHESIS_PROFILE=fuzz-long`
for the long local run (docs/TESTING.md, "Long runs").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from l2_lake.book.engine import InstrumentSync, Resync
from l2_lake.format.record import record_problems
from l2_lake.venues.okx.protocol import BadFrame, BookMessage, EventMessage, Pong, decode
from l2_lake_tests.test_engine import T0, ListSink, as_written

pytestmark = pytest.mark.fuzz  # fuzzing stays out of CI (scripts/test.sh): docs/TESTING.md "Long runs"

INST = "BTC-USDT-SWAP"
KEYS = ["arg", "data", "action", "event", "code", "msg", "channel", "instId", "bids", "asks", "ts",
        "checksum", "seqId", "prevSeqId", "connId"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["books", INST, "snapshot", "update", "0", "-1", "nan"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)), max_leaves=25)


def _check_decoded(raw: bytes | str) -> None:
    try:
        decoded = decode(raw)
    except BadFrame as exc:
        assert exc.kind and str(exc)
        return
    assert isinstance(decoded, Pong | EventMessage | list)
    if isinstance(decoded, list):
        assert all(isinstance(m, BookMessage) and isinstance(m.ts_ms, int) for m in decoded)


@given(st.binary(max_size=300))
def test_decode_arbitrary_bytes(raw: bytes) -> None:
    _check_decoded(raw)


@given(json_values)
def test_decode_arbitrary_json(value: Any) -> None:
    raw = orjson.dumps(value)
    _check_decoded(raw)
    _check_decoded(raw[: len(raw) // 2])  # truncated frames


def test_decode_huge_numbers_and_frames() -> None:
    big = '{"arg":{"channel":"books","instId":"A-B"},"action":"update","data":[{"asks":[],"bids":[],"ts":"1",' \
          '"seqId":123456789012345678901234567890,"prevSeqId":1}]}'
    _check_decoded(big)
    huge = orjson.dumps({"arg": {"channel": "books", "instId": INST}, "action": "snapshot", "data": [
        {"asks": [[str(i + 1), "1", "0", "1"] for i in range(200_000)], "bids": [], "ts": "1", "seqId": 1,
         "prevSeqId": -1}]})
    (msg,) = decode(huge)
    assert len(msg.asks) == 200_000


@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8))
def test_decode_books_shaped_frames(data_item: dict) -> None:
    frame = {"arg": {"channel": "books", "instId": INST}, "action": "update", "data": [data_item]}
    _check_decoded(orjson.dumps(frame))


hostile_text = st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "-0", "1e400", "", " 1", "0.0", "1e-9",
                                          "100.5", "100.4", "100.6", "99", "101"]),
                         st.decimals("0.1", "200", places=1).map(str))
hostile_level = st.one_of(
    st.lists(hostile_text, min_size=0, max_size=5),
    st.lists(st.one_of(hostile_text, st.integers(), st.none(), st.floats()), min_size=2, max_size=4),
)


@given(st.lists(st.tuples(st.sampled_from(["snapshot", "update"]), st.lists(hostile_level, max_size=6),
                          st.lists(hostile_level, max_size=6), st.integers(0, 3)), max_size=25))
def test_engine_survives_hostile_levels(stream: list) -> None:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    seq = 100
    for action, bids, asks, seq_step in stream:
        msg = BookMessage(INST, action, bids, asks, T0 + seq, 0, seq + seq_step, -1 if action == "snapshot" else seq)
        seq += seq_step
        result = sync.on_book(msg, T0 + seq)
        if result is Resync.RESUBSCRIBE:
            sync.subscribed()
        if sync.in_sync:
            for side, descending in ((sync.book.bids.top(400), True), (sync.book.asks.top(400), False)):
                prices = [Decimal(level[0]) for level in side]
                assert prices == sorted(prices, reverse=descending) and len(set(prices)) == len(prices)
                assert all(p > 0 and p.is_finite() for p in prices)
                assert all(Decimal(level[1]) > 0 for level in side)
        record = sync.snapshot_record()
        if record is not None:
            problems = [p for p in record_problems(as_written(record)) if not p.startswith("crossed")]
            assert not problems, problems

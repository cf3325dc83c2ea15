"""Sequence rule, checksum handling, resync and REST alignment of `InstrumentSync`, and frame decoding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from l2_lake.book.engine import InstrumentSync, Resync, State
from l2_lake.book.order_book import OrderBook
from l2_lake.venues.okx.protocol import BadFrame, BookMessage, EventMessage, Pong, decode, decode_rest_books

INST = "BTC-USDT-SWAP"
T0 = 1_795_564_800_000  # 2026-11-25T00:00:00Z: message ts and receive times below are offsets from it


class ListSink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def event(self, inst_id: str, event_type: str, **details: Any) -> None:
        self.events.append({"instId": inst_id, "type": event_type, **details})

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None:
        self.records.append(as_written(record))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


BIDS = [["100.5", "3", "0", "1"], ["100.4", "1", "0", "2"], ["100", "7", "0", "1"]]
ASKS = [["100.6", "2", "0", "1"], ["100.8", "5", "0", "3"]]


def as_written(obj: Any) -> Any:
    """`obj` as a reader of the lake sees it (JSON round trip: the book keeps levels as tuples)."""
    return orjson.loads(orjson.dumps(obj))


def as_lists(side: Any) -> list[list[str]]:
    return [list(level) for level in side]


def msg(action: str, seq: int, prev: int, bids=(), asks=(), ts: int = 1_000, checksum: int = 0) -> BookMessage:
    return BookMessage(INST, action, [list(b) for b in bids], [list(a) for a in asks], T0 + ts, checksum, seq, prev)


def true_checksum(bids, asks) -> int:
    book = OrderBook()
    book.apply(bids, asks)
    return book.checksum()


@pytest.fixture
def synced() -> tuple[InstrumentSync, ListSink]:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("snapshot", 10, -1, BIDS, ASKS, checksum=true_checksum(BIDS, ASKS)), T0 + 1_005) is None
    return sync, sink


def test_snapshot_then_chained_updates(synced) -> None:
    sync, sink = synced
    assert sync.in_sync and sink.types() == ["resync_done"]
    assert sync.on_book(msg("update", 12, 10, bids=[["100.5", "0", "0", "0"]], ts=1_100), T0 + 1_101) is None
    rec = as_written(sync.snapshot_record())
    assert rec["bids_top400"] == BIDS[1:] and rec["best_bid"] == "100.4" and rec["mid_price"] == "100.5"
    assert rec["seqId"] == 12 and rec["prevSeqId"] == 10 and rec["gap_detected"] is False
    assert rec["timestamp_utc"] == "2026-11-25T00:00:01.100Z" and rec["recv_ts_utc"] == "2026-11-25T00:00:01.101Z"
    assert sync.snapshot_record() is None  # unchanged since the last record


def test_heartbeat_and_sequence_reset_are_not_gaps(synced) -> None:
    sync, _sink = synced
    sync.snapshot_record()
    assert sync.on_book(msg("update", 10, 10, ts=2_000), T0 + 2_000) is None  # heartbeat
    assert sync.snapshot_record() is None  # a heartbeat changes nothing
    assert sync.on_book(msg("update", 3, 10, asks=[["100.7", "1", "0", "1"]], ts=2_100), T0 + 2_100) is None  # reset
    assert sync.on_book(msg("update", 5, 3, ts=2_200, bids=[["99", "1", "0", "1"]]), T0 + 2_200) is None
    assert sync.in_sync and sync.gaps == 0 and sync.seq_id == 5


def test_gap_writes_flagged_marker_and_resubscribes(synced) -> None:
    sync, sink = synced
    assert sync.on_book(msg("update", 20, 15, bids=[["1", "1", "0", "1"]], ts=3_000), T0 + 3_000) is Resync.RESUBSCRIBE
    assert [e for e in sink.events if e["type"] == "gap"] == [
        {"instId": INST, "type": "gap", "expected": 10, "received": 15, "seqId": 20}]
    marker = sink.records[-1]
    assert marker["gap_detected"] is True and marker["seqId"] == 20
    assert marker["bids_top400"] == BIDS  # the last trusted book, not the gapped update
    assert not sync.in_sync and sync.snapshot_record() is None
    # Pushes of the old subscription are ignored until the new ack and snapshot.
    assert sync.on_book(msg("update", 21, 20, ts=3_100), T0 + 3_100) is None
    sync.subscribed()
    assert sync.on_book(msg("snapshot", 30, -1, BIDS, ASKS, ts=3_200), T0 + 3_200) is None
    assert sync.in_sync and sink.events[-1]["type"] == "resync_done" and sink.events[-1]["reason"] == "gap"


def test_checksum_mismatch_flags_and_resyncs_but_zero_is_absent(synced) -> None:
    sync, sink = synced
    assert sync.on_book(msg("update", 11, 10, asks=[["100.9", "1", "0", "1"]], checksum=0), T0 + 1) is None
    assert sync.on_book(msg("update", 12, 11, asks=[["101", "1", "0", "1"]], checksum=12345), T0 + 1) \
        is Resync.RESUBSCRIBE
    mismatch = next(e for e in sink.events if e["type"] == "checksum_mismatch")
    assert mismatch["expected"] == 12345 and mismatch["computed"] != 12345
    assert sink.records[-1]["checksum_ok"] is False and sink.records[-1]["checksum"] == 12345
    assert sync.checksum_failures == 1 and not sync.in_sync


def test_bad_level_resyncs(synced) -> None:
    sync, sink = synced
    assert sync.on_book(msg("update", 11, 10, bids=[["100.1", "-3", "0", "1"]]), T0 + 1) is Resync.RESUBSCRIBE
    assert "bad_frame" in sink.types() and not sync.in_sync


def test_rest_alignment_without_ws_snapshot() -> None:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    # No snapshot: updates arrive first and are buffered.
    assert sync.on_book(msg("update", 105, 100, bids=[["100.5", "4", "0", "1"]], ts=10), T0 + 10) is Resync.REST
    assert sync.on_book(msg("update", 108, 105, asks=[["100.6", "0", "0", "0"]], ts=20), T0 + 20) is None
    assert sync.on_book(msg("update", 110, 108, bids=[["100.45", "1", "0", "1"]], ts=30), T0 + 30) is None
    assert sync.state is State.ALIGNING
    # A REST snapshot older than the first buffered prevSeqId cannot be bridged: retry.
    assert sync.on_rest_snapshot(msg("snapshot", 90, -1, BIDS, ASKS, ts=5), T0 + 40) is Resync.REST
    # seqId 105: drop buffered seqId <= 105, apply 108 (prevSeqId 105 <= 105 < 108) and 110.
    assert sync.on_rest_snapshot(msg("snapshot", 105, -1, BIDS, ASKS, ts=12), T0 + 41) is None
    assert sync.in_sync and sync.seq_id == 110
    rec = as_written(sync.snapshot_record())
    assert rec["bids_top400"][:2] == [BIDS[0], ["100.45", "1", "0", "1"]]  # 105's change was in the snapshot
    assert rec["asks_top400"] == ASKS[1:]
    done = [e for e in sink.events if e["type"] == "resync_done"]
    assert done[-1]["how"] == "rest"


def test_rest_snapshot_ahead_of_buffer_bridges_next_update() -> None:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("update", 105, 100, ts=10), T0 + 10) is Resync.REST
    assert sync.on_rest_snapshot(msg("snapshot", 107, -1, BIDS, ASKS, ts=15), T0 + 15) is None
    assert sync.on_book(msg("update", 109, 106, bids=[["100.2", "1", "0", "1"]], ts=20), T0 + 20) is None  # straddles
    assert sync.on_book(msg("update", 111, 109, ts=30), T0 + 30) is None
    assert sync.in_sync and sync.gaps == 0
    assert sync.on_book(msg("update", 115, 112, ts=40), T0 + 40) is Resync.RESUBSCRIBE  # a real gap again


def test_repeated_rest_failure_falls_back_to_resubscribe() -> None:
    sync = InstrumentSync(INST, 400, ListSink())
    sync.subscribed()
    sync.on_book(msg("update", 5, 1), T0 + 1)
    results = [sync.rest_failed() for _ in range(10)]
    assert results[:-1] == [Resync.REST] * 9 and results[-1] is Resync.RESUBSCRIBE


def test_depth_limits_record_levels(synced) -> None:
    sync, _ = synced
    sync.depth = 1
    sync.changed = True
    rec = as_written(sync.snapshot_record())
    assert rec["bids_top400"] == BIDS[:1] and rec["asks_top400"] == ASKS[:1]


# -- frame decoding ---------------------------------------------------------------------------

def test_decode_kinds() -> None:
    assert isinstance(decode("pong"), Pong)
    ev = decode('{"event":"error","code":"60018","msg":"doesn\'t exist","arg":{"channel":"books","instId":"X-Y"}}')
    assert isinstance(ev, EventMessage) and ev.code == "60018" and ev.inst_id == "X-Y"
    frame = orjson.dumps({"arg": {"channel": "books", "instId": INST}, "action": "update", "extra": 1,
                          "data": [{"asks": [], "bids": [], "ts": "5", "checksum": 0, "seqId": 2,
                                    "prevSeqId": 1, "newField": "x"}]})
    (book,) = decode(frame)
    assert (book.seq_id, book.prev_seq_id, book.ts_ms) == (2, 1, 5)


@pytest.mark.parametrize(("raw", "kind"), [
    ('{"arg":{"channel":"books","instId":"A-B"},"action":"update","data":[{"asks":[],"bids":[]', "malformed_json"),
    ('[1,2]', "wrong_type"),
    ('{"arg":{"channel":"books","instId":"A-B"},"action":"update","data":[{"asks":[],"bids":[]}]}', "missing_field"),
    ('{"arg":{"channel":"books","instId":"A-B"},"action":"update","data":[{"asks":[],"bids":[],"ts":"x"}]}',
     "wrong_type"),
    ('{"arg":{"channel":"books","instId":"A-B"},"action":"partial","data":[]}', "unknown_action"),
    ('{"arg":{"channel":"trades","instId":"A-B"},"data":[]}', "unknown_channel"),
    ('{"arg":{"channel":"books","instId":"A-B"},"action":"update","data":[{"asks":[],"bids":[],"ts":"1",'
     '"seqId":2}]}', "missing_field"),
    ('{"hello":1}', "unknown_frame"),
])
def test_decode_rejects_bad_frames_with_a_kind(raw: str, kind: str) -> None:
    with pytest.raises(BadFrame) as info:
        decode(raw)
    assert info.value.kind == kind


def test_decode_rest_books() -> None:
    data = [{"asks": ASKS, "bids": BIDS, "ts": "9", "seqId": 77}]
    snap = decode_rest_books(data, INST)
    assert snap.is_snapshot and snap.seq_id == 77 and snap.bids == BIDS
    with pytest.raises(BadFrame, match="exactly one data element"):
        decode_rest_books([], INST)
    with pytest.raises(BadFrame, match="seqId"):
        decode_rest_books([{"asks": ASKS, "bids": BIDS, "ts": "9"}], INST)


def test_duplicate_snapshot_replaces_the_book_and_stays_in_sync(synced) -> None:
    sync, _sink = synced
    new_bids = [["99.9", "1", "0", "1"]]
    assert sync.on_book(msg("snapshot", 40, -1, new_bids, ASKS, ts=5_000), T0 + 5_000) is None
    assert sync.in_sync and sync.seq_id == 40 and as_lists(sync.book.bids.top(400)) == new_bids
    assert sync.on_book(msg("update", 41, 40, ts=5_100, asks=[["100.7", "1", "0", "1"]]), T0 + 5_100) is None
    assert sync.gaps == 0


def test_unknown_action_is_rejected_naming_the_instrument() -> None:
    with pytest.raises(BadFrame) as info:
        decode('{"arg":{"channel":"books","instId":"A-B"},"action":"delete","data":[]}')
    assert info.value.kind == "unknown_action" and info.value.inst_id == "A-B"


def test_rest_alignment_across_a_sequence_reset_with_repeated_seq_ids() -> None:
    """After a reset seqIds repeat: a snapshot that fits two places holding different books is not
    guessed (fetch again); the next, unambiguous snapshot aligns."""
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("update", 2, 1, bids=[["99", "1", "0", "1"]], ts=10), T0 + 10) is Resync.REST
    reset = msg("update", 1, 2, bids=[["99", "0", "0", "0"], ["98", "1", "0", "1"]], ts=20)
    assert sync.on_book(reset, T0 + 20) is None
    # seqId 1 is both the state before the first update and the state after the reset.
    assert sync.on_rest_snapshot(msg("snapshot", 1, -1, BIDS, ASKS, ts=20), T0 + 25) is Resync.REST
    assert sync.on_book(msg("update", 3, 1, bids=[["97", "1", "0", "1"]], ts=30), T0 + 30) is None
    snapshot_bids = [*BIDS, ["98", "1", "0", "1"], ["97", "1", "0", "1"]]
    assert sync.on_rest_snapshot(msg("snapshot", 3, -1, snapshot_bids, ASKS, ts=31), T0 + 35) is None
    assert sync.in_sync and sync.seq_id == 3 and sync.ts_ms == T0 + 30  # stamped by the WS update, not REST
    assert sync.on_book(msg("update", 4, 3, bids=[["96", "1", "0", "1"]], ts=40), T0 + 40) is None
    assert sync.gaps == 0 and as_lists(sync.book.bids.top(400)) == [*snapshot_bids, ["96", "1", "0", "1"]]


def test_event_time_breaks_a_tie_only_between_equal_books() -> None:
    """Two places fit, but the later one holds an update stamped after the snapshot: only the
    earlier one is possible."""
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("update", 2, 1, bids=[["99", "1", "0", "1"]], ts=10), T0 + 10) is Resync.REST
    assert sync.on_book(msg("update", 1, 2, bids=[["98", "1", "0", "1"]], ts=500), T0 + 500) is None  # reset
    assert sync.on_rest_snapshot(msg("snapshot", 1, -1, BIDS, ASKS, ts=200), T0 + 505) is None
    assert sync.in_sync and sync.seq_id == 1 and sync.ts_ms == T0 + 500
    assert as_lists(sync.book.bids.top(400))[-2:] == [["99", "1", "0", "1"], ["98", "1", "0", "1"]]


@pytest.mark.parametrize("skew_ms", [0, 1, 150, 499, 500])
def test_rest_snapshot_stamped_late_still_aligns_by_seq_id(skew_ms: int) -> None:
    """OKX may stamp a REST snapshot later than the last update it holds (cache, response time):
    seqId decides; the REST ts never stamps a record."""
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    updates = [msg("update", 100 + 3 * k, 97 + 3 * k, bids=[[f"{90 + k}", "1", "0", "1"]], ts=100 * k)
               for k in range(1, 8)]
    assert sync.on_book(updates[0], T0 + 100) is Resync.REST
    for u in updates[1:]:
        assert sync.on_book(u, u.ts_ms) is None
    # The snapshot holds updates[:3] (seqId 106, event time 300) but says ts = 300 + skew.
    held = [list(lvl) for u in updates[:3] for lvl in u.bids]
    assert sync.on_rest_snapshot(msg("snapshot", 106, -1, [*BIDS, *held], ASKS, ts=300 + skew_ms), T0 + 900) is None
    assert sync.in_sync and sync.seq_id == updates[-1].seq_id and sync.ts_ms == updates[-1].ts_ms
    assert [lvl[0] for lvl in as_lists(sync.book.bids.top(400))][3:] == ["97", "96", "95", "94", "93", "92", "91"]
    assert sink.events[-1] == {"instId": INST, "type": "resync_done", "how": "rest", "seqId": 106,
                               "reason": "no_ws_snapshot", "attempts": 1}


def test_rest_snapshot_holding_every_buffered_update_takes_the_last_update_stamp() -> None:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("update", 12, 10, bids=[["99", "1", "0", "1"]], ts=100), T0 + 101) is Resync.REST
    assert sync.on_rest_snapshot(msg("snapshot", 12, -1, BIDS, ASKS, ts=450), T0 + 460) is None
    record = as_written(sync.snapshot_record())
    assert record["seqId"] == 12 and record["prevSeqId"] == 10
    assert record["timestamp_utc"] == "2026-11-25T00:00:00.100Z" and record["recv_ts_utc"] == "2026-11-25T00:00:00.101Z"


def test_rest_snapshot_ahead_waits_for_its_successor_then_gives_up() -> None:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("update", 105, 100, ts=10), T0 + 10) is Resync.REST
    assert sync.on_rest_snapshot(msg("snapshot", 900, -1, BIDS, ASKS, ts=15), T0 + 15) is None  # ahead: wait
    results = [sync.on_book(msg("update", 106 + k, 105 + k, ts=20 + k), T0 + 20 + k) for k in range(60)]
    assert results[:49] == [None] * 49 and results[49] is Resync.REST  # ~5 s without its successor: refetch
    assert sync.state is State.ALIGNING


def test_straddling_first_update_after_an_old_snapshot_is_not_trusted() -> None:
    sink = ListSink()
    sync = InstrumentSync(INST, 400, sink)
    sync.subscribed()
    assert sync.on_book(msg("update", 6, 1, ts=50), T0 + 50) is Resync.REST  # seqIds restarted at 1
    # A snapshot from before the reset, seqId 4: 1 <= 4 < 6 looks like a straddle but is not.
    assert sync.on_rest_snapshot(msg("snapshot", 4, -1, BIDS, ASKS, ts=30), T0 + 55) is Resync.REST
    assert sync.state is State.ALIGNING


@pytest.mark.parametrize("bad_ts", [(T0 + 1_000) * 1000, (T0 + 1_000) // 1000, T0 + 2 * 86_400_000, 0])
def test_implausible_ts_is_a_bad_frame_that_resyncs_and_never_stamps_a_record(synced, bad_ts: int) -> None:
    sync, sink = synced
    sync.snapshot_record()
    bad = BookMessage(INST, "update", [["100.3", "1", "0", "1"]], [], bad_ts, 0, 11, 10)
    assert sync.on_book(bad, T0 + 1_001) is Resync.RESUBSCRIBE
    assert not sync.in_sync and sync.bad_ts == 1
    assert [e["kind"] for e in sink.events if e["type"] == "bad_frame"] == ["bad_ts"]
    assert sink.events[-1]["type"] == "resync_start" and sink.events[-1]["reason"] == "bad_ts"
    assert sync.snapshot_record() is None and not sink.records
    sync.subscribed()
    assert sync.on_book(msg("snapshot", 20, -1, BIDS, ASKS, ts=1_100), T0 + 1_100) is None
    assert sync.snapshot_record()["timestamp_utc"] == "2026-11-25T00:00:01.100Z"

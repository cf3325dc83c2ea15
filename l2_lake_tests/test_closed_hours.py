"""A closed hour is immutable (issue: lake integrity, item 1): a tape line without exchange time never
reopens an hour that may be closed, and an archive is only ever replaced by a verified archive of a
superset of its content ("differs" is not "damaged"). On a local lake; the bucket's steps run the
same `archive_hour` in their workspace (test_pipeline_object_lake, test_tape_assets)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from l2_lake.book.engine import InstrumentSync
from l2_lake.book.tape import LATE_AFTER_MS, TapeRecorder
from l2_lake.format import layout
from l2_lake.format.hour_content import content_of
from l2_lake.tiers.archive import archive_hour

BTC = "BTC-USDT-SWAP"
H0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
H0_MS = int(H0.timestamp() * 1000)


class Collect:
    """Engine and tape sink: the tape's lines by (instId, hour)."""

    def __init__(self) -> None:
        self.tape_lines: dict[datetime, list[dict[str, Any]]] = {}

    def event(self, inst_id: str, event_type: str, **details: Any) -> None: ...

    def record(self, inst_id: str, ts_ms: int, record: dict[str, Any]) -> None: ...

    def tape(self, inst_id: str, hour: datetime, lines: bytes) -> None:
        self.tape_lines.setdefault(hour, []).extend(orjson.loads(line) for line in lines.splitlines())


def frame(ts_ms: int) -> bytes:
    return orjson.dumps({"arg": {"channel": "books", "instId": BTC}, "action": "update",
                         "data": [{"asks": [], "bids": [], "ts": str(ts_ms), "checksum": 0, "seqId": 2,
                                   "prevSeqId": 1}]})


def test_a_late_marker_opens_the_local_clocks_hour_not_the_closed_one() -> None:
    sink = Collect()
    clock = [H0_MS + 10_000]
    recorder = TapeRecorder(sink, clock_ms=lambda: clock[0])
    sync = InstrumentSync(BTC, 400, sink)
    recorder.frame(sync, frame(H0_MS + 9_000), H0_MS + 10_000, H0_MS + 9_000)
    clock[0] = H0_MS + layout.HOUR_MS + LATE_AFTER_MS // 2  # just after the hour: still its line
    recorder.marker(sync, "drop", reason="stale")
    clock[0] = H0_MS + 3 * layout.HOUR_MS + 5 * 60_000  # a long outage later: a delisted instrument's retry
    recorder.marker(sync, "drop", reason="retry")
    recorder.marker(sync, "sub")
    assert sorted(sink.tape_lines) == [H0, H0 + timedelta(hours=3)]
    assert [line["t"] for line in sink.tape_lines[H0]] == ["book", "ws", "drop"]
    late = sink.tape_lines[H0 + timedelta(hours=3)]
    assert [line["t"] for line in late] == ["book", "drop", "sub"]  # opens with the state: replays on its own


def test_hours_are_judged_by_the_exchanges_clock_not_the_local_one() -> None:
    """A feed whose exchange time runs 3 h behind the local clock (a replayed recording, the simulator
    started in the past) keeps its markers in the hour of its frames."""
    sink = Collect()
    lag = 3 * layout.HOUR_MS
    clock = [H0_MS + lag + 10_000]
    recorder = TapeRecorder(sink, clock_ms=lambda: clock[0])
    sync = InstrumentSync(BTC, 400, sink)
    recorder.frame(sync, frame(H0_MS + 10_000), clock[0], H0_MS + 10_000)
    clock[0] += 30 * 60_000
    recorder.marker(sync, "tick")
    assert sorted(sink.tape_lines) == [H0]
    assert [line["t"] for line in sink.tape_lines[H0]] == ["book", "ws", "tick"]


def records(n: int, start: int = 0) -> bytes:
    return b"".join(orjson.dumps({"instId": BTC, "n": i}) + b"\n" for i in range(start, start + n))


@pytest.fixture
def archived_hour(tmp_path):
    original = layout.records_path(tmp_path, BTC, H0)
    original.parent.mkdir(parents=True)
    original.write_bytes(records(100))
    assert archive_hour(tmp_path, BTC, H0, H0 + timedelta(hours=7)).status == "archived"
    return tmp_path


def archive_content(root) -> bytes:
    archive = layout.archive_path(root, BTC, H0)
    return content_of(archive.read_bytes(), archive.name)


def test_late_lines_beside_an_archive_are_added_never_swapped_in(archived_hour) -> None:
    root = archived_hour
    layout.records_path(root, BTC, H0).write_bytes(records(3, start=500))  # lines that came back later
    result = archive_hour(root, BTC, H0, H0 + timedelta(hours=8))
    assert result.status == "archived" and result.lines == 103
    assert archive_content(root) == records(100) + records(3, start=500)
    assert not layout.records_path(root, BTC, H0).exists()


def test_lines_the_archive_already_holds_are_just_removed(archived_hour) -> None:
    root = archived_hour
    layout.records_path(root, BTC, H0).write_bytes(records(10, start=90))  # the hour's tail, again
    assert archive_hour(root, BTC, H0, H0 + timedelta(hours=8)).status == "already_archived"
    assert archive_content(root) == records(100)
    assert not layout.records_path(root, BTC, H0).exists()


def test_only_an_archive_that_does_not_decode_is_rebuilt_from_the_original(archived_hour) -> None:
    root = archived_hour
    layout.archive_path(root, BTC, H0).write_bytes(gzip.compress(records(100))[:-20])  # cut short
    layout.records_path(root, BTC, H0).write_bytes(records(100))
    assert archive_hour(root, BTC, H0, H0 + timedelta(hours=8)).status == "archived"
    assert archive_content(root) == records(100)

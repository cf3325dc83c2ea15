"""A replica re-merge never shrinks the canonical events file (issue: lake integrity, item 6): after one
replica's events file disappears, the merge stops with an error naming the replica whose lines would
be lost, and the canonical file keeps every line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from l2_lake.format import layout
from l2_lake.tiers.replicas import ReplicaDataLost, merge_hour
from l2_pipeline_tests.lake_factory import BASE_HOUR, BTC, event, make_records, write_hour

NOW = BASE_HOUR + timedelta(hours=2)


def test_a_re_merge_that_would_lose_event_lines_stops_naming_the_replica(tmp_path: Path) -> None:
    replicas = {"a": tmp_path / "spool-a", "b": tmp_path / "spool-b"}
    lake = tmp_path / "lake"
    records = make_records(BTC, BASE_HOUR, count=20)
    write_hour(replicas["a"], BTC, BASE_HOUR, records,
               events=[event(BTC, "gap", BASE_HOUR + timedelta(seconds=10), expected=1, received=0, seqId=5)])
    write_hour(replicas["b"], BTC, BASE_HOUR, records,
               events=[event(BTC, "reconnect", BASE_HOUR + timedelta(seconds=20), reason="closed", attempt=1,
                             delay_s=0.2)])
    assert merge_hour(replicas, lake, BTC, BASE_HOUR, now=NOW).status == "merged"
    canonical = layout.events_path(lake, BTC, BASE_HOUR)
    held = canonical.read_bytes()
    assert held.count(b"\n") == 2

    layout.events_path(replicas["b"], BTC, BASE_HOUR).unlink()  # a spool cleaned since the last merge
    with pytest.raises(ReplicaDataLost, match=r"1 event line\(s\).*replica\(s\) b"):
        merge_hour(replicas, lake, BTC, BASE_HOUR, now=NOW)
    assert canonical.read_bytes() == held

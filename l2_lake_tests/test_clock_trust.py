"""Compression and retention never trust a pipeline clock that runs ahead of the lake (issue: lake
integrity, item 11). Retention, five days ahead, deletes nothing newer than the lake's newest data
less the retention, and says so as an error (on a local lake and in a bucket: moto's S3 server as a
process on loopback). Compression, hours ahead, never archives an hour whose file a live collector
holds: its writer's lock says so, whatever the clocks say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector_tests.s3_server import S3Server, s3_env
from l2_lake.format import layout
from l2_lake.store.home import LocalHome
from l2_lake.store.hour_files import LakeWriter
from l2_lake.store.s3 import LakeUrl, S3Store
from l2_lake.store.tree import LocalTree, ObjectTree, hour_paths
from l2_lake.tiers.archive import archive_hour
from l2_lake.tiers.retention import plan_deletions
from l2_lake.tiers.selection import lake_time

BTC = "BTC-USDT-SWAP"
NOW = datetime(2026, 12, 6, 5, 20, tzinfo=UTC)
LIVE_HOURS = [layout.hour_floor(int((NOW - timedelta(hours=h)).timestamp() * 1000)) for h in range(6 * 24)]
RETENTION = timedelta(days=5)


@pytest.fixture(params=["local", "bucket"])
def tree(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Six days of hours, up to the hour collectors are writing now."""
    if request.param == "local":
        home, tree = LocalHome(tmp_path / "lake"), LocalTree(tmp_path / "lake")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        s3_env(monkeypatch, server.endpoint)
        home = S3Store(LakeUrl(server.create_bucket(), "lake"))
        tree = ObjectTree(home, tmp_path / "work")
    for hour in LIVE_HOURS:
        home.write_verified(hour_paths(Path(""), BTC, hour)["records"].as_posix(), b"{}\n", {}, "application/x-ndjson")
    return tree


def test_a_clock_five_days_ahead_deletes_no_live_hour(tree) -> None:
    reports: list[str] = []
    honest = plan_deletions(tree, NOW, RETENTION, None, report=reports.append)
    assert {c.hour for c in honest} == {h for h in LIVE_HOURS if h + layout.HOUR <= NOW - RETENTION}
    assert reports == []
    ahead = plan_deletions(tree, NOW + timedelta(days=5), RETENTION, None, report=reports.append)
    newest_end = LIVE_HOURS[0] + layout.HOUR  # as of the lake's newest data, not the clock
    assert {c.hour for c in ahead} == {h for h in LIVE_HOURS if h + layout.HOUR <= newest_end - RETENTION}
    assert len(ahead) <= len(honest) + 1  # at most the hour the open one's end adds
    assert len(reports) == 1 and "ahead of the newest data in the lake" in reports[0]


def test_the_lake_time_is_the_clock_within_an_hour(tree) -> None:
    assert lake_time(tree, NOW + timedelta(minutes=50), report=pytest.fail) == NOW + timedelta(minutes=50)


def test_a_clock_hours_ahead_never_archives_the_hour_a_collector_holds(tmp_path: Path) -> None:
    hour = layout.hour_floor(int(NOW.timestamp() * 1000))
    writer = LakeWriter(tmp_path, clock_ms=lambda: int(NOW.timestamp() * 1000))
    writer.record(BTC, int(NOW.timestamp() * 1000), {"action": "snapshot"})
    records = layout.records_path(tmp_path, BTC, hour)
    held = records.read_bytes()

    seven_hours_ahead = NOW + timedelta(hours=7)
    assert archive_hour(tmp_path, BTC, hour, seven_hours_ahead).status == "busy"
    assert records.read_bytes() == held and not layout.archive_of(records).exists()

    writer.close()  # the hour ended and went quiet: the collector let it go
    assert archive_hour(tmp_path, BTC, hour, seven_hours_ahead).status == "archived"

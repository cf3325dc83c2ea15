"""Keys from a bucket's listing are untrusted input (issue: lake integrity): a key with `..` never
becomes a local path outside a step's workspace, and a key that is not exactly the layout's path of
an hour is skipped and reported once, never ending an instrument's listing. Against moto's S3
server as a process on loopback, and a local lake for comparison."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector_tests.s3_server import S3Server, s3_env
from l2_lake.format import layout
from l2_lake.store.s3 import LakeUrl, S3Store
from l2_lake.store.tree import LocalTree, ObjectTree, hour_paths

BTC = "BTC-USDT-SWAP"
H0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
HOURS = [H0 + timedelta(hours=i) for i in range(3)]
# sorts before every day directory of BTC, and names BTC and an hour far beyond any `until`
SHADOW = f"raw/okx/l2_perps/{BTC}/0/{BTC}/2099-01-01/00.jsonl"
ESCAPING = "meta/okx/instruments/../../../../dagster.yaml"
NOT_LAYOUT = ("meta/okx/instruments/sub/BTC-USDT-SWAP.json", "meta/okx/instruments/notes.txt", "meta/x.json")


def hour_key(hour: datetime) -> str:
    return hour_paths(Path(""), BTC, hour)["records"].as_posix()


@pytest.fixture
def bucket_tree(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ObjectTree:
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    for key in [*map(hour_key, HOURS), SHADOW, ESCAPING, *NOT_LAYOUT, f"{layout.META_PREFIX.as_posix()}/{BTC}.json"]:
        client.put_object(Bucket=bucket, Key=f"lake/{key}", Body=b'{"instId":"BTC-USDT-SWAP"}\n')
    return ObjectTree(S3Store(LakeUrl(bucket, "lake")), tmp_path / "work")


def test_a_foreign_key_does_not_end_an_instruments_listing(bucket_tree: ObjectTree,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="l2_lake.store.tree"):
        assert sorted(bucket_tree.hour_files(BTC, until=HOURS[-1])) == HOURS
        assert sorted(bucket_tree.hour_files(BTC, until=HOURS[-1])) == HOURS
    reports = [r for r in caplog.records if getattr(r, "event", "") == "foreign_key"]
    assert [r.key for r in reports] == [SHADOW]  # reported once, left in the bucket
    assert bucket_tree.first_hour() == HOURS[0]


def test_a_key_with_dots_never_leaves_the_workspace(bucket_tree: ObjectTree, tmp_path: Path) -> None:
    with bucket_tree.files_workspace(layout.META_PREFIX) as root:
        staged = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert staged == [f"{layout.META_PREFIX.as_posix()}/{BTC}.json"], "only the layout's names are staged"
    assert {k for k in NOT_LAYOUT if k.startswith(layout.META_PREFIX.as_posix())} <= bucket_tree.foreign_keys
    assert not (tmp_path / "dagster.yaml").exists() and not (tmp_path / "work" / "dagster.yaml").exists()
    assert bucket_tree.store.skipped_keys >= 1


def test_a_local_lake_ignores_the_same_shadow_directory(tmp_path: Path) -> None:
    for key in [*map(hour_key, HOURS), SHADOW]:
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}\n")
    assert sorted(LocalTree(tmp_path).hour_files(BTC, until=HOURS[-1])) == HOURS

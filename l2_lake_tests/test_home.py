"""The lake's one storage interface (`l2_lake.store.home.Home`) keeps the same contract in a directory
(`LocalHome`) and in a bucket (`S3Store`, against moto's S3 server as a process on loopback): list,
stat, read, write-verified, delete-if-unchanged, and keys validated at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector_tests.s3_server import S3Server, s3_env
from l2_lake.store.home import BadKey, Home, LocalHome, validate_key
from l2_lake.store.s3 import LakeUrl, S3Store

HOUR_KEY = "raw/okx/l2_perps/BTC-USDT-SWAP/2026-11-20/13.jsonl.gz"
EVENTS_KEY = "raw/okx/l2_perps/BTC-USDT-SWAP/2026-11-20/13.events.jsonl"
NEXT_KEY = "raw/okx/l2_perps/BTC-USDT-SWAP/2026-11-20/14.jsonl"


@pytest.fixture(params=["local", "bucket"])
def home(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    if request.param == "local":
        yield LocalHome(tmp_path / "lake")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    s3_env(monkeypatch, server.endpoint)
    yield S3Store(LakeUrl(server.create_bucket(), "lake"))


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../dagster.yaml", "raw/../../x", "raw//x", "raw/./x",
                                 "raw\\x", "raw/x\0"])
def test_a_key_that_leaves_the_lake_is_refused(key: str) -> None:
    with pytest.raises(BadKey, match="is not a lake key"):
        validate_key(key)


def test_keys_are_validated_by_every_operation(home: Home, tmp_path: Path) -> None:
    for call in (lambda: home.read("../x"), lambda: home.stat("a/../../x"),
                 lambda: home.write_verified("../dagster.yaml", b"x", {}, "text/plain"),
                 lambda: home.delete_if_unchanged("/abs", "v"), lambda: home.download("a/../b", tmp_path / "t")):
        with pytest.raises(BadKey):
            call()


def test_write_verified_then_list_stat_read(home: Home) -> None:
    sha = home.write_verified(HOUR_KEY, b"a\nb\n", {"lines": "2"}, "application/gzip")
    home.write_verified(EVENTS_KEY, b"e\n", {}, "application/x-ndjson")
    home.write_verified(NEXT_KEY, b"c\n", {}, "application/x-ndjson")
    assert home.read(HOUR_KEY) == b"a\nb\n" and home.read("raw/okx/none") is None
    assert home.read_digest(HOUR_KEY)[:2] == (sha, 4)
    entry = home.stat(HOUR_KEY)
    assert entry is not None and entry.size == 4 and entry.version
    assert home.stat("raw/okx/none") is None
    assert home.list_dirs("raw/okx/l2_perps") == ["BTC-USDT-SWAP"]
    assert home.list_dirs("curated") == []
    day = "raw/okx/l2_perps/BTC-USDT-SWAP/2026-11-20/"
    assert [e.key for e in home.list(day)] == [EVENTS_KEY, HOUR_KEY, NEXT_KEY]
    assert [e.key for e in home.list(day + "13.")] == [EVENTS_KEY, HOUR_KEY]  # a key prefix, not only a directory
    assert [e.key for e in home.list(day, start_after=day + "13.~")] == [NEXT_KEY]


def test_delete_if_unchanged_keeps_a_version_written_since_it_was_read(home: Home) -> None:
    home.write_verified(NEXT_KEY, b"one\n", {}, "application/x-ndjson")
    seen = home.stat(NEXT_KEY)
    assert seen is not None
    home.write_verified(NEXT_KEY, b"one\ntwo, a late line\n", {}, "application/x-ndjson")
    assert home.delete_if_unchanged(NEXT_KEY, seen.version) is False
    assert home.read(NEXT_KEY) == b"one\ntwo, a late line\n"
    current = home.stat(NEXT_KEY)
    assert current is not None and home.delete_if_unchanged(NEXT_KEY, current.version) is True
    assert home.read(NEXT_KEY) is None
    assert home.delete_if_unchanged(NEXT_KEY, current.version) is False  # already gone


def test_a_foreign_key_in_a_bucket_listing_is_skipped_not_followed(s3_server: S3Server,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch, s3_server.endpoint)
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    for key in ("lake/meta/okx/instruments/BTC-USDT-SWAP.json", "lake/meta/okx/instruments/../../../dagster.yaml",
                "lake/meta/okx/instruments//x.json"):
        client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    store = S3Store(LakeUrl(bucket, "lake"))
    assert [e.key for e in store.list("meta/okx/instruments/")] == ["meta/okx/instruments/BTC-USDT-SWAP.json"]
    assert store.skipped_keys == 2


def test_a_local_home_lists_no_hidden_or_unsafe_names(tmp_path: Path) -> None:
    day = tmp_path / "raw" / "d"
    day.mkdir(parents=True)
    (day / "13.jsonl").write_bytes(b"x\n")
    (day / ".13.jsonl.tmp").write_bytes(b"half")  # an atomic write in progress
    (day / "back\\slash").write_bytes(b"?")
    home = LocalHome(tmp_path)
    assert [e.key for e in home.list("raw/")] == ["raw/d/13.jsonl"]
    assert home.skipped_keys == 1

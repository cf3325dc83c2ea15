"""Instrument metadata is shared by the pipeline and the collectors (issue: lake integrity, class 5).

Against the real S3 server: the pipeline's refresh (`refresh_instruments` in an `ObjectTree` files
workspace, as the `instrument_metadata` asset runs it) and collectors with and without an id write the
same `meta/` objects. None refuses the other, the object keeps the instrument fetched last, and the
history object keeps every line any of them wrote, once each.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from collector.ship import Shipper
from collector_tests.s3_server import S3Server, s3_env
from l2_lake.format import layout
from l2_lake.format.record import format_ts_ms
from l2_lake.store import instrument_meta
from l2_lake.store.home import ABSENT, Changed
from l2_lake.store.s3 import S3Store, parse_lake_url
from l2_lake.store.tree import ObjectTree
from l2_lake.tiers.instruments import refresh_instruments

BTC = "BTC-USDT-SWAP"
T0 = 1_795_000_000_000
JSON_KEY = f"{layout.META_PREFIX.as_posix()}/{BTC}.json"
HISTORY_KEY = f"{layout.META_PREFIX.as_posix()}/{BTC}.history.jsonl"


def instrument(tick: str) -> dict[str, str]:
    return {"instId": BTC, "instType": "SWAP", "tickSz": tick, "ctVal": "0.01"}


def collector_fetch(spool: Path, tick: str, at_ms: int) -> None:
    instrument_meta.store_instrument(spool, instrument(tick), at_ms)


def pipeline_fetch(tree: ObjectTree, tick: str, at_ms: int) -> None:
    with tree.files_workspace(layout.META_PREFIX) as root:
        refresh_instruments(root, [BTC], {BTC: instrument(tick)}, at_ms)


def history(store: S3Store) -> list[tuple[str, str]]:
    raw = store.read(HISTORY_KEY) or b""
    return [(o["tickSz"], o["fetched_at"]) for o in map(orjson.loads, raw.splitlines())]


@pytest.fixture
def lake(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server, tmp_path: Path) -> tuple[str, ObjectTree]:
    s3_env(monkeypatch, s3_server.endpoint)
    url = f"s3://{s3_server.create_bucket()}/lake"
    return url, ObjectTree(S3Store(parse_lake_url(url)), tmp_path / "work")


@pytest.mark.parametrize("collector_id", ["host-a", ""])
def test_pipeline_and_collector_merge_metadata_instead_of_fighting(
        tmp_path: Path, lake: tuple[str, ObjectTree], collector_id: str) -> None:
    url, tree = lake
    spool = tmp_path / "spool"
    collector = Shipper(spool, url, collector_id=collector_id)
    collector_fetch(spool, "0.1", T0)
    collector.ship_once(T0)
    pipeline_fetch(tree, "0.1", T0 + 1000)  # the same object, fetched later: no history line
    pipeline_fetch(tree, "0.2", T0 + 2000)  # a tick size change seen by the pipeline first
    collector_fetch(spool, "0.2", T0 + 3000)  # ... and by the collector a second later
    collector_fetch(spool, "0.5", T0 + 4000)
    collector.ship_once(T0 + 5000)

    assert collector.backlog.stuck == (), "the pipeline's objects are not another writer's hours"
    store = tree.store
    assert history(store) == [("0.1", format_ts_ms(T0)), ("0.2", format_ts_ms(T0 + 2000)),
                              ("0.2", format_ts_ms(T0 + 3000)), ("0.5", format_ts_ms(T0 + 4000))]
    assert orjson.loads(store.read(JSON_KEY))["tickSz"] == "0.5"

    pipeline_fetch(tree, "0.5", T0 + 6000)  # the pipeline's refresh keeps the collector's lines
    collector.ship_once(T0 + 7000)  # and an unchanged spool ships nothing over the newer object
    assert [tick for tick, _ in history(store)] == ["0.1", "0.2", "0.2", "0.5"]
    assert orjson.loads(store.read(JSON_KEY))["fetched_at"] == format_ts_ms(T0 + 6000)


def test_an_older_fetch_never_replaces_a_newer_object(tmp_path: Path, lake: tuple[str, ObjectTree]) -> None:
    url, tree = lake
    pipeline_fetch(tree, "0.5", T0 + 10_000)
    spool = tmp_path / "spool"
    collector_fetch(spool, "0.1", T0)  # a collector that fetched before the pipeline but ships after
    Shipper(spool, url, collector_id="host-a").ship_once(T0 + 20_000)
    assert orjson.loads(tree.store.read(JSON_KEY))["tickSz"] == "0.5"
    assert [tick for tick, _ in history(tree.store)] == ["0.1", "0.5"], "its history line is still kept"


def test_a_conditional_write_never_overwrites_another_writers_object(lake: tuple[str, ObjectTree]) -> None:
    _, tree = lake
    store = tree.store
    store.write_verified(HISTORY_KEY, b"a\n", {}, "application/x-ndjson", expect=ABSENT)
    seen = store.stat(HISTORY_KEY)
    with pytest.raises(Changed):
        store.write_verified(HISTORY_KEY, b"b\n", {}, "application/x-ndjson", expect=ABSENT)
    store.write_verified(HISTORY_KEY, b"a\nc\n", {}, "application/x-ndjson", expect=seen.version)  # another writer
    with pytest.raises(Changed):
        store.write_verified(HISTORY_KEY, b"a\nd\n", {}, "application/x-ndjson", expect=seen.version)
    assert store.read(HISTORY_KEY) == b"a\nc\n"


def test_merged_history_is_a_union_in_time_order() -> None:
    a = b'{"fetched_at":"2026-01-01T00:00:02.000Z","x":1}\n{"fetched_at":"2026-01-01T00:00:00.000Z","x":0}\n'
    b = b'{"fetched_at":"2026-01-01T00:00:01.000Z","x":9}\n{"fetched_at":"2026-01-01T00:00:02.000Z","x":1}\n{"torn'
    merged = instrument_meta.merged_history(a, b)
    assert merged == instrument_meta.merged_history(b, a) == instrument_meta.merged_history(merged, b)
    assert [orjson.loads(line)["x"] for line in merged.splitlines()] == [0, 9, 1]

"""A `FeedConnection` against the simulator served on loopback in the same event loop: the OKX
subscribe budget and a runtime delisting (60018), which need a connection's inner state to test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from collector import feed as feed_module
from collector.config import CollectorConfig
from collector.feed import ConnectionPacer, FeedConnection, SubscribeBudget
from collector.simulator.server import SimConfig, running_simulator
from l2_lake.book.engine import InstrumentSync
from l2_lake.venues.okx import OKX
from l2_lake.venues.rest import RestClient
from l2_lake_tests.test_engine import ListSink

BTC = "BTC-USDT-SWAP"


def test_subscribe_budget_counts_a_sliding_hour() -> None:
    budget = SubscribeBudget(limit=3, window_s=3600)
    assert budget.spend(2, now=0.0) and not budget.spend(2, now=10.0) and budget.spend(1, now=10.0)
    assert budget.used(now=3599.0) == 3 and budget.used(now=3600.5) == 1 and budget.spend(2, now=3600.5)


async def _run_feed(tmp_path: Path, sim_instruments: tuple[str, ...], wanted: str, seconds: float,
                    limit: int | None = None, faults: list[str] = ()) -> tuple[ListSink, InstrumentSync, list[Any]]:
    async with running_simulator(SimConfig(instruments=sim_instruments, interval_ms=50)) as sim:
        cfg = CollectorConfig(data_dir=tmp_path, instruments=(wanted,), ws_url=sim.ws_url, rest_url=sim.rest_url,
                              resync_timeout=1.0, backoff_initial=0.1, backoff_max=0.2)
        sink = ListSink()
        sync = InstrumentSync(wanted, 400, sink)
        rejected: list[Any] = []

        def on_unknown(inst_id: str, _detail: str) -> bool:
            rejected.append(inst_id)
            return False  # not at start-up: a delisting, the feed keeps trying

        feed = FeedConnection("conn0", cfg, {wanted: sync}, RestClient(OKX, cfg.rest_url, 5), on_unknown,
                              ConnectionPacer(OKX.connections_per_second))
        if limit is not None:
            feed.subscribe_limit = limit
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(1.0)
        for fault in faults:
            sim.inject(fault, wanted)
            await asyncio.sleep(0.5)
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return sink, sync, rejected


def test_spent_subscribe_budget_moves_instruments_to_a_new_connection(tmp_path: Path) -> None:
    """Each gap costs an unsubscribe + subscribe; with room for two resyncs the third reconnects."""
    sink, sync, _ = asyncio.run(_run_feed(tmp_path, (BTC,), BTC, 1.5, limit=5, faults=["drop"] * 3))
    budget = [e for e in sink.events if e["type"] == "subscribe_budget"]
    assert len(budget) == 1 and budget[0]["used"] == 5 and budget[0]["action"] == "reconnect"
    assert [e["reason"] for e in sink.events if e["type"] == "reconnect"] == ["subscribe_budget"]
    assert sync.in_sync and sink.types().count("gap") == 3


def test_runtime_60018_is_retried_slowly_and_shown_as_delisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "DELISTED_RETRY_S", 1.0)
    sink, sync, rejected = asyncio.run(_run_feed(tmp_path, (BTC,), "ETH-USDT-SWAP", 2.5))
    assert sync.delisted and not sync.in_sync and rejected[:1] == ["ETH-USDT-SWAP"]
    errors = [e for e in sink.events if e["type"] == "error"]
    assert len(errors) >= 2 and {e["code"] for e in errors} == {"60018"}  # asked again, still rejected
    assert {e["reason"] for e in sink.events if e["type"] == "stale"} == {"delisted_retry"}

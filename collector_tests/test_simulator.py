"""Tests of the OKX-protocol simulator: the book model, fault specs, and a real loopback server.

The simulator is the collector's oracle, so these tests check it against a tiny reference book
written here (price → level, size "0" deletes), never against l2_lake.book.order_book.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from collector.simulator.faults import FAULT_NAMES, parse_faults
from collector.simulator.instruments import instrument_spec
from collector.simulator.market import MarketBook, SyntheticClock, dump_frames, format_scaled, parse_scaled
from collector.simulator.server import SimConfig, running_simulator
from collector.simulator.truth import book_digest
from l2_lake.venues.okx.checksum import okx_checksum

BTC, ETH = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
PLAIN_DECIMAL = re.compile(r"^(0|[1-9]\d*)(\.\d*[1-9])?$")
ROOT = Path(__file__).resolve().parents[1]


# ---- a reference book, independent of the simulator and of l2_lake.book.order_book


class RefBook:
    def __init__(self) -> None:
        self.bids: dict[str, list[str]] = {}
        self.asks: dict[str, list[str]] = {}
        self.seq_id: int | None = None

    def apply(self, data: dict[str, Any], snapshot: bool = False) -> None:
        if snapshot:
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for level in levels:
                if level[1] == "0":
                    assert level[0] in side, f"deletion of unknown level {level}"
                    del side[level[0]]
                else:
                    side[level[0]] = level
        self.seq_id = data["seqId"]

    def sorted(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.values(), key=lambda lv: Decimal(lv[0]), reverse=True)
        asks = sorted(self.asks.values(), key=lambda lv: Decimal(lv[0]))
        return bids, asks

    def check(self, data: dict[str, Any], checksum_required: bool = True) -> None:
        bids, asks = self.sorted()
        assert len(bids) <= 400 and len(asks) <= 400
        assert Decimal(bids[0][0]) < Decimal(asks[0][0]), "crossed book"
        if checksum_required:
            assert data["checksum"] == okx_checksum(bids[:25], asks[:25])

    def digest(self) -> str:
        return hashlib.sha256(orjson.dumps(list(self.sorted()))).hexdigest()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def recv(ws: ClientConnection, timeout: float = 2.0) -> Any:
    text = await asyncio.wait_for(ws.recv(), timeout)
    return text if text == "pong" else orjson.loads(text)


async def subscribe(ws: ClientConnection, *inst_ids: str) -> None:
    await ws.send(json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": i} for i in inst_ids]}))


async def book_messages(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """The next `n` books pushes, skipping events."""
    out = []
    while len(out) < n:
        msg = await recv(ws)
        if isinstance(msg, dict) and "action" in msg:
            out.append(msg)
    return out


def http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def rest(sim: Any, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(http_get, sim.rest_url + path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# ---- pure parts


def test_decimal_formatting_matches_okx() -> None:
    assert parse_scaled("0.1") == (1, 1)
    assert parse_scaled("0.00001") == (1, 5)
    assert parse_scaled("5") == (5, 0)
    assert format_scaled(302388, 1) == "30238.8"
    assert format_scaled(303160, 1) == "30316"
    assert format_scaled(1617, 7) == "0.0001617"
    assert format_scaled(1500, 2) == "15"
    assert format_scaled(1234, 2) == "12.34"


def test_fault_spec_parsing() -> None:
    plan = parse_faults(" drop=0.02, disconnect=0.002 ,no_snapshot,")
    assert plan.probability("drop") == 0.02
    assert plan.probability("disconnect") == 0.002
    assert plan.probability("no_snapshot") == 1.0
    assert plan.probability("reset") == 0.0
    assert parse_faults(None).probabilities == {}
    with pytest.raises(ValueError, match=r"unknown fault 'dorp'.*valid names: drop, reset"):
        parse_faults("dorp=0.1")
    with pytest.raises(ValueError, match=r"bad probability in --faults item 'drop=2'"):
        parse_faults("drop=2")
    with pytest.raises(ValueError, match="bad probability"):
        parse_faults("drop=x")
    with pytest.raises(ValueError, match="given twice"):
        parse_faults("drop,drop=0.1")
    assert set(FAULT_NAMES) == {
        "drop", "reset", "bad_checksum", "zero_checksum", "no_snapshot", "disconnect", "notice", "silence",
        "malformed", "error", "heartbeat", "rest_429", "rest_slow", "rest_error", "ts_micro", "rest_cut",
        "rest_html", "rest_ts_skew", "instruments_html", "instruments_cut",
    }


def test_valued_fault_spec_parsing() -> None:
    plan = parse_faults("drop=0.5,rest_ts_skew=2500")
    assert plan.value("rest_ts_skew") == 2500 and plan.probability("rest_ts_skew") == 0.0
    assert plan.value("drop") is None and plan.probability("drop") == 0.5
    assert parse_faults("rest_ts_skew=500").value("rest_ts_skew") == 500
    assert parse_faults("rest_ts_skew").value("rest_ts_skew") == 500
    assert parse_faults("rest_ts_skew=0").value("rest_ts_skew") == 0
    assert parse_faults("drop").value("rest_ts_skew") is None
    for bad in ("rest_ts_skew=-1", "rest_ts_skew=x", "rest_ts_skew=1.5", "rest_ts_skew="):
        with pytest.raises(ValueError, match=rf"bad value in --faults item '{bad}': expected rest_ts_skew=MS"):
            parse_faults(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_faults("rest_ts_skew,rest_ts_skew=3")


@pytest.mark.parametrize("inst_id", [BTC, ETH, "DOGE-USDT-SWAP", "ABC-USDT-SWAP"])
def test_market_book_stream_is_a_consistent_okx_stream(inst_id: str) -> None:
    clock = SyntheticClock()
    book = MarketBook(instrument_spec(inst_id), seed=7, clock_ms=clock)
    tick_units, tick_decimals = parse_scaled(book.spec.tick_sz)
    snapshot = book.snapshot_message()
    assert snapshot["arg"] == {"channel": "books", "instId": inst_id} and snapshot["action"] == "snapshot"
    data = snapshot["data"][0]
    assert list(data) == ["asks", "bids", "ts", "checksum", "seqId", "prevSeqId"]
    assert data["prevSeqId"] == -1 and len(data["bids"]) == len(data["asks"]) == 400
    ref = RefBook()
    ref.apply(data, snapshot=True)
    ref.check(data)
    last_seq, last_ts = data["seqId"], int(data["ts"])
    for i in range(1, 1201):
        clock.advance(100 if i % 7 else 0)  # equal clock readings must still give increasing ts
        if i % 300 == 0:
            msg = book.next_update(reset=True)
        elif i % 250 == 0:
            msg = book.heartbeat_update()
        else:
            msg = book.next_update()
        data = msg["data"][0]
        assert msg["action"] == "update" and data["prevSeqId"] == last_seq
        if i % 300 == 0:
            assert data["seqId"] < data["prevSeqId"]
        elif i % 250 == 0:
            assert data["bids"] == data["asks"] == [] and data["seqId"] == data["prevSeqId"]
        else:
            assert 1 <= data["seqId"] - last_seq <= 5
            assert len(data["bids"]) + len(data["asks"]) >= 1
        assert int(data["ts"]) > last_ts
        for side, descending in ((data["bids"], True), (data["asks"], False)):
            prices = [Decimal(lv[0]) for lv in side]
            assert prices == sorted(prices, reverse=descending)
            for level in side:
                assert len(level) == 4 and level[2] == "0" and PLAIN_DECIMAL.match(level[0])
                assert PLAIN_DECIMAL.match(level[1]) and level[3].isdigit()
                assert int(Decimal(level[0]).scaleb(tick_decimals)) % tick_units == 0
        ref.apply(data)
        ref.check(data)
        last_seq, last_ts = data["seqId"], int(data["ts"])
    bids, asks = book.top()
    assert (bids, asks) == ref.sorted()


def test_zero_checksum_mode() -> None:
    book = MarketBook(instrument_spec(BTC), seed=1, clock_ms=SyntheticClock(), checksum_mode="zero")
    assert book.snapshot_message()["data"][0]["checksum"] == 0
    assert book.next_update()["data"][0]["checksum"] == 0
    with pytest.raises(ValueError, match="checksum mode"):
        MarketBook(instrument_spec(BTC), seed=1, clock_ms=SyntheticClock(), checksum_mode="fake")


def test_dump_frames_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert dump_frames(a, [BTC, ETH], 2001, seed=3) == 2001
    dump_frames(b, [BTC, ETH], 2001, seed=3)
    dump_frames(c, [BTC, ETH], 2001, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    frames = read_jsonl(a)
    assert len(frames) == 2001
    assert [f["action"] for f in frames[:3]] == ["snapshot", "snapshot", "update"]
    assert [f["arg"]["instId"] for f in frames[:4]] == [BTC, ETH, BTC, ETH]
    refs = {BTC: RefBook(), ETH: RefBook()}
    for frame in frames:
        data, ref = frame["data"][0], refs[frame["arg"]["instId"]]
        if frame["action"] == "update":
            assert data["prevSeqId"] == ref.seq_id
        ref.apply(data, snapshot=frame["action"] == "snapshot")
        ref.check(data)


# ---- the live server


def test_stream_chains_verifies_and_matches_truth_log(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    seen: list[tuple[str, int, int, str]] = []

    async def scenario() -> None:
        config = SimConfig(interval_ms=20, truth_log=truth_path)
        async with running_simulator(config) as sim, connect(sim.ws_url) as ws:
            await subscribe(ws, BTC, ETH)
            refs: dict[str, RefBook] = {}
            acks = 0
            while sum(1 for s in seen if s[0] == ETH) < 30 or sum(1 for s in seen if s[0] == BTC) < 30:
                msg = await recv(ws)
                if msg.get("event") == "subscribe":
                    acks += 1
                    assert msg["connId"]
                    continue
                inst, data = msg["arg"]["instId"], msg["data"][0]
                if msg["action"] == "snapshot":
                    refs[inst] = RefBook()
                else:
                    assert data["prevSeqId"] == refs[inst].seq_id
                refs[inst].apply(data, snapshot=msg["action"] == "snapshot")
                refs[inst].check(data)
                seen.append((inst, data["seqId"], int(data["ts"]), refs[inst].digest()))
            assert acks == 2
            await ws.send(json.dumps({"op": "unsubscribe", "args": [{"channel": "books", "instId": ETH}]}))
            while (msg := await recv(ws)).get("event") != "unsubscribe":
                pass
            assert msg["arg"] == {"channel": "books", "instId": ETH}
            after = await book_messages(ws, 10)
            assert {m["arg"]["instId"] for m in after} == {BTC}
            await ws.send("ping")
            while (msg := await recv(ws)) != "pong":
                pass

    run(scenario())
    truth = {(t["instId"], t["seqId"], t["ts"]): t for t in read_jsonl(truth_path) if "digest" in t}
    for inst, seq_id, ts, digest in seen:
        assert truth[(inst, seq_id, ts)]["digest"] == digest


def test_errors_for_unknown_instrument_and_bad_requests() -> None:
    async def scenario() -> None:
        async with running_simulator(SimConfig(interval_ms=20)) as sim, connect(sim.ws_url) as ws:
            await subscribe(ws, "NOPE-USDT-SWAP")
            msg = await recv(ws)
            assert msg["event"] == "error" and msg["code"] == "60018"
            assert msg["msg"] == "Wrong URL or channel:books,instId:NOPE-USDT-SWAP doesn't exist"
            for bad in ('{"op":"subscribe",', '{"op":"dance","args":[]}', "[1]"):
                await ws.send(bad)
                msg = await recv(ws)
                assert (msg["event"], msg["code"]) == ("error", "60012") and msg["connId"]

    run(scenario())


async def read_until(ws: ClientConnection, last_seq: int, found: Any, limit: int = 60) -> list[dict[str, Any]]:
    """Books pushes up to the first for which `found(msg, last_seq)` holds (`last_seq` is the seqId
    of the push before it)."""
    seen: list[dict[str, Any]] = []
    for _ in range(limit):
        (msg,) = await book_messages(ws, 1)
        seen.append(msg)
        if found(msg, last_seq):
            return seen
        last_seq = msg["data"][0]["seqId"]
    pytest.fail(f"no matching push within {limit}")


def test_book_faults_are_observable(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"

    async def scenario() -> None:
        config = SimConfig(interval_ms=20, instruments=(BTC,), truth_log=truth_path)
        async with running_simulator(config) as sim, connect(sim.ws_url) as ws:
            await subscribe(ws, BTC)
            assert (await recv(ws))["event"] == "subscribe"
            (snapshot,) = await book_messages(ws, 1)
            last = snapshot["data"][0]["seqId"]

            sim.inject("drop", BTC)
            seen = await read_until(ws, last, lambda m, prev: m["data"][0]["prevSeqId"] != prev)
            last = seen[-1]["data"][0]["seqId"]

            sim.inject("reset")
            seen = await read_until(ws, last, lambda m, prev: m["data"][0]["seqId"] < m["data"][0]["prevSeqId"])
            assert seen[-1]["data"][0]["prevSeqId"] == (seen[-2]["data"][0]["seqId"] if len(seen) > 1 else last)
            last = seen[-1]["data"][0]["seqId"]

            sim.inject("heartbeat", BTC)
            seen = await read_until(ws, last, lambda m, prev: not m["data"][0]["bids"] and not m["data"][0]["asks"])
            beat = seen[-1]["data"][0]
            assert beat["seqId"] == beat["prevSeqId"] == (seen[-2]["data"][0]["seqId"] if len(seen) > 1 else last)

            # bad_checksum: resync from a fresh snapshot, then exactly one push fails verification
            await ws.send(json.dumps({"op": "unsubscribe", "args": [{"channel": "books", "instId": BTC}]}))
            while (await recv(ws)).get("event") != "unsubscribe":
                pass
            await subscribe(ws, BTC)
            while (await recv(ws)).get("event") != "subscribe":
                pass
            (snapshot,) = await book_messages(ws, 1)
            assert snapshot["action"] == "snapshot"
            ref = RefBook()
            ref.apply(snapshot["data"][0], snapshot=True)
            sim.inject("bad_checksum", BTC)

            def wrong(msg: dict[str, Any], prev: int) -> bool:
                data = msg["data"][0]
                assert data["prevSeqId"] == prev
                ref.apply(data)
                bids, asks = ref.sorted()
                return data["checksum"] != okx_checksum(bids[:25], asks[:25])

            seen = await read_until(ws, ref.seq_id, wrong)
            assert seen[-1]["data"][0]["checksum"] != 0
            for msg in await book_messages(ws, 3):
                ref.apply(msg["data"][0])
                ref.check(msg["data"][0])

            sim.inject("zero_checksum", BTC)
            await read_until(ws, ref.seq_id, lambda m, prev: m["data"][0]["checksum"] == 0)

    run(scenario())
    faults = [t["fault"] for t in read_jsonl(truth_path) if "fault" in t]
    assert faults == ["drop", "reset", "heartbeat", "bad_checksum", "zero_checksum"]


def test_connection_faults_are_observable() -> None:
    async def scenario() -> None:
        config = SimConfig(interval_ms=20, instruments=(BTC,), notice_grace=0.2, silence_seconds=0.5)
        async with running_simulator(config) as sim:
            async with connect(sim.ws_url) as ws:
                await subscribe(ws, BTC)
                await book_messages(ws, 2)
                sim.inject("error", BTC)
                while (msg := await recv(ws)).get("event") != "error":
                    pass
                assert msg["code"] == "60012"

                sim.inject("malformed")
                while True:
                    text = await asyncio.wait_for(ws.recv(), 2)
                    try:
                        orjson.loads(text)
                    except orjson.JSONDecodeError:
                        break

                sim.inject("silence")
                await asyncio.sleep(0.1)
                while True:  # drain what was sent before the silence began
                    try:
                        await asyncio.wait_for(ws.recv(), 0.05)
                    except TimeoutError:
                        break
                await ws.send("ping")
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.2)
                await asyncio.sleep(0.3)
                await book_messages(ws, 2)  # streaming resumes (with a gap) after the silence

            async with connect(sim.ws_url) as ws:
                await subscribe(ws, BTC)
                await book_messages(ws, 1)
                sim.inject("notice", BTC)
                while (msg := await recv(ws)).get("event") != "notice":
                    pass
                assert msg["code"] == "64008" and msg["connId"]
                started = time.monotonic()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
                assert time.monotonic() - started >= 0.1
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

            async with connect(sim.ws_url) as ws:
                await subscribe(ws, BTC)
                await book_messages(ws, 1)
                sim.inject("disconnect")
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
                assert closed.value.rcvd is None  # no close frame: the transport was aborted

    run(scenario())


def test_no_snapshot_mode_aligns_over_lagging_rest() -> None:
    async def scenario() -> None:
        config = SimConfig(interval_ms=20, instruments=(ETH,), faults=parse_faults("no_snapshot"), rest_lag_ticks=3)
        async with running_simulator(config) as sim, connect(sim.ws_url) as ws:
            await subscribe(ws, ETH)
            assert (await recv(ws))["event"] == "subscribe"
            buffered = await book_messages(ws, 2)
            assert all(m["action"] == "update" for m in buffered)
            # the documented alignment: retry REST until its seqId reaches the first buffered prevSeqId
            first_prev = buffered[0]["data"][0]["prevSeqId"]
            for _ in range(50):
                status, body = await rest(sim, f"/api/v5/market/books?instId={ETH}&sz=400")
                assert status == 200 and body["code"] == "0"
                snap = body["data"][0]
                if snap["seqId"] >= first_prev:
                    break
                buffered += await book_messages(ws, 1)
            else:
                pytest.fail("REST never caught up")
            assert len(snap["bids"]) == len(snap["asks"]) == 400 and int(snap["ts"]) > 0
            buffered += await book_messages(ws, 5)
            kept = [m["data"][0] for m in buffered if m["data"][0]["seqId"] > snap["seqId"]]
            assert kept[0]["prevSeqId"] <= snap["seqId"] < kept[0]["seqId"]
            ref = RefBook()
            ref.apply(snap, snapshot=True)
            for data in kept:
                ref.apply(data)
                ref.check(data)

    run(scenario())


def test_rest_endpoints_and_rest_faults() -> None:
    async def scenario() -> None:
        async with running_simulator(SimConfig(interval_ms=20)) as sim:
            status, body = await rest(sim, f"/api/v5/market/books?instId={BTC}&sz=5")
            assert status == 200 and body["code"] == "0"
            book = body["data"][0]
            assert len(book["bids"]) == len(book["asks"]) == 5 and isinstance(book["seqId"], int)
            assert await rest(sim, "/api/v5/market/books?instId=NOPE-USDT-SWAP&sz=5") == (
                200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []})
            status, body = await rest(sim, "/api/v5/public/instruments?instType=SWAP")
            assert status == 200 and [i["instId"] for i in body["data"]] == [BTC, ETH]
            status, body = await rest(sim, f"/api/v5/public/instruments?instType=SWAP&instId={ETH}")
            (eth,) = body["data"]
            assert (eth["tickSz"], eth["lotSz"], eth["ctVal"], eth["ctValCcy"]) == ("0.01", "0.01", "0.1", "ETH")
            assert (eth["state"], eth["ctType"], eth["instFamily"], eth["settleCcy"]) == (
                "live", "linear", "ETH-USDT", "USDT")
            status, body = await rest(sim, "/api/v5/public/instruments?instType=SWAP&instId=NOPE-USDT-SWAP")
            assert body["code"] == "51001" and body["data"] == []
            assert (await rest(sim, "/api/v5/other"))[0] == 404

            assert await rest(sim, "/sim/inject?fault=rest_429") == (200, {"ok": True})
            assert await rest(sim, f"/api/v5/market/books?instId={BTC}&sz=5") == (
                429, {"code": "50011", "msg": "Too Many Requests", "data": []})
            sim.inject("rest_error", BTC)
            status, body = await rest(sim, f"/api/v5/market/books?instId={BTC}&sz=5")
            assert (status, body["code"]) == (500, "50001")
            sim.inject("rest_slow")
            started = time.monotonic()
            status, body = await rest(sim, f"/api/v5/market/books?instId={BTC}&sz=5")
            assert status == 200 and time.monotonic() - started >= 1.9
            status, body = await rest(sim, "/sim/inject?fault=nonsense")
            assert status == 400 and "valid names" in body["error"]

    run(scenario())


BOOKS_BTC = f"/api/v5/market/books?instId={BTC}&sz=400"
INSTRUMENTS_SWAP = "/api/v5/public/instruments?instType=SWAP"


def fault_lines(truth_path: Path) -> list[dict[str, Any]]:
    return [t for t in read_jsonl(truth_path) if "fault" in t]


@pytest.mark.parametrize(("fault", "path"), [("rest_cut", BOOKS_BTC), ("instruments_cut", INSTRUMENTS_SWAP)])
def test_cut_faults_break_off_the_body(fault: str, path: str, tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"

    def read_cut(url: str) -> http.client.IncompleteRead:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            promised = int(response.headers["Content-Length"])
            with pytest.raises(http.client.IncompleteRead) as cut:
                response.read()
        assert len(cut.value.partial) == promised // 2 and cut.value.expected == promised - promised // 2
        assert cut.value.partial.startswith(b'{"code":"0","msg":"","data":[{')
        return cut.value

    async def scenario() -> None:
        config = SimConfig(interval_ms=20, faults=parse_faults(fault), truth_log=truth_path)
        async with running_simulator(config) as sim:
            for _ in range(2):
                await asyncio.to_thread(read_cut, sim.rest_url + path)

    run(scenario())
    assert [(t["fault"], t["instId"]) for t in fault_lines(truth_path)] == [
        (fault, BTC if fault == "rest_cut" else None)] * 2


@pytest.mark.parametrize(("fault", "path"), [("rest_html", BOOKS_BTC), ("instruments_html", INSTRUMENTS_SWAP)])
def test_html_faults_answer_200_with_a_maintenance_page(fault: str, path: str, tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"

    def get(url: str) -> tuple[int, str, bytes]:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()

    async def scenario() -> None:
        async with running_simulator(SimConfig(interval_ms=20, truth_log=truth_path)) as sim:
            # instruments faults ignore instId; books faults fire for the given instrument
            for inject in (f"/sim/inject?fault={fault}", f"/sim/inject?fault={fault}&instId={BTC}"):
                assert await rest(sim, inject) == (200, {"ok": True})
                status, content_type, body = await asyncio.to_thread(get, sim.rest_url + path)
                assert (status, content_type) == (200, "text/html")
                assert body.startswith(b"<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title>")
                status, body = await rest(sim, path)  # injected faults fire once
                assert status == 200 and body["code"] == "0"

    run(scenario())
    assert [(t["fault"], t["instId"]) for t in fault_lines(truth_path)] == [
        (fault, BTC if fault == "rest_html" else None)] * 2


def observed_skews(answers: list[dict[str, Any]], truth_path: Path) -> list[int]:
    """Each books answer's ts minus the true ts of the state with its seqId, after checking that its
    levels are exactly that state's."""
    states = {t["seqId"]: t for t in read_jsonl(truth_path) if "digest" in t}
    skews = []
    for answer in answers:
        state = states[answer["seqId"]]
        assert book_digest(answer["bids"], answer["asks"]) == state["digest"]
        skews.append(int(answer["ts"]) - state["ts"])
    return skews


def test_rest_ts_skew_from_the_plan(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    answers: list[dict[str, Any]] = []

    async def scenario() -> None:
        config = SimConfig(interval_ms=20, instruments=(BTC,), faults=parse_faults("rest_ts_skew=300"),
                           truth_log=truth_path)
        async with running_simulator(config) as sim:
            for _ in range(12):
                status, body = await rest(sim, BOOKS_BTC)
                assert status == 200 and body["code"] == "0"
                answers.append(body["data"][0])
                await asyncio.sleep(0.01)

    run(scenario())
    skews = observed_skews(answers, truth_path)
    assert all(0 <= skew <= 300 for skew in skews) and len(set(skews)) > 1
    states = {t["seqId"]: t["ts"] for t in read_jsonl(truth_path) if "digest" in t}
    assert [(t["fault"], t["instId"], t["ts"], t["skew_ms"]) for t in fault_lines(truth_path)] == [
        ("rest_ts_skew", BTC, states[a["seqId"]], skew) for a, skew in zip(answers, skews, strict=True)]


def test_rest_ts_skew_injected(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    answers: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with running_simulator(SimConfig(interval_ms=20, truth_log=truth_path)) as sim:
            assert await rest(sim, "/sim/inject?fault=rest_ts_skew&ms=1234") == (200, {"ok": True})
            answers.append((await rest(sim, BOOKS_BTC))[1]["data"][0])
            sim.inject("rest_ts_skew", BTC)
            answers.append((await rest(sim, BOOKS_BTC))[1]["data"][0])
            answers.append((await rest(sim, BOOKS_BTC))[1]["data"][0])
            for bad in ("fault=rest_ts_skew&ms=-5", "fault=rest_ts_skew&ms=x", "fault=drop&ms=5"):
                status, body = await rest(sim, f"/sim/inject?{bad}")
                assert status == 400 and not body["ok"]

    run(scenario())
    assert observed_skews(answers, truth_path) == [1234, 500, 0]
    assert [(t["fault"], t["skew_ms"]) for t in fault_lines(truth_path)] == [
        ("rest_ts_skew", 1234), ("rest_ts_skew", 500)]


def test_ts_micro_stamps_one_update_in_microseconds(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.jsonl"
    pushed: list[dict[str, Any]] = []

    async def scenario() -> None:
        config = SimConfig(interval_ms=20, instruments=(BTC,), truth_log=truth_path)
        async with running_simulator(config) as sim, connect(sim.ws_url) as ws:
            await subscribe(ws, BTC)
            assert (await recv(ws))["event"] == "subscribe"
            (snapshot,) = await book_messages(ws, 1)
            ref = RefBook()
            ref.apply(snapshot["data"][0], snapshot=True)

            def chained(msg: dict[str, Any], prev: int) -> bool:
                data = msg["data"][0]
                assert data["prevSeqId"] == prev
                ref.apply(data)
                ref.check(data)
                pushed.append(data)
                return int(data["ts"]) > 10**14

            sim.inject("ts_micro", BTC)
            await read_until(ws, ref.seq_id, chained)
            for msg in await book_messages(ws, 5):
                prev = pushed[-1]["seqId"]
                assert not chained(msg, prev)

    run(scenario())
    states = {t["seqId"]: t["ts"] for t in read_jsonl(truth_path) if "digest" in t}
    micro = [data for data in pushed if int(data["ts"]) != states[data["seqId"]]]
    assert len(micro) == 1 and int(micro[0]["ts"]) == states[micro[0]["seqId"]] * 1000
    assert [(t["fault"], t["ts"]) for t in fault_lines(truth_path)] == [("ts_micro", states[micro[0]["seqId"]])]


def test_random_faults_are_reproducible_for_a_seed(tmp_path: Path) -> None:
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]

    async def one(path: Path) -> None:
        config = SimConfig(interval_ms=10, seed=5, faults=parse_faults("drop=0.3,reset=0.05,heartbeat=0.1"),
                           truth_log=path)
        async with running_simulator(config):
            await asyncio.sleep(0.6)

    async def both() -> None:
        await asyncio.gather(*(one(p) for p in paths))

    run(both())

    def shape(path: Path) -> list[tuple[Any, ...]]:
        return [(t.get("fault"), t["instId"], t.get("seqId"), t.get("digest")) for t in read_jsonl(path)]

    a, b = (shape(p) for p in paths)
    n = min(len(a), len(b))
    assert n > 40 and a[:n] == b[:n]
    assert {"drop", "heartbeat"} <= {f for f, *_ in a}


def _simulate(*flags: str, **kwargs: Any) -> subprocess.Popen[str]:
    code = (
        "import argparse, sys\n"
        "from collector.simulator.server import add_simulate_arguments, run_simulate\n"
        "p = argparse.ArgumentParser()\nadd_simulate_arguments(p)\n"
        "sys.exit(run_simulate(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *flags], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_command_line_listens_and_stops_on_sigint(tmp_path: Path) -> None:
    proc = _simulate("--port", "0", "--interval-ms", "20", "--instruments", BTC, "--faults", "drop=0.01")
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.fullmatch(r"SIMULATOR LISTENING (ws://127\.0\.0\.1:(\d+)/ws/v5/public) (http://127\.0\.0\.1:\2)\n",
                             line)
        assert match, line
        status, body = http_get(f"{match.group(3)}/api/v5/market/books?instId={BTC}&sz=1")
        assert status == 200 and len(body["data"][0]["bids"]) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()

    bad = _simulate("--faults", "drop=0.1,explode")
    _, err = bad.communicate(timeout=10)
    assert bad.returncode == 2 and "unknown fault 'explode'" in err and "valid names" in err

    out_path = tmp_path / "frames.jsonl"
    dump = _simulate("--dump-frames", str(out_path), "--frames", "50", "--seed", "9")
    dump.communicate(timeout=20)
    assert dump.returncode == 0 and len(out_path.read_bytes().splitlines()) == 50

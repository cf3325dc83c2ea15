"""One simulated OKX public WebSocket connection: requests, subscriptions, connection faults.

Frames leave through a per-connection queue drained by a sender task, so a slow client never
stalls the shared tick loop (a client too far behind is cut off, as OKX does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from collector.simulator.faults import CONNECTION_FAULTS, FaultPlan
from collector.simulator.market import MarketBook
from collector.simulator.truth import TruthLog

log = logging.getLogger("collector.simulator")

MAX_BACKLOG = 10_000
NOTICE_MSG = "The connection will soon be closed for a service upgrade. Please reconnect."


def encode(obj: Any) -> str:
    """JSON text for a WebSocket text frame."""
    return orjson.dumps(obj).decode()


@dataclass(frozen=True)
class SessionContext:
    """What a session needs from the simulator, shared by all sessions."""

    books: Mapping[str, MarketBook]
    plan: FaultPlan
    seed: int
    truth: TruthLog
    notice_grace: float
    silence_seconds: float
    pending_no_snapshot: list[str | None]


class Session:
    """Serves one connection until it closes; the tick loop calls `push` and `on_tick`."""

    def __init__(self, ctx: SessionContext, ws: ServerConnection, number: int) -> None:
        self.ctx = ctx
        self.ws = ws
        self._tick_rng = random.Random(f"{ctx.seed}:conn:{number}")
        self._subscribe_rng = random.Random(f"{ctx.seed}:subscribe:{number}")
        self.conn_id = f"{self._tick_rng.getrandbits(32):08x}"
        self.subscriptions: set[str] = set()
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._silent_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        try:
            async for message in self.ws:
                if not self.silent:
                    self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            for task in (sender, *self._tasks):
                task.cancel()

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.ws.send(await self._outbox.get())

    def push(self, frame: str) -> None:
        """Queue one text frame (dropped while the connection is silenced)."""
        if self.silent:
            return
        if self._outbox.qsize() >= MAX_BACKLOG:
            log.warning("simulator: connection %s is %d frames behind; aborting it", self.conn_id, MAX_BACKLOG)
            self.ws.transport.abort()
            return
        self._outbox.put_nowait(frame)

    # ---- client requests

    def _error(self, code: str, msg: str) -> None:
        self.push(encode({"event": "error", "code": code, "msg": msg, "connId": self.conn_id}))

    def _on_message(self, message: str | bytes) -> None:
        if message == "ping":
            self.push("pong")
            return
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        invalid = f"Invalid request: {text[:200]}"
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error("60012", invalid)
            return
        op = request.get("op") if isinstance(request, dict) else None
        args = request.get("args") if isinstance(request, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            self._error("60012", invalid)
            return
        for arg in args:
            if not isinstance(arg, dict):
                self._error("60012", invalid)
                continue
            channel, inst_id = arg.get("channel"), arg.get("instId")
            if channel != "books" or inst_id not in self.ctx.books:
                self._error("60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist")
            elif op == "subscribe":
                self._subscribe(inst_id)
            else:
                self.subscriptions.discard(inst_id)
                self.push(encode({"event": "unsubscribe", "arg": {"channel": "books", "instId": inst_id},
                                  "connId": self.conn_id}))

    def _take_no_snapshot(self, inst_id: str) -> bool:
        fired = self.ctx.plan.fires("no_snapshot", self._subscribe_rng)
        pending = self.ctx.pending_no_snapshot
        for key in (inst_id, None):
            if key in pending:
                pending.remove(key)
                return True
        return fired

    def _subscribe(self, inst_id: str) -> None:
        book = self.ctx.books[inst_id]
        self.push(encode({"event": "subscribe", "arg": {"channel": "books", "instId": inst_id},
                          "connId": self.conn_id}))
        zero = self.ctx.plan.fires("zero_checksum", self._subscribe_rng)
        if self._take_no_snapshot(inst_id):
            self.ctx.truth.fault("no_snapshot", inst_id, book.ts_ms, self.conn_id)
        else:
            snapshot = book.snapshot_message()
            if zero:
                snapshot["data"][0]["checksum"] = 0
            self.push(encode(snapshot))
        self.subscriptions.add(inst_id)

    # ---- connection faults

    def on_tick(self, injected: Collection[str], now_ms: int) -> None:
        """Draw this tick's connection faults (plus the injected ones) and carry them out."""
        drawn = [name for name in CONNECTION_FAULTS if self.ctx.plan.fires(name, self._tick_rng)]
        for name in CONNECTION_FAULTS:
            if name in drawn or name in injected:
                self.ctx.truth.fault(name, None, now_ms, self.conn_id)
                self._apply(name)

    def _apply(self, name: str) -> None:
        inst_id = min(self.subscriptions, default="BTC-USDT-SWAP")
        if name == "silence":
            self._silent_until = time.monotonic() + self.ctx.silence_seconds
        elif name == "malformed":
            self.push(f'{{"arg":{{"channel":"books","instId":"{inst_id}"}},"action":"update","data":[{{"asks":[["')
        elif name == "error":
            self._error("60012", "Invalid request: simulated server-side error")
        elif name == "notice":
            self.push(encode({"event": "notice", "code": "64008", "msg": NOTICE_MSG, "connId": self.conn_id}))
            self._start(self._close_after(self.ctx.notice_grace))
        elif name == "disconnect":
            self.ws.transport.abort()

    def _start(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_after(self, grace: float) -> None:
        await asyncio.sleep(grace)
        await self.ws.close(1001, "service upgrade")

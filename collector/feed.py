"""One venue WebSocket connection carrying the book channel of a shard of instruments.

The connection only moves bytes: frames are decoded by the venue (`l2_lake.venues.venue`; OKX's wire
format is in `l2_lake.venues.okx`) and handed to each instrument's `InstrumentSync`; what the engine
asks for (resubscribe, REST alignment) is done here. Limits and codes come from the venue.

- Keepalive: the venue's ping text after `ping_after` s without traffic; no answer within
  `pong_timeout` means the feed is stale. Any close, stale feed or service-upgrade notice (OKX
  64008) leads to a reconnect with capped exponential backoff and full jitter, a `reconnect` event
  per instrument and a full resubscribe.
- Per-instrument watchdog: an instrument not in sync for `resync_timeout` s since its last
  (re)subscription, whatever it waits for (the ack, the first push, a REST alignment), gets a
  `stale` event and a fresh resubscribe. One the venue rejects as unknown at runtime (OKX 60018:
  delisted) is tried again every `DELISTED_RETRY_S`.
- Resubscribes are paced per instrument: the first is immediate; each further one before the
  instrument was back in sync waits twice as long (1 s … `RESUBSCRIBE_MAX_DELAY_S`), so an
  instrument that cannot sync (every `ts` rejected, say) never floods the venue with requests.
- The venue's hourly (un)subscribe budget per connection (OKX: 480) is counted; before running
  out the connection emits `subscribe_budget` and reconnects (with backoff): a fresh budget.
- REST alignment tasks share the process's `RestClient` (one rate limiter per endpoint). A task
  that fails in any way costs only that instrument a resubscribe.
- All feeds share a pacer that keeps new connections under the venue's limit (OKX: 3 per second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from collector.config import CollectorConfig
from collector.supervise import backoff_delay
from l2_lake.book.engine import InstrumentSync, Resync
from l2_lake.logs import log_event
from l2_lake.venues import rest
from l2_lake.venues.messages import BadFrame, BookMessage, EventMessage, Pong

log = logging.getLogger("collector.feed")

REST_RETRY_DELAY = 0.5
BAD_FRAME_EVENT_INTERVAL_MS = 60_000
WATCH_TICK_S = 0.5
DELISTED_RETRY_S = 300.0
SUBSCRIBE_MARGIN = 10  # act before the last few requests, so a full resubscribe never hits the limit
RESUBSCRIBE_MAX_DELAY_S = 300.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ConnectionPacer:
    """Spaces connection attempts of all feeds (OKX allows 3 new connections per second per IP)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait_turn(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self._interval


class SubscribeBudget:
    """(Un)subscribe requests sent on one connection within the last hour."""

    def __init__(self, limit: int, window_s: float = 3600.0) -> None:
        self.limit = limit
        self._window = window_s
        self._sent: deque[float] = deque()

    def used(self, now: float) -> int:
        while self._sent and self._sent[0] <= now - self._window:
            self._sent.popleft()
        return len(self._sent)

    def spend(self, requests: int, now: float) -> bool:
        """Count `requests` if they fit the budget; False (nothing counted) if they do not."""
        if self.used(now) + requests > self.limit:
            return False
        self._sent.extend([now] * requests)
        return True


class BudgetExhausted(Exception):
    """This connection must not send more (un)subscribe requests this hour."""


class FeedConnection:
    """A reconnecting WebSocket session for `syncs` (at most 30 `books` channels)."""

    def __init__(self, name: str, cfg: CollectorConfig, syncs: dict[str, InstrumentSync], client: rest.RestClient,
                 on_unknown_instrument: Callable[[str, str], bool], pacer: ConnectionPacer) -> None:
        self.name = name
        self._pacer = pacer
        self.cfg = cfg
        self.syncs = syncs
        self._client = client
        self._on_unknown = on_unknown_instrument
        self._last_recv = 0.0
        self._ping_sent_at: float | None = None
        self._close_reason: str | None = None
        self.venue = client.venue
        self.subscribe_limit = self.venue.subscribe_requests_per_hour - SUBSCRIBE_MARGIN
        self._budget = SubscribeBudget(self.subscribe_limit)
        self._subscribed_at: dict[str, float] = {}  # monotonic time of each instrument's last (re)subscribe
        self._resubscribe_streak: dict[str, int] = {}  # resubscribes since the instrument was last in sync
        self._resubscribe_due: dict[str, float] = {}  # deferred resubscribes: instId -> monotonic due time
        self._rest_tasks: dict[str, asyncio.Task] = {}
        self._bad_frames: dict[tuple[str | None, str], list[int]] = {}  # -> [count, last event ms]

    # -- connection loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stream and reconnect until cancelled."""
        attempt = 0
        while True:
            reason = "closed"
            await self._pacer.wait_turn()
            try:
                async with connect(self.cfg.ws_url, ping_interval=None, max_size=1 << 24,
                                   open_timeout=10, close_timeout=1, max_queue=1024) as ws:
                    log_event(log, logging.INFO, "connected", None,
                              f"{self.name} connected to {self.cfg.ws_url}", instruments=len(self.syncs))
                    if await self._session(ws):
                        attempt = 0  # an instrument synced in this session: the next reconnect starts over
                    reason = self._close_reason or _close_text(ws)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug must cost one connection, not the whole process
                reason = f"internal error {type(exc).__name__}: {exc}"
                log.exception("unexpected error in %s; reconnecting", self.name, extra={"event": "internal_error"})
                for inst_id, sync in self.syncs.items():
                    sync.sink.event(inst_id, "error", source="collector", task=self.name, error=reason)
            finally:
                self._cancel_rest_tasks()
            delay = 0.0 if self._close_reason == "notice_64008" else backoff_delay(
                attempt, self.cfg.backoff_initial, self.cfg.backoff_max)
            self._close_reason = None
            attempt += 1
            for inst_id, sync in self.syncs.items():
                sync.drop("reconnect")
                sync.sink.event(inst_id, "reconnect", reason=reason, attempt=attempt, delay_s=round(delay, 3))
            log_event(log, logging.WARNING, "reconnect", None,
                      f"{self.name} lost its connection ({reason}); reconnecting in {delay:.1f} s",
                      attempt=attempt)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> bool:
        """Subscribe everything and pump frames until the connection ends; True if an instrument synced."""
        self._last_recv = time.monotonic()
        self._ping_sent_at = None
        self._budget = SubscribeBudget(self.subscribe_limit)  # the limit is per connection
        self._resubscribe_due.clear()
        for sync in self.syncs.values():
            sync.drop("start")
        await self._subscribe(ws, list(self.syncs))
        watchdog = asyncio.create_task(self._watch(ws))
        synced = False
        try:
            async for raw in ws:
                self._last_recv = time.monotonic()
                self._ping_sent_at = None
                await self._handle(ws, raw)
                synced = synced or any(sync.in_sync for sync in self.syncs.values())
        except websockets.exceptions.ConnectionClosed:
            pass
        except BudgetExhausted:
            self._close_reason = "subscribe_budget"
        finally:
            watchdog.cancel()
        return synced

    async def _watch(self, ws: ClientConnection) -> None:
        """Keepalive for the connection and the per-instrument watchdog, every WATCH_TICK_S.

        Whatever ends this task ends the connection too: a session must never run unwatched.
        """
        try:
            while True:
                await asyncio.sleep(WATCH_TICK_S)
                now = time.monotonic()
                if not await self._keepalive(ws, now):
                    return
                await self._watch_instruments(ws, now)
        except websockets.exceptions.ConnectionClosed:
            return
        except BudgetExhausted:
            self._close_reason = "subscribe_budget"
        except Exception as exc:
            self._close_reason = f"internal error in the watchdog {type(exc).__name__}: {exc}"
            log.exception("%s: watchdog crashed; reconnecting", self.name, extra={"event": "task_crashed"})
        ws.transport.abort()

    async def _keepalive(self, ws: ClientConnection, now: float) -> bool:
        """Ping an idle connection; abort it (False) when the ping went unanswered."""
        cfg = self.cfg
        if self._ping_sent_at is not None:
            if now - self._ping_sent_at < cfg.pong_timeout:
                return True
            silent = round(now - self._last_recv, 1)
            for inst_id, sync in self.syncs.items():
                sync.sink.event(inst_id, "stale", reason="no_pong", silent_s=silent)
            log_event(log, logging.WARNING, "stale", None,
                      f"{self.name}: no traffic for {silent} s and no pong; reconnecting")
            self._close_reason = "stale"
            ws.transport.abort()
            return False
        if now - self._last_recv >= cfg.ping_after:
            self._ping_sent_at = now
            await ws.send(self.venue.ping)
        return True

    async def _watch_instruments(self, ws: ClientConnection, now: float) -> None:
        for inst_id, sync in self.syncs.items():
            if sync.in_sync:
                sync.unsynced_since = None
                self._resubscribe_streak.pop(inst_id, None)
                continue
            if sync.unsynced_since is None:
                sync.unsynced_since = now
            due = self._resubscribe_due.get(inst_id)
            if due is not None:
                if now >= due:
                    del self._resubscribe_due[inst_id]
                    await self._send(ws, [("subscribe", [inst_id])])
                continue
            limit = DELISTED_RETRY_S if sync.delisted else self.cfg.resync_timeout
            waited = now - self._subscribed_at.get(inst_id, now)
            if waited < limit:
                continue
            unsynced = round(now - sync.unsynced_since, 1)
            reason = "delisted_retry" if sync.delisted else "unsynced"
            sync.sink.event(inst_id, "stale", reason=reason, state=sync.state.value, unsynced_s=unsynced)
            log_event(log, logging.WARNING, "stale", inst_id,
                      f"{inst_id} not in sync for {unsynced} s (state {sync.state.value}); resubscribing",
                      reason=reason)
            self._cancel_rest_task(inst_id)
            sync.drop(reason)
            await self._resubscribe(ws, inst_id)

    # -- frames --------------------------------------------------------------------------------

    async def _handle(self, ws: ClientConnection, raw: str | bytes) -> None:
        recv_ms = wall_ms()
        try:
            decoded = self.venue.decode(raw)
        except BadFrame as exc:
            self._bad_frame(exc)
            return
        if isinstance(decoded, list):
            sync = self.syncs.get(decoded[0].inst_id) if decoded else None
            if sync is not None and sync.tape is not None:  # taped as received, before the engine takes it
                sync.tape.frame(sync, raw, recv_ms, decoded[0].ts_ms)
            for msg in decoded:
                await self._on_book(ws, msg, recv_ms)
        elif isinstance(decoded, EventMessage):
            await self._on_event(ws, decoded)
        elif not isinstance(decoded, Pong):
            raise AssertionError(decoded)

    async def _on_book(self, ws: ClientConnection, msg: BookMessage, recv_ms: int) -> None:
        sync = self.syncs.get(msg.inst_id)
        if sync is None:
            self._bad_frame(BadFrame("unsubscribed_instrument", f"books push for {msg.inst_id}, "
                                     "which this connection did not subscribe", msg.inst_id))
            return
        was_synced = sync.in_sync
        resync = sync.on_book(msg, recv_ms)
        if resync is not None and was_synced:
            self._resubscribe_streak.pop(msg.inst_id, None)  # it was in sync: this resync is a fresh one
        await self._act(ws, sync, resync)

    async def _act(self, ws: ClientConnection, sync: InstrumentSync, resync: Resync | None) -> None:
        if resync is Resync.RESUBSCRIBE:
            await self._resubscribe(ws, sync.inst_id)
        elif resync is Resync.REST and sync.inst_id not in self._rest_tasks:
            self._rest_tasks[sync.inst_id] = asyncio.create_task(self._align_by_rest(ws, sync))

    async def _align_by_rest(self, ws: ClientConnection, sync: InstrumentSync) -> None:
        """The venue's alignment: fetch REST books until one can be spliced onto the buffered updates."""
        inst_id = sync.inst_id
        resync: Resync | None = Resync.REST
        try:
            while resync is Resync.REST:
                try:
                    data = await self._client.get(*self.venue.books_request(inst_id))
                    resync = sync.on_rest_snapshot(self.venue.decode_rest_books(data, inst_id), wall_ms())
                except (rest.RestError, BadFrame) as exc:
                    log_event(log, logging.WARNING, "rest_error", inst_id,
                              f"REST books for alignment failed: {exc}; retrying")
                    resync = sync.rest_failed()
                if resync is Resync.REST:
                    await asyncio.sleep(REST_RETRY_DELAY)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug costs this instrument a resubscribe, never its alignment for good
            log.exception("REST alignment of %s crashed; resubscribing it", inst_id,
                          extra={"event": "task_crashed", "instId": inst_id})
            sync.sink.event(inst_id, "error", source="collector", task="rest_alignment",
                            error=f"{type(exc).__name__}: {exc}")
            sync.drop("internal_error")
            resync = Resync.RESUBSCRIBE
        finally:
            if self._rest_tasks.get(inst_id) is asyncio.current_task():
                del self._rest_tasks[inst_id]
        with contextlib.suppress(websockets.exceptions.ConnectionClosed, BudgetExhausted):
            await self._act(ws, sync, resync)  # a closed connection or spent budget: the reconnect resubscribes

    async def _on_event(self, ws: ClientConnection, ev: EventMessage) -> None:
        if ev.event == "subscribe" and ev.inst_id in self.syncs:
            sync = self.syncs[ev.inst_id]
            sync.delisted = False
            sync.subscribed()
        elif ev.event == "error":
            inst_id = ev.inst_id or _inst_in_message(ev.msg, self.syncs)
            rejected = ev.code == self.venue.unknown_instrument_code and inst_id is not None
            if rejected and not self._on_unknown(inst_id, ev.msg or ""):
                self.syncs[inst_id].delisted = True
                log_event(log, logging.ERROR, "delisted", inst_id,
                          f"OKX rejected {inst_id} ({ev.msg}); retrying every {DELISTED_RETRY_S:.0f} s")
            for target in [inst_id] if inst_id else list(self.syncs):
                self.syncs[target].sink.event(target, "error", code=ev.code, msg=ev.msg)
            log_event(log, logging.ERROR, "error", inst_id, f"OKX error event code={ev.code}: {ev.msg}")
        elif ev.event == "notice":
            for inst_id, sync in self.syncs.items():
                sync.sink.event(inst_id, "notice", code=ev.code, msg=ev.msg)
            log_event(log, logging.WARNING, "notice", None,
                      f"{self.name}: OKX notice {ev.code}: {ev.msg}; reconnecting now")
            if ev.code == self.venue.service_upgrade_code:
                self._close_reason = "notice_64008"
                await ws.close()

    def _bad_frame(self, exc: BadFrame) -> None:
        key = (exc.inst_id, exc.kind)
        seen = self._bad_frames.setdefault(key, [0, 0])
        seen[0] += 1
        if seen[0] == 1:
            log_event(log, logging.WARNING, "bad_frame", exc.inst_id,
                      f"{self.name}: ignored a bad frame ({exc}); further ones of this kind are counted "
                      "in the events sidecar only", kind=exc.kind)
        now = wall_ms()
        if now - seen[1] < BAD_FRAME_EVENT_INTERVAL_MS:
            return
        seen[1] = now
        # A frame we cannot attribute is recorded for every instrument of this connection.
        targets = [exc.inst_id] if exc.inst_id in self.syncs else list(self.syncs)
        for inst_id in targets:
            self.syncs[inst_id].sink.event(inst_id, "bad_frame", kind=exc.kind, detail=exc.detail, count=seen[0])

    # -- requests ------------------------------------------------------------------------------

    async def _subscribe(self, ws: ClientConnection, inst_ids: list[str]) -> None:
        await self._send(ws, [("subscribe", inst_ids)])

    async def _resubscribe(self, ws: ClientConnection, inst_id: str) -> None:
        """Unsubscribe + subscribe now, or, if the last resubscribe has not brought the instrument
        back in sync yet, unsubscribe now and subscribe after a delay doubling with each such attempt
        (the watchdog sends it)."""
        streak = self._resubscribe_streak.get(inst_id, 0)
        self._resubscribe_streak[inst_id] = streak + 1
        if streak == 0:
            await self._send(ws, [("unsubscribe", [inst_id]), ("subscribe", [inst_id])])
            return
        await self._send(ws, [("unsubscribe", [inst_id])])
        delay = min(RESUBSCRIBE_MAX_DELAY_S, 2.0 ** (streak - 1))
        now = time.monotonic()
        self._resubscribe_due[inst_id] = now + delay
        self._subscribed_at[inst_id] = now + delay  # the watchdog's timeout counts from the real request

    async def _send(self, ws: ClientConnection, requests: list[tuple[str, list[str]]]) -> None:
        """Send (un)subscribe requests within the hourly budget; BudgetExhausted when it is spent."""
        now = time.monotonic()
        if not self._budget.spend(len(requests), now):
            used = self._budget.used(now)
            for inst_id, sync in self.syncs.items():
                sync.sink.event(inst_id, "subscribe_budget", used=used, limit=self.venue.subscribe_requests_per_hour,
                                action="reconnect")
            log_event(log, logging.WARNING, "subscribe_budget", None,
                      f"{self.name} sent {used} (un)subscribe requests this hour (OKX allows "
                      f"{self.venue.subscribe_requests_per_hour}); moving its instruments to a new connection")
            raise BudgetExhausted(self.name)
        for op, inst_ids in requests:
            await ws.send(self.venue.subscription_request(op, inst_ids))
            if op == "subscribe":
                self._subscribed_at.update(dict.fromkeys(inst_ids, now))

    def _cancel_rest_task(self, inst_id: str) -> None:
        task = self._rest_tasks.pop(inst_id, None)
        if task is not None:
            task.cancel()

    def _cancel_rest_tasks(self) -> None:
        for inst_id in list(self._rest_tasks):
            self._cancel_rest_task(inst_id)


def _close_text(ws: ClientConnection) -> str:
    if ws.close_code is None:
        return "connection lost"
    return f"closed code={ws.close_code} {ws.close_reason or ''}".strip()


def _inst_in_message(msg: str | None, syncs: dict[str, Any]) -> str | None:
    """OKX puts the offending instId only inside the error text (`...instId:X doesn't exist`)."""
    if not msg:
        return None
    return next((i for i in syncs if i in msg), None)

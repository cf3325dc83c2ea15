"""REST half of the simulator: OKX `/api/v5/market/books` and `/api/v5/public/instruments`.

Answers are `websockets` HTTP responses with JSON bodies, served from the WebSocket server's
`process_request` hook. Books can be served a few ticks late (`lag_ticks`) to exercise the
client's alignment retries, and can fail on purpose (REST faults).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from collector.simulator.faults import REST_FAULTS, FaultPlan
from collector.simulator.instruments import instrument_object
from collector.simulator.market import DEPTH, MarketBook
from collector.simulator.truth import TruthLog

BOOKS_PATH = "/api/v5/market/books"
INSTRUMENTS_PATH = "/api/v5/public/instruments"
SLOW_SECONDS = 2.0

_NO_INSTRUMENT = {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
_FAILURES = {
    "rest_429": (HTTPStatus.TOO_MANY_REQUESTS, {"code": "50011", "msg": "Too Many Requests", "data": []}),
    "rest_error": (
        HTTPStatus.INTERNAL_SERVER_ERROR,
        {"code": "50001", "msg": "Service temporarily unavailable. Please try again later.", "data": []},
    ),
}


def json_response(status: HTTPStatus, payload: Any) -> Response:
    """An HTTP response with a JSON body (the connection is closed after it)."""
    body = orjson.dumps(payload)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _missing(name: str) -> Response:
    return json_response(HTTPStatus.BAD_REQUEST, {"code": "50014", "msg": f"Parameter {name} can not be empty",
                                                  "data": []})


class RestApi:
    """Serves the REST endpoints from the simulator's books; call `record_tick()` after each tick."""

    def __init__(
        self,
        books: Mapping[str, MarketBook],
        plan: FaultPlan,
        seed: int,
        truth: TruthLog,
        lag_ticks: int = 0,
        slow_seconds: float = SLOW_SECONDS,
    ) -> None:
        self._books = books
        self._plan = plan
        self._truth = truth
        self._rng = random.Random(f"{seed}:rest")
        self._slow_seconds = slow_seconds
        self._history: dict[str, deque[dict[str, Any]]] = {i: deque(maxlen=lag_ticks + 1) for i in books}
        self._pending: list[tuple[str, str | None]] = []
        self.record_tick()

    def record_tick(self) -> None:
        """Remember every book's current state (REST serves the oldest one kept)."""
        for inst_id, book in self._books.items():
            bids, asks = book.top()
            self._history[inst_id].append(
                {"asks": asks, "bids": bids, "ts": str(book.ts_ms), "seqId": book.seq_id}
            )

    def inject(self, fault: str, inst_id: str | None) -> None:
        """Make the next books request (for `inst_id`, or any) fail with `fault`."""
        self._pending.append((fault, inst_id))

    def _fault(self, name: str, inst_id: str) -> bool:
        fired = self._plan.fires(name, self._rng)
        for pending in ((name, inst_id), (name, None)):
            if pending in self._pending:
                self._pending.remove(pending)
                fired = True
                break
        if fired:
            self._truth.fault(name, inst_id, self._books[inst_id].ts_ms)
        return fired

    async def handle(self, path: str, params: Mapping[str, str]) -> Response:
        if path == BOOKS_PATH:
            return await self._books_response(params)
        if path == INSTRUMENTS_PATH:
            return self._instruments_response(params)
        return json_response(HTTPStatus.NOT_FOUND, {"code": "404", "msg": f"Not Found: {path}", "data": []})

    async def _books_response(self, params: Mapping[str, str]) -> Response:
        inst_id = params.get("instId")
        if not inst_id:
            return _missing("instId")
        if inst_id not in self._books:
            return json_response(HTTPStatus.OK, _NO_INSTRUMENT)
        try:
            size = int(params.get("sz", "1"))
        except ValueError:
            size = 0
        if not 1 <= size <= DEPTH:
            return json_response(HTTPStatus.BAD_REQUEST, {"code": "51000", "msg": "Parameter sz error", "data": []})
        fired = {name for name in REST_FAULTS if self._fault(name, inst_id)}
        if "rest_slow" in fired:
            await asyncio.sleep(self._slow_seconds)
        for name in ("rest_429", "rest_error"):
            if name in fired:
                status, body = _FAILURES[name]
                return json_response(status, body)
        state = self._history[inst_id][0]
        book = {"asks": state["asks"][:size], "bids": state["bids"][:size], "ts": state["ts"], "seqId": state["seqId"]}
        return json_response(HTTPStatus.OK, {"code": "0", "msg": "", "data": [book]})

    def _instruments_response(self, params: Mapping[str, str]) -> Response:
        inst_type = params.get("instType")
        if not inst_type:
            return _missing("instType")
        inst_id = params.get("instId")
        if inst_id is not None and inst_id not in self._books:
            return json_response(HTTPStatus.OK, _NO_INSTRUMENT)
        wanted = [inst_id] if inst_id else list(self._books)
        data = [instrument_object(self._books[i].spec) for i in wanted] if inst_type == "SWAP" else []
        return json_response(HTTPStatus.OK, {"code": "0", "msg": "", "data": data})

"""REST half of the simulator: OKX `/api/v5/market/books` and `/api/v5/public/instruments`.

Answers are `websockets` HTTP responses with JSON bodies, served from the WebSocket server's
`process_request` hook (the connection is closed after each). Books can be served a few ticks late
(`lag_ticks`) to exercise the client's alignment retries. Both endpoints can fail on purpose (REST
and instruments faults): an error status, an HTML maintenance page, a body cut short, or (books) a
ts stamped later than the state served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import deque
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, NamedTuple

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from collector.simulator.faults import INSTRUMENTS_FAULTS, REST_FAULTS, VALUED_FAULTS, FaultPlan
from collector.simulator.instruments import instrument_object
from collector.simulator.market import DEPTH, MarketBook
from collector.simulator.truth import TruthLog

BOOKS_PATH = "/api/v5/market/books"
INSTRUMENTS_PATH = "/api/v5/public/instruments"
SLOW_SECONDS = 2.0
MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head>"
    b"<body><center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center></body></html>"
)

_NO_INSTRUMENT = {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
_FAILURES = {
    "rest_429": (HTTPStatus.TOO_MANY_REQUESTS, {"code": "50011", "msg": "Too Many Requests", "data": []}),
    "rest_error": (
        HTTPStatus.INTERNAL_SERVER_ERROR,
        {"code": "50001", "msg": "Service temporarily unavailable. Please try again later.", "data": []},
    ),
}


class Injection(NamedTuple):
    """A fault injected once; `value` is a valued fault's value."""

    fault: str
    inst_id: str | None
    value: int | None


def _response(status: HTTPStatus, content_type: str, body: bytes) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def json_response(status: HTTPStatus, payload: Any) -> Response:
    """An HTTP response with a JSON body (the connection is closed after it)."""
    return _response(status, "application/json", orjson.dumps(payload))


def maintenance_page() -> Response:
    """HTTP 200 with an HTML maintenance page, as a CDN in front of the API may answer."""
    return _response(HTTPStatus.OK, "text/html", MAINTENANCE_PAGE)


def cut_short(response: Response) -> Response:
    """`response` still promising its full Content-Length but carrying only the first half of its
    body. websockets sends it unchanged and then ends the connection, so the client's read of the
    body fails (http.client raises IncompleteRead)."""
    return dataclasses.replace(response, body=response.body[: len(response.body) // 2])


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
        clock_ms: Callable[[], int],
        lag_ticks: int = 0,
        slow_seconds: float = SLOW_SECONDS,
    ) -> None:
        self._books = books
        self._plan = plan
        self._truth = truth
        self._clock_ms = clock_ms
        self._rng = random.Random(f"{seed}:rest")
        self._instruments_rng = random.Random(f"{seed}:instruments")
        self._slow_seconds = slow_seconds
        self._history: dict[str, deque[dict[str, Any]]] = {i: deque(maxlen=lag_ticks + 1) for i in books}
        self._pending: list[Injection] = []
        self.record_tick()

    def record_tick(self) -> None:
        """Remember every book's current state (REST serves the oldest one kept)."""
        for inst_id, book in self._books.items():
            bids, asks = book.top()
            self._history[inst_id].append(
                {"asks": asks, "bids": bids, "ts": book.ts_ms, "seqId": book.seq_id}
            )

    def inject(self, fault: str, inst_id: str | None, value: int | None = None) -> None:
        """Make the next request to `fault`'s endpoint (for `inst_id`, or any) fail with `fault`;
        `value` is a valued fault's value (by default the fault's default)."""
        self._pending.append(Injection(fault, inst_id, VALUED_FAULTS.get(fault) if value is None else value))

    def _take_injected(self, name: str, inst_id: str | None) -> Injection | None:
        """The pending injection of `name` for `inst_id`, else for any instrument; removed."""
        for key in (inst_id, None):
            for injection in self._pending:
                if (injection.fault, injection.inst_id) == (name, key):
                    self._pending.remove(injection)
                    return injection
        return None

    def _fault(self, name: str, rng: random.Random, inst_id: str | None, ts_ms: int) -> bool:
        fired = self._plan.fires(name, rng)
        if self._take_injected(name, inst_id) is not None:
            fired = True
        if fired:
            self._truth.fault(name, inst_id, ts_ms)
        return fired

    def _stamp(self, inst_id: str, true_ts: int) -> str:
        """The ts of a books answer: the state's own, or later by rest_ts_skew (drawn or injected)."""
        limit = self._plan.value("rest_ts_skew")
        skew = None if limit is None else self._rng.randint(0, limit)
        injected = self._take_injected("rest_ts_skew", inst_id)
        if injected is not None:
            skew = injected.value
        if skew is None:
            return str(true_ts)
        self._truth.fault("rest_ts_skew", inst_id, true_ts, skew_ms=skew)
        return str(true_ts + skew)

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
        ts_ms = self._books[inst_id].ts_ms
        fired = {
            name for name in REST_FAULTS if name not in VALUED_FAULTS and self._fault(name, self._rng, inst_id, ts_ms)
        }
        if "rest_slow" in fired:
            await asyncio.sleep(self._slow_seconds)
        for name in ("rest_429", "rest_error"):
            if name in fired:
                status, body = _FAILURES[name]
                return json_response(status, body)
        if "rest_html" in fired:
            return maintenance_page()
        state = self._history[inst_id][0]
        book = {
            "asks": state["asks"][:size],
            "bids": state["bids"][:size],
            "ts": self._stamp(inst_id, state["ts"]),
            "seqId": state["seqId"],
        }
        response = json_response(HTTPStatus.OK, {"code": "0", "msg": "", "data": [book]})
        return cut_short(response) if "rest_cut" in fired else response

    def _instruments_response(self, params: Mapping[str, str]) -> Response:
        inst_type = params.get("instType")
        if not inst_type:
            return _missing("instType")
        inst_id = params.get("instId")
        if inst_id is not None and inst_id not in self._books:
            return json_response(HTTPStatus.OK, _NO_INSTRUMENT)
        ts_ms = self._clock_ms()
        fired = {name for name in INSTRUMENTS_FAULTS if self._fault(name, self._instruments_rng, inst_id, ts_ms)}
        if "instruments_html" in fired:
            return maintenance_page()
        wanted = [inst_id] if inst_id else list(self._books)
        data = [instrument_object(self._books[i].spec) for i in wanted] if inst_type == "SWAP" else []
        response = json_response(HTTPStatus.OK, {"code": "0", "msg": "", "data": data})
        return cut_short(response) if "instruments_cut" in fired else response

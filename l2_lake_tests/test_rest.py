"""The REST client against a real HTTP server on loopback: every failure is one `RestError`.

The server answers each path with a canned misbehaviour seen from real endpoints (maintenance pages,
bodies cut short, 429 with Retry-After, garbage status lines, hangs), so the collector's callers
only ever need to catch `RestError`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from l2_lake.venues.okx import OKX
from l2_lake.venues.rest import RateLimiter, RestClient, RestError

JSON_OK = b'{"code":"0","msg":"","data":[{"instId":"BTC-USDT-SWAP"}]}'
HTML = b"<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head></html>"


class Misbehaving(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, length: int | None = None, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/ok":
            self._send(200, JSON_OK)
        elif path == "/html":
            self._send(200, HTML, Content_Type="text/html")
        elif path == "/okx-error":
            self._send(200, b'{"code":"50001","msg":"Service temporarily unavailable","data":[]}')
        elif path == "/cut":
            self._send(200, JSON_OK[:20], length=len(JSON_OK))
            self.close_connection = True
        elif path == "/429":
            self._send(429, b'{"code":"50011","msg":"Too Many Requests"}', Retry_After="1")
        elif path == "/garbage":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            self.close_connection = True
        elif path == "/hang":
            time.sleep(2)
            self._send(200, JSON_OK)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def get(base: str, path: str, timeout: float = 5.0):
    return asyncio.run(RestClient(OKX, base, timeout).get(path, {"instType": "SWAP"}))


def test_ok_returns_okx_data(server: str) -> None:
    assert get(server, "/ok") == [{"instId": "BTC-USDT-SWAP"}]


@pytest.mark.parametrize(("path", "says"), [
    ("/html", "not JSON"),
    ("/okx-error", "OKX code 50001"),
    ("/cut", "cut short"),
    ("/429", "HTTP 429"),
    ("/garbage", "failed"),
])
def test_every_bad_answer_is_a_rest_error(server: str, path: str, says: str) -> None:
    with pytest.raises(RestError, match=says) as info:
        get(server, path)
    assert path in str(info.value)


def test_timeout_refused_and_tls_errors_are_rest_errors(server: str) -> None:
    with pytest.raises(RestError, match="failed"):
        get(server, "/hang", timeout=0.3)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(RestError, match="failed"):
        get(f"http://127.0.0.1:{port}", "/ok")
    with pytest.raises(RestError, match=r"SSL|failed"):
        get(server.replace("http://", "https://"), "/ok")  # TLS handshake against a plain HTTP server


def test_429_retry_after_pauses_the_next_request(server: str) -> None:
    async def scenario() -> float:
        client = RestClient(OKX, server, 5.0)
        with pytest.raises(RestError) as info:
            await client.get("/429", {})
        assert info.value.status == 429 and info.value.retry_after == 1.0
        started = time.monotonic()
        with pytest.raises(RestError):
            await client.get("/429", {})
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.9


def test_rate_limiter_spaces_requests_in_a_sliding_window() -> None:
    now = [100.0]
    limiter = RateLimiter(limit=3, window_s=2.0, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.delay() == 0.0
        limiter._sent.append(now[0])
    assert limiter.delay() == pytest.approx(2.0)
    now[0] += 1.5
    assert limiter.delay() == pytest.approx(0.5)
    limiter.pause(4.0)
    assert limiter.delay() == pytest.approx(4.0)

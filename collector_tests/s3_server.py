"""A real S3 API on loopback for the shipper's tests and `bench/ship.py`: moto's standalone server
(`python -m moto.server -H 127.0.0.1 -p PORT`) as its own process, plus a small fault-injecting
HTTP proxy that sits in front of it.

- `s3_server` (session-scoped fixture): one server for the whole session; tests use their own bucket.
- `s3_server_fn` (function-scoped): a server of the test's own that it may `kill()` (SIGKILL: the
  store is down; moto keeps objects in memory, so a restarted server is an empty store), `pause()` /
  `resume()` (SIGSTOP/SIGCONT: a store that hangs, objects kept) and `start()` again on the same port.
- `FaultProxy`: forwards every request to the server unchanged, except that the next `fail_puts`
  PUTs get a 500 (after their body was read), GETs can be held `get_delay_s` before they are sent on,
  the next `corrupt_gets` GETs get a byte flipped in their body, and `throttle_bps` slows request
  bodies (requests with a Content-Length; chunked uploads are not relayed). It is test infrastructure
  in front of the real server, not a stand-in for our code.
- `s3_env(monkeypatch, endpoint)`: the standard AWS variables a collector process reads.

Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


@dataclass
class S3Server:
    """moto's server as a child process on `HOST:port`; `start()` may be called again after `kill()`."""

    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> S3Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"moto server did not start on port {self.port}; see {self.log_path}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: the store is gone at once (connections refused); its objects are lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process must be able to die
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers (a hung store)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self):  # -> botocore S3 client
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"lake-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def start_s3_server(log_dir: Path, port: int | None = None) -> S3Server:
    server = S3Server(Path(log_dir) / "moto-server.log", **({"port": port} if port else {}))
    return server.start()


def s3_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Credentials and endpoint for this process and the collector processes it starts."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


# -- fault proxy --------------------------------------------------------------------------------------

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "expect"}


class FaultProxy:
    """A threaded HTTP proxy on loopback in front of `upstream_port` that injects faults on request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fail_puts = 0  # next N PUTs answer 500 (body read, nothing forwarded)
        self.get_delay_s = 0.0  # hold every GET this long before forwarding it
        self.throttle_bps = 0  # request-body bytes per second (0: unlimited)
        self.corrupt_gets = 0  # next N successful GETs of a non-empty object get one byte flipped
        self.puts_failed = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                chunks, left = [], length
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                    if proxy.throttle_bps:
                        time.sleep(len(chunk) / proxy.throttle_bps)
                return b"".join(chunks)

            def _relay(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    fail = self.command == "PUT" and proxy.fail_puts > 0
                    if fail:
                        proxy.fail_puts -= 1
                        proxy.puts_failed += 1
                if fail:
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
                               b"<Message>injected by the test proxy</Message></Error>")
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if self.command == "GET" and proxy.get_delay_s:
                    time.sleep(proxy.get_delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    upstream = http.client.HTTPConnection(HOST, proxy.upstream_port, timeout=60)
                    upstream.request(self.command, self.path, body=body if body else None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                except OSError:
                    self.send_error(502)
                    return
                if self.command == "GET" and response.status == 200 and data:
                    with proxy._lock:
                        corrupt = proxy.corrupt_gets > 0
                        proxy.corrupt_gets -= corrupt
                    if corrupt:
                        data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    with contextlib.suppress(OSError):
                        self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- fixtures (registered in collector_tests/conftest.py) -----------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto server for the session; create a bucket per test (`s3_server.create_bucket()`)."""
    server = start_s3_server(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def s3_server_fn(tmp_path: Path) -> Iterator[S3Server]:
    """A moto server of this test's own, to kill, pause and restart."""
    server = start_s3_server(tmp_path)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def fault_proxy_factory() -> Iterator:
    proxies: list[FaultProxy] = []

    def make(upstream_port: int) -> FaultProxy:
        proxies.append(FaultProxy(upstream_port))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()

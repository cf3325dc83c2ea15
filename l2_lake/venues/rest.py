"""Async client for a venue's public REST endpoints (stdlib urllib run in a daemon thread per request).

REST is off the hot path (metadata once a day, books only to resync), so a thread per request is
cheap and avoids another HTTP dependency. Every way a call can fail — connect, TLS, timeout, a body
cut short, a body that is not JSON (an HTML maintenance page), an error code in the venue's
envelope (OKX: `code` other than "0"), HTTP 429 — comes back as one `RestError`, whose message
names the URL and what was wrong. Requests to one path share a `RateLimiter` at the venue's limit,
and a 429's `Retry-After` pauses every later request to that path.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from l2_lake.threads import settle_from_thread

if TYPE_CHECKING:
    from l2_lake.venues.venue import Venue

USER_AGENT = "okx-l2-collector/0.1"
DEFAULT_RETRY_AFTER_S = 2.0  # a 429 without a usable Retry-After header
MAX_RETRY_AFTER_S = 60.0
DEFAULT_LIMIT = 10  # requests per 2 s to a path the venue gives no limit for


class RestError(OSError):
    """A REST call that gave no usable OKX result.

    `status` is the HTTP status (None when no response arrived), `code` the OKX code when the body
    had one, `retry_after` the seconds a 429 asked us to wait.
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class RateLimiter:
    """At most `limit` requests per `window_s` (a sliding window), plus a pause after a 429."""

    def __init__(self, limit: int, window_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._sent: list[float] = []
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def delay(self) -> float:
        """Seconds to wait before the next request may go out (0 when it may go now)."""
        now = self._clock()
        self._sent = [t for t in self._sent if t > now - self._window]
        wait = self._paused_until - now
        if len(self._sent) >= self._limit:
            wait = max(wait, self._sent[0] + self._window - now)
        return max(0.0, wait)

    async def acquire(self) -> None:
        async with self._lock:
            while (wait := self.delay()) > 0:
                await asyncio.sleep(wait)
            self._sent.append(self._clock())


def build_url(base_url: str, path: str, params: dict[str, str]) -> str:
    return f"{base_url.rstrip('/')}{path}?{urlencode(params)}"


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), bounded."""
    seconds = DEFAULT_RETRY_AFTER_S
    if value:
        try:
            seconds = float(value)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def preview(body: bytes) -> str:
    """The start of a body, on one line, for an error message."""
    return " ".join(body[:120].decode("utf-8", "replace").split())


def _get(url: str, timeout: float) -> bytes:
    """The body of an HTTP 200 answer; RestError for anything else, whatever layer failed."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        body = b""
        with contextlib.suppress(OSError, http.client.HTTPException):
            body = exc.read()
        retry = _retry_after(exc.headers.get("Retry-After")) if exc.code == 429 else None
        raise RestError(f"GET {url} -> HTTP {exc.code}: {preview(body)}", exc.code, retry_after=retry) from None
    except http.client.IncompleteRead as exc:
        raise RestError(f"GET {url}: body cut short ({len(exc.partial)} bytes received, "
                        f"{exc.expected} more expected)") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, TLS (ssl.SSLError is an OSError), timeouts, resets, malformed status lines
        reason = getattr(exc, "reason", None) or exc
        raise RestError(f"GET {url} failed: {type(exc).__name__}: {reason}") from None


def _in_daemon_thread(loop: asyncio.AbstractEventLoop, work: Callable[[], bytes]) -> asyncio.Future[bytes]:
    """Run `work` in a daemon thread: a hung server must not keep the process alive after SIGTERM
    (an executor is joined at exit; a daemon thread is not)."""
    future: asyncio.Future[bytes] = loop.create_future()
    threading.Thread(target=settle_from_thread, args=(loop, future, work), name="okx-rest", daemon=True).start()
    return future


class RestClient:
    """A venue's REST API at `base_url`, with one rate limiter per path shared by every caller."""

    def __init__(self, venue: Venue, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.venue = venue
        self._limiters: dict[str, RateLimiter] = {}

    def limiter(self, path: str) -> RateLimiter:
        if path not in self._limiters:
            self._limiters[path] = RateLimiter(self.venue.rest_requests_per_2s.get(path, DEFAULT_LIMIT))
        return self._limiters[path]

    async def get(self, path: str, params: dict[str, str]) -> Any:
        """GET `path?params` and return the OKX `data`; raises RestError for every failure."""
        limiter = self.limiter(path)
        await limiter.acquire()
        url = build_url(self.base_url, path, params)
        try:
            body = await _in_daemon_thread(asyncio.get_running_loop(), partial(_get, url, self.timeout))
        except RestError as exc:
            if exc.retry_after is not None:
                limiter.pause(exc.retry_after)
            raise
        return self.venue.parse_rest_body(url, body)

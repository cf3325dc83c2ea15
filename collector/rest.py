"""Minimal async REST client for OKX public endpoints (stdlib urllib run in a worker thread).

REST is off the hot path (metadata every 24 h, books only to resync), so a thread per request is
cheap and avoids another HTTP dependency. Errors come back as `RestError` with the URL, status and
OKX code in the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from urllib.parse import urlencode

USER_AGENT = "okx-l2-collector/0.1"


class RestError(OSError):
    """A REST call that did not return HTTP 200; `status` is None for network errors."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def build_url(base_url: str, path: str, params: dict[str, str]) -> str:
    return f"{base_url.rstrip('/')}{path}?{urlencode(params)}"


def _get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()[:200].decode("utf-8", "replace")
        raise RestError(f"GET {url} -> HTTP {exc.code}: {body}", exc.code) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RestError(f"GET {url} failed: {reason}") from None


async def get(base_url: str, path: str, params: dict[str, str], timeout: float) -> bytes:
    """GET `base_url + path?params`; returns the body of an HTTP 200 response.

    The request runs in a daemon thread rather than the loop's executor: a hung server must not keep
    the process alive after SIGTERM (an executor is joined at exit; a daemon thread is not).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    url = build_url(base_url, path, params)

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            body = _get(url, timeout)
        except BaseException as exc:  # handed to the awaiting coroutine, not lost in the thread
            result: Callable[[], None] = partial(future.set_exception, exc)
        else:
            result = partial(future.set_result, body)
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=work, name="okx-rest", daemon=True).start()
    return await future

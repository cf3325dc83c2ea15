"""Minimal async REST client for OKX public endpoints (stdlib urllib run in a worker thread).

Two calls a minute per instrument at most, so a thread per request is cheap and avoids another
HTTP dependency. Errors come back as `RestError` with the URL, status and OKX code in the message.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
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
    """GET `base_url + path?params`; returns the body of an HTTP 200 response."""
    return await asyncio.to_thread(_get, build_url(base_url, path, params), timeout)

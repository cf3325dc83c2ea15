"""systemd integration: the sd_notify protocol (READY, STOPPING, STATUS, WATCHDOG) with no dependency.

Under a `Type=notify` unit systemd sets `NOTIFY_SOCKET`: an `AF_UNIX` datagram socket, given as a path or,
with a leading `@`, a name in Linux's abstract namespace. A notification is one datagram of
newline-separated `KEY=VALUE` lines (sd_notify(3)). With `WatchdogSec=` systemd also sets
`WATCHDOG_USEC` (and `WATCHDOG_PID`, the process meant to ping): without a `WATCHDOG=1` within that
period systemd kills the service (SIGABRT) and `Restart=` starts it again.

Written here rather than imported: the protocol is one `sendto`, `sdnotify` on PyPI has not been
maintained since 2017, and `systemd-python` (the official binding) is a C extension that needs the
libsystemd headers to build. Outside systemd (`NOTIFY_SOCKET` unset) every function is a no-op, and a
failing send never raises: it is logged once and the collector goes on.

`keepalive()` is the collector's supervised watchdog task: it pings only while the process is
healthy. That the task runs at all proves the event loop is not blocked; before each ping it also
proves the lake writer thread moves, by waiting for a no-op job to pass through its queue. A writer
that does not get through its queue within the watchdog period (a disk that hangs) withholds the
pings, so systemd restarts the collector; a slow moment shorter than that costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from l2_lake.logs import log_event

log = logging.getLogger("collector.systemd")
STATUS_PERIOD_S = 30.0  # how often STATUS= is refreshed when systemd runs no watchdog
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log_event(log, logging.WARNING, "systemd_notify_error", None, message)


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when systemd (or anything speaking sd_notify) listens on `NOTIFY_SOCKET`."""
    return bool((os.environ if environ is None else environ).get("NOTIFY_SOCKET"))


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):  # abstract namespace: a leading NUL byte instead of the @
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # e.g. systemd >= 254's vsock:CID:PORT, which a host process is never given


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=…") as one notification; False if not sent.

    A no-op without `NOTIFY_SOCKET`. Never blocks (a full receive queue is a failed send) and never
    raises: the first failure of each kind is logged, later ones are silent.
    """
    raw = os.environ.get("NOTIFY_SOCKET")
    if not raw or not states:
        return False
    address = _address(raw)
    if address is None:
        _warn_once("address", f"NOTIFY_SOCKET={raw!r} is not a unix socket address; systemd is not notified")
        return False
    payload = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(payload, address)
    except OSError as exc:
        _warn_once("send", f"cannot notify systemd at {raw} ({exc}); going on without it "
                           "(a unit with WatchdogSec= will restart this process)")
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd expects pings within, in seconds; None when no watchdog is armed
    for this process (`WATCHDOG_USEC` unset or invalid, or `WATCHDOG_PID` names another process)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        _warn_once("watchdog", f"ignoring WATCHDOG_USEC={usec!r} / WATCHDOG_PID={pid!r}: not integers")
        return None
    return value / 1_000_000 if value > 0 else None


async def keepalive(probe: Callable[[], Awaitable[object]], summary: Callable[[], str]) -> None:
    """Run until cancelled (supervised): every half watchdog period, if `probe()` completes within
    that time, send `WATCHDOG=1` with `STATUS=<summary()>`; else only a STATUS saying what is stuck.

    One probe is in flight at a time: a stuck one is waited for across periods, never piled up.
    Without a watchdog only the STATUS line is refreshed, every `STATUS_PERIOD_S`.
    """
    watchdog = watchdog_interval()
    period = watchdog / 2 if watchdog else STATUS_PERIOD_S
    pending: asyncio.Future[object] | None = None
    submitted = 0.0
    withheld = False
    try:
        while True:
            tick = time.monotonic()
            if pending is None:
                pending, submitted = asyncio.ensure_future(probe()), tick
            done, _ = await asyncio.wait({pending}, timeout=period)
            if done:
                pending.result()  # a probe that raises is a bug: the supervisor logs it and restarts this task
                pending = None
                if withheld:
                    withheld = False
                    log_event(log, logging.WARNING, "watchdog_resumed", None,
                              "the lake writer moves again; systemd watchdog pings resumed")
                notify(*(("WATCHDOG=1",) if watchdog else ()), f"STATUS={summary()}")
                await asyncio.sleep(max(0.0, period - (time.monotonic() - tick)))
                continue
            stuck_s = time.monotonic() - submitted
            if not withheld and watchdog:
                withheld = True
                log_event(log, logging.ERROR, "watchdog_withheld", None,
                          f"the lake writer has not got through its queue for {stuck_s:.0f} s; systemd watchdog "
                          f"pings withheld: systemd restarts the collector after {watchdog:g} s without one")
            notify(f"STATUS=lake writer not responding for {stuck_s:.0f} s (disk hung?)")
    finally:
        if pending is not None:
            pending.cancel()

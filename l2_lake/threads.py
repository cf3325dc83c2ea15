"""Handing work to a thread and its outcome back to the event loop, without losing an exception."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
from typing import TypeVar

T = TypeVar("T")


def settle_from_thread(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], work: Callable[[], T]) -> None:
    """Run `work` (in the calling thread) and resolve `future` on `loop` with its result or exception."""
    try:
        value = work()
    except BaseException as exc:  # handed to the awaiting coroutine, not lost in the thread
        outcome: Callable[[], None] = partial(future.set_exception, exc)
    else:
        outcome = partial(future.set_result, value)

    def settle() -> None:
        if not future.done():
            outcome()

    with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody is waiting
        loop.call_soon_threadsafe(settle)

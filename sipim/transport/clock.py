"""The sans-IO `Clock` (sipim.sip.clock) over an asyncio event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

__all__ = ["AsyncioClock"]

log = logging.getLogger(__name__)


class AsyncioClock:
    """`now()` is the loop's monotonic time; `call_later` returns the loop's TimerHandle.

    Works with the default loop and with uvloop alike (both return handles with
    `.cancel()`).  A timer callback that raises is logged here rather than left to the
    loop's exception handler, so one faulty timer cannot go unnoticed or stop others.
    """

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(max(delay, 0.0), _guarded, callback)


def _guarded(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("timer callback %r failed", callback)

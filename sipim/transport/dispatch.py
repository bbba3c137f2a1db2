"""Calling the core from the transports without letting the core break them.

Every transport hands received messages, parse errors and closed flows to the
callbacks given to `TransportManager`.  A callback that raises must not kill a
connection's read loop or the server (an exception escaping `data_received` would
close the connection, one escaping `datagram_received` would reach the loop's
exception handler for every packet), so every call goes through here: exceptions are
logged and the transport carries on.  A callback may be a plain function or a
coroutine function; coroutines run as tasks that are tracked and logged the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable

from sipim.net import Source
from sipim.sip.errors import SIPParseError

from .base import Flow

__all__ = ["Dispatcher"]

log = logging.getLogger("sipim.transport")


class Dispatcher:
    def __init__(self, on_message: Callable[[Any, Source], Any],
                 on_parse_error: Callable[[SIPParseError, Source, bytes], Any] | None,
                 on_flow_closed: Callable[[Flow], Any] | None) -> None:
        self._on_message = on_message
        self._on_parse_error = on_parse_error
        self._on_flow_closed = on_flow_closed
        self._tasks: set[asyncio.Task] = set()

    def message(self, message: Any, source: Source) -> None:
        self._call(self._on_message, message, source)

    def parse_error(self, error: SIPParseError, source: Source, raw: bytes) -> None:
        log.debug("unparsable message from %s %s: %s", source.transport, source.remote, error)
        if self._on_parse_error is not None:
            self._call(self._on_parse_error, error, source, raw)

    def flow_closed(self, flow: Flow) -> None:
        if self._on_flow_closed is not None:
            self._call(self._on_flow_closed, flow)

    def _call(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            result = callback(*args)
        except Exception:
            log.exception("%s raised; the transport carries on", getattr(callback, "__qualname__", callback))
            return
        # Most callbacks are plain functions returning None: spare them isawaitable's
        # ABC checks (a few microseconds per datagram at thousands a second).
        if result is not None and inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)  # a strong reference: the loop only keeps weak ones
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("transport callback task failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for callback tasks still running (used on stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

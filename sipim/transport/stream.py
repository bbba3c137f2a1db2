"""SIP over TCP and TLS (RFC 3261 §18.3 framing, RFC 5626 §4.4.1 keep-alives).

One `StreamConnection` per connection, inbound (accepted by a listener) or outbound
(opened by `TransportManager.send` to reach a host:port).  It is both the asyncio
Protocol and the `Flow` the core sees.  The byte stream is cut into messages by the
sans-IO `StreamFramer`.  Every parse error goes to the core, which answers a request it
could read (400 naming the problem, 505 for another SIP version) from the error's partial
message, synchronously, before this returns.  A bad message whose extent was known (its
Content-Length) leaves the stream in sync and the connection goes on; when framing is
lost (no or a bad Content-Length, an oversized or unreadable head) the next message
boundary is unknown, so the connection is closed once that answer is flushed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sipim.net import Source, host_port
from sipim.sip.errors import SIPParseError
from sipim.sip.parser import KeepAlive, StreamFramer

from .base import Flow
from .dispatch import Dispatcher
from .flows import FlowTable

__all__ = ["StreamConnection", "StreamSettings"]

log = logging.getLogger("sipim.transport")

# RFC 5626 §4.4.1: the server "pong" to a double-CRLF "ping" is a single CRLF.
PONG = b"\r\n"
# How many bytes of the offending data to hand to on_parse_error (for logs and audit).
RAW_EXCERPT = 4096


class StreamSettings:
    """What every stream connection of a manager shares (limits passed in, never hard-coded)."""

    __slots__ = ("dispatcher", "flows", "parser_limits", "idle_timeout", "max_send_buffer")

    def __init__(self, dispatcher: Dispatcher, flows: FlowTable, parser_limits: Any,
                 idle_timeout: float, max_send_buffer: int) -> None:
        self.dispatcher = dispatcher
        self.flows = flows
        self.parser_limits = parser_limits
        self.idle_timeout = idle_timeout
        self.max_send_buffer = max_send_buffer


class StreamConnection(asyncio.Protocol, Flow):
    def __init__(self, settings: StreamSettings, transport_name: str, *, inbound: bool,
                 requested: tuple[str, int] | None = None) -> None:
        # remote/local are known once connected; until then an outbound flow shows the
        # address it is being opened to.
        Flow.__init__(self, transport_name, requested or ("", 0), ("", 0), settings.flows.new_id(transport_name))
        self._settings = settings
        self._inbound = inbound
        self._requested = requested
        self._transport: asyncio.Transport | None = None
        self._framer = StreamFramer(settings.parser_limits)
        self._source: Source | None = None
        self._closed = False
        self._registered = False
        # Outbound bytes queued while the connection is still being opened.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- Flow -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def inbound(self) -> bool:
        return self._inbound

    def send(self, data: bytes) -> None:
        if self._closed:
            return
        limit = self._settings.max_send_buffer
        if self._transport is None:  # still connecting: queue
            if self._pending_size + len(data) > limit:
                log.warning("%r: more than %d bytes queued while connecting; giving up", self, limit)
                self.close()
                return
            self._pending.append(data)
            self._pending_size += len(data)
            return
        if self._transport.get_write_buffer_size() + len(data) > limit:
            # A peer that does not read: drop it rather than buffer without bound.
            log.warning("%r: peer is not reading (send buffer over %d bytes); closing", self, limit)
            self._abort()
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_idle_timer()
        if self._transport is not None:
            self._transport.close()  # flushes what is buffered, then connection_lost
        else:
            self._pending.clear()

    def abort(self) -> None:
        """Close at once, dropping whatever the peer has not read yet."""
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        self._cancel_idle_timer()
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.remote = host_port(transport.get_extra_info("peername"))
        self.local = host_port(transport.get_extra_info("sockname"))
        self._source = Source(self.transport, self.remote, self.local, self)
        flows = self._settings.flows
        if self._closed:  # closed by the core while connecting
            transport.abort()
            return
        if self._inbound and not flows.admit(self.remote[0]):
            log.warning("refusing %s connection from %s: %d connections from that address already",
                        self.transport, self.remote[0], flows.max_connections_per_ip)
            self._abort()
            return
        aliases = (self._requested,) if self._requested and self._requested != self.remote else ()
        flows.add(self, inbound=self._inbound, aliases=aliases)
        self._registered = True
        if self._inbound and self._settings.idle_timeout > 0:
            # A connection that never sends a valid message is closed after a while, so
            # idle sockets cannot pile up (RFC 5626 §4.4.1 clients ping well before).
            self._idle_timer = asyncio.get_running_loop().call_later(
                self._settings.idle_timeout, self._idle_expired)
        if self._pending:
            pending, self._pending, self._pending_size = self._pending, [], 0
            for data in pending:
                self.send(data)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        source = self._source
        assert source is not None
        dispatcher = self._settings.dispatcher
        # The framer returns the messages completed so far and keeps an error met after
        # them for its next call; feeding b"" until it returns nothing surfaces that
        # error now and, after a recoverable error, frames what follows the bad message.
        chunk = data
        while not self._closed:
            try:
                items = self._framer.feed(chunk)
            except SIPParseError as error:
                dispatcher.parse_error(error, source, data[:RAW_EXCERPT])  # may answer
                if not error.recoverable:
                    # Framing is lost (bad Content-Length, oversized head): nothing
                    # later on this stream can be trusted (RFC 3261 §18.3).  close()
                    # still flushes the answer the core has just written.
                    self.close()
                    return
                chunk = b""
                continue
            except Exception:  # a parser bug must not take the server down
                log.exception("%r: framer failed; closing the connection", self)
                self._abort()
                return
            if not items:
                return
            for item in items:
                if isinstance(item, KeepAlive):
                    self.send(PONG)  # RFC 5626 §4.4.1
                    continue
                self._cancel_idle_timer()
                dispatcher.message(item, source)
            chunk = b""

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_idle_timer()
        self._pending.clear()
        if self._registered:
            self._registered = False
            self._settings.flows.remove(self)

    # -- outbound connection failed before connection_made ---------------------

    def connect_failed(self, exc: BaseException) -> None:
        log.info("%s connection to %s:%s failed: %s", self.transport, *(self._requested or ("?", 0)), exc)
        self._closed = True
        self._pending.clear()

    # -------------------------------------------------------------------------

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self._closed:
            log.info("%r: no valid SIP message within %.0f s; closing", self, self._settings.idle_timeout)
            self._abort()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

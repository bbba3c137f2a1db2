"""SIP over WebSocket, plain and secure (RFC 7118), on an aiohttp server.

A ws/wss port is also the HTTP(S) port of the web roles (XCAP, provisioning, web
client), so each listener runs an aiohttp application: the one `http_app_factory()`
builds, or an empty one.  A middleware takes every request that asks for
`Upgrade: websocket`, whatever its path, and accepts it as a SIP connection only when
the client offers the `sip` subprotocol (RFC 7118 §4.1; the 101 must name `sip` or
browsers drop the socket).  Other upgrades are refused with 400.

Each WebSocket message carries exactly one SIP message (RFC 7118 §5), so a message
that cannot be parsed does not break framing: the core is told and the connection
stays open.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from sipim.net import Source, host_port
from sipim.sip.errors import SIPParseError
from sipim.sip.parser import parse_message

from .base import Flow
from .dispatch import Dispatcher
from .flows import FlowTable

__all__ = ["WebSocketFlow", "WebSocketSettings", "install_sip_websocket"]

log = logging.getLogger("sipim.transport")

SUBPROTOCOL = "sip"
KEEPALIVE_PING = b"\r\n\r\n"
KEEPALIVE_PONG = "\r\n"
REFUSAL_TEXT = ("This endpoint accepts WebSocket connections for SIP only: "
                "offer the subprotocol \"sip\" (Sec-WebSocket-Protocol: sip, RFC 7118 §4.1).\n")


class WebSocketSettings:
    __slots__ = ("dispatcher", "flows", "parser_limits", "idle_timeout", "max_send_buffer", "max_message_size")

    def __init__(self, dispatcher: Dispatcher, flows: FlowTable, parser_limits: Any,
                 idle_timeout: float, max_send_buffer: int, max_message_size: int) -> None:
        self.dispatcher = dispatcher
        self.flows = flows
        self.parser_limits = parser_limits
        self.idle_timeout = idle_timeout
        self.max_send_buffer = max_send_buffer
        self.max_message_size = max_message_size


class WebSocketFlow(Flow):
    """One SIP WebSocket connection.  `send` queues; a writer task sends in order."""

    def __init__(self, transport_name: str, remote: tuple[str, int], local: tuple[str, int],
                 flow_id: str, ws: web.WebSocketResponse, max_send_buffer: int) -> None:
        super().__init__(transport_name, remote, local, flow_id)
        self._ws = ws
        self._max_send_buffer = max_send_buffer
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        # Counted so the idle timer stops once the peer has spoken SIP.
        self.valid_messages = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        if self._closed:
            return
        if self._queued_bytes + len(data) > self._max_send_buffer:
            log.warning("%r: peer is not reading (send queue over %d bytes); closing", self, self._max_send_buffer)
            self.close()
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._wakeup.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wakeup.set()  # the writer closes the WebSocket

    async def run_writer(self) -> None:
        ws = self._ws
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    data = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError:
                        # RFC 7118 §4.2: a message that is not all UTF-8 goes in a binary frame.
                        await ws.send_bytes(data)
                    else:
                        await ws.send_str(text)
                if self._closed:
                    break
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("%r: send failed: %s", self, exc)
        finally:
            self._closed = True
            self._queue.clear()
            if not ws.closed:
                try:
                    await ws.close()
                except Exception as exc:
                    log.debug("%r: close failed: %s", self, exc)


def _offers_sip(request: web.Request) -> bool:
    offered = (token.strip().lower()
               for value in request.headers.getall("Sec-WebSocket-Protocol", ())
               for token in value.split(","))
    return SUBPROTOCOL in offered


def _is_websocket_upgrade(request: web.Request) -> bool:
    return any(token.strip().lower() == "websocket"
               for token in request.headers.get("Upgrade", "").split(","))


def install_sip_websocket(app: web.Application, transport_name: str, settings: WebSocketSettings) -> None:
    """Add the middleware that turns `Upgrade: websocket` requests into SIP flows."""

    @web.middleware
    async def sip_websocket_middleware(request: web.Request,
                                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                       ) -> web.StreamResponse:
        if not _is_websocket_upgrade(request):
            return await handler(request)
        if not _offers_sip(request):
            return web.Response(status=400, text=REFUSAL_TEXT)
        return await _serve_sip_websocket(request, transport_name, settings)

    # Outermost, so the web role's own middlewares (HTTP authentication, CSRF...) never
    # see SIP upgrades: SIP authenticates with digest inside the WebSocket (RFC 7118 §7).
    app.middlewares.insert(0, sip_websocket_middleware)


async def _serve_sip_websocket(request: web.Request, transport_name: str,
                               settings: WebSocketSettings) -> web.StreamResponse:
    assert request.transport is not None
    remote = host_port(request.transport.get_extra_info("peername"))
    local = host_port(request.transport.get_extra_info("sockname"))
    flows = settings.flows
    if not flows.admit(remote[0]):
        log.warning("refusing %s connection from %s: %d connections from that address already",
                    transport_name, remote[0], flows.max_connections_per_ip)
        return web.Response(status=503, text="Too many connections from your address.\n")

    # No permessage-deflate: a zlib context per connection costs far more memory than
    # SIP messages gain from it.
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=settings.max_message_size,
                               compress=False, autoping=True)
    await ws.prepare(request)
    flow = WebSocketFlow(transport_name, remote, local, flows.new_id(transport_name), ws,
                         settings.max_send_buffer)
    source = Source(transport_name, remote, local, flow)
    flows.add(flow, inbound=True)
    writer = asyncio.ensure_future(flow.run_writer())
    loop = asyncio.get_running_loop()
    idle_timer = (loop.call_later(settings.idle_timeout, flow.close) if settings.idle_timeout > 0 else None)
    try:
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                data = frame.data.encode("utf-8")
            elif frame.type == WSMsgType.BINARY:
                data = frame.data
            else:  # ERROR (e.g. message over max_msg_size): the connection is finished
                break
            if flow.closed:
                break
            try:
                _handle_message(data, flow, source, settings)
            except Exception:  # never let one message end the connection
                log.exception("%r: message could not be handled", flow)
                continue
            if idle_timer is not None and flow.valid_messages:
                idle_timer.cancel()
                idle_timer = None
    finally:
        if idle_timer is not None:
            idle_timer.cancel()
        flow.close()
        try:
            await writer
        except Exception:
            log.exception("%r: writer failed", flow)
        flows.remove(flow)
    return ws


def _handle_message(data: bytes, flow: WebSocketFlow, source: Source, settings: WebSocketSettings) -> None:
    if data == KEEPALIVE_PING:
        # RFC 7118 §6 allows the RFC 5626 CRLF keep-alive on WebSocket (SIP.js uses it).
        flow.send(KEEPALIVE_PONG.encode())
        return
    if not data.strip(b"\r\n"):
        return
    try:
        message = parse_message(data, settings.parser_limits)
    except SIPParseError as error:
        settings.dispatcher.parse_error(error, source, data)
        return
    flow.valid_messages += 1
    settings.dispatcher.message(message, source)

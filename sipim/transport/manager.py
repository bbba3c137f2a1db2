"""All listeners and connections of a node behind one object.

The core receives `on_message(message, source)` and sends with
`send(data, target) -> bool`.  How bytes reach the peer (which socket, an existing
connection or a new one) is decided here, following RFC 3261 §18 and the connection
reuse of RFC 5626 §5.3 / RFC 5923.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from typing import Any, Awaitable, Callable, Iterable, Protocol

from aiohttp import web

from sipim.net import WEBSOCKET_TRANSPORTS, ListenSpec, Source, Target, host_port
from sipim.sip.errors import SIPParseError
from sipim.sip.parser import ParserLimits

from .base import Flow, FlowIds
from .dispatch import Dispatcher
from .flows import FlowTable
from .stream import StreamConnection, StreamSettings
from .tls import client_ssl_context as make_client_ssl_context
from .udp import SOCKET_BUFFER_SIZES, UDPEndpoint, open_udp_socket
from .websocket import WebSocketSettings, install_sip_websocket

__all__ = ["RemoteFlows", "TransportManager", "bind_stream_socket"]

log = logging.getLogger("sipim.transport")


class RemoteFlows(Protocol):
    """The flows other worker processes hold (sipim/cluster/worker.py)."""

    def get(self, flow_id: str) -> Flow | None:
        """A stand-in for a flow another worker holds and that is not known to be
        gone; None for this process's own ids and for unknown owners."""


class TransportManager:
    """Listeners (udp, tcp, tls, ws, wss), the flow table and outbound connections.

    Callbacks may be plain functions or coroutine functions (run as tasks); an
    exception they raise is logged and never reaches the connection.
    """

    def __init__(
        self,
        listens: Iterable[ListenSpec | str],
        *,
        on_message: Callable[[Any, Source], Any],
        on_parse_error: Callable[[SIPParseError, Source, bytes], Any] | None = None,
        on_flow_closed: Callable[[Flow], Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        parser_limits: ParserLimits | None = None,
        max_connections_per_ip: int = 64,
        idle_timeout: float = 30.0,
        http_app_factory: Callable[[], web.Application] | None = None,
        max_send_buffer: int = 1 << 20,
        connect_timeout: float = 10.0,
        tls_handshake_timeout: float = 10.0,
        backlog: int = 1024,
        socket_buffer_sizes: tuple[int, ...] = SOCKET_BUFFER_SIZES,
        prebound: list[socket.socket] | None = None,
        remote_flows: RemoteFlows | None = None,
        flow_ids: FlowIds | None = None,
    ) -> None:
        self._listens = [spec if isinstance(spec, ListenSpec) else ListenSpec.parse(spec) for spec in listens]
        needs_tls = [str(s) for s in self._listens if s.transport in ("tls", "wss")]
        if needs_tls and ssl_context is None:
            raise ValueError(f"{', '.join(needs_tls)}: a TLS listener needs a server certificate (ssl_context)")
        self._ssl_context = ssl_context
        self._client_ssl_context = client_ssl_context
        self._parser_limits = parser_limits if parser_limits is not None else ParserLimits()
        self._dispatcher = Dispatcher(on_message, on_parse_error, on_flow_closed)
        self._flows = FlowTable(self._dispatcher.flow_closed, max_connections_per_ip, flow_ids)
        self._stream_settings = StreamSettings(self._dispatcher, self._flows, self._parser_limits,
                                               idle_timeout, max_send_buffer)
        self._ws_settings = WebSocketSettings(
            self._dispatcher, self._flows, self._parser_limits, idle_timeout, max_send_buffer,
            max_message_size=getattr(self._parser_limits, "max_message_size", 65535))
        self._http_app_factory = http_app_factory
        self._connect_timeout = connect_timeout
        self._tls_handshake_timeout = tls_handshake_timeout
        self._backlog = backlog
        self._socket_buffer_sizes = socket_buffer_sizes
        # A worker process (sipim/cluster) gets its listening sockets bound by the
        # supervisor, one per listener, in `listens` order; and reaches the flows of
        # the other workers through `remote_flows`.
        if prebound is not None and len(prebound) != len(self._listens):
            raise ValueError("prebound: one socket per listener")
        self._prebound = prebound
        self._sockets: list[socket.socket] | None = None  # bound by bind()
        self._remote_flows = remote_flows

        self._listening: list[tuple[str, str, int]] = []
        self._udp_endpoints: list[UDPEndpoint] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._runners: list[web.AppRunner] = []
        self._connecting: dict[tuple[str, str, int], StreamConnection] = {}
        self._background: set[asyncio.Task] = set()
        self._started = False

    # -- life cycle -----------------------------------------------------------

    def bind(self) -> list[tuple[str, str, int]]:
        """Bind every listening socket now (port 0 gets a free port) and return
        `listening()`; nothing is read until `start()`.  The caller can thus finish
        its own set-up with the real ports before the first message arrives -- which
        matters when messages are already waiting in the sockets (a worker process
        started again, sipim/cluster)."""
        if self._sockets is None:
            sockets: list[socket.socket] = []
            try:
                for index, spec in enumerate(self._listens):
                    if self._prebound is not None:
                        sock = self._prebound[index]
                    elif spec.transport == "udp":
                        sock = open_udp_socket(spec.host, spec.port, self._socket_buffer_sizes)
                    else:
                        sock = bind_stream_socket(spec.host, spec.port)
                    sockets.append(sock)
            except BaseException:
                for sock in sockets:
                    sock.close()
                raise
            self._sockets = sockets
            self._listening = [(spec.transport, *host_port(sock.getsockname()))
                               for spec, sock in zip(self._listens, sockets)]
        return self.listening()

    async def start(self) -> None:
        """Bind every listener (unless `bind()` did) and serve.  Port 0 binds a free
        port; `listening()` tells which."""
        if self._started:
            raise RuntimeError("TransportManager already started")
        self._started = True
        loop = asyncio.get_running_loop()
        try:
            self.bind()
            for spec, sock, (_, host, port) in zip(self._listens, self._sockets, self._listening):
                if spec.transport == "udp":
                    # Known to the manager before the first datagram is handed over (one may
                    # be waiting already): responses to it go out through this endpoint.
                    endpoint = UDPEndpoint(self._dispatcher, self._parser_limits)
                    self._udp_endpoints.append(endpoint)
                    await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
                elif spec.transport in ("tcp", "tls"):
                    tls = spec.transport == "tls"
                    name = spec.transport
                    server = await loop.create_server(
                        lambda name=name: StreamConnection(self._stream_settings, name, inbound=True),
                        sock=sock, backlog=self._backlog,
                        ssl=self._ssl_context if tls else None,
                        ssl_handshake_timeout=self._tls_handshake_timeout if tls else None)
                    self._servers.append(server)
                else:
                    app = self._http_app_factory() if self._http_app_factory else web.Application()
                    install_sip_websocket(app, spec.transport, self._ws_settings)
                    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
                    await runner.setup()
                    self._runners.append(runner)
                    site = web.SockSite(runner, sock, backlog=self._backlog,
                                        ssl_context=self._ssl_context if spec.transport == "wss" else None)
                    await site.start()
                log.info("listening on %s:%s", spec.transport, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close listeners, every flow (on_flow_closed is reported for each) and UDP sockets."""
        for server in self._servers:
            server.close()
        for task in list(self._background):
            task.cancel()
        for flow in self._flows:
            flow.close()
        for endpoint in self._udp_endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        for runner in self._runners:
            await runner.cleanup()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=2.0)
            except asyncio.TimeoutError:
                log.warning("a listener did not close in time")
        # A peer that does not read keeps a gracefully closing connection open: abort
        # what is left.
        for flow in self._flows:
            if isinstance(flow, StreamConnection):
                flow.abort()
        # Let connection_lost callbacks run so the flow table reports every closed flow.
        for _ in range(3):
            await asyncio.sleep(0)
        for sock in self._sockets or ():
            sock.close()  # those no server took over yet (start failed); closing twice is harmless
        self._sockets = None
        self._servers.clear()
        self._runners.clear()
        self._udp_endpoints.clear()
        self._listening = []
        self._connecting.clear()

    def listening(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of each listener, with the port actually bound."""
        return list(self._listening)

    # -- flows ------------------------------------------------------------------

    def get_flow(self, flow_id: str) -> Flow | None:
        """The open flow with this id, or None once it has closed.  In a worker process
        a flow another worker holds comes as a stand-in that sends through it."""
        flow = self._flows.get(flow_id)
        if flow is None and self._remote_flows is not None:
            return self._remote_flows.get(flow_id)
        return flow

    @property
    def flows(self) -> FlowTable:
        return self._flows

    # -- sending --------------------------------------------------------------

    def send(self, data: bytes, target: Target) -> bool:
        """Hand bytes to the network; False when the target cannot be reached at all.

        True means "queued": delivery over a connection still being opened may fail
        later (the transaction layer's timers cover that, RFC 3261 §17.1.3).
        """
        if target.flow_id is not None:
            flow = self._flows.get(target.flow_id)
            if flow is None and self._remote_flows is not None:
                flow = self._remote_flows.get(target.flow_id)  # held by another worker
            if flow is not None:
                flow.send(data)  # RFC 5626 §5.3, RFC 5923: the same connection
                return True
        transport = target.transport.lower()
        host = target.host.strip("[]")
        if transport == "udp":
            return self._send_udp(data, host, target.port)
        if transport in ("tcp", "tls"):
            # RFC 3261 §18.2.2: a response goes back over the connection its request
            # came on if still open; RFC 5923: requests reuse connections too.
            flow = self._flows.find(transport, host, target.port) or self._connecting.get((transport, host.lower(), target.port))
            if flow is None or flow.closed:
                flow = self._open_connection(transport, host, target.port)
            flow.send(data)
            return True
        if transport in WEBSOCKET_TRANSPORTS:
            # A WebSocket server cannot open connections to browsers (RFC 7118 §5.3):
            # only a live connection from that address can carry the message.
            flow = self._flows.find(transport, host, target.port)
            if flow is None:
                return False
            flow.send(data)
            return True
        log.warning("cannot send over unknown transport %r", target.transport)
        return False

    def _send_udp(self, data: bytes, host: str, port: int) -> bool:
        family = _address_family(host)
        if family is None:
            # A host name: resolve off the hot path, then send (RFC 3263 resolution of
            # SRV/NAPTR is the caller's job; this is only the A/AAAA step).
            self._spawn(self._resolve_and_send_udp(data, host, port))
            return bool(self._udp_endpoints)
        endpoint = self._udp_endpoint_for(family)
        return endpoint is not None and endpoint.sendto(data, (host, port))

    async def _resolve_and_send_udp(self, data: bytes, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.info("cannot resolve %s: %s", host, exc)
            return
        for family, _, _, _, address in infos:
            endpoint = self._udp_endpoint_for(family)
            if endpoint is not None:
                endpoint.sendto(data, host_port(address))
                return
        log.info("no UDP listener for the address family of %s", host)

    def _udp_endpoint_for(self, family: int) -> UDPEndpoint | None:
        for endpoint in self._udp_endpoints:
            if endpoint.family == family:
                return endpoint
        return None

    def _open_connection(self, transport: str, host: str, port: int) -> StreamConnection:
        flow = StreamConnection(self._stream_settings, transport, inbound=False, requested=(host, port))
        key = (transport, host.lower(), port)
        self._connecting[key] = flow
        ssl_context = None
        if transport == "tls":
            if self._client_ssl_context is None:
                self._client_ssl_context = make_client_ssl_context()
            ssl_context = self._client_ssl_context

        async def connect() -> None:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: flow, host, port, ssl=ssl_context,
                                           server_hostname=host if ssl_context else None),
                    timeout=self._connect_timeout)
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                flow.connect_failed(exc)
            finally:
                if self._connecting.get(key) is flow:
                    del self._connecting[key]

        self._spawn(connect())
        return flow

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def bind_stream_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking TCP socket (not yet listening).  ``reuse_port``: one of
    several sockets of the worker processes on the same address (SO_REUSEPORT: the
    kernel spreads new connections over them, sipim/cluster/sockets.py)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Restart without waiting for TIME_WAIT sockets of the previous run to expire.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# host -> AF_INET / AF_INET6, or None for a host name (see _address_family)
_families: dict[str, int | None] = {}


def _address_family(host: str) -> int | None:
    """AF_INET or AF_INET6 for an IP address literal, None for a host name.  Every UDP
    send asks; parsing the address each time (ipaddress) cost more than the send's
    Python side, and a server talks to the same few thousand addresses."""
    try:
        return _families[host]
    except KeyError:
        pass
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        family = None
    else:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    if len(_families) >= 4096:
        _families.clear()
    _families[host] = family
    return family

"""SIP over UDP (RFC 3261 §18): one datagram, one message.

Keep-alives on UDP are STUN (RFC 5626 §4.4.2, §8.4: the registrar answers STUN
Binding requests on its SIP port); CRLF keep-alives are for connections only
(RFC 5626 §4.4.1 "MUST NOT be used with connection-less transports"), so datagrams
made only of CR/LF are dropped without an answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from typing import Any

from sipim.net import Source, host_port
from sipim.sip.errors import SIPParseError
from sipim.sip.parser import parse_message

from .dispatch import Dispatcher

__all__ = ["UDPEndpoint", "open_udp_socket", "stun_binding_response"]

log = logging.getLogger("sipim.transport")

# Large socket buffers keep bursts from being dropped by the kernel (DESIGN: hot path).
SOCKET_BUFFER_SIZES = (8 << 20, 4 << 20, 2 << 20, 1 << 20)

# Peer addresses whose Source is kept (the table is emptied when full).
_SOURCES_KEPT = 65_536

STUN_MAGIC_COOKIE = 0x2112A442
STUN_BINDING_REQUEST = 0x0001
STUN_BINDING_SUCCESS = 0x0101
STUN_XOR_MAPPED_ADDRESS = 0x0020


def raise_socket_buffers(sock: socket.socket, sizes: tuple[int, ...] = SOCKET_BUFFER_SIZES) -> None:
    """Ask for big receive/send buffers, falling back to smaller ones.

    Linux silently caps SO_RCVBUF at net.core.rmem_max; when running as root the
    *FORCE variants lift that cap, so they are tried first.
    """
    for force_option, option in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                                 (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        for size in sizes:
            try:
                if force_option is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, force_option, size)
                        break
                    except PermissionError:
                        pass
                sock.setsockopt(socket.SOL_SOCKET, option, size)
                break
            except OSError:
                continue


def open_udp_socket(host: str, port: int, buffer_sizes: tuple[int, ...] = SOCKET_BUFFER_SIZES, *,
                    reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket.  ``reuse_port``: one of several sockets of the
    worker processes on the same address (SO_REUSEPORT, sipim/cluster/sockets.py)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                                  flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # "udp:[::]:5060" and "udp:0.0.0.0:5060" may both be configured.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        raise_socket_buffers(sock, buffer_sizes)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def is_stun_binding_request(data: bytes) -> bool:
    # RFC 5389 §6: two leading zero bits, the magic cookie, length = what follows.
    return (len(data) >= 20 and data[0] < 0x40
            and struct.unpack_from("!HHI", data) == (STUN_BINDING_REQUEST, len(data) - 20, STUN_MAGIC_COOKIE))


def stun_binding_response(request: bytes, remote: tuple[str, int]) -> bytes:
    """A Binding success response carrying XOR-MAPPED-ADDRESS (RFC 5389 §15.2)."""
    transaction_id = request[8:20]
    address = ipaddress.ip_address(remote[0])
    cookie = struct.pack("!I", STUN_MAGIC_COOKIE)
    mask = cookie if address.version == 4 else cookie + transaction_id
    xored = bytes(a ^ b for a, b in zip(address.packed, mask))
    family = 0x01 if address.version == 4 else 0x02
    value = struct.pack("!BBH", 0, family, remote[1] ^ (STUN_MAGIC_COOKIE >> 16)) + xored
    attribute = struct.pack("!HH", STUN_XOR_MAPPED_ADDRESS, len(value)) + value
    return struct.pack("!HHI", STUN_BINDING_SUCCESS, len(attribute), STUN_MAGIC_COOKIE) + transaction_id + attribute


class UDPEndpoint(asyncio.DatagramProtocol):
    def __init__(self, dispatcher: Dispatcher, parser_limits: Any) -> None:
        self._dispatcher = dispatcher
        self._parser_limits = parser_limits
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.family: int = socket.AF_INET
        self._sources: dict[Any, Source] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sockname = transport.get_extra_info("sockname")
        self.local = host_port(sockname)
        self.family = socket.AF_INET6 if len(sockname) == 4 else socket.AF_INET

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # One Source per peer address, made once: it is immutable, and a busy peer (an
        # SBC, a load generator) sends thousands of datagrams a second from one address.
        source = self._sources.get(addr)
        if source is None:
            if len(self._sources) >= _SOURCES_KEPT:
                self._sources.clear()
            source = self._sources[addr] = Source("udp", host_port(addr), self.local, None)
        remote = source.remote
        try:
            if not data.strip(b"\r\n"):
                return  # CRLF "keep-alive" on UDP: not defined there, ignored
            if is_stun_binding_request(data):
                # RFC 5626 §4.4.2 keep-alive: answering tells the UA its flow still works.
                self.sendto(stun_binding_response(data, remote), remote)
                return
            try:
                message = parse_message(data, self._parser_limits)
            except SIPParseError as error:
                self._dispatcher.parse_error(error, source, data)
                return
            self._dispatcher.message(message, source)
        except Exception:  # nothing may escape into the loop for every packet
            log.exception("UDP datagram from %s could not be handled", remote)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like, reported on a later call: nothing to do.
        log.debug("UDP socket %s: %s", self.local, exc)

    def sendto(self, data: bytes, address: tuple[str, int]) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            self.transport.sendto(data, address)
        except (OSError, ValueError) as exc:
            log.info("UDP send to %s failed: %s", address, exc)
            return False
        return True

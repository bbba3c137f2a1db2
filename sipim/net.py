"""Network values shared by the transports and everything that sends or receives.

Where a message came from (`Source`), where one goes (`Target`), what to listen on
(`ListenSpec`), the transport names, and what a connection (`Flow`, RFC 5626 §3
"flow") offers to the code above the transports.

These live below both sides: the transports (sipim/transport, asyncio I/O) build
them, the core and the roles read them, and the configuration parses listen
addresses without importing the I/O layer.  Plain values only: no sockets, no
asyncio, no process state.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "TRANSPORTS",
    "RELIABLE_TRANSPORTS",
    "SECURE_TRANSPORTS",
    "STREAM_TRANSPORTS",
    "WEBSOCKET_TRANSPORTS",
    "Flow",
    "Source",
    "Target",
    "ListenSpec",
    "host_port",
    "format_host_port",
]

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
# RFC 3261 §18 / RFC 7118 §5: everything but UDP is reliable (no retransmission timers).
RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})
SECURE_TRANSPORTS = frozenset({"tls", "wss"})
STREAM_TRANSPORTS = frozenset({"tcp", "tls"})
WEBSOCKET_TRANSPORTS = frozenset({"ws", "wss"})


def host_port(address: tuple[Any, ...]) -> tuple[str, int]:
    """(host, port) from a socket address (the socket module types it Any); IPv6 addresses come as 4-tuples."""
    return (str(address[0]), int(address[1]))


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Flow(Protocol):
    """One connection (TCP, TLS, WS or WSS) to a peer, as the code above the transports
    sees it.  The transports' own connections (sipim.transport.base.Flow) and a worker's
    stand-in for another worker's connection (sipim/cluster) both are one.

    `send` never blocks: the bytes are queued for the peer.
    """

    @property
    def id(self) -> str: ...

    @property
    def transport(self) -> str: ...

    @property
    def remote(self) -> tuple[str, int]: ...

    @property
    def local(self) -> tuple[str, int]: ...

    @property
    def reliable(self) -> bool: ...

    @property
    def secure(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where a received message came from.

    `remote` is the exact peer address of the packet or connection: the core writes it
    into Via `received`/`rport` (RFC 3261 §18.2.1, RFC 3581 §4) and into the audit log.
    """

    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]
    flow: Flow | None = None

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS

    @property
    def secure(self) -> bool:
        return self.transport in SECURE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a message.

    With `flow_id` set and the flow still open, the message goes over that connection
    (RFC 5626 §5.3, RFC 5923); otherwise the transport uses `host`/`port`.
    """

    transport: str
    host: str
    port: int
    flow_id: str | None = None

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS

    @property
    def secure(self) -> bool:
        return self.transport in SECURE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One listening address, written `PROTO:HOST:PORT` (`tcp:[::1]:5060` for IPv6)."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        transport, sep, rest = text.strip().partition(":")
        transport = transport.lower()
        if not sep:
            raise ValueError(f"listen address {text!r}: expected PROTO:HOST:PORT, e.g. udp:0.0.0.0:5060")
        if transport not in TRANSPORTS:
            raise ValueError(f"listen address {text!r}: unknown transport {transport!r} "
                             f"(use one of {', '.join(TRANSPORTS)})")
        if rest.startswith("["):
            host, bracket, after = rest[1:].partition("]")
            if not bracket or not after.startswith(":"):
                raise ValueError(f"listen address {text!r}: an IPv6 address is written [addr]:port")
            port_text = after[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"listen address {text!r}: {host!r} is not an IPv6 address") from None
        else:
            host, sep, port_text = rest.rpartition(":")
            if not sep or not host:
                raise ValueError(f"listen address {text!r}: expected PROTO:HOST:PORT, e.g. {transport}:0.0.0.0:5060")
            if ":" in host:
                raise ValueError(f"listen address {text!r}: write IPv6 addresses in brackets, "
                                 f"e.g. {transport}:[::1]:5060")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"listen address {text!r}: port {port_text!r} is not a number from 0 to 65535")
        return cls(transport, host, int(port_text))

    def __str__(self) -> str:
        return f"{self.transport}:{format_host_port(self.host, self.port)}"

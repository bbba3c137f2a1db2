"""Values shared by every transport: where a message came from, where one goes, what to listen on.

The core sees the network only through these: a `Source` with each received message,
a `Target` for each message it sends, and `Flow` objects for connection transports
(RFC 5626 §3 "flow", RFC 5923 connection reuse).
"""

from __future__ import annotations

import abc
import ipaddress
import itertools
import secrets
from dataclasses import dataclass

__all__ = [
    "TRANSPORTS",
    "RELIABLE_TRANSPORTS",
    "SECURE_TRANSPORTS",
    "STREAM_TRANSPORTS",
    "WEBSOCKET_TRANSPORTS",
    "Flow",
    "FlowIds",
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

class FlowIds:
    """Issues the flow ids of one transport manager.

    Flow ids must never be confused with those of a previous run of the process (the
    location service may still hold them after a restart), so they carry a random
    part in front of a counter.  In a worker process (sipim/cluster) they start with
    "w<index>." (``owner``): every worker can tell which process holds a connection.
    """

    __slots__ = ("_owner", "_random", "_counter")

    def __init__(self, owner: str = "") -> None:
        self._owner = owner
        self._random = secrets.token_hex(4)
        self._counter = itertools.count(1)

    def new(self, transport: str) -> str:
        return f"{self._owner}{transport}-{self._random}-{next(self._counter)}"


def flow_owner(flow_id: str) -> int | None:
    """The worker index a flow id names ("w2.tls-..." -> 2), None for a single process's ids."""
    if len(flow_id) > 2 and flow_id[0] == "w" and flow_id[1].isdigit():
        dot = flow_id.find(".", 1)
        if dot > 0 and flow_id[1:dot].isdigit():
            return int(flow_id[1:dot])
    return None


def host_port(address: tuple) -> tuple[str, int]:
    """(host, port) from a socket address; IPv6 addresses come as 4-tuples."""
    return (str(address[0]), int(address[1]))


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Flow(abc.ABC):
    """One connection (TCP, TLS, WS or WSS) to a peer, as RFC 5626 §3 calls a flow.

    `send` never blocks: bytes are buffered by the connection; a peer that does not
    read (buffer above the configured cap) gets its connection closed instead of
    making the server hold unbounded memory.
    """

    def __init__(self, transport: str, remote: tuple[str, int], local: tuple[str, int], flow_id: str) -> None:
        self._id = flow_id
        self._transport_name = transport
        self.remote = remote
        self.local = local

    @property
    def id(self) -> str:
        return self._id

    @property
    def transport(self) -> str:
        return self._transport_name

    @property
    def reliable(self) -> bool:
        return True

    @property
    def secure(self) -> bool:
        return self._transport_name in SECURE_TRANSPORTS

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @abc.abstractmethod
    def send(self, data: bytes) -> None:
        """Queue bytes for the peer (one SIP message, or a keep-alive)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; the flow table then reports `on_flow_closed(flow)`."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"<{type(self).__name__} {self._id} {self._transport_name} "
                f"{format_host_port(*self.remote)} {state}>")


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

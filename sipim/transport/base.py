"""The transports' connections: the `Flow` base class and the ids that name flows.

What the core sees of the network (Source, Target, ListenSpec, the transport names,
the `Flow` protocol) is in sipim/net.py, below this I/O layer.  Here are the parts
only the transports need: the base class of their connections (RFC 5626 §3 "flow",
RFC 5923 connection reuse) and how their ids are made.
"""

from __future__ import annotations

import abc
import itertools
import secrets

from sipim.net import SECURE_TRANSPORTS, format_host_port

__all__ = [
    "Flow",
    "FlowIds",
    "flow_owner",
]


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


class Flow(abc.ABC):
    """One connection (TCP, TLS, WS or WSS) to a peer, as RFC 5626 §3 calls a flow:
    the base of the transports' connections, each a `sipim.net.Flow` to the code above.

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

"""The flow table: every open connection, by id and by peer address.

RFC 5626 §5.3 / RFC 5923: a request for a registered device goes back over the very
connection the device registered on, found by its flow id.  A response goes over the
connection its request came on (RFC 3261 §18.2.2), found by the peer address.  The table
also counts inbound connections per source IP so one host cannot exhaust the server.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Iterator

from .base import Flow, FlowIds

__all__ = ["FlowTable"]

log = logging.getLogger("sipim.transport")


class FlowTable:
    def __init__(self, on_flow_closed: Callable[[Flow], None], max_connections_per_ip: int,
                 ids: FlowIds | None = None) -> None:
        self._on_flow_closed = on_flow_closed
        self._ids = ids or FlowIds()
        self.max_connections_per_ip = max_connections_per_ip
        self._by_id: dict[str, Flow] = {}
        # (transport, host, port) -> flow; several flows may share a key (a peer that
        # opened two connections to us); the newest one wins for reuse.
        self._by_address: dict[tuple[str, str, int], list[Flow]] = {}
        self._inbound_per_ip: Counter[str] = Counter()
        self._inbound_ids: set[str] = set()

    def new_id(self, transport: str) -> str:
        """An id for a flow about to be opened or accepted."""
        return self._ids.new(transport)

    def admit(self, ip: str) -> bool:
        """May one more inbound connection from `ip` be accepted?"""
        return self._inbound_per_ip[ip] < self.max_connections_per_ip

    def add(self, flow: Flow, *, inbound: bool, aliases: tuple[tuple[str, int], ...] = ()) -> None:
        """Register an open flow; `aliases` are further (host, port) names it is reachable by
        (the host name a client connection was opened to, besides its resolved address)."""
        self._by_id[flow.id] = flow
        for host, port in (flow.remote, *aliases):
            self._by_address.setdefault((flow.transport, host.lower(), port), []).append(flow)
        if inbound:
            self._inbound_per_ip[flow.remote[0]] += 1
            self._inbound_ids.add(flow.id)

    def remove(self, flow: Flow) -> None:
        """Forget a closed flow and report it, once."""
        if self._by_id.pop(flow.id, None) is None:
            return
        for key in [k for k, flows in self._by_address.items() if flow in flows]:
            flows = self._by_address[key]
            flows.remove(flow)
            if not flows:
                del self._by_address[key]
        if flow.id in self._inbound_ids:
            self._inbound_ids.discard(flow.id)
            ip = flow.remote[0]
            self._inbound_per_ip[ip] -= 1
            if self._inbound_per_ip[ip] <= 0:
                del self._inbound_per_ip[ip]
        self._on_flow_closed(flow)

    def get(self, flow_id: str) -> Flow | None:
        flow = self._by_id.get(flow_id)
        return flow if flow is not None and not flow.closed else None

    def find(self, transport: str, host: str, port: int) -> Flow | None:
        """An open connection of `transport` to host:port, for RFC 5923 style reuse."""
        for flow in reversed(self._by_address.get((transport, host.lower().strip("[]"), port), ())):
            if not flow.closed:
                return flow
        return None

    def inbound_count(self, ip: str) -> int:
        return self._inbound_per_ip[ip]

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Flow]:
        return iter(list(self._by_id.values()))

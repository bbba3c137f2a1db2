"""What differs between a server that is one process and one worker of several.

`SipimServer` is handed a `ServerProcess` and asks it for every part that a worker
process replaces: the location table, the lock-out and rate-limit counters, the
digest nonce-counts, the pager's mailboxes and device homes, the flows of other
processes, which process takes a message, and the names it puts in branches and
flow ids.  `SingleProcess` is the plain answer to each;
`sipim.cluster.worker.ClusterWorker` the worker's.  No other code asks whether
the server runs as several processes.
"""

from __future__ import annotations

import socket
from collections.abc import MutableMapping
from typing import Any, Protocol

from sipim.config import Config
from sipim.core.location import LocationService
from sipim.core.lockout import Lockout
from sipim.im.pager import DeviceHome
from sipim.core.ratelimit import RateLimiter, local_limiter
from sipim.sip.message import Request, Response
from sipim.store.models import Binding
from sipim.net import Flow, Source
from sipim.transport.base import FlowIds
from sipim.transport.tls import TLSFiles

from .data_dir import prepare_data_dir


class ServerProcess(Protocol):
    """The seams of `SipimServer` (see the module's docstring)."""

    listen_sockets: list[socket.socket] | None
    branch_owner: str

    @property
    def runs_once_jobs(self) -> bool: ...

    def prepare(self, config: Config) -> TLSFiles | None: ...
    def location(self) -> LocationService: ...
    def lockout(self, *, threshold: int, window: float, duration: float) -> Lockout: ...
    def rate_limiter(self, name: str, limit: int, window: float) -> RateLimiter: ...
    def nonce_counts(self) -> Any: ...
    def mailboxes(self) -> MutableMapping[str, float]: ...
    def flow_ids(self) -> FlowIds: ...
    def stale_flows(self, flow_ids: set[str]) -> set[str]: ...
    # The pager's DeviceHomes, the transports' RemoteFlows, the router's MessageOwnership:
    def home_of(self, binding: Binding) -> DeviceHome | None: ...
    def get(self, flow_id: str) -> Flow | None: ...
    def response_elsewhere(self, response: Response) -> bool: ...
    def request_elsewhere(self, request: Request, source: Source) -> bool: ...
    # Life cycle, around the server's own:
    def attach(self, server: Any) -> None: ...
    def start(self) -> None: ...
    def serving(self) -> None: ...
    def stop(self) -> None: ...


class SingleProcess:
    """`ServerProcess` of a server that is one process: everything is here."""

    listen_sockets: list[socket.socket] | None = None
    branch_owner = ""
    runs_once_jobs = True

    def prepare(self, config: Config) -> TLSFiles | None:
        return prepare_data_dir(config)

    def location(self) -> LocationService:
        return LocationService()

    def lockout(self, *, threshold: int, window: float, duration: float) -> Lockout:
        return Lockout(threshold=threshold, window=window, duration=duration)

    def rate_limiter(self, name: str, limit: int, window: float) -> RateLimiter:
        return local_limiter(name, limit, window)

    def nonce_counts(self) -> None:
        return None  # DigestServer keeps its own table

    def mailboxes(self) -> MutableMapping[str, float]:
        return {}

    def flow_ids(self) -> FlowIds:
        return FlowIds()

    def stale_flows(self, flow_ids: set[str]) -> set[str]:
        return flow_ids  # every connection of an earlier run of this process is gone

    def home_of(self, binding: Binding) -> DeviceHome | None:
        return None

    def get(self, flow_id: str) -> Flow | None:
        return None

    def response_elsewhere(self, response: Response) -> bool:
        return False

    def request_elsewhere(self, request: Request, source: Source) -> bool:
        return False

    def attach(self, server: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def serving(self) -> None:
        pass

    def stop(self) -> None:
        pass

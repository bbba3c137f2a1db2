"""How the IM server reaches a user's devices.

In the embedded deployment the IM role sits beside the SIP/IP core in one
process: it reads the core's location service and sends through the core's
transaction layer, over the very connection each device registered on
(RFC 5626 §5.3, RFC 5923).  Behind an external core (Kamailio, a later issue)
another gateway sends through that core instead; the IM role only sees this
interface.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from sipim.config import Config
from sipim.core.location import LocationService
from sipim.net import Flow, Target
from sipim.sip.clock import Clock
from sipim.sip.message import Request, Response
from sipim.sip.transaction import TransactionLayer
from sipim.sip.uri import URI, parse_name_addr
from sipim.store.models import Binding

log = logging.getLogger(__name__)

# A device that cannot be reached at all (its connection is gone).
UNREACHABLE = 480
TIMED_OUT = 408


class DeviceGateway(Protocol):
    def devices(self, aor: str) -> list[Binding]: ...

    def request_uri(self, binding: Binding) -> URI:
        """The Request-URI that reaches this device (its registered Contact)."""

    def send(self, binding: Binding, request: Request, on_result: Callable[[int], None]) -> None:
        """Send ``request`` to one device; ``on_result`` gets the final status once
        (408 on timeout, 480 when the device cannot be reached)."""


class Flows(Protocol):
    """What a gateway needs of the transports (sipim.transport.manager.TransportManager
    in a server): the open connection of a device, and the addresses listened on, for
    the Via of what it sends.  The sending itself goes through the transaction layer."""

    def get_flow(self, flow_id: str) -> Flow | None:
        """The open flow with this id; None once it has closed (or was never known)."""

    def listening(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of each listener, with the ports actually bound."""


def split_source(source: str) -> tuple[str, int]:
    host, _, port = source.rpartition(":")
    return host.strip("[]"), int(port)


def _via_prefix(transport: str, host: str, port: int) -> str:
    """A Via of ours up to the branch value: ``SIP/2.0/UDP 192.0.2.1:5060;branch=``."""
    if ":" in host:
        host = f"[{host}]"
    name = {"wss": "WSS", "ws": "WS"}.get(transport, transport.upper())
    return f"SIP/2.0/{name} {host}:{port};branch="


class CoreGateway:
    def __init__(self, config: Config, *, location: LocationService, transactions: TransactionLayer,
                 transports: Flows, clock: Clock) -> None:
        self._config = config
        self._location = location
        self._transactions = transactions
        self._transports = transports
        self._clock = clock
        self._contact_uris: dict[str, URI] = {}
        # Made once, not per message: where a UDP device is (its registered source) and
        # the Via of our listener for each transport (up to the branch).
        self._udp_targets: dict[tuple[str, str], Target] = {}
        self._via_prefixes: dict[str, str] = {}

    def devices(self, aor: str) -> list[Binding]:
        return self._location.bindings(aor, self._clock.now())

    def request_uri(self, binding: Binding) -> URI:
        """The device's Contact URI (parsed once per contact)."""
        uri = self._contact_uris.get(binding.contact)
        if uri is None:
            if len(self._contact_uris) > 100_000:
                self._contact_uris.clear()
            uri = self._contact_uris[binding.contact] = parse_name_addr(binding.contact).uri
        return uri

    def target(self, binding: Binding) -> Target | None:
        """Where a request for this device goes: its own flow for connection
        transports (RFC 5626 §5.3); the address it registered from for UDP."""
        if binding.flow_id:
            flow = self._transports.get_flow(binding.flow_id)
            if flow is None or flow.closed:
                return None  # behind NAT a new connection would not reach it
            return Target(binding.transport, flow.remote[0], flow.remote[1], binding.flow_id)
        if not binding.source:
            return None
        key = (binding.transport, binding.source)
        target = self._udp_targets.get(key)
        if target is None:
            host, port = split_source(binding.source)
            if len(self._udp_targets) > 100_000:
                self._udp_targets.clear()
            target = self._udp_targets[key] = Target(binding.transport or "udp", host, port)
        return target

    def _via(self, target: Target) -> str:
        if target.flow_id:
            flow = self._transports.get_flow(target.flow_id)
            host, port = flow.local if flow is not None else (self._config.domain, 0)
            prefix = _via_prefix(target.transport, host, port)
        else:
            prefix = self._via_prefixes.get(target.transport)
            if prefix is None:
                host, port = self._listening_address(target.transport)
                prefix = _via_prefix(target.transport, host, port)
                if port:  # listening already: the address stays
                    self._via_prefixes[target.transport] = prefix
        return f"{prefix}{self._transactions.new_branch()};rport"

    def _listening_address(self, transport: str) -> tuple[str, int]:
        for name, host, port in self._transports.listening():
            if name == transport:
                if host in ("0.0.0.0", "::"):
                    host = self._config.domain
                return host, port
        return self._config.domain, 0

    def send(self, binding: Binding, request: Request, on_result: Callable[[int], None]) -> None:
        target = self.target(binding)
        if target is None:
            on_result(UNREACHABLE)
            return
        request.headers.add("Via", self._via(target), first=True)
        for path in reversed(binding.path):
            # RFC 3327 §5.3 / RFC 5626 §7: reach the device through its edge proxies.
            request.headers.add("Route", path, first=True)
        done = False

        def finish(status: int) -> None:
            nonlocal done
            if not done:
                done = True
                on_result(status)

        def on_response(response: Response) -> None:
            if response.status >= 200:
                finish(response.status)

        try:
            self._transactions.send_request(request, target, on_response, lambda: finish(TIMED_OUT))
        except Exception as exc:  # a transport that cannot take it: the device is unreachable
            log.warning("sending to %s failed: %s", binding.contact, exc)
            finish(UNREACHABLE)

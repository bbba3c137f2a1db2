"""Deliveries through the external core.

Each device is still addressed on its own -- the Request-URI is the Contact
it registered, so store-and-forward keeps its per-device record -- but the
request goes to the core (``core_uri``, as a loose route, RFC 3261 §16.12),
which finds that contact in its location table and sends it over the device's
own connection (deploy/kamailio/kamailio.cfg, route[TO_DEVICE]).
"""

from __future__ import annotations

from collections.abc import Callable

from sipim.config import Config
from sipim.core.location import LocationService
from sipim.im.devices import CoreGateway, Flows
from sipim.net import Target
from sipim.sip.clock import Clock
from sipim.sip.message import Request
from sipim.sip.transaction import TransactionLayer
from sipim.sip.uri import SipURI, parse_uri
from sipim.store.base import Store
from sipim.store.models import Binding


def core_target(core_uri: str) -> Target:
    uri = parse_uri(core_uri)
    assert isinstance(uri, SipURI)
    transport = (uri.params.get("transport") or ("tls" if uri.scheme == "sips" else "udp")).lower()
    port = uri.port or (5061 if transport == "tls" else 5060)
    return Target(transport, uri.host.strip("[]"), port)


class ExternalCoreGateway(CoreGateway):
    def __init__(self, config: Config, *, location: LocationService, transactions: TransactionLayer,
                 transports: Flows, clock: Clock, store: Store) -> None:
        super().__init__(config, location=location, transactions=transactions, transports=transports,
                         clock=clock)
        self._store = store
        self._core = core_target(config.core_uri)
        uri = config.core_uri.split("?", 1)[0]
        self._route = f"<{uri};lr>" if ";lr" not in uri else f"<{uri}>"

    async def refresh(self, aor: str) -> None:
        """Take the user's devices from the shared store: the core's third-party
        REGISTER may have reached another node (the change feed tells this node
        only a moment later)."""
        now = self._clock.now()
        stored = {b.binding_key: b for b in await self._store.list_bindings(aor) if b.expires_at > now}
        for binding in self._location.bindings(aor):
            if binding.binding_key not in stored:
                self._location.remove(aor, binding.binding_key)
        for key, binding in stored.items():
            if self._location.get(aor, key) != binding:
                self._location.put(binding)

    def target(self, binding: Binding) -> Target | None:
        return self._core

    def send(self, binding: Binding, request: Request, on_result: Callable[[int], None]) -> None:
        # RFC 3261 §8.1.2: a pre-existing route set of one hop, the core.
        request.headers.add("Route", self._route, first=True)
        super().send(binding, request, on_result)

"""Which peers are the SIP/IP core: RFC 3325 §2 "Trust Domain".

P-Asserted-Identity is believed only from inside the trust domain; anything
else is refused before it reaches a role.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class TrustedCores:
    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._known: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        known = self._known.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                known = False
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                known = any(address in network for network in self._networks)
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[host] = known
        return known

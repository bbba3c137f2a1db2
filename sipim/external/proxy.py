"""Requests relayed by the external core: identity from P-Asserted-Identity.

The core (Kamailio, deploy/kamailio/kamailio.cfg) has authenticated the
sender, checked From against the credentials and inserted P-Asserted-Identity
(RFC 3325 §9.1).  sipim does no digest here; it takes the identity from that
header -- only from peers in the trust domain, which the router checked -- and
the request goes to the same roles the embedded core feeds.
"""

from __future__ import annotations

from sipim.config import Config
from sipim.core.identity import Admission, AssertedIdentity
from sipim.sip.errors import SIPParseError
from sipim.sip.message import Request, Response, make_response
from sipim.sip.uri import SipURI, parse_name_addr
from sipim.net import Source


def asserted_identity(request: Request, config: Config) -> AssertedIdentity | None:
    """The first SIP identity of our domain in P-Asserted-Identity (RFC 3325 §9.1:
    at most one sip/sips URI, possibly beside a tel URI)."""
    local = config.local_domains()
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            name_addr = parse_name_addr(value)
        except SIPParseError:
            return None
        uri = name_addr.uri
        if isinstance(uri, SipURI) and uri.user and uri.host.lower() in local:
            return AssertedIdentity(uri.user, f"sip:{uri.user}@{config.domain}", name_addr.display_name)
    return None


def device_source(request: Request, core: Source) -> Source:
    """Where the sending device really is, read from its own Via (the one below the
    core's), which the core stamped with received/rport (RFC 3261 §18.2.1, RFC 3581 §4).

    The IM role uses it to leave the sending device out of the copies it sends to
    the sender's other devices; bindings learnt from the core carry the same address.
    """
    vias = request.vias
    if len(vias) < 2:
        return core
    via = vias[1]
    host = via.received or via.host
    port = via.rport or via.port or 5060
    return Source(via.transport.lower(), (host, int(port)), core.local, None)


class ExternalCoreProxy:
    """`IdentityGate` (sipim/core/router.py) of a node behind an external core."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def admit(self, request: Request, source: Source) -> Admission | Response:
        identity = asserted_identity(request, self._config)
        if identity is None:
            return make_response(request, 403, "No P-Asserted-Identity from the core")
        from_uri = request.from_.uri
        if not isinstance(from_uri, SipURI) or from_uri.user != identity.username or \
                from_uri.host.lower() not in self._config.local_domains():
            # The core checks this too; a role must never act for someone else.
            return make_response(request, 403, "From does not match the asserted identity")
        return Admission(identity, device_source(request, source))

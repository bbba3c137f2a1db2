"""Who sent a request, as the SIP/IP core asserts it to the roles behind it.

The embedded core learns it by digest authentication (sipim/core/proxy.py), an
external core's word is its P-Asserted-Identity (sipim/external/proxy.py).  Either
way a role sees an `AssertedIdentity`, never credentials: the roles run unchanged
behind either core.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipim.sip.headers import quote
from sipim.sip.message import Request
from sipim.net import Source

# RFC 3325 §9.1 "P-Asserted-Identity"; §9.2 "P-Preferred-Identity" is a client's
# wish, which the core settles by authentication instead.
IDENTITY_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity")


@dataclass(frozen=True, slots=True)
class AssertedIdentity:
    username: str
    aor: str
    display_name: str | None


@dataclass(frozen=True, slots=True)
class Admission:
    """A request let through an identity gate: who sent it, and from where.

    `source` is the sending device's own address; behind an external core it is
    read from the device's Via rather than being the core's address.
    """

    identity: AssertedIdentity
    source: Source


def assert_identity(request: Request, identity: AssertedIdentity) -> None:
    """Strip client-supplied identity headers and assert the authenticated one (RFC 3325 §9.1)."""
    for name in IDENTITY_HEADERS:
        request.headers.remove(name)
    request.headers.remove("Proxy-Authorization")
    display = f"{quote(identity.display_name)} " if identity.display_name else ""
    request.headers.add("P-Asserted-Identity", f"{display}<{identity.aor}>")

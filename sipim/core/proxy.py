"""The authenticating proxy of the embedded SIP/IP core.

Every request other than REGISTER and OPTIONS is authenticated here
(RFC 3261 §22.3, ``407`` with Proxy-Authenticate) before any role sees it.
The core then asserts who the user is towards the IM server role with
P-Asserted-Identity (RFC 3325 §9.1) and removes whatever identity
assertion the client itself put in the request: only the core may assert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sipim.config import Config
from sipim.core.auth import Authenticator, AuthOutcome
from sipim.sip.message import Request, Response, make_response
from sipim.sip.headers import quote
from sipim.sip.uri import SipURI
from sipim.transport.base import Source

# RFC 3325 §9.1 "P-Asserted-Identity"; §9.2 "P-Preferred-Identity" is a client's
# wish, which the core settles by authentication instead.
IDENTITY_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity")


@dataclass(frozen=True, slots=True)
class AssertedIdentity:
    username: str
    aor: str
    display_name: str | None


class RequestRole(Protocol):
    """A role behind the core (the IM server): it sees only authenticated requests."""

    async def handle(self, request: Request, identity: AssertedIdentity, source: Source) -> Response: ...


class NoRole:
    async def handle(self, request: Request, identity: AssertedIdentity, source: Source) -> Response:
        response = make_response(request, 501, "Not Implemented")
        response.headers.add("Allow", "REGISTER, OPTIONS")
        return response


class CoreProxy:
    def __init__(self, config: Config, *, authenticator: Authenticator, role: RequestRole | None = None) -> None:
        self._config = config
        self._auth = authenticator
        self.role: RequestRole = role or NoRole()

    async def handle(self, request: Request, source: Source) -> Response:
        if request.method == "CANCEL":
            # RFC 3261 §9.2: a CANCEL matching no transaction of ours.
            return make_response(request, 481, "Call/Transaction Does Not Exist")
        outcome = self._auth.authenticate(request, source, proxy=True)
        if not isinstance(outcome, AuthOutcome):
            outcome = await outcome
        if not outcome.ok:
            response = make_response(request, outcome.status, outcome.reason)
            for name, value in outcome.challenge_headers:
                response.headers.add(name, value)
            return response
        assert outcome.user is not None
        identity = AssertedIdentity(outcome.user.username, f"sip:{outcome.user.username}@{self._config.domain}",
                                    outcome.user.display_name)
        from_uri = request.from_.uri
        if not isinstance(from_uri, SipURI) or from_uri.user != identity.username or \
                from_uri.host.lower() not in self._config.local_domains():
            # The user's identity is confirmed when they send: From must be them.
            return make_response(request, 403, "From does not match the authenticated user")
        assert_identity(request, identity)
        return await self.role.handle(request, identity, source)


def assert_identity(request: Request, identity: AssertedIdentity) -> None:
    """Strip client-supplied identity headers and assert the authenticated one (RFC 3325 §9.1)."""
    for name in IDENTITY_HEADERS:
        request.headers.remove(name)
    request.headers.remove("Proxy-Authorization")
    display = f"{quote(identity.display_name)} " if identity.display_name else ""
    request.headers.add("P-Asserted-Identity", f"{display}<{identity.aor}>")

"""The authenticating proxy of the embedded SIP/IP core.

Every request other than REGISTER and OPTIONS is authenticated here
(RFC 3261 §22.3, ``407`` with Proxy-Authenticate) before any role sees it.
The core then asserts who the user is towards the IM server role with
P-Asserted-Identity (RFC 3325 §9.1) and removes whatever identity
assertion the client itself put in the request: only the core may assert.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from sipim.config import Config
from sipim.core.auth import Authenticator, AuthOutcome
from sipim.sip.message import Request, Response, make_response
from sipim.sip.headers import quote
from sipim.sip.uri import SipURI
from sipim.net import Source

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
        self._local_domains = config.local_domains()
        self.role: RequestRole = role or NoRole()

    async def handle(self, request: Request, source: Source) -> Response:
        result = self.answer(request, source)
        return result if isinstance(result, Response) else await result

    def answer(self, request: Request, source: Source) -> Response | Awaitable[Response]:
        """``handle`` without a coroutine where none is needed: the answer itself when
        the core decides alone (a challenge, a refusal), else an awaitable of the
        role's answer.  Challenges are half of all requests; a task each is not free."""
        if request.method == "CANCEL":
            # RFC 3261 §9.2: a CANCEL matching no transaction of ours.
            return make_response(request, 481, "Call/Transaction Does Not Exist")
        outcome = self._auth.authenticate(request, source, proxy=True)
        if not isinstance(outcome, AuthOutcome):
            return self._answer_after_auth(request, source, outcome)
        return self._answer_authenticated(request, source, outcome)

    async def _answer_after_auth(self, request: Request, source: Source,
                                 pending: Awaitable[AuthOutcome]) -> Response:
        result = self._answer_authenticated(request, source, await pending)
        return result if isinstance(result, Response) else await result

    def _answer_authenticated(self, request: Request, source: Source,
                              outcome: AuthOutcome) -> Response | Awaitable[Response]:
        if not outcome.ok:
            response = make_response(request, outcome.status, outcome.reason)
            for name, value in outcome.challenge_headers:
                response.headers.add(name, value)
            return response
        assert outcome.user is not None
        user = outcome.user
        identity = AssertedIdentity(user.username, f"sip:{user.username}@{self._config.domain}",
                                    user.display_name)
        from_uri = request.from_.uri
        if not isinstance(from_uri, SipURI) or from_uri.user != identity.username or \
                from_uri.host.lower() not in self._local_domains:
            # The user's identity is confirmed when they send: From must be them.
            return make_response(request, 403, "From does not match the authenticated user")
        assert_identity(request, identity)
        return self.role.handle(request, identity, source)


def assert_identity(request: Request, identity: AssertedIdentity) -> None:
    """Strip client-supplied identity headers and assert the authenticated one (RFC 3325 §9.1)."""
    for name in IDENTITY_HEADERS:
        request.headers.remove(name)
    request.headers.remove("Proxy-Authorization")
    display = f"{quote(identity.display_name)} " if identity.display_name else ""
    request.headers.add("P-Asserted-Identity", f"{display}<{identity.aor}>")

"""The authenticating proxy of the embedded SIP/IP core: the router's identity gate.

Every request of a route that needs the sender's identity (every method but
REGISTER and OPTIONS) is authenticated here (RFC 3261 §22.3, ``407`` with
Proxy-Authenticate) before any role sees it.  The core then asserts who the
user is towards the IM server roles with P-Asserted-Identity (RFC 3325 §9.1)
and removes whatever identity assertion the client itself put in the request:
only the core may assert.
"""

from __future__ import annotations

from collections.abc import Awaitable

from sipim.config import Config
from sipim.core.auth import Authenticator, AuthOutcome
from sipim.core.identity import Admission, AssertedIdentity, assert_identity
from sipim.sip.message import Request, Response, make_response
from sipim.sip.uri import SipURI
from sipim.net import Source


class CoreProxy:
    """`IdentityGate` (sipim/core/router.py) of the embedded core."""

    def __init__(self, config: Config, *, authenticator: Authenticator) -> None:
        self._config = config
        self._auth = authenticator
        self._local_domains = config.local_domains()

    def admit(self, request: Request, source: Source) -> Admission | Response | Awaitable[Admission | Response]:
        """The admission itself, or the refusal, when the core decides from memory;
        else an awaitable of either.  Challenges are half of all requests; a task each
        is not free."""
        outcome = self._auth.authenticate(request, source, proxy=True)
        if not isinstance(outcome, AuthOutcome):
            return self._admit_after_auth(request, source, outcome)
        return self._admit_authenticated(request, source, outcome)

    async def _admit_after_auth(self, request: Request, source: Source,
                                pending: Awaitable[AuthOutcome]) -> Admission | Response:
        return self._admit_authenticated(request, source, await pending)

    def _admit_authenticated(self, request: Request, source: Source,
                             outcome: AuthOutcome) -> Admission | Response:
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
        return Admission(identity, source)

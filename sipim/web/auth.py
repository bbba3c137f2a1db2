"""HTTP Digest authentication (RFC 7616) for sipim's HTTPS side.

The same user credentials as SIP (the stored HA1 values, realm = the SIP
domain), the same HMAC-signed nonces and the same lock-out: a user proves who
they are before reading their history or profile, exactly as at registration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sipim.core.auth import AUTH_FAILED, UserCache, is_device_username
from sipim.core.lockout import Lockout
from sipim.sip.digest import DigestError, DigestResult, DigestServer, parse_credentials
from sipim.store.models import AuditRecord, User

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpIdentity:
    user: User
    aor: str
    # The device whose own credentials (digest auth username or bearer token)
    # authenticated; None for the user's password.
    device_id: str | None = None
    admin: bool = False  # operator scope (sipim user admin NAME): every user's XDM documents

    @property
    def username(self) -> str:
        return self.user.username


class HttpDigestAuth:
    def __init__(self, *, realm: str, domain: str, digest: DigestServer, users: UserCache, lockout: Lockout,
                 now: Callable[[], float], algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 audit: Callable[[AuditRecord], None] | None = None) -> None:
        self._realm = realm
        self._domain = domain
        self._digest = digest
        self._users = users
        self._lockout = lockout
        self._now = now
        self._algorithms = algorithms
        self._audit = audit

    def _record_failure(self, request: web.Request, username: str, reason: str) -> None:
        """Wrong HTTP credentials go to the audit trail like failed registrations."""
        if self._audit is None:
            return
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self._audit(AuditRecord(
            ts=self._now(), aor=f"sip:{username}@{self._domain}", username=None, instance_id=None,
            user_agent=request.headers.get("User-Agent", "")[:200],
            source=f"{peer[0]}:{peer[1]}" if peer else (request.remote or ""), transport="https",
            result=AUTH_FAILED, reason=f"HTTP {request.method} {request.path[:120]}: {reason}"))

    def _challenge(self, reason: str, *, stale: bool = False, status: int = 401) -> web.Response:
        response = web.json_response({"error": reason}, status=status)
        if status == 401:
            for value in self._digest.challenges(self._algorithms, stale=stale):
                response.headers.add("WWW-Authenticate", value)
        return response

    async def identify(self, request: web.Request) -> HttpIdentity | web.Response:
        """The authenticated user, or the response to send instead (401/403)."""
        source_ip = request.remote or ""
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return await self._identify_bearer(header[7:].strip(), source_ip)
        credentials = None
        if header[:7].lower() == "digest ":
            try:
                credentials = parse_credentials(header)
            except DigestError as exc:
                return web.json_response({"error": f"malformed Authorization header: {exc}"}, status=400)
        claimed = credentials.username if credentials else None
        now = self._now()
        if self._lockout.check(claimed, source_ip, now) is not None:
            return self._challenge("too many failed attempts, try again later", status=403)
        if credentials is None or credentials.realm != self._realm:
            return self._challenge("authentication required")
        # RFC 7616 §3.4: the digest covers the request-target actually requested, as
        # sent (XCAP node selectors are percent-encoded, RFC 4825 §6).
        if credentials.uri not in (request.raw_path, request.path_qs):
            return web.json_response({"error": "digest uri does not match the request"}, status=400)
        user = await self._users.get(credentials.username)
        ha1 = None
        if user is not None and not user.disabled:
            ha1 = user.ha1_sha256 if credentials.ha1_algorithm == "SHA-256" else user.ha1_md5
        if not ha1 or user is None:
            self._lockout.record_failure(credentials.username, source_ip, now)
            self._record_failure(request, credentials.username, "unknown or disabled user")
            return self._challenge("authentication failed", status=403)
        result = self._digest.verify(credentials, request.method, ha1)
        if result is DigestResult.OK:
            self._lockout.record_success(credentials.username, source_ip)
            device = self._users.device_of(credentials.username) if is_device_username(credentials.username) else None
            if device is not None:
                self._users.note_device_use(device.device_id, now)
            return HttpIdentity(user, f"sip:{user.username}@{self._domain}", device.device_id if device else None,
                                # Admin scope only with the user's own password, never a device's
                                # credentials: a lost phone does not carry operator rights.
                                admin=user.admin and device is None)
        if result in (DigestResult.STALE, DigestResult.BAD_NONCE, DigestResult.BAD_REALM):
            return self._challenge("authentication required", stale=result is DigestResult.STALE)
        self._lockout.record_failure(credentials.username, source_ip, now)
        self._record_failure(request, credentials.username, f"wrong credentials ({result.name.lower()})")
        return self._challenge("authentication failed", status=403)


    async def _identify_bearer(self, token: str, source_ip: str) -> HttpIdentity | web.Response:
        """RFC 6750 §2.1: a device's bearer token (stored only as a hash)."""
        now = self._now()
        if self._lockout.check(None, source_ip, now) is not None:
            return _bearer_error("too many failed attempts, try again later", 403)
        found = await self._users.device_for_token(token) if token else None
        if found is None:
            self._lockout.record_failure("", source_ip, now)
            return _bearer_error("invalid or revoked token", 401, invalid=True)
        device, user = found
        if user.disabled:
            return _bearer_error("account disabled", 403)
        self._users.note_device_use(device.device_id, now)
        return HttpIdentity(user, f"sip:{user.username}@{self._domain}", device.device_id)


def _bearer_error(reason: str, status: int, *, invalid: bool = False) -> web.Response:
    response = web.json_response({"error": reason}, status=status)
    if status == 401:
        # RFC 6750 §3: the challenge names the error of the presented token.
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return response


def require_user(auth: HttpDigestAuth, handler: Callable[[web.Request, HttpIdentity], Awaitable[web.StreamResponse]]
                 ) -> Handler:
    async def authenticated(request: web.Request) -> web.StreamResponse:
        identity = await auth.identify(request)
        if isinstance(identity, web.Response):
            return identity
        return await handler(request, identity)

    return authenticated

"""Digest authentication of SIP requests for the embedded SIP/IP core.

RFC 3261 §22 with the RFC 7616 / RFC 8760 algorithms.  The protocol part
(nonces, response computation, replay table) is the sans-IO
``sipim.sip.digest.DigestServer``; this module adds what needs the server's
state: the user directory (HA1 values cached in memory), lock-out, and the
decision of what to answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipim.core.lockout import Lockout
from sipim.sip.digest import DigestCredentials, DigestError, DigestResult, DigestServer, parse_credentials
from sipim.sip.message import Request
from sipim.store.base import Store
from sipim.store.models import User
from sipim.transport.base import Source

# Audit results (also used by the registrar).
CHALLENGED = "challenged"
AUTH_FAILED = "auth failed"
LOCKED = "locked"


NOT_CACHED = object()


class UserCache:
    """HA1 values from memory: a REGISTER or MESSAGE needs no database round trip.

    Invalidated through the store's change feed when the CLI (or another node)
    edits a user.  Unknown names are cached too, in a bounded set, so a spray of
    made-up names cannot hammer the database.
    """

    def __init__(self, store: Store, domain: str, *, max_negative: int = 10_000) -> None:
        self._store = store
        self._domain = domain
        self._users: dict[str, User] = {}
        self._unknown: dict[str, None] = {}
        self._max_negative = max_negative

    async def preload(self) -> None:
        for user in await self._store.list_users(self._domain):
            self._users[user.username] = user

    def peek(self, username: str) -> User | None | object:
        """The cached user, None if known not to exist, or NOT_CACHED."""
        user = self._users.get(username)
        if user is not None or username in self._unknown:
            return user
        return NOT_CACHED

    async def get(self, username: str) -> User | None:
        user = self.peek(username)
        if user is not NOT_CACHED:
            return user  # type: ignore[return-value]
        user = await self._store.get_user(username, self._domain)
        if user is None:
            if len(self._unknown) >= self._max_negative:
                self._unknown.pop(next(iter(self._unknown)))
            self._unknown[username] = None
        else:
            self._users[username] = user
        return user

    def invalidate(self, username: str | None = None) -> None:
        if username is None:
            self._users.clear()
            self._unknown.clear()
        else:
            self._users.pop(username, None)
            self._unknown.pop(username, None)


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """What authentication decided.  ``user`` is set exactly when it succeeded."""

    user: User | None = None
    status: int = 0  # 401/407 challenge, 403 refusal, 400 malformed
    reason: str = ""
    audit_result: str = ""
    audit_reason: str = ""
    challenge_headers: list[tuple[str, str]] = field(default_factory=list)
    username: str | None = None  # the name the client claimed, for the audit trail
    algorithm: str | None = None  # the digest algorithm the client answered with

    @property
    def ok(self) -> bool:
        return self.user is not None


class Authenticator:
    def __init__(
        self,
        *,
        realm: str,
        digest: DigestServer,
        users: UserCache,
        lockout: Lockout,
        now: Callable[[], float],
        challenge_order: Callable[[Source], tuple[str, ...]] = lambda source: ("SHA-256", "MD5"),
    ) -> None:
        self.realm = realm
        self.challenge_order = challenge_order
        self._digest = digest
        self._users = users
        self._lockout = lockout
        self._now = now

    def challenge(self, proxy: bool, algorithms: tuple[str, ...], *, stale: bool = False) -> list[tuple[str, str]]:
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        return [(name, value) for value in self._digest.challenges(algorithms, stale=stale)]

    def authenticate(self, request: Request, source: Source, *, proxy: bool) -> AuthOutcome | Awaitable[AuthOutcome]:
        """Authenticate ``request`` (RFC 3261 §22.2 for UAS, §22.3 for proxies).

        Answers at once when the user's HA1 is in memory (the hot path); returns an
        awaitable only when the user must first be read from the store.
        """
        source_ip = source.remote[0]
        algorithms = self.challenge_order(source)
        challenge_status = 407 if proxy else 401
        header = "Proxy-Authorization" if proxy else "Authorization"

        credentials: DigestCredentials | None = None
        # Authorization values hold commas of their own; Headers never splits them.
        for value in request.headers.get_all(header):
            try:
                parsed = parse_credentials(value)
            except DigestError as exc:
                return AuthOutcome(status=400, reason=f"Malformed {header} header",
                                   audit_result=AUTH_FAILED, audit_reason=str(exc))
            # A request may carry credentials for several realms (§22.3); ours counts.
            if parsed.realm == self.realm:
                credentials = parsed
                break

        claimed = credentials.username if credentials else None
        now = self._now()
        lock = self._lockout.check(claimed, source_ip, now)
        if lock is not None:
            return AuthOutcome(status=403, reason="Too many failed attempts, try again later",
                               audit_result=LOCKED, audit_reason=f"{lock.subject} locked out",
                               username=claimed)

        if credentials is None:
            return AuthOutcome(status=challenge_status, reason="Unauthorized" if not proxy else "Proxy Authentication Required",
                               audit_result=CHALLENGED, audit_reason="no credentials for this realm",
                               challenge_headers=self.challenge(proxy, algorithms))

        user = self._users.peek(credentials.username)
        if user is NOT_CACHED:
            return self._verify_after_load(request, source_ip, credentials, proxy, algorithms, now)
        return self._verify(request, source_ip, credentials, user, proxy, algorithms, now)

    async def _verify_after_load(self, request, source_ip, credentials, proxy, algorithms, now) -> AuthOutcome:
        user = await self._users.get(credentials.username)
        return self._verify(request, source_ip, credentials, user, proxy, algorithms, now)

    def _verify(self, request: Request, source_ip: str, credentials: DigestCredentials, user: User | None,
                proxy: bool, algorithms: tuple[str, ...], now: float) -> AuthOutcome:
        challenge_status = 407 if proxy else 401
        ha1 = None
        if user is not None and not user.disabled:
            ha1 = user.ha1_sha256 if credentials.ha1_algorithm == "SHA-256" else user.ha1_md5
        if ha1 is None:
            # Same answer as a wrong password: the client must not learn which names exist.
            return self._failure(credentials.username, source_ip, now,
                                 "unknown or disabled user" if user is None or user.disabled
                                 else f"no {credentials.algorithm} credentials stored")

        result = self._digest.verify(credentials, request.method, ha1, body=request.body)
        if result is DigestResult.OK:
            self._lockout.record_success(credentials.username, source_ip)
            return AuthOutcome(user=user, username=credentials.username, algorithm=credentials.algorithm)
        if result is DigestResult.STALE:
            # RFC 7616 §3.3: the password was right, only the nonce is old.
            return AuthOutcome(status=challenge_status, reason="Stale nonce", audit_result=CHALLENGED,
                               audit_reason="stale nonce", username=credentials.username,
                               challenge_headers=self.challenge(proxy, algorithms, stale=True))
        if result in (DigestResult.BAD_NONCE, DigestResult.BAD_REALM):
            return AuthOutcome(status=challenge_status, reason="Unauthorized", audit_result=CHALLENGED,
                               audit_reason=f"{result.name.lower().replace('_', ' ')}",
                               username=credentials.username,
                               challenge_headers=self.challenge(proxy, algorithms))
        if result is DigestResult.REPLAY:
            return self._failure(credentials.username, source_ip, now, "nonce count replayed")
        return self._failure(credentials.username, source_ip, now, "wrong password")

    def _failure(self, username: str, source_ip: str, now: float, why: str) -> AuthOutcome:
        lock = self._lockout.record_failure(username, source_ip, now)
        if lock is not None:
            why = f"{why}; {lock.subject} now locked out"
        return AuthOutcome(status=403, reason="Authentication failed", audit_result=AUTH_FAILED,
                           audit_reason=why, username=username)


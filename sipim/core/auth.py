"""Digest authentication of SIP requests for the embedded SIP/IP core.

RFC 3261 §22 with the RFC 7616 / RFC 8760 algorithms.  The protocol part
(nonces, response computation, replay table) is the sans-IO
``sipim.sip.digest.DigestServer``; this module adds what needs the server's
state: the user directory (HA1 values cached in memory), lock-out, and the
decision of what to answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from sipim.core.lockout import Lockout
from sipim.sip.digest import DigestCredentials, DigestError, DigestResult, DigestServer, parse_credentials
from sipim.sip.message import Request
from sipim.store.base import Store
from sipim.store.models import DeviceCredential, User
from sipim.net import Source

# Audit results (also used by the registrar).
CHALLENGED = "challenged"
AUTH_FAILED = "auth failed"
LOCKED = "locked"


NOT_CACHED = object()

# A device's digest username is its owner's name, this separator and a short id
# ("alice!k3f9q2"); user names cannot contain it, so the two never collide.
DEVICE_SEPARATOR = "!"


def is_device_username(name: str) -> bool:
    return DEVICE_SEPARATOR in name


def token_hash(token: str) -> str:
    """How a bearer token is stored and looked up: SHA-256, hex.  Tokens are 256-bit
    random values, so a plain hash cannot be inverted by guessing."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


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
        # Device credentials: auth username -> (device, its owner with the device's HA1s).
        self._devices: dict[str, tuple[DeviceCredential, User]] = {}
        # Bearer tokens: hash -> auth username of a live device, or None (unknown).
        self._tokens: dict[str, str | None] = {}
        # device_id -> when it last authenticated; the server writes these out now and then.
        self.device_use: dict[str, float] = {}

    async def preload(self) -> None:
        for user in await self._store.list_users(self._domain):
            self._users[user.username] = user

    def peek(self, username: str) -> User | None | object:
        """The cached user, None if known not to exist, or NOT_CACHED."""
        user = self._users.get(username)
        if user is not None or username in self._unknown:
            return user
        if DEVICE_SEPARATOR in username:
            login = self._devices.get(username)
            if login is not None:
                return login[1]
        return NOT_CACHED

    async def get(self, username: str) -> User | None:
        """The user of a digest username: a user, or -- for a device's auth username --
        its owner carrying the device's HA1 values (the core then acts for the owner's
        AOR).  None for unknown names, revoked devices and devices of removed users."""
        user = self.peek(username)
        if user is not NOT_CACHED:
            return user  # type: ignore[return-value]
        if DEVICE_SEPARATOR in username:
            return await self._load_device(username)
        user = await self._store.get_user(username, self._domain)
        if user is None:
            self._remember_unknown(username)
        else:
            self._users[username] = user
        return user

    def device_of(self, auth_username: str) -> DeviceCredential | None:
        """The cached device behind a device auth username (after get() found it)."""
        login = self._devices.get(auth_username)
        return login[0] if login is not None else None

    async def _load_device(self, auth_username: str) -> User | None:
        device = await self._store.device_by_auth_username(auth_username)
        owner = None
        if device is not None and not device.revoked and device.domain == self._domain:
            owner = await self.get(device.username)
        if owner is None:
            self._remember_unknown(auth_username)
            return None
        view = replace(owner, ha1_md5=device.ha1_md5, ha1_sha256=device.ha1_sha256)
        self._devices[auth_username] = (device, view)
        return view

    async def device_for_token(self, token: str) -> tuple[DeviceCredential, User] | None:
        """The live device holding this bearer token, with its owner (as get() gives it)."""
        key = token_hash(token)
        if key in self._tokens:
            auth_username = self._tokens[key]
        else:
            device = await self._store.device_by_token_hash(key)
            auth_username = device.auth_username if device is not None and not device.revoked else None
            if len(self._tokens) >= self._max_negative:
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[key] = auth_username
        if auth_username is None:
            return None
        user = await self.get(auth_username)
        device = self.device_of(auth_username)
        if user is None or device is None or device.token_hash != key:
            return None
        return device, user

    def note_device_use(self, device_id: str, now: float) -> None:
        self.device_use[device_id] = now

    def take_device_use(self) -> list[tuple[str, float]]:
        used, self.device_use = self.device_use, {}
        return list(used.items())

    def _remember_unknown(self, username: str) -> None:
        if len(self._unknown) >= self._max_negative:
            self._unknown.pop(next(iter(self._unknown)))
        self._unknown[username] = None

    def invalidate(self, username: str | None = None) -> None:
        if username is None:
            self._users.clear()
            self._unknown.clear()
            self._devices.clear()
            self._tokens.clear()
        else:
            self._users.pop(username, None)
            self._unknown.pop(username, None)
            # The owner's devices act with the owner's state (disabled, removed).
            prefix = username + DEVICE_SEPARATOR
            for auth_username in [name for name in self._devices if name.startswith(prefix)]:
                self.invalidate_device(auth_username)

    def invalidate_device(self, auth_username: str) -> None:
        """A device changed (re-issued, revoked): forget its HA1s and its token."""
        self._unknown.pop(auth_username, None)
        self._devices.pop(auth_username, None)
        for key in [key for key, name in self._tokens.items() if name == auth_username]:
            del self._tokens[key]


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
    device: DeviceCredential | None = None  # set when a device's own credentials authenticated

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
            device = None
            if DEVICE_SEPARATOR in credentials.username:
                device = self._users.device_of(credentials.username)
                if device is not None:
                    self._users.note_device_use(device.device_id, now)
            return AuthOutcome(user=user, username=credentials.username, algorithm=credentials.algorithm,
                               device=device)
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


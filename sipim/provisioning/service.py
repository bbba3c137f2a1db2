"""Provisioning: what each auto-configuration request does, on top of the store.

The HTTP routes (``http.py``) only read requests and write responses; the sans-IO
pieces (``codes``, ``ratelimit``, ``credentials``, ``document``) make the decisions
that need no I/O.  Every request and every refusal leaves an audit record
(``sipim audit --result otp-sent`` ...).

Rate limits live in this node's memory; codes live in the store, so any node
sharing the database verifies a code another node sent, and a restart keeps them.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sipim.config import Config
from sipim.core.auth import UserCache
from sipim.core.lockout import Lockout
from sipim.provisioning import codes
from sipim.provisioning.codes import OTP, PAIRING, Verdict
from sipim.provisioning.credentials import (BadDeviceRequest, IssuedDevice, new_device, normalise_instance,
                                            normalise_name, reissue)
from sipim.provisioning.document import Endpoints, build_device_config
from sipim.core.ratelimit import RateLimiter, local_limiter
from sipim.provisioning.sms import SmsError, SmsGateway, SmsMessage
from sipim.sip.digest import ha1
from sipim.store.base import Store
from sipim.store.errors import DeviceExists, UserExists
from sipim.store.models import AuditRecord, ProvisioningCode, User
from sipim.phone import InvalidNumber, normalise_e164

log = logging.getLogger(__name__)

# Audit results (``sipim audit --result ...``).
OTP_SENT = "otp-sent"
OTP_NOT_SENT = "otp-not-sent"  # unknown or ambiguous number: the device was told "sent" all the same
OTP_SEND_FAILED = "otp-send-failed"
OTP_FAILED = "otp-failed"
OTP_EXPIRED = "otp-expired"
RATE_LIMITED = "rate-limited"
CONFIG_ISSUED = "config-issued"
CONFIG_REFUSED = "config-refused"
SIGNIN_FAILED = "signin-failed"
PAIRING_CREATED = "pairing-created"
PAIRING_FAILED = "pairing-failed"
USER_SIGNED_UP = "user-signed-up"
BAD_REQUEST = "bad-request"

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~+-]{0,63}")
WRONG_CODE = "wrong, expired or already used code"


class ProvisioningRefused(Exception):
    """Answer the request with ``status`` and this reason (JSON ``{"error": reason}``)."""

    def __init__(self, status: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks: the source address, and its User-Agent for the audit trail."""

    ip: str
    port: int
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class DeviceWish:
    name: object = None
    instance_id: object = None


class ProvisioningService:
    def __init__(self, config: Config, *, store: Store, users: UserCache, lockout: Lockout,
                 audit: Callable[[AuditRecord], None], secret: bytes, gateway: SmsGateway,
                 now: Callable[[], float] = time.time, ca_pem: str | None = None,
                 make_limiter: Callable[[str, int, float], RateLimiter] | None = None) -> None:
        self._config = config
        self._store = store
        self._users = users
        self._lockout = lockout
        self._audit_sink = audit
        self._secret = secret
        self._gateway = gateway
        self._now = now
        self.ca_pem = ca_pem
        self._domain = config.domain
        # Worker processes (sipim/cluster) count the limits together: make_limiter(name, ...).
        limiter = make_limiter or local_limiter
        self._per_number = limiter("otp-number", config.otp_rate_per_number, config.otp_rate_window)
        self._per_source = limiter("otp-source", config.otp_rate_per_source, config.otp_rate_window)
        self._attempts = limiter("attempts", config.provisioning_attempts_per_source, config.otp_rate_window)
        self._pairings = limiter("pairings", config.pairing_codes_per_user, config.otp_rate_window)
        self._trusted = tuple(ipaddress.ip_network(n, strict=False) for n in config.provisioning_trusted_networks)
        self._sending: set[asyncio.Task] = set()
        self.msisdn_header = config.provisioning_msisdn_header
        self.allow_insecure = config.allow_insecure
        self.max_body = config.provisioning_max_body

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(self._sending, timeout=5)
        await self._gateway.close()

    # -- one-time code by SMS ------------------------------------------------------------
    async def request_otp(self, raw_phone: object, client: Client) -> int:
        """Send a code to the number; returns its lifetime.  The answer is the same
        whether the number is known or not (no account enumeration)."""
        phone = self._phone(raw_phone, client, "otp request")
        now = self._now()
        for limiter, key, what in ((self._per_source, client.ip, f"source {client.ip}"),
                                   (self._per_number, phone, f"number {phone}")):
            wait = limiter.hit(key, now)
            if wait is not None:
                self._audit(client, f"tel:{phone}", None, RATE_LIMITED, f"code request: {what} over its limit")
                raise ProvisioningRefused(429, "too many code requests, try again later", retry_after=wait)
        owners = await self._store.users_by_phone(phone, self._domain)
        if len(owners) > 1:
            self._audit(client, f"tel:{phone}", None, OTP_NOT_SENT,
                        f"number belongs to {len(owners)} users; no code sent")
            return self._config.otp_lifetime
        owner = owners[0] if owners else None
        if owner is not None and owner.disabled:
            self._audit(client, self._aor(owner.username), None, OTP_NOT_SENT, "account disabled; no code sent")
            return self._config.otp_lifetime
        if owner is None and not self._config.provisioning_self_signup:
            self._audit(client, f"tel:{phone}", None, OTP_NOT_SENT, "unknown number, self sign-up off; no code sent")
            return self._config.otp_lifetime
        code = codes.new_otp(self._config.otp_length)
        await self._store.put_code(ProvisioningCode(
            purpose=OTP, subject=phone, code_hash=codes.code_hash(self._secret, OTP, phone, code),
            owner=owner.username if owner else "", created_at=now, expires_at=now + self._config.otp_lifetime))
        minutes = max(1, self._config.otp_lifetime // 60)
        message = SmsMessage(phone, f"Your {self._domain} code is {code}. It expires in {minutes} min.", code)
        aor = self._aor(owner.username) if owner else f"tel:{phone}"
        # Sent in the background: known and unknown numbers are answered equally fast.
        task = asyncio.get_running_loop().create_task(self._send_sms(message, client, aor))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return self._config.otp_lifetime

    async def _send_sms(self, message: SmsMessage, client: Client, aor: str) -> None:
        try:
            await self._gateway.send(message)
        except SmsError as exc:
            log.warning("%s", exc)
            self._audit(client, aor, None, OTP_SEND_FAILED, str(exc))
        except Exception as exc:  # a gateway bug must not go unnoticed, nor kill anything
            log.exception("SMS gateway failed")
            self._audit(client, aor, None, OTP_SEND_FAILED, repr(exc))
        else:
            self._audit(client, aor, None, OTP_SENT, f"code sent to {message.to}")

    async def config_with_code(self, raw_phone: object, code: object, wish: DeviceWish, client: Client,
                               endpoints: Endpoints) -> dict:
        phone = self._phone(raw_phone, client, "code check")
        self._check_wish(wish, client)
        self._attempt(client)
        if not isinstance(code, str) or not code.strip():
            raise ProvisioningRefused(400, "give the code that was sent to the phone")
        now = self._now()
        presented = codes.code_hash(self._secret, OTP, phone, code)
        stored = await self._store.get_code(OTP, phone)
        verdict = codes.judge(stored, presented, now, self._config.otp_max_attempts)
        aor = self._aor(stored.owner) if stored is not None and stored.owner else f"tel:{phone}"
        if verdict is Verdict.OK:
            taken = await self._store.take_code(OTP, phone, presented, now)
            if taken is None:
                verdict = Verdict.NO_CODE  # another request used it first
        if verdict is not Verdict.OK:
            reason = verdict.value
            if verdict is Verdict.WRONG:
                failures = await self._store.count_code_failure(OTP, phone)
                if failures >= self._config.otp_max_attempts:
                    await self._store.delete_code(OTP, phone)
                    reason += f"; {failures} wrong attempts, code void"
            elif verdict in (Verdict.EXPIRED, Verdict.EXHAUSTED):
                await self._store.delete_code(OTP, phone)
            self._audit(client, aor, None, OTP_EXPIRED if verdict is Verdict.EXPIRED else OTP_FAILED, reason)
            raise ProvisioningRefused(403, WRONG_CODE)
        user = await self._owner_of_number(taken.owner, phone, client)
        return await self._issue(user, wish, client, endpoints, f"one-time code to {phone}")

    async def config_trusted(self, asserted: str | None, wish: DeviceWish, client: Client,
                             endpoints: Endpoints) -> dict:
        """Zero typing: the mobile network vouches for the number (its header), which we
        believe only from the configured trusted address ranges."""
        header = self._config.provisioning_msisdn_header
        self._check_wish(wish, client)
        if not self.is_trusted(client.ip):
            self._audit(client, "", None, CONFIG_REFUSED,
                        f"no code, and {client.ip} is not in a trusted network"
                        + (f" (carried {header}: {asserted[:40]})" if asserted else ""))
            raise ProvisioningRefused(403, "a code is needed: this network does not vouch for your number")
        if not asserted:
            self._audit(client, "", None, CONFIG_REFUSED, f"trusted network, but no {header} header")
            raise ProvisioningRefused(403, f"a code is needed: the network sent no {header}")
        try:
            phone = normalise_e164(asserted.strip() if asserted.strip().startswith("+") else "+" + asserted.strip())
        except InvalidNumber as exc:
            self._audit(client, "", None, CONFIG_REFUSED, f"trusted network sent a bad {header}: {exc}")
            raise ProvisioningRefused(403, f"a code is needed: the network sent an unusable {header}") from None
        owners = await self._store.users_by_phone(phone, self._domain)
        if len(owners) > 1:
            self._audit(client, f"tel:{phone}", None, CONFIG_REFUSED, f"number belongs to {len(owners)} users")
            raise ProvisioningRefused(403, "this number cannot be used to sign in; ask the operator")
        owner = owners[0].username if owners else ""
        if not owner and not self._config.provisioning_self_signup:
            self._audit(client, f"tel:{phone}", None, CONFIG_REFUSED, "trusted network, unknown number")
            raise ProvisioningRefused(403, "this number has no account here")
        user = await self._owner_of_number(owner, phone, client)
        return await self._issue(user, wish, client, endpoints, f"network-asserted number {phone}")

    def is_trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    # -- password sign-in --------------------------------------------------------------------
    async def signin(self, raw_user: object, password: object, wish: DeviceWish, client: Client,
                     endpoints: Endpoints) -> dict:
        if not isinstance(raw_user, str) or not isinstance(password, str) or not password:
            self._audit(client, "", None, BAD_REQUEST, "sign-in without user or password")
            raise ProvisioningRefused(400, "give user and password")
        self._check_wish(wish, client)
        name = raw_user.strip()
        if name.lower().startswith(("sip:", "sips:")):
            name = name.split(":", 1)[1]
        username, at, host = name.partition("@")
        now = self._now()
        lock = self._lockout.check(username or None, client.ip, now)
        if lock is not None:
            self._audit(client, self._aor(username), None, SIGNIN_FAILED, f"{lock.subject} locked out")
            raise ProvisioningRefused(403, "too many failed attempts, try again later")
        user = None
        if _USER_NAME.fullmatch(username) and (not at or host.lower() in self._config.local_domains()):
            user = await self._users.get(username)
        if user is not None and not user.disabled:
            algorithm, stored = ("SHA-256", user.ha1_sha256) if user.ha1_sha256 else ("MD5", user.ha1_md5)
            given = ha1(username, self._domain, password, algorithm)
            if stored and hmac.compare_digest(given.encode(), stored.encode()):
                self._lockout.record_success(username, client.ip)
                return await self._issue(user, wish, client, endpoints, "password sign-in")
        lock = self._lockout.record_failure(username or None, client.ip, now)
        why = "unknown or disabled user" if user is None or user.disabled else "wrong password"
        if lock is not None:
            why += f"; {lock.subject} now locked out"
        self._audit(client, self._aor(username) if _USER_NAME.fullmatch(username) else raw_user[:80], None,
                    SIGNIN_FAILED, why)
        raise ProvisioningRefused(403, "wrong user or password")

    # -- pairing -------------------------------------------------------------------------------
    async def create_pairing(self, user: User, device_id: str | None, client: Client) -> tuple[str, int]:
        """A short-lived single-use code that signs a new device in as ``user``."""
        now = self._now()
        wait = self._pairings.hit(user.username, now)
        if wait is not None:
            self._audit(client, self._aor(user.username), None, RATE_LIMITED, "pairing codes: over the user's limit")
            raise ProvisioningRefused(429, "too many pairing codes, try again later", retry_after=wait)
        code = codes.new_pairing_code(self._config.pairing_code_length)
        subject = codes.pairing_subject(self._secret, code)
        lifetime = self._config.pairing_code_lifetime
        await self._store.put_code(ProvisioningCode(purpose=PAIRING, subject=subject, code_hash=subject,
                                                    owner=user.username, created_at=now, expires_at=now + lifetime))
        self._audit(client, self._aor(user.username), None, PAIRING_CREATED,
                    f"pairing code created by {device_id or 'password'}; valid {lifetime}s")
        return code, lifetime

    async def pair(self, code: object, wish: DeviceWish, client: Client, endpoints: Endpoints) -> dict:
        self._check_wish(wish, client)
        self._attempt(client)
        if not isinstance(code, str) or not codes.normalise_code(code):
            raise ProvisioningRefused(400, "give the pairing code")
        subject = codes.pairing_subject(self._secret, code)
        taken = await self._store.take_code(PAIRING, subject, subject, self._now())
        user = await self._users.get(taken.owner) if taken is not None else None
        if user is None or user.disabled:
            self._audit(client, self._aor(taken.owner) if taken else "", None, PAIRING_FAILED,
                        "unknown, expired or used pairing code" if taken is None else "user gone or disabled")
            raise ProvisioningRefused(403, "unknown, expired or already used pairing code")
        return await self._issue(user, wish, client, endpoints, "pairing code")

    # -- a user's own devices ---------------------------------------------------------------
    async def list_devices(self, user: User) -> list[dict]:
        return [{"id": d.device_id, "name": d.name, "instance_id": d.instance_id, "auth_username": d.auth_username,
                 "created_at": d.created_at, "last_used_at": d.last_used_at, "revoked_at": d.revoked_at}
                for d in await self._store.list_devices(user.username, self._domain)]

    async def revoke_device(self, user: User, device_id: str, by_device: str | None, client: Client) -> None:
        """The user revokes one of their own devices (the change feed then ends its
        registration on every node)."""
        device = await self._store.get_device(device_id)
        if device is None or device.username != user.username or device.domain != self._domain:
            raise ProvisioningRefused(404, f"you have no device {device_id!r}")
        if await self._store.revoke_device(device_id, self._now()) is None:
            raise ProvisioningRefused(404, f"device {device_id!r} is already revoked")
        self._audit(client, self._aor(user.username), device.auth_username, "device-revoked",
                    f"device {device_id} revoked by {by_device or 'password'}", device.instance_id)

    # -- issuing credentials ----------------------------------------------------------------
    async def _issue(self, user: User, wish: DeviceWish, client: Client, endpoints: Endpoints, how: str) -> dict:
        try:
            instance_id = normalise_instance(wish.instance_id)
            try:
                # Unnamed devices are called after their User-Agent product, when usable.
                name = normalise_name(wish.name, client.user_agent.split("/", 1)[0].strip() or "device")
            except BadDeviceRequest:
                name = normalise_name(wish.name, "device")
        except BadDeviceRequest as exc:
            self._audit(client, self._aor(user.username), None, BAD_REQUEST, f"{how}: {exc}")
            raise ProvisioningRefused(400, str(exc)) from None
        issued: IssuedDevice | None = None
        for _ in range(3):  # a concurrent request for the same instance may win the insert
            existing = await self._store.live_device_by_instance(user.username, self._domain, instance_id)
            if existing is not None:
                issued = reissue(existing, name if wish.name else None)
                if await self._store.update_device(issued.device):
                    action = "re-issued"
                    break
                continue
            live = [d for d in await self._store.list_devices(user.username, self._domain) if not d.revoked]
            if len(live) >= self._config.max_devices_per_user:
                self._audit(client, self._aor(user.username), None, CONFIG_REFUSED,
                            f"{how}: device limit {self._config.max_devices_per_user} reached", instance_id)
                raise ProvisioningRefused(403, f"device limit reached ({self._config.max_devices_per_user}); "
                                               f"revoke a device first")
            issued = new_device(user.username, self._domain, name, instance_id, self._now())
            try:
                await self._store.add_device(issued.device)
            except DeviceExists:
                continue
            action = "issued"
            break
        else:
            raise ProvisioningRefused(503, "device registration is busy, try again")
        assert issued is not None
        self._users.invalidate_device(issued.device.auth_username)
        self._audit(client, self._aor(user.username), issued.device.auth_username, CONFIG_ISSUED,
                    f"{how}: device {issued.device.device_id} {action}", instance_id)
        return build_device_config(user, issued, endpoints, self.ca_pem)

    async def _owner_of_number(self, owner: str, phone: str, client: Client) -> User:
        if owner:
            user = await self._users.get(owner)
            if user is None or user.disabled:
                raise ProvisioningRefused(403, "this account is not available")
            return user
        return await self._sign_up(phone, client)

    async def _sign_up(self, phone: str, client: Client) -> User:
        """Self sign-up: a verified number that belongs to nobody becomes a new user."""
        # Raced by another request for the same number: that user is ours too.
        found = await self._store.users_by_phone(phone, self._domain)
        if found:
            return found[0]
        base = "u" + phone.lstrip("+")
        for suffix in ["", *(f"-{n}" for n in range(2, 10))]:
            username = base + suffix
            unusable = secrets.token_urlsafe(24)  # nobody knows it: the device credentials are the way in
            user = User(username=username, domain=self._domain,
                        ha1_md5=ha1(username, self._domain, unusable, "MD5"),
                        ha1_sha256=ha1(username, self._domain, unusable, "SHA-256"),
                        phones=(phone,), created_at=self._now())
            try:
                await self._store.add_user(user)
            except UserExists:
                continue
            self._users.invalidate(username)
            self._audit(client, self._aor(username), None, USER_SIGNED_UP, f"self sign-up with {phone}")
            return user
        raise ProvisioningRefused(503, "could not create an account for this number")

    # -- helpers ----------------------------------------------------------------------------------
    def _phone(self, raw: object, client: Client, what: str) -> str:
        if not isinstance(raw, str):
            self._audit(client, "", None, BAD_REQUEST, f"{what}: no phone number")
            raise ProvisioningRefused(400, "give the phone number in international form, e.g. +4915112345678")
        try:
            return normalise_e164(raw)
        except InvalidNumber as exc:
            self._audit(client, "", None, BAD_REQUEST, f"{what}: {exc}")
            raise ProvisioningRefused(400, str(exc)) from None

    def _check_wish(self, wish: DeviceWish, client: Client) -> None:
        """A bad instance id or name is refused before any code is used up."""
        try:
            if wish.instance_id not in (None, ""):
                normalise_instance(wish.instance_id)
            normalise_name(wish.name, "device")
        except BadDeviceRequest as exc:
            self._audit(client, "", None, BAD_REQUEST, str(exc))
            raise ProvisioningRefused(400, str(exc)) from None

    def _attempt(self, client: Client) -> None:
        wait = self._attempts.hit(client.ip, self._now())
        if wait is not None:
            self._audit(client, "", None, RATE_LIMITED, f"code checks: source {client.ip} over its limit")
            raise ProvisioningRefused(429, "too many attempts, try again later", retry_after=wait)

    def _aor(self, username: str) -> str:
        return f"sip:{username}@{self._domain}" if username else ""

    def _audit(self, client: Client, aor: str, username: str | None, result: str, reason: str,
               instance_id: str | None = None) -> None:
        self._audit_sink(AuditRecord(ts=self._now(), aor=_storable(aor), username=username, instance_id=instance_id,
                                     user_agent=_storable(client.user_agent[:200]),
                                     source=f"{client.ip}:{client.port}", transport="https", result=result,
                                     reason=_storable(reason[:300])))


def _storable(text: str) -> str:
    """Client-supplied text as the store can keep it: a lone surrogate (valid in JSON, not
    in UTF-8) would make the whole audit batch fail."""
    return text.encode("utf-8", "replace").decode("utf-8")

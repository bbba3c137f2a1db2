"""The registrar of the embedded SIP/IP core (RFC 3261 §10.3).

Extended by Outbound (RFC 5626 §6: one binding per instance-id + reg-id, bound
to the flow it came over), GRUU (RFC 5627 §5) and Path (RFC 3327 §5.3).

Every attempt, good or bad, produces one audit record.  Bindings change in
memory at once and reach the store in the writer's next batch; the 200 OK is
sent only after that batch commits, so an answered registration survives a
crash.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from sipim.config import Config
from sipim.core.auth import Authenticator, AuthOutcome
from sipim.core.gruu import TempGruuCodec, public_gruu
from sipim.core.identity import AssertedIdentity
from sipim.core.location import LocationService, contact_key
from sipim.core.router import Answer
from sipim.core.writer import StoreWriter
from sipim.sip.clock import Clock
from sipim.sip.message import Request, Response, make_response
from sipim.sip.uri import NameAddr, SipURI, parse_name_addr
from sipim.store.models import AuditRecord, Binding
from sipim.net import Source

log = logging.getLogger(__name__)

# Audit results of a REGISTER (besides the authentication ones in core.auth).
REGISTERED = "registered"
REFRESHED = "refreshed"
REMOVED = "removed"
QUERIED = "queried"
REFUSED = "refused"

SUPPORTED_OPTIONS = frozenset({"path", "outbound", "gruu"})


class RegisterRefused(Exception):
    """The REGISTER is refused with ``status``; nothing was changed."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None,
                 audit_reason: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []
        self.audit_reason = audit_reason or reason


@dataclass(frozen=True, slots=True)
class ContactRequest:
    """One Contact of a REGISTER, read and checked, before it touches the location service."""

    name_addr: NameAddr
    binding_key: str
    expires: int
    instance_id: str | None
    reg_id: int | None
    q: float | None


class Registrar:
    def __init__(
        self,
        config: Config,
        *,
        location: LocationService,
        writer: StoreWriter,
        authenticator: Authenticator,
        temp_gruus: TempGruuCodec,
        clock: Clock,
    ) -> None:
        self._config = config
        self._location = location
        self._writer = writer
        self._auth = authenticator
        self._temp_gruus = temp_gruus
        # Wall time: expiry and registration times are stored and shared with other nodes.
        self._clock = clock
        self._local_domains = config.local_domains()
        # Called with each binding added or refreshed, once it is committed.
        self.on_registered: list = []
        # Contact as stored -> Contact without expires/GRUU params: parsed once, not per 200 OK.
        self._contact_bases: dict[str, str] = {}
        self._date_second = -1
        self._date_value = ""

    # ------------------------------------------------------------------
    def handle(self, request: Request, source: Source, identity: AssertedIdentity | None = None) -> Answer:
        """Answer a REGISTER: a Response at once (refusals, challenges), or an
        awaitable that resolves once the changed bindings are committed."""
        now = self._clock.now()
        aor = ""
        try:
            aor = self._address_of_record(request)
            if not source.secure and not self._config.allow_insecure:
                raise RegisterRefused(403, "REGISTER requires a secure transport (TLS or WSS)",
                                      audit_reason=f"REGISTER over {source.transport} refused (no --allow-insecure)")
            self._check_require(request)
        except RegisterRefused as refusal:
            return self._refuse(request, source, aor, refusal, now)
        outcome = self._auth.authenticate(request, source, proxy=False)
        if isinstance(outcome, AuthOutcome):
            return self._register(request, source, aor, outcome, now)
        return self._register_after_auth(request, source, aor, outcome, now)

    async def _register_after_auth(self, request, source, aor, pending, now) -> Response:
        result = self._register(request, source, aor, await pending, now)
        return result if isinstance(result, Response) else await result

    def _register(self, request: Request, source: Source, aor: str, outcome: AuthOutcome,
                  now: float) -> Response | Awaitable[Response]:
        if not outcome.ok:
            return self._auth_failure(request, source, aor, outcome, now)
        assert outcome.user is not None
        try:
            if f"sip:{outcome.user.username}@{self._config.domain}" != aor:
                raise RegisterRefused(403, "Not allowed to register this address",
                                      audit_reason=f"{outcome.user.username} tried to register {aor}")
            response, result, reason, instance, registered = self._apply(request, source, aor, now,
                                                                         outcome.device)
        except RegisterRefused as refusal:
            return self._refuse(request, source, aor, refusal, now)
        # The digest username that authenticated: a device's own auth username shows which device.
        self._audit(request, source, aor, outcome.username or outcome.user.username, result,
                    f"{reason}; digest {outcome.algorithm}", now, instance)
        return self._once_committed(response, registered)

    def _once_committed(self, response: Response, registered: list[Binding]) -> asyncio.Future[Response]:
        return answer_once_committed(self._writer, response, registered, self.on_registered)

    def _refuse(self, request: Request, source: Source, aor: str, refusal: RegisterRefused, now: float) -> Response:
        response = make_response(request, refusal.status, refusal.reason)
        for name, value in refusal.headers:
            response.headers.add(name, value)
        self._audit(request, source, aor, None, REFUSED, refusal.audit_reason, now)
        return response

    # -- RFC 3261 §10.3 steps 1-5 ----------------------------------------
    def _address_of_record(self, request: Request) -> str:
        request_uri = request.uri
        if not isinstance(request_uri, SipURI) or request_uri.host.lower() not in self._local_domains:
            raise RegisterRefused(404, "Domain not served here")
        to_uri = request.to.uri
        if not isinstance(to_uri, SipURI):
            raise RegisterRefused(404, "Address-of-record must be a SIP URI")
        if to_uri.host.lower() not in self._local_domains:
            raise RegisterRefused(404, "Domain not served here")
        if not to_uri.user:
            raise RegisterRefused(400, "To header has no user part")
        # Step 5: canonical AOR -- our domain, no port, no parameters.
        return f"sip:{to_uri.user}@{self._config.domain}"

    @staticmethod
    def _check_require(request: Request) -> None:
        values = request.headers.get_all("Require")
        if not values:
            return
        required = {tag.strip().lower() for tag in values}
        unsupported = sorted(required - SUPPORTED_OPTIONS)
        if unsupported:
            raise RegisterRefused(420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])

    # -- RFC 3261 §10.3 steps 6-8 ------------------------------------------
    def _apply(self, request: Request, source: Source, aor: str, now: float, device=None):
        contacts = request.contacts
        supported = {tag.strip().lower() for tag in request.headers.get_all("Supported")}
        if contacts == "*":
            # §10.3 step 6: "*" only with Expires: 0 and nothing else.
            if request.expires != 0 or len(request.headers.get_all("Contact")) != 1:
                raise RegisterRefused(400, "Contact * needs Expires: 0 and no other Contact")
            for binding in self._location.remove_all(aor):
                self._writer.delete(aor, binding.binding_key)
            return self._ok(request, aor, supported, False, now), REMOVED, "all bindings removed", None, []
        if not contacts:
            return self._ok(request, aor, supported, False, now), QUERIED, "bindings queried", None, []

        outbound = self._outbound_applies(request, supported)
        wanted = [self._read_contact(c, request, aor, outbound, device) for c in contacts]
        if outbound and sum(1 for c in wanted if c.expires > 0 and c.reg_id is not None) > 1:
            # RFC 5626 §6: one flow per REGISTER.
            raise RegisterRefused(400, "Only one Contact with reg-id may be registered at a time")

        added = removed = refreshed = 0
        new_keys = {c.binding_key for c in wanted if c.expires > 0
                    and self._location.get(aor, c.binding_key) is None}
        if new_keys:
            current = {b.binding_key for b in self._location.bindings(aor, now)}
            if len(current | new_keys) > self._config.max_devices_per_user:
                raise RegisterRefused(
                    403, f"Device limit reached ({self._config.max_devices_per_user} devices)",
                    audit_reason=f"device limit {self._config.max_devices_per_user} reached")

        changes: list[tuple[ContactRequest, Binding | None]] = []
        for contact in wanted:
            existing = self._location.get(aor, contact.binding_key)
            # §10.3 step 7: same Call-ID with a CSeq not higher is out of order.
            if existing is not None and existing.call_id == request.call_id and request.cseq.seq <= existing.cseq:
                raise RegisterRefused(400, "Out-of-order REGISTER (CSeq not higher than the stored one)")
            changes.append((contact, existing))

        instance = None
        registered: list[Binding] = []
        for contact, existing in changes:
            instance = instance or contact.instance_id
            if contact.expires == 0:
                if existing is not None:
                    self._location.remove(aor, contact.binding_key)
                    self._writer.delete(aor, contact.binding_key)
                    removed += 1
                continue
            binding = Binding(
                aor=aor,
                binding_key=contact.binding_key,
                contact=str(contact.name_addr),
                expires_at=now + contact.expires,
                instance_id=contact.instance_id,
                reg_id=contact.reg_id,
                q=contact.q,
                call_id=request.call_id,
                cseq=request.cseq.seq,
                path=tuple(request.headers.get_all("Path")),
                source=f"{source.remote[0]}:{source.remote[1]}",
                transport=source.transport,
                flow_id=source.flow.id if source.flow is not None else None,
                node_id=self._config.node_id,
                gruu_tag=(existing.gruu_tag if existing is not None and existing.call_id == request.call_id
                          else None),
                user_agent=request.headers.get("User-Agent") or "",
                registered_at=existing.registered_at if existing is not None else now,
            )
            if binding.instance_id and "gruu" in supported and binding.gruu_tag is None:
                binding = replace(binding, gruu_tag=self._temp_gruus.make(aor, binding.instance_id, request.call_id))
            self._location.put(binding)
            self._writer.upsert(binding)
            registered.append(binding)
            if existing is None:
                added += 1
            else:
                refreshed += 1

        if added:
            result = REGISTERED
        elif refreshed:
            result = REFRESHED
        elif removed:
            result = REMOVED
        else:
            result = QUERIED
        reason = f"{added} added, {refreshed} refreshed, {removed} removed"
        return self._ok(request, aor, supported, outbound, now), result, reason, instance, registered

    def _outbound_applies(self, request: Request, supported: set[str]) -> bool:
        """RFC 5626 §6: outbound processing only when we are the first hop or the edge says "ob"."""
        if _single_via(request):
            return True
        paths = request.headers.get_all("Path")
        if paths:
            first = parse_name_addr(paths[0])
            if isinstance(first.uri, SipURI) and "ob" in first.uri.params:
                return True
        if "outbound" in supported and any(
            "reg-id" in c.params for c in request.contacts if isinstance(request.contacts, list)
        ):
            raise RegisterRefused(439, "First Hop Lacks Outbound Support")
        return False

    def _read_contact(self, name_addr: NameAddr, request: Request, aor: str, outbound: bool,
                      device=None) -> ContactRequest:
        params = name_addr.params
        raw_expires = params.get("expires")
        try:
            if raw_expires is not None:
                expires = int(raw_expires)
            elif request.expires is not None:
                expires = request.expires
            else:
                expires = self._config.default_expires
        except ValueError:
            raise RegisterRefused(400, "Bad expires parameter") from None
        if expires < 0:
            raise RegisterRefused(400, "Bad expires parameter")
        if 0 < expires < self._config.min_expires:
            raise RegisterRefused(423, "Interval Too Brief", [("Min-Expires", str(self._config.min_expires))],
                                  audit_reason=f"expires {expires} below min-expires {self._config.min_expires}")
        expires = min(expires, self._config.max_expires)

        uri = name_addr.uri
        instance_id = params.get("+sip.instance")
        if instance_id is not None:
            instance_id = instance_id.strip('"')
        if device is not None:
            # Device credentials belong to one device (RFC 5626 §4.1 instance): it binds
            # under that instance, so revoking the device finds its registration.
            if instance_id is None:
                instance_id = f"<{device.instance_id}>"
            elif instance_id.strip("<>") != device.instance_id:
                raise RegisterRefused(403, "Contact +sip.instance is not the one of these device credentials",
                                      audit_reason=f"device {device.device_id} registered instance {instance_id}, "
                                                   f"its own is {device.instance_id}")
        if instance_id is not None:
            if not isinstance(uri, SipURI):
                raise RegisterRefused(403, "Contact must be a SIP URI")  # RFC 5627 §5.1
            if expires and (f"sip:{uri.user}@{uri.host}" == aor and not uri.port and "gr" not in uri.params):
                raise RegisterRefused(403, "Contact equals the address-of-record")  # RFC 5627 §5.1 loop
        reg_id = None
        raw_reg_id = params.get("reg-id")
        if raw_reg_id is not None and instance_id is not None and outbound:
            try:
                reg_id = int(raw_reg_id)
            except ValueError:
                raise RegisterRefused(400, "Bad reg-id parameter") from None
        q = None
        if params.get("q") is not None:
            try:
                q = float(params["q"])
            except ValueError:
                raise RegisterRefused(400, "Bad q parameter") from None
        if instance_id is not None:
            key = f"{instance_id};reg-id={reg_id}" if reg_id is not None else instance_id
        else:
            key = contact_key(uri)
        return ContactRequest(name_addr, key, expires, instance_id, reg_id, q)

    def _ok(self, request: Request, aor: str, supported: set[str], outbound: bool, now: float) -> Response:
        response = make_response(request, 200, "OK")
        for binding in sorted(self._location.bindings(aor, now), key=lambda b: b.registered_at):
            response.headers.add("Contact", self._contact_value(binding, supported, now))
        for path in request.headers.get_all("Path"):
            response.headers.add("Path", path)  # RFC 3327 §5.3
        if outbound and any(b.reg_id is not None for b in self._location.bindings(aor)):
            response.headers.add("Require", "outbound")  # RFC 5626 §6
            if _single_via(request):
                response.headers.add("Flow-Timer", str(self._config.flow_timer))
        response.headers.add("Supported", "path, outbound, gruu")
        response.headers.add("Date", self._date(now))
        return response

    def _date(self, now: float) -> str:
        """The Date header value (RFC 3261 §20.17), made once a second."""
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date_value = email.utils.formatdate(second, usegmt=True)
        return self._date_value

    def _contact_value(self, binding: Binding, supported: set[str], now: float) -> str:
        """The binding's Contact as the 200 OK lists it (RFC 3261 §10.3 step 8, RFC 5627 §5.2)."""
        base = self._contact_bases.get(binding.contact)
        if base is None:
            contact = parse_name_addr(binding.contact)
            params = {k: v for k, v in contact.params.items() if k not in ("expires", "pub-gruu", "temp-gruu")}
            base = str(NameAddr(contact.uri, contact.display_name, params))
            if len(self._contact_bases) >= 100_000:
                self._contact_bases.clear()
            self._contact_bases[binding.contact] = base
        value = f"{base};expires={max(0, int(binding.expires_at - now))}"
        if binding.instance_id and "gruu" in supported:
            value += f';pub-gruu="{public_gruu(binding.aor, binding.instance_id)}"'
            if binding.gruu_tag:
                value += f';temp-gruu="{binding.gruu_tag}"'
        return value

    # -- failures and audit ------------------------------------------------------
    def _auth_failure(self, request: Request, source: Source, aor: str, outcome: AuthOutcome, now: float) -> Response:
        response = make_response(request, outcome.status, outcome.reason)
        for name, value in outcome.challenge_headers:
            response.headers.add(name, value)
        reason = outcome.audit_reason
        if outcome.username:
            reason = f"{reason} (as {outcome.username})"
        self._audit(request, source, aor, None, outcome.audit_result, reason, now)
        return response

    def _audit(self, request: Request, source: Source, aor: str, username: str | None, result: str,
               reason: str, now: float, instance_id: str | None = None) -> None:
        if instance_id is None:
            instance_id = _first_instance(request)
        self._writer.audit(AuditRecord(
            ts=now,
            aor=aor or _raw_to(request),
            username=username,
            instance_id=instance_id,
            user_agent=(request.headers.get("User-Agent") or "")[:200],
            source=f"{source.remote[0]}:{source.remote[1]}",
            transport=source.transport,
            result=result,
            reason=reason[:300],
        ))

    # -- flows and expiry (called by the app) ------------------------------------------
    def expire(self, now: float | None = None) -> list[Binding]:
        """Drop the bindings whose expiry passed (RFC 3261 §10.2.1: a binding not
        refreshed goes); ``now`` defaults to the clock's."""
        expired = self._location.pop_expired(self._clock.now() if now is None else now)
        for binding in expired:
            self._writer.delete(binding.aor, binding.binding_key)
        return expired

    def remove_bindings(self, bindings: list[Binding], reason: str, now: float | None = None) -> None:
        if now is None:
            now = self._clock.now()
        for binding in bindings:
            if self._location.remove(binding.aor, binding.binding_key) is not None:
                self._writer.delete(binding.aor, binding.binding_key)
                self._writer.audit(AuditRecord(
                    ts=now, aor=binding.aor, username=None, instance_id=binding.instance_id,
                    user_agent=binding.user_agent, source=binding.source, transport=binding.transport,
                    result=REMOVED, reason=reason))


def _single_via(request: Request) -> bool:
    """One Via: the REGISTER comes straight from the device (RFC 5626 §6 first hop).

    Counted on the raw values; the top Via is parsed already.  With more than one,
    every Via is parsed, so a malformed one is refused as it always was."""
    if len(request.headers.get_all("Via")) == 1:
        return True
    return len(request.vias) == 1


def _first_instance(request: Request) -> str | None:
    """The +sip.instance of the first Contact, for the audit trail.

    Read from the raw header text: a challenged or refused REGISTER need not
    pay for parsing its Contacts, nor fail on a malformed one.
    """
    for value in request.headers.raw_values("Contact"):
        start = value.find("+sip.instance=")
        if start >= 0:
            rest = value[start + len("+sip.instance="):].lstrip()
            if rest.startswith('"'):
                end = rest.find('"', 1)
                return rest[1:end] if end > 0 else None
            return rest.split(";", 1)[0].split(",", 1)[0].strip() or None
    return None


def _raw_to(request: Request) -> str:
    try:
        return str(request.to.uri)
    except Exception:
        return request.headers.get("To") or ""


def answer_once_committed(writer: StoreWriter, response: Response, registered: list[Binding],
                          listeners: list[Callable[[Binding], None]], *,
                          on_commit: Callable[[], None] | None = None) -> asyncio.Future[Response]:
    """A future of ``response`` that resolves when the writer's batch commits; then
    ``on_commit`` runs and the roles behind the core hear of the devices that registered.
    A registration is answered only once it is durable (it survives a crash)."""
    answered: asyncio.Future[Response] = writer.loop.create_future()

    def resolve(committed: asyncio.Future[None]) -> None:
        if answered.done():
            return
        if committed.exception() is not None:
            answered.set_exception(committed.exception())
            return
        answered.set_result(response)
        if on_commit is not None:
            on_commit()
        for binding in registered:
            for listener in listeners:
                try:
                    listener(binding)
                except Exception:
                    log.exception("registration listener failed")

    writer.committed().add_done_callback(resolve)
    return answered

"""Third-party REGISTER from the external core (RFC 3261 §10.2, as an IMS
S-CSCF informs its application servers, 3GPP TS 24.229 §5.4.1.7).

After each registration it accepted, the core sends sipim a REGISTER on
behalf of the user: To is the user's address-of-record, Contact carries the
device's contact exactly as the device registered it (with +sip.instance,
reg-id, expires), and the ``Sipim-Registration`` header says what happened:

    REGISTER sip:example.com SIP/2.0
    From: <sip:example.com>;tag=...            (the core, registering on the user's behalf)
    To: <sip:alice@example.com>
    Contact: <sip:alice@192.0.2.7:50123;transport=tls>;+sip.instance="<urn:uuid:...>";reg-id=1
    Expires: 600
    Sipim-Registration: result=registered;source="192.0.2.7:50123";transport=tls;auth-user=alice
    Sipim-User-Agent: baresip 1.0.0

A refused attempt (wrong password, unknown user, From/To not the
credentials' owner) is reported the same way with ``result=auth-failed``,
``unknown-user`` or ``forbidden`` and no Contact -- a REGISTER without
Contact changes no binding (RFC 3261 §10.2.3) -- so the audit trail holds
every attempt, wherever it was decided.

sipim records the devices as reachable through the core (no flow of its own,
``transport`` and ``source`` as the device used them towards the core), writes
an audit record, and once the batch committed tells the IM role (deferred
delivery) and the other nodes (change feed ``binding``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sipim.config import Config
from sipim.core.location import LocationService, contact_key
from sipim.core.registrar import QUERIED, REFRESHED, REFUSED, REGISTERED, REMOVED, answer_once_committed
from sipim.core.writer import StoreWriter
from sipim.core.auth import AUTH_FAILED
from sipim.core.identity import AssertedIdentity
from sipim.sip.clock import Clock
from sipim.sip.errors import SIPParseError
from sipim.sip.headers import parse_params, unquote
from sipim.sip.message import Request, Response, make_response
from sipim.sip.uri import SipURI
from sipim.store.models import AuditRecord, Binding
from sipim.net import Source


REPORT_HEADER = "Sipim-Registration"
USER_AGENT_HEADER = "Sipim-User-Agent"

# result= of a refused attempt -> (audit result, audit reason)
REPORTED_FAILURES = {
    "auth-failed": (AUTH_FAILED, "wrong password (refused by the core)"),
    "unknown-user": (AUTH_FAILED, "unknown user (refused by the core)"),
    "forbidden": (REFUSED, "credentials not allowed for this address (refused by the core)"),
    "locked": ("locked", "too many failures (refused by the core)"),
}


@dataclass(frozen=True, slots=True)
class RegistrationReport:
    result: str
    source: str
    transport: str
    auth_user: str | None
    reason: str


def read_report(request: Request, core: Source) -> RegistrationReport:
    value = request.headers.get(REPORT_HEADER)
    params = parse_params(value) if value else {}
    source = unquote(params.get("source") or "") or f"{core.remote[0]}:{core.remote[1]}"
    return RegistrationReport(
        result=(params.get("result") or "registered").lower(),
        source=source[:100],
        transport=(params.get("transport") or core.transport).lower()[:10],
        auth_user=unquote(params["auth-user"])[:100] if params.get("auth-user") else None,
        reason=unquote(params.get("reason") or "")[:200],
    )


class ThirdPartyRegistrar:
    def __init__(self, config: Config, *, location: LocationService, writer: StoreWriter,
                 clock: Clock, publish: Callable[[str], None]) -> None:
        self._config = config
        self._location = location
        self._writer = writer
        self._clock = clock
        self._publish = publish
        self._local_domains = config.local_domains()
        self.on_registered: list[Callable[[Binding], None]] = []

    def handle(self, request: Request, source: Source,
               identity: AssertedIdentity | None = None) -> Response | asyncio.Future[Response]:
        now = self._clock.now()
        to_uri = request.to.uri
        if not isinstance(to_uri, SipURI) or not to_uri.user or to_uri.host.lower() not in self._local_domains:
            return make_response(request, 404, "Domain not served here")
        aor = f"sip:{to_uri.user}@{self._config.domain}"
        try:
            report = read_report(request, source)
        except SIPParseError:
            return make_response(request, 400, f"Malformed {REPORT_HEADER}")
        user_agent = (request.headers.get(USER_AGENT_HEADER) or "")[:200]
        if report.result != "registered":
            result, reason = REPORTED_FAILURES.get(report.result, (REFUSED, f"refused by the core: {report.result}"))
            if report.reason:
                reason = f"{reason}: {report.reason}"
            self._audit(aor, None, None, user_agent, report, result,
                        f"{reason}" + (f" (as {report.auth_user})" if report.auth_user else ""), now)
            return self._once_committed(make_response(request, 200, "OK"), aor, [], changed=False)

        contacts = request.contacts
        added = refreshed = removed = 0
        registered: list[Binding] = []
        instance = None
        if contacts == "*":
            for binding in self._location.remove_all(aor):
                self._writer.delete(aor, binding.binding_key)
                removed += 1
        else:
            for contact in contacts:
                params = contact.params
                try:
                    expires = int(params["expires"]) if params.get("expires") is not None else (
                        request.expires if request.expires is not None else self._config.default_expires)
                except ValueError:
                    return make_response(request, 400, "Bad expires parameter")
                expires = max(0, min(expires, self._config.max_expires))
                instance_id = params.get("+sip.instance")
                instance_id = instance_id.strip('"') if instance_id else None
                reg_id = params.get("reg-id")
                reg_id = int(reg_id) if reg_id and reg_id.isdigit() and instance_id else None
                if instance_id:
                    key = f"{instance_id};reg-id={reg_id}" if reg_id is not None else instance_id
                else:
                    key = contact_key(contact.uri)
                instance = instance or instance_id
                existing = self._location.get(aor, key)
                if expires == 0:
                    if self._location.remove(aor, key) is not None:
                        self._writer.delete(aor, key)
                        removed += 1
                    continue
                q = params.get("q")
                try:
                    q_value = float(q) if q is not None else None
                except ValueError:
                    q_value = None
                binding = Binding(
                    aor=aor, binding_key=key, contact=str(contact), expires_at=now + expires,
                    instance_id=instance_id, reg_id=reg_id, q=q_value, call_id=request.call_id,
                    cseq=request.cseq.seq, path=(), source=report.source, transport=report.transport,
                    flow_id=None, node_id=self._config.node_id, gruu_tag=None, user_agent=user_agent,
                    registered_at=existing.registered_at if existing is not None else now)
                self._location.put(binding)
                self._writer.upsert(binding)
                registered.append(binding)
                if existing is None:
                    added += 1
                else:
                    refreshed += 1
        result = REGISTERED if added else REFRESHED if refreshed else REMOVED if removed else QUERIED
        self._audit(aor, report.auth_user, instance, user_agent, report, result,
                    f"{added} added, {refreshed} refreshed, {removed} removed; via the core", now)
        response = make_response(request, 200, "OK")
        return self._once_committed(response, aor, registered, changed=bool(added or refreshed or removed))

    def _once_committed(self, response: Response, aor: str, registered: list[Binding], *,
                        changed: bool) -> asyncio.Future[Response]:
        # Other nodes learn of the change through the store's feed once it is durable.
        return answer_once_committed(self._writer, response, registered, self.on_registered,
                                     on_commit=(lambda: self._publish(aor)) if changed else None)

    def _audit(self, aor: str, username: str | None, instance: str | None, user_agent: str,
               report: RegistrationReport, result: str, reason: str, now: float) -> None:
        self._writer.audit(AuditRecord(
            ts=now, aor=aor, username=username, instance_id=instance,
            user_agent=user_agent, source=report.source, transport=report.transport,
            result=result, reason=reason[:300]))

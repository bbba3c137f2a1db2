"""Client-side SIP state, sans-IO: building requests, registering, keep-alives.

No sockets, no asyncio: the I/O layer (``sipim.client.flow``) feeds responses and
the time in and sends what comes out.

* ``RequestFactory`` -- requests of one user agent (RFC 3261 §8.1.1): Via with a
  fresh branch and ``rport`` (RFC 3581), From with a tag, Call-ID, CSeq.
* ``Registration`` -- one outbound registration (RFC 5626 §4.2): Contact with
  ``+sip.instance`` and ``reg-id``, ``Supported: outbound, path, gruu``, answers
  401/407 (RFC 3261 §22.2) and 423 (§10.2.8), reads the granted expiry and
  ``Flow-Timer``, says when to refresh.
* ``KeepAlive`` -- RFC 5626 §4.4.1 CRLF pings: when to ping, when the flow failed.
* ``recovery_delay`` -- RFC 5626 §4.5 back-off before forming a new flow.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipim.sip.message import Request, Response
from sipim.sip.transaction import new_branch
from sipim.sip.uri import NameAddr, parse_name_addr

from .challenges import AuthenticationFailed, Credentials, answer_challenge

USER_AGENT = "sipim-client"


def new_tag() -> str:
    return uuid.uuid4().hex[:12]


def new_call_id(host: str) -> str:
    return f"{uuid.uuid4().hex}@{host}"


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class RequestFactory:
    """Requests sent by one user agent over one flow."""

    def __init__(self, aor: str, *, display_name: str | None = None, transport: str = "TLS",
                 user_agent: str = USER_AGENT) -> None:
        self.aor = aor
        self.display_name = display_name
        self.transport = transport
        self.user_agent = user_agent
        # The flow's local address ("sent-by", RFC 3261 §18.1.1); set once connected.
        self.local: tuple[str, int] = ("invalid", 9)

    def from_header(self, tag: str) -> str:
        name = self.display_name.replace("\\", "\\\\").replace('"', '\\"') if self.display_name else None
        return (f'"{name}" ' if name else "") + f"<{self.aor}>;tag={tag}"

    def build(self, method: str, uri: str, *, to: str, call_id: str | None = None, cseq: int = 1,
              from_tag: str | None = None, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Request:
        host, port = self.local
        return Request(method, uri, [
            # RFC 3581 §3: rport asks for the response to come back to where we sent from.
            ("Via", f"SIP/2.0/{self.transport} {format_host(host)}:{port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", self.from_header(from_tag or new_tag())),
            ("To", to),
            ("Call-ID", call_id or new_call_id(host)),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", self.user_agent),
            *headers,
        ], body)

    def contact_uri(self, transport: str = "tls") -> str:
        user = self.aor.split(":", 1)[1].split("@", 1)[0]
        host, port = self.local
        return f"sip:{user}@{format_host(host)}:{port};transport={transport}"


# ---------------------------------------------------------------------------------------
# registration


@dataclass(frozen=True)
class Resend:
    """Send this request next (a challenge answered, a longer expiry asked for)."""

    request: Request


@dataclass(frozen=True)
class Registered:
    expires: int
    refresh_in: float
    flow_timer: int | None
    pub_gruu: str | None = None
    temp_gruu: str | None = None


@dataclass(frozen=True)
class Unregistered:
    pass


@dataclass(frozen=True)
class RegistrationFailed:
    status: int
    reason: str
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


RegisterAction = Resend | Registered | Unregistered | RegistrationFailed


class Registration:
    """One registration of one instance over one flow (RFC 5626 §4.2.1, §4.2.2).

    The Call-ID stays for the life of the registration and CSeq grows
    (RFC 3261 §10.2.4: refreshes use the same Call-ID); refreshes and the
    un-registration use the same instance-id and reg-id (RFC 5626 §4.2.2).
    """

    def __init__(self, factory: RequestFactory, *, registrar: str, instance_id: str, credentials: Credentials,
                 expires: int, refresh_margin: int = 60, reg_id: int = 1) -> None:
        self._factory = factory
        self.registrar = registrar
        self.instance_id = instance_id
        self.reg_id = reg_id
        self._credentials = credentials
        self.expires = expires
        self._refresh_margin = refresh_margin
        self._call_id: str | None = None
        self._from_tag = new_tag()
        self._cseq = 0
        self._last: Request | None = None
        self._answered = False
        self._asked_expires = expires

    def contact(self, *, expires: int | None = None) -> str:
        value = (f'<{self._factory.contact_uri()}>;+sip.instance="<{self.instance_id}>"'
                 f";reg-id={self.reg_id}")
        return value if expires is None else f"{value};expires={expires}"

    def request(self, expires: int | None = None) -> Request:
        """A new REGISTER (initial, refresh, or with 0 the un-registration)."""
        self._answered = False
        self._asked_expires = self.expires if expires is None else expires
        return self._build(self._asked_expires, [])

    def _build(self, expires: int, extra: list[tuple[str, str]]) -> Request:
        if self._call_id is None:
            self._call_id = new_call_id(self._factory.local[0])
        self._cseq += 1
        self._last = self._factory.build(
            "REGISTER", self.registrar, to=f"<{self._factory.aor}>", call_id=self._call_id, cseq=self._cseq,
            from_tag=self._from_tag, headers=[
                ("Contact", self.contact()),
                ("Expires", str(expires)),
                # RFC 5626 §4.2.1: outbound MUST be in Supported; path and gruu as well.
                ("Supported", "outbound, path, gruu"),
                *extra,
            ])
        return self._last

    def handle_response(self, response: Response) -> RegisterAction:
        assert self._last is not None, "handle_response before request"
        status = response.status
        if status in (401, 407):
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            try:
                header, value = answer_challenge(status, response.headers.get_all(name), "REGISTER",
                                                 self.registrar, self._credentials,
                                                 already_answered=self._answered)
            except AuthenticationFailed as error:
                return RegistrationFailed(403 if status == 401 else status, str(error))
            self._answered = True
            return Resend(self._build(self._asked_expires, [(header, value)]))
        if status == 423 and self._asked_expires:
            minimum = response.headers.get("Min-Expires") or ""
            # RFC 3261 §10.2.8: try again with at least Min-Expires.
            if minimum.strip().isdigit() and int(minimum) > self._asked_expires:
                self._asked_expires = int(minimum)
                self.expires = max(self.expires, int(minimum))
                return Resend(self._build(self._asked_expires, self._last_authorization()))
            return RegistrationFailed(423, "Interval Too Brief")
        if 200 <= status < 300:
            if self._asked_expires == 0:
                return Unregistered()
            return self._registered(response)
        if status < 200:
            raise ValueError("provisional responses are not final")
        retry_after = response.headers.get("Retry-After")
        seconds = int(retry_after.split(";")[0].strip()) if retry_after and retry_after.split(";")[0].strip().isdigit() \
            else None
        return RegistrationFailed(status, response.reason, seconds)

    def _last_authorization(self) -> list[tuple[str, str]]:
        """A retry after 423 keeps its credentials (the nonce may still be good)."""
        assert self._last is not None
        return [(name, value) for name, value in self._last.headers
                if name in ("Authorization", "Proxy-Authorization")]

    def _registered(self, response: Response) -> Registered:
        granted = None
        pub_gruu = temp_gruu = None
        contacts = response.contacts if "Contact" in response.headers else []
        for contact in contacts if isinstance(contacts, list) else []:
            if self._is_mine(contact):
                value = contact.params.get("expires")
                if value is not None and value.isdigit():
                    granted = int(value)
                pub_gruu = _unquote(contact.params.get("pub-gruu"))
                temp_gruu = _unquote(contact.params.get("temp-gruu"))
                break
        if granted is None:
            granted = response.expires if response.expires is not None else self._asked_expires
        flow_timer = response.headers.get("Flow-Timer")
        timer = int(flow_timer) if flow_timer and flow_timer.strip().isdigit() else None
        return Registered(granted, self.refresh_delay(granted), timer, pub_gruu, temp_gruu)

    def refresh_delay(self, granted: int) -> float:
        """Refresh ``refresh_margin`` seconds before expiry, but not before half-time
        (a short grant would otherwise be refreshed at once)."""
        return max(1.0, granted / 2, granted - self._refresh_margin)

    def _is_mine(self, contact: NameAddr) -> bool:
        instance = _unquote(contact.params.get("+sip.instance"))
        if instance is not None:
            reg_id = contact.params.get("reg-id")
            return instance.strip("<>") == self.instance_id and (reg_id is None or reg_id == str(self.reg_id))
        return str(contact.uri) == self._factory.contact_uri()


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def parse_contact(value: str) -> NameAddr:
    return parse_name_addr(value)


# ---------------------------------------------------------------------------------------
# keep-alive and flow recovery (RFC 5626 §4.4.1, §4.5)


PING = b"\r\n\r\n"  # RFC 5626 §4.4.1 double-CRLF


class KeepAlive:
    """When to send the next CRLF ping, and whether the flow has failed.

    The interval is drawn anew for each ping between 80% and 100% of the
    Flow-Timer the registrar gave, or of the configured upper bound (RFC 5626
    §4.4.1).  Any bytes from the server after a ping count as its pong: the
    flow is alive, which is what the pong is there to prove.
    """

    def __init__(self, upper_bound: float, timeout: float = 10.0,
                 rng: Callable[[], float] = random.random) -> None:
        self._default = upper_bound
        self.upper_bound = upper_bound
        self.timeout = timeout
        self._rng = rng
        self._ping_sent_at: float | None = None

    def use_flow_timer(self, flow_timer: int | None) -> None:
        self.upper_bound = float(flow_timer) if flow_timer else self._default

    def next_delay(self) -> float:
        return self.upper_bound * (0.8 + 0.2 * self._rng())

    def ping_sent(self, now: float) -> None:
        self._ping_sent_at = now

    def data_received(self) -> None:
        self._ping_sent_at = None

    @property
    def waiting_for_pong(self) -> bool:
        return self._ping_sent_at is not None

    def failed(self, now: float) -> bool:
        return self._ping_sent_at is not None and now - self._ping_sent_at >= self.timeout


def recovery_delay(consecutive_failures: int, *, all_failed: bool = True, base_all_failed: float = 30,
                   base_ok: float = 90, max_time: float = 1800,
                   rng: Callable[[], float] = random.random) -> float:
    """RFC 5626 §4.5: W = min(max-time, base-time * 2^failures), then uniformly 50..100% of W."""
    base = base_all_failed if all_failed else base_ok
    upper = min(max_time, base * (2 ** max(0, consecutive_failures)))
    return upper * (0.5 + 0.5 * rng())

"""Pager-mode messages as a user agent sees them, sans-IO (RFC 3428, RFC 3862, RFC 5438).

* ``message_target`` -- what the user typed (``bob``, ``+4915...``, a URI) as a Request-URI;
* ``compose`` -- the body of an outgoing MESSAGE: text/plain, or message/cpim with an
  IMDN Message-ID and the notifications asked for (RFC 5438 §6, §7.1.1);
* ``handle_request`` -- an incoming request: the response to send and the event for
  the application (an ``IncomingMessage`` or a ``DispositionReport``);
* ``disposition`` -- the IMDN a recipient sends back (RFC 5438 §7.2.1.1, §7.2.1.2).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sipim.cpim import CPIMError, CPIMMessage, build_cpim, parse_cpim
from sipim.imdn import (
    DELIVERY,
    DISPLAY,
    DISPLAY_REQUEST,
    IMDN_NAMESPACE,
    POSITIVE_DELIVERY,
    IMDNError,
    build_notification_cpim,
    is_notification,
    message_id,
    new_message_id,
    notification_destination,
    parse_notification,
    requested_notifications,
)
from sipim.sip.errors import SIPParseError
from sipim.sip.message import Request, Response, make_response
from sipim.sip.uri import SipURI, TelURI, parse_name_addr, parse_uri

from sipim.phone import InvalidNumber, normalise_e164

from .signalling import new_tag

ALLOW = "MESSAGE, OPTIONS"
ACCEPT = "text/plain, message/cpim"
CPIM = "message/cpim"
TEXT = "text/plain;charset=utf-8"


class BadTarget(ValueError):
    """What the user gave cannot be a message target."""


def message_target(target: str, domain: str) -> str:
    """``bob`` -> ``sip:bob@DOMAIN``; ``+4915...`` -> ``sip:+4915...@DOMAIN;user=phone``
    (the server looks the number up, RFC 3261 §19.1.6); ``sip:``/``sips:``/``tel:`` URIs as given."""
    target = target.strip()
    if not target:
        raise BadTarget("no recipient given")
    if target.startswith("+"):
        try:
            number = normalise_e164(target)
        except InvalidNumber as error:
            raise BadTarget(str(error)) from None
        return f"sip:{number}@{domain};user=phone"
    if target.split(":", 1)[0].lower() in ("sip", "sips", "tel"):
        uri_text = target
    else:
        uri_text = f"sip:{target}" if "@" in target else f"sip:{target}@{domain}"
    try:
        uri = parse_uri(uri_text)
    except SIPParseError as error:
        raise BadTarget(f"{target!r} is not a user name or address: {error.reason}") from None
    if isinstance(uri, SipURI) and not uri.user:
        raise BadTarget(f"{target!r} names no user")
    if not isinstance(uri, (SipURI, TelURI)):
        raise BadTarget(f"{target!r}: only sip:, sips: and tel: addresses can receive messages")
    return str(uri)


@dataclass(frozen=True)
class OutgoingMessage:
    uri: str
    content_type: str
    body: bytes
    message_id: str | None = None          # IMDN Message-ID (RFC 5438 §6.3)
    datetime_text: str | None = None       # CPIM DateTime, echoed by IMDNs (§11.1.2)


def compose(sender: str, uri: str, text: str, *, now: datetime, cpim: bool = True,
            notifications: tuple[str, ...] = (POSITIVE_DELIVERY, DISPLAY_REQUEST),
            display_name: str | None = None) -> OutgoingMessage:
    """The MESSAGE body for ``text``.  With ``cpim`` (the default) the text is
    wrapped in message/cpim (RFC 3862) carrying ``imdn.Message-ID`` and
    ``imdn.Disposition-Notification`` (RFC 5438 §7.1.1.1, §7.1.1.3): without a
    Message-ID and a DateTime no IMDN could refer to it."""
    body = text.encode("utf-8")
    if not cpim:
        return OutgoingMessage(uri, TEXT, body)
    identifier = new_message_id()
    sender_address = f"{display_name} <{sender}>" if display_name else sender
    extra = [("imdn.Message-ID", identifier)]
    if notifications:
        extra.append(("imdn.Disposition-Notification", ", ".join(notifications)))
    try:
        message = build_cpim(sender_address, uri, now, TEXT, body, extra_headers=extra,
                             namespaces={"imdn": IMDN_NAMESPACE})
    except CPIMError:
        # A display name CPIM cannot carry: send without it rather than not at all.
        message = build_cpim(sender, uri, now, TEXT, body, extra_headers=extra, namespaces={"imdn": IMDN_NAMESPACE})
    return OutgoingMessage(uri, CPIM, message.serialize(), identifier, message.datetime_text)


# ---------------------------------------------------------------------------------------
# incoming


@dataclass(frozen=True)
class IncomingMessage:
    sender: str                    # the asserted sender (P-Asserted-Identity, else From)
    sender_name: str | None
    recipient: str                 # SIP To
    text: str
    content_type: str              # of the content (inside the CPIM envelope, if any)
    body: bytes
    call_id: str
    message_id: str | None = None  # IMDN Message-ID
    notifications: frozenset[str] = frozenset()
    sent_at: datetime | None = None
    # A copy of what another device of the same user sent (From is ourselves).
    outgoing_copy: bool = False
    cpim: CPIMMessage | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DispositionReport:
    """An IMDN about a message we sent (RFC 5438 §9)."""

    reporter: str                  # who sent the report (the recipient, or the server for "stored"/"failed")
    message_id: str                # the Message-ID of our message
    kind: str                      # delivery / display / processing
    status: str                    # delivered, displayed, stored, failed...
    recipient: str | None          # <recipient-uri>
    sent_at: str                   # the DateTime of our message, as written


Event = IncomingMessage | DispositionReport


@dataclass(frozen=True)
class Handled:
    response: Response | None      # None: nothing to answer (ACK)
    event: Event | None = None


def _asserted_sender(request: Request) -> tuple[str, str | None]:
    for name in ("P-Asserted-Identity", "From"):
        value = request.headers.get(name)
        if value:
            try:
                address = parse_name_addr(value.split(",")[0] if name == "P-Asserted-Identity" else value)
            except SIPParseError:
                continue
            return str(address.uri), address.display_name or None
    return "", None


def _uri_text(value: str | None) -> str:
    if not value:
        return ""
    try:
        return str(parse_name_addr(value).uri)
    except SIPParseError:
        return value


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _decode(body: bytes, content_type: str | None) -> str:
    charset = "utf-8"
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return body.decode(charset, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def _date_header(request: Request) -> datetime | None:
    """RFC 3261 §20.17 Date: when a stored message was really sent (the server adds it
    to messages it delivers late)."""
    value = request.headers.get("Date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _respond(request: Request, status: int, reason: str, headers: list[tuple[str, str]] = ()) -> Response:
    response = make_response(request, status, reason, to_tag=new_tag())
    for name, value in headers:
        response.headers.add(name, value)
    return response


def handle_request(request: Request, own_aor: str, *, max_size: int = 65536) -> Handled:
    """Answer an incoming request (RFC 3428 §7: a MESSAGE is answered 200 once
    accepted for the user) and say what it means for the application."""
    method = request.method
    if method == "ACK":
        return Handled(None)
    if method == "OPTIONS":
        return Handled(_respond(request, 200, "OK", [("Allow", ALLOW), ("Accept", ACCEPT)]))
    if method != "MESSAGE":
        return Handled(_respond(request, 405, "Method Not Allowed", [("Allow", ALLOW)]))
    if len(request.body) > max_size:
        return Handled(_respond(request, 413, "Request Entity Too Large"))
    sender, sender_name = _asserted_sender(request)
    recipient = _uri_text(request.headers.get("To"))
    content_type = request.headers.get("Content-Type")
    media_type = _media_type(content_type)
    outgoing_copy = sender == own_aor and recipient != own_aor
    if media_type == CPIM:
        try:
            cpim = parse_cpim(request.body, max_size=max_size)
        except CPIMError as error:
            return Handled(_respond(request, 400, f"Malformed CPIM: {error}"[:100]))
        if is_notification(cpim):
            try:
                document = parse_notification(cpim)
            except IMDNError as error:
                return Handled(_respond(request, 400, f"Malformed IMDN: {error}"[:100]))
            report = DispositionReport(sender, document.message_id, document.kind, document.status,
                                       document.recipient_uri, document.datetime)
            return Handled(_respond(request, 200, "OK"), None if outgoing_copy else report)
        inner_type = cpim.content_type or "text/plain"
        if _media_type(inner_type) not in ("text/plain", ""):
            return Handled(_respond(request, 415, "Unsupported Media Type", [("Accept", ACCEPT)]))
        message = IncomingMessage(
            sender=sender, sender_name=sender_name, recipient=recipient, text=_decode(cpim.body, inner_type),
            content_type=_media_type(inner_type) or "text/plain", body=cpim.body, call_id=request.call_id,
            message_id=message_id(cpim), notifications=requested_notifications(cpim),
            sent_at=cpim.datetime, outgoing_copy=outgoing_copy, cpim=cpim)
        return Handled(_respond(request, 200, "OK"), message)
    if media_type in ("text/plain", "text", ""):
        message = IncomingMessage(
            sender=sender, sender_name=sender_name, recipient=recipient,
            text=_decode(request.body, content_type), content_type="text/plain", body=request.body,
            call_id=request.call_id, outgoing_copy=outgoing_copy, sent_at=_date_header(request))
        return Handled(_respond(request, 200, "OK"), message)
    # RFC 3428 §7: a type we cannot render gets 415 with what we accept.
    return Handled(_respond(request, 415, "Unsupported Media Type", [("Accept", ACCEPT)]))


def disposition(message: IncomingMessage, own_aor: str, kind: str, *, now: datetime) -> OutgoingMessage | None:
    """The IMDN for ``message`` -- "delivered" (``DELIVERY``) or "displayed"
    (``DISPLAY``) -- or None when the sender did not ask for it (RFC 5438
    §7.2.1: only requested notifications are sent) or it cannot be built (no
    Message-ID or DateTime to echo).  It goes to the top IMDN-Record-Route or
    the CPIM From (§7.2.1)."""
    if message.cpim is None or message.outgoing_copy:
        return None
    wanted = POSITIVE_DELIVERY if kind == DELIVERY else DISPLAY_REQUEST
    if wanted not in message.notifications:
        return None
    status = "delivered" if kind == DELIVERY else "displayed"
    try:
        cpim = build_notification_cpim(message.cpim, notifier_uri=own_aor, kind=kind, status=status,
                                       now=now.astimezone(timezone.utc), recipient_uri=own_aor)
    except IMDNError:
        return None
    destination = notification_destination(message.cpim)
    if destination is None:
        return None
    return OutgoingMessage(str(destination), CPIM, cpim.serialize(), message_id(cpim), cpim.datetime_text)


__all__ = [
    "DELIVERY",
    "DISPLAY",
    "BadTarget",
    "DispositionReport",
    "Event",
    "Handled",
    "IncomingMessage",
    "OutgoingMessage",
    "compose",
    "disposition",
    "handle_request",
    "message_target",
]

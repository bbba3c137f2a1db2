"""RFC 5438 §6 CPIM header fields: what an IM asks for and how IMDNs route.

All headers live in the ``urn:ietf:params:imdn`` namespace, whatever prefix
the message declared for it (§6.1: "servers and intermediaries must accept any
legal namespace prefix specification"), so every look-up goes through
``CPIMMessage.headers_in`` rather than matching "imdn." literally.
"""

from __future__ import annotations

import secrets

from ..cpim.errors import CPIMError
from ..cpim.message import IMDN_NAMESPACE, CPIMMessage, parse_address
from ..sip.uri import NameAddr
from .document import IMDN_MEDIA_TYPE

# §7.1.1.3 / §10 notify-req values (case-sensitive, §10).
POSITIVE_DELIVERY = "positive-delivery"
NEGATIVE_DELIVERY = "negative-delivery"
PROCESSING_REQUEST = "processing"
DISPLAY_REQUEST = "display"
KNOWN_REQUESTS = frozenset({POSITIVE_DELIVERY, NEGATIVE_DELIVERY, PROCESSING_REQUEST, DISPLAY_REQUEST})


def is_notification(cpim: CPIMMessage) -> bool:
    """True when the message is an IMDN rather than an IM (§9).

    §9 identifies an IMDN by ``Content-Type: message/imdn+xml`` together with
    ``Content-Disposition: notification``; either one is taken as enough here,
    so an aggregated IMDN (multipart/mixed, Content-Disposition: notification,
    §8.3) counts too.  Erring towards "notification" is the safe side: nothing
    is ever generated in answer to a notification (§7.2.1).
    """
    return cpim.media_type == IMDN_MEDIA_TYPE or cpim.content_disposition == "notification"


def requested_notifications(cpim: CPIMMessage) -> frozenset[str]:
    """The notify-req values of every Disposition-Notification header (§6.2,
    §7.1.1.3), parameters dropped: e.g. {"positive-delivery", "display"}.

    Values this code does not know are returned too (§7.2.1: the recipient
    ignores them; callers test membership).  Empty when there is no header,
    an empty one, or when the message is itself a notification: "A
    Disposition-Notification header field MUST NOT appear in an IMDN ... [it]
    MUST [be ignored] if present" (§7.2.1).
    """
    if is_notification(cpim):
        return frozenset()
    requested: set[str] = set()
    for header in cpim.headers_in(IMDN_NAMESPACE, "Disposition-Notification"):
        for item in header.value.split(","):
            value = item.split(";", 1)[0].strip(" ")  # §10: *(SEMI disp-notify-params)
            if value:
                requested.add(value)
    return frozenset(requested)


def message_id(cpim: CPIMMessage) -> str | None:
    """The IMDN ``Message-ID`` (§6.3) as written, or None.  Chosen by the
    sender; unique only per sender, so a duplicate check must key on
    (sender, Message-ID)."""
    found = cpim.headers_in(IMDN_NAMESPACE, "Message-ID")
    if not found:
        return None
    value = found[0].value.strip(" ")
    return value or None


def _addresses(cpim: CPIMMessage, name: str) -> list[NameAddr]:
    """Parse §10 ``[ Formal-name ] "<" URI ">"`` headers; unreadable ones are
    skipped (a header not understood is ignored, RFC 3862 §2.2)."""
    addresses: list[NameAddr] = []
    for header in cpim.headers_in(IMDN_NAMESPACE, name):
        try:
            addresses.append(parse_address(header))
        except CPIMError:
            continue
    return addresses


def original_to(cpim: CPIMMessage) -> NameAddr | None:
    """§6.4 Original-To (at most one; the first is used)."""
    found = _addresses(cpim, "Original-To")
    return found[0] if found else None


def imdn_record_routes(cpim: CPIMMessage) -> list[NameAddr]:
    """§6.5 IMDN-Record-Route values in message order (top first)."""
    return _addresses(cpim, "IMDN-Record-Route")


def imdn_routes(cpim: CPIMMessage) -> list[NameAddr]:
    """§6.6 IMDN-Route values in message order (top first)."""
    return _addresses(cpim, "IMDN-Route")


def new_message_id() -> str:
    """A fresh Message-ID: 128 bits from the CSPRNG (§6.3 RECOMMENDS at least
    64), URL-safe base64, which is a valid CPIM Token (§10)."""
    return secrets.token_urlsafe(16)

"""IMDNs as a server sends and forwards them (RFC 5438 §7.2, §8, §12.2).

An IMDN is itself a message/cpim message (carried in a SIP MESSAGE whose
Content-Type is message/cpim, §12.1.1) whose content is the message/imdn+xml
document, marked ``Content-Disposition: notification`` (§7.2.1).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime as DateTime

from ..cpim.errors import CPIMError
from ..cpim.message import (
    CPIM_NAMESPACE,
    IMDN_NAMESPACE,
    Address,
    CPIMHeader,
    CPIMMessage,
    format_address,
    namespace_key,
    parse_address,
)
from ..cpim.timestamps import format_rfc3339
from ..sip.uri import URI
from .document import (
    DELIVERY,
    DISPLAY,
    IMDN_MEDIA_TYPE,
    PROCESSING,
    STATUSES,
    IMDNNotification,
    parse_imdn_xml,
)
from .errors import IMDNError
from .headers import (
    NEGATIVE_DELIVERY,
    POSITIVE_DELIVERY,
    PROCESSING_REQUEST,
    imdn_record_routes,
    is_notification,
    message_id,
    new_message_id,
    original_to,
    requested_notifications,
)

NOTIFICATION_DISPOSITION = "notification"  # §15.4


def parse_notification(cpim: CPIMMessage) -> IMDNNotification:
    """The IMDN document a notification carries (§9).  IMDNError when the
    content is not message/imdn+xml (an aggregated multipart IMDN, §8.3, is
    not unpacked here) or the document is malformed."""
    if cpim.media_type != IMDN_MEDIA_TYPE:
        raise IMDNError(f"Content is {cpim.media_type or 'untyped'}, not {IMDN_MEDIA_TYPE}")
    return parse_imdn_xml(cpim.body)


def notification_destination(original: CPIMMessage) -> URI | None:
    """Where an IMDN for ``original`` goes (§7.2.1): the URI of the top
    IMDN-Record-Route if the IM has one, else the URI of the CPIM From."""
    routes = imdn_record_routes(original)
    if routes:
        return routes[0].uri
    return original.from_.uri if original.from_ is not None else None


def intermediary_may_notify(
    original: CPIMMessage,
    kind: str,
    status: str,
    *,
    answered_with_2xx: bool = True,
    already_sent: Collection[str] = (),
) -> bool:
    """Whether a server on the path (not the IM Recipient) may generate this IMDN.

    * never for an IMDN (§7.2.1 "MUST NOT send an IMDN for an IMDN"), nor
      when the IM lacks what the IMDN must echo: Message-ID (§6.3, §11.1.1),
      DateTime (§7.1.1.2, §11.1.2) and a From to send it to (§7.2.1);
    * only after the IM was answered with a 2xx: after a non-2xx final
      response the sender already knows, and a negative-delivery IMDN "MUST
      NOT" follow (§12.1.3.1); processing IMDNs come "after it has forwarded
      or stored the IM" (§12.2);
    * at most one IMDN per disposition type (§8.1, §8.2): ``already_sent``
      holds the kinds sent for this IM, so "processed" then "stored", or
      "failed" then "forbidden", cannot happen;
    * processing ("processed", "stored", "forbidden", "error"): only if the
      sender asked for "processing" (§8.1; "Intermediaries are the only
      entities that construct processing notifications");
    * delivery: never "delivered" -- a downstream 2xx does not prove delivery
      and the positive notification is the recipient's to send (§12.2);
      "failed" and "error" only if "negative-delivery" was requested (§8.2);
      "forbidden" (IMDNs disallowed by policy, §5.1) if any delivery
      notification was requested;
    * display: never; only the IM Recipient knows what was rendered (§5.3,
      §7.2.1.2).
    """
    if kind not in STATUSES or status not in STATUSES[kind]:
        return False
    if is_notification(original) or not answered_with_2xx or kind in already_sent:
        return False
    if message_id(original) is None or original.datetime_text is None or original.from_ is None:
        return False
    requested = requested_notifications(original)
    if kind == PROCESSING:
        return PROCESSING_REQUEST in requested
    if kind == DELIVERY:
        if status == "delivered":
            return False
        if status == "forbidden":
            return bool({POSITIVE_DELIVERY, NEGATIVE_DELIVERY} & requested)
        return NEGATIVE_DELIVERY in requested
    assert kind == DISPLAY
    return False


def build_notification_cpim(
    original: CPIMMessage,
    *,
    notifier_uri: Address,
    kind: str,
    status: str,
    now: DateTime,
    message_id: str | None = None,
    recipient_uri: str | None = None,
    imdn_route: Sequence[Address] | None = None,
) -> CPIMMessage:
    """The CPIM message of an IMDN answering ``original`` (§7.2.1, §7.2.1.1, §8.1).

    * From: ``notifier_uri``; To: the IM's CPIM From, byte for byte;
    * ``NS: imdn <urn:ietf:params:imdn>``, ``imdn.Message-ID``: a new one
      (§7.2.1 "different and unrelated to the one in the IM"), ``DateTime``:
      ``now``; no Disposition-Notification (§7.2.1: none may be requested
      for an IMDN); ``imdn.IMDN-Route`` copied from the IM's
      IMDN-Record-Route in order (§7.2.1), or ``imdn_route`` when given;
    * content: ``Content-Type: message/imdn+xml``,
      ``Content-Disposition: notification``, Content-Length, and the
      document: <message-id> and <datetime> echo the IM's Message-ID and
      DateTime (§11.1.1, §11.1.2), <recipient-uri> is ``recipient_uri`` or
      the IM's first CPIM To (§11.1.3, §12.2), <original-recipient-uri> the
      IM's Original-To, else the recipient (the §11.1.9 schema pairs the
      two), <subject> the IM's first Subject with its language (§11.1.5).

    It does not decide *whether* to notify (see ``intermediary_may_notify``).
    Raises IMDNError when ``original`` is an IMDN or lacks Message-ID,
    DateTime or From, or kind/status do not go together.
    """
    if is_notification(original):
        raise IMDNError("No IMDN may be sent for an IMDN (RFC 5438 §7.2.1)")
    original_id = _message_id(original)
    sent_at = original.datetime_text
    if sent_at is None:
        raise IMDNError("The IM has no DateTime to echo (RFC 5438 §11.1.2)")
    senders = original.headers_in(CPIM_NAMESPACE, "From")
    if not senders:
        raise IMDNError("The IM has no From to notify (RFC 5438 §7.2.1)")
    if recipient_uri is None and original.to:
        recipient_uri = str(original.to[0].uri)
    redirected_from = original_to(original)
    original_recipient = str(redirected_from.uri) if redirected_from is not None else recipient_uri
    subjects = original.subjects
    document = IMDNNotification(
        message_id=original_id,
        datetime=sent_at,
        kind=kind,
        status=status,
        recipient_uri=recipient_uri,
        original_recipient_uri=original_recipient,
        subject=subjects[0][0] if subjects else None,
        subject_lang=subjects[0][1] if subjects else None,
    ).to_xml()

    if imdn_route is None:
        routes = [header.value for header in original.headers_in(IMDN_NAMESPACE, "IMDN-Record-Route")]
    else:
        routes = [format_address(route) for route in imdn_route]
    try:
        headers = [
            CPIMHeader("From", format_address(notifier_uri)),
            CPIMHeader("To", senders[0].value),
            CPIMHeader("NS", f"imdn <{IMDN_NAMESPACE}>"),
            CPIMHeader("imdn.Message-ID", message_id or new_message_id()),
            CPIMHeader("DateTime", format_rfc3339(now)),
        ]
        headers.extend(CPIMHeader("imdn.IMDN-Route", route) for route in routes)
        return CPIMMessage(
            tuple(headers),
            (
                ("Content-Type", IMDN_MEDIA_TYPE),
                ("Content-Disposition", NOTIFICATION_DISPOSITION),
                ("Content-Length", str(len(document))),
            ),
            document,
        )
    except ValueError as error:  # CPIMError included; naive `now` too
        raise IMDNError(f"Cannot build the IMDN: {error}") from None


def _message_id(original: CPIMMessage) -> str:
    found = message_id(original)
    if found is None:
        raise IMDNError("The IM has no Message-ID (RFC 5438 §6.3)")
    return found


def next_notification_hop(
    notification: CPIMMessage,
    *,
    is_own_address: Callable[[URI], bool] = lambda uri: False,
) -> tuple[URI | None, CPIMMessage]:
    """Where an intermediary forwards an IMDN it received (§8), and the IMDN to send.

    If the top IMDN-Route names this intermediary (``is_own_address``) it is
    removed -- the one edit of a CPIM message RFC 5438 asks for, so the
    returned message is re-serialized -- and the IMDN goes to the next
    IMDN-Route, or to the CPIM To when none is left.  Otherwise the message
    is returned untouched and goes to the top IMDN-Route, or the CPIM To.
    """
    imdn_key = namespace_key(IMDN_NAMESPACE)
    routes = [
        (index, header)
        for index, header in enumerate(notification.headers)
        if header.local_name == "IMDN-Route" and notification.namespace_of(index) == imdn_key
    ]
    if routes:
        index, top = routes[0]
        try:
            top_uri = parse_address(top).uri
        except CPIMError:
            top_uri = None
        if top_uri is not None and is_own_address(top_uri):
            remaining = notification.headers[:index] + notification.headers[index + 1 :]
            notification = CPIMMessage(remaining, notification.content_headers, notification.body)
            routes = routes[1:]
            if routes:
                try:
                    return parse_address(routes[0][1]).uri, notification
                except CPIMError:
                    pass
        elif top_uri is not None:
            return top_uri, notification
    recipients = notification.to
    return (recipients[0].uri if recipients else None), notification

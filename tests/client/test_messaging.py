"""What the client does with messages (sans-IO): targets, CPIM/IMDN composing, incoming requests."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sipim.client.messaging import (
    BadTarget,
    DispositionReport,
    IncomingMessage,
    compose,
    disposition,
    handle_request,
    message_target,
)
from sipim.cpim import parse_cpim
from sipim.imdn import DELIVERY, DISPLAY, message_id, parse_notification, requested_notifications
from sipim.sip.message import Request

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def incoming(body: bytes, content_type: str = "text/plain", *, method: str = "MESSAGE", sender: str = ALICE,
             to: str = BOB) -> Request:
    return Request(method, "sip:bob@192.0.2.1:40000;transport=tls", [
        ("Via", "SIP/2.0/TLS 192.0.2.9:5061;branch=z9hG4bK-1"),
        ("From", f"<{sender}>;tag=a1"), ("To", f"<{to}>"), ("Call-ID", "c1@x"), ("CSeq", f"1 {method}"),
        ("P-Asserted-Identity", f"<{sender}>"), ("Content-Type", content_type),
    ], body)


@pytest.mark.parametrize("typed, uri", [
    ("bob", "sip:bob@example.test"),
    ("bob@other.test", "sip:bob@other.test"),
    ("sip:carol@example.test", "sip:carol@example.test"),
    ("tel:+14155550102", "tel:+14155550102"),
    # RFC 3261 §19.1.6: a number as a SIP URI; the server looks it up to one user.
    ("+1 415 555 0102", "sip:+14155550102@example.test;user=phone"),
])
def test_message_targets(typed, uri):
    assert message_target(typed, "example.test") == uri


@pytest.mark.parametrize("typed", ["", "+12", "http://example.test/", "sip:@example.test"])
def test_bad_message_targets_are_refused_with_a_reason(typed):
    with pytest.raises(BadTarget):
        message_target(typed, "example.test")


def test_rfc5438_6_cpim_message_carries_message_id_datetime_and_requested_notifications():
    outgoing = compose(ALICE, BOB, "héllo", now=NOW)
    assert outgoing.content_type == "message/cpim"
    cpim = parse_cpim(outgoing.body)
    assert message_id(cpim) == outgoing.message_id
    assert cpim.datetime == NOW
    assert requested_notifications(cpim) == {"positive-delivery", "display"}
    assert str(cpim.from_.uri) == ALICE and str(cpim.to[0].uri) == BOB
    assert cpim.body.decode() == "héllo"


def test_plain_text_has_no_envelope():
    outgoing = compose(ALICE, BOB, "hi", now=NOW, cpim=False)
    assert outgoing.content_type.startswith("text/plain") and outgoing.body == b"hi"
    assert outgoing.message_id is None


def test_rfc3428_7_text_message_is_accepted_with_200_and_surfaced():
    handled = handle_request(incoming("grüße".encode(), "text/plain; charset=utf-8"), BOB)
    assert handled.response.status == 200
    assert handled.response.to.tag  # a UAS adds a To tag (RFC 3261 §8.2.6.2)
    assert handled.event == IncomingMessage(ALICE, None, BOB, "grüße", "text/plain", "grüße".encode(), "c1@x")


def test_rfc3862_cpim_message_is_decoded():
    body = compose(ALICE, BOB, "wrapped", now=NOW).body
    event = handle_request(incoming(body, "message/cpim"), BOB).event
    assert event.text == "wrapped" and event.message_id and event.sent_at == NOW
    assert event.notifications == {"positive-delivery", "display"}


def test_a_copy_of_what_another_own_device_sent_is_marked():
    event = handle_request(incoming(b"sent elsewhere", sender=BOB, to=ALICE), BOB).event
    assert event.outgoing_copy


def test_rfc5438_notification_becomes_a_report():
    original = handle_request(incoming(compose(ALICE, BOB, "x", now=NOW).body, "message/cpim"), BOB).event
    report = disposition(original, BOB, DELIVERY, now=NOW)
    handled = handle_request(incoming(report.body, "message/cpim", sender=BOB, to=ALICE), ALICE)
    assert handled.response.status == 200
    assert handled.event == DispositionReport(BOB, original.message_id, "delivery", "delivered", BOB,
                                              original.cpim.datetime_text)


def test_rfc5438_7_2_1_1_delivered_goes_to_the_cpim_from_and_echoes_id_and_datetime():
    original = handle_request(incoming(compose(ALICE, BOB, "x", now=NOW).body, "message/cpim"), BOB).event
    for kind, status in ((DELIVERY, "delivered"), (DISPLAY, "displayed")):
        outgoing = disposition(original, BOB, kind, now=NOW)
        assert outgoing.uri == ALICE and outgoing.content_type == "message/cpim"
        cpim = parse_cpim(outgoing.body)
        assert message_id(cpim) != original.message_id  # §7.2.1: a new Message-ID
        document = parse_notification(cpim)
        assert (document.message_id, document.status) == (original.message_id, status)
        assert document.datetime == original.cpim.datetime_text


def test_rfc5438_7_2_1_no_notification_that_was_not_asked_for():
    only_delivery = compose(ALICE, BOB, "x", now=NOW, notifications=("positive-delivery",)).body
    original = handle_request(incoming(only_delivery, "message/cpim"), BOB).event
    assert disposition(original, BOB, DELIVERY, now=NOW) is not None
    assert disposition(original, BOB, DISPLAY, now=NOW) is None
    plain = handle_request(incoming(b"plain"), BOB).event
    assert disposition(plain, BOB, DELIVERY, now=NOW) is None


def test_options_is_answered_with_what_we_allow():
    response = handle_request(incoming(b"", method="OPTIONS"), BOB).response
    assert response.status == 200 and "MESSAGE" in response.headers.get("Allow")


def test_other_methods_get_405_with_allow():
    response = handle_request(incoming(b"", method="INVITE"), BOB).response
    assert response.status == 405 and response.headers.get_all("Allow") == ["MESSAGE", "OPTIONS"]


def test_ack_is_not_answered():
    assert handle_request(incoming(b"", method="ACK"), BOB).response is None


def test_rfc3428_7_unsupported_type_gets_415_with_accept():
    handled = handle_request(incoming(b"\x00\x01", "application/octet-stream"), BOB)
    assert handled.response.status == 415 and "text/plain" in handled.response.headers.get("Accept")
    assert handled.event is None


def test_malformed_cpim_gets_400():
    handled = handle_request(incoming(b"no headers at all", "message/cpim"), BOB)
    assert handled.response.status == 400 and handled.event is None


def test_oversized_message_gets_413():
    assert handle_request(incoming(b"x" * 100), BOB, max_size=10).response.status == 413


def test_rfc3261_20_17_date_of_a_stored_plain_message_is_when_it_was_sent():
    request = incoming(b"late")
    request.headers.add("Date", "Fri, 02 Jan 2026 03:04:05 GMT")
    assert handle_request(request, BOB).event.sent_at == NOW

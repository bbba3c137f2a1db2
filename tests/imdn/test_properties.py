"""Property tests: hostile input into the IMDN parser raises only IMDNError;
built documents and notifications survive their parsers."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipim.cpim import CPIMError, parse_cpim
from sipim.imdn import (
    STATUSES,
    IMDNError,
    IMDNNotification,
    build_imdn_xml,
    build_notification_cpim,
    parse_imdn_xml,
    parse_notification,
)

from .test_imdn import DELIVERY_XML, stored_im

SCALE = int(os.environ.get("SIPIM_FUZZ_SCALE", "1"))
SETTINGS = settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_XML_PIECES = st.sampled_from(
    [b"<", b">", b"</", b"/>", b"<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">", b"</imdn>", b"<status>",
     b"<delivered/>", b"<message-id>", b"</message-id>", b"<datetime>", b"&amp;", b"&", b";", b"<!DOCTYPE x>",
     b"<?xml version=\"1.0\" encoding=\"UTF-16\"?>", b"<?xml version=\"1.0\" encoding=\"bogus\"?>",
     b"<![CDATA[", b"]]>", b"<!--", b"-->", b"xmlns:a=\"\"", b"\x00", b"\xff\xfe", b"\xc3\xa9", b"\""]
)


@SETTINGS
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_imdn_error(data):
    try:
        parse_imdn_xml(data)
    except IMDNError:
        pass


@SETTINGS
@given(st.lists(st.one_of(_XML_PIECES, st.binary(max_size=3)), max_size=40).map(b"".join))
def test_xml_shaped_noise_raises_only_imdn_error(data):
    try:
        parse_imdn_xml(data)
    except IMDNError:
        pass


@SETTINGS
@given(st.integers(min_value=0, max_value=len(DELIVERY_XML) - 1), st.binary(max_size=3),
       st.integers(min_value=0, max_value=3))
def test_mutated_rfc_document_raises_only_imdn_error(position, insert, delete):
    try:
        parse_imdn_xml(DELIVERY_XML[:position] + insert + DELIVERY_XML[position + delete:])
    except IMDNError:
        pass


_KIND_STATUS = st.sampled_from([(kind, status) for kind in sorted(STATUSES) for status in sorted(STATUSES[kind])])
_XML_SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
                         max_size=30)


@SETTINGS
@given(
    kind_status=_KIND_STATUS,
    message_id=st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True),
    recipient=st.one_of(st.none(), st.from_regex(r"sip:[a-z]{1,8}@example\.com", fullmatch=True)),
    subject=st.one_of(st.none(), _XML_SAFE_TEXT),
)
def test_built_documents_round_trip(kind_status, message_id, recipient, subject):
    kind, status = kind_status
    notification = IMDNNotification(message_id=message_id, datetime="2024-01-01T00:00:00Z", kind=kind,
                                    status=status, recipient_uri=recipient, original_recipient_uri=recipient,
                                    subject=subject)
    assert parse_imdn_xml(build_imdn_xml(notification)) == notification


@SETTINGS
@given(kind_status=_KIND_STATUS, subject=_XML_SAFE_TEXT)
def test_built_notifications_round_trip_through_both_parsers(kind_status, subject):
    kind, status = kind_status
    original = stored_im("processing", f"Subject: {subject.replace(chr(92), chr(92) * 2)}")
    built = build_notification_cpim(original, notifier_uri="sip:im.example.com", kind=kind, status=status,
                                    now=datetime(2024, 1, 1, tzinfo=timezone.utc))
    try:
        parsed = parse_cpim(built.serialize())
    except CPIMError as error:  # pragma: no cover - a failure is a bug
        raise AssertionError(error.reason)
    assert parsed == built
    assert parse_notification(parsed).subject == subject

"""message/cpim (RFC 3862): parsing, namespaces, escapes, building, byte-exact round trips."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from sipim.cpim import (
    CPIM_NAMESPACE,
    IMDN_NAMESPACE,
    CPIMError,
    CPIMHeader,
    CPIMMessage,
    build_cpim,
    escape_header_text,
    parse_cpim,
    unescape_header_text,
)
from sipim.sip.uri import AbsoluteURI, NameAddr, SipURI, parse_uri

# RFC 3862 §5.1, as a SIP MESSAGE body: the "m:" lines are the SIP headers.
RFC3862_EXAMPLE = (
    b"From: MR SANDERS <im:piglet@100akerwood.com>\r\n"
    b"To: Depressed Donkey <im:eeyore@100akerwood.com>\r\n"
    b"DateTime: 2000-12-13T13:40:00-08:00\r\n"
    b"Subject: the weather will be fine today\r\n"
    b"Subject:;lang=fr beau temps prevu pour aujourd'hui\r\n"
    b"NS: MyFeatures <mid:MessageFeatures@id.foo.com>\r\n"
    b"Require: MyFeatures.VitalMessageOption\r\n"
    b"MyFeatures.VitalMessageOption: Confirmation-requested\r\n"
    b"MyFeatures.WackyMessageOption: Use-silly-font\r\n"
    b"\r\n"
    b"Content-type: text/xml; charset=utf-8\r\n"
    b"Content-ID: <1234567890@foo.com>\r\n"
    b"\r\n"
    b"<body>\r\n"
    b"Here is the text of my message.\r\n"
    b"</body>\r\n"
)


def cpim(*header_lines: str, content: bytes = b"hi") -> bytes:
    head = "".join(line + "\r\n" for line in header_lines)
    return (head + "\r\nContent-Type: text/plain\r\n\r\n").encode() + content


# -- §5.1 example ---------------------------------------------------------------


def test_rfc3862_5_1_example_message_parses():
    message = parse_cpim(RFC3862_EXAMPLE)
    assert message.from_ == NameAddr(uri=parse_uri("im:piglet@100akerwood.com"), display_name="MR SANDERS")
    assert [str(to.uri) for to in message.to] == ["im:eeyore@100akerwood.com"]
    assert message.to[0].display_name == "Depressed Donkey"
    assert message.datetime == datetime(2000, 12, 13, 13, 40, tzinfo=timezone(timedelta(hours=-8)))
    assert message.subjects == [
        ("the weather will be fine today", None),
        ("beau temps prevu pour aujourd'hui", "fr"),
    ]
    assert message.subject == "the weather will be fine today"
    assert message.namespaces == {"MyFeatures": "mid:MessageFeatures@id.foo.com"}
    assert message.require == ["MyFeatures.VitalMessageOption"]
    assert message.header("mid:MessageFeatures@id.foo.com", "VitalMessageOption") == "Confirmation-requested"
    assert message.header("mid:MessageFeatures@id.foo.com", "WackyMessageOption") == "Use-silly-font"
    assert message.content_type == "text/xml; charset=utf-8"
    assert message.media_type == "text/xml"
    assert message.content_header("content-id") == "<1234567890@foo.com>"
    assert message.body == b"<body>\r\nHere is the text of my message.\r\n</body>\r\n"
    assert [name for name, _ in message.headers][:3] == ["From", "To", "DateTime"]


def test_rfc3862_2_2_parsed_message_serializes_byte_exact():
    assert parse_cpim(RFC3862_EXAMPLE).serialize() == RFC3862_EXAMPLE


def test_rfc3862_2_2_bare_lf_line_ends_are_tolerated_and_kept_byte_exact():
    data = RFC3862_EXAMPLE.replace(b"\r\n", b"\n")
    message = parse_cpim(data)
    assert message.from_ is not None and message.subject == "the weather will be fine today"
    assert message.serialize() == data


def test_rfc3862_2_2_rebuilt_message_has_canonical_crlf_lines():
    # dataclasses.replace drops the kept bytes: the message is written from its fields.
    rebuilt = dataclasses.replace(parse_cpim(RFC3862_EXAMPLE.replace(b"\r\n", b"\n")))
    assert rebuilt.serialize().startswith(b"From: MR SANDERS <im:piglet@100akerwood.com>\r\n")
    assert parse_cpim(rebuilt.serialize()) == rebuilt


# -- §2, §2.2, §3: framing and header syntax -----------------------------------


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "Empty"),
        (b"From: <im:a@b>\r\nTo: <im:c@d>", "Missing blank line after message headers"),
        (b"From: <im:a@b>\r\n\r\nContent-Type: text/plain\r\n", "Missing blank line after the encapsulated"),
        (b"From: <im:a@b>\r\n\r\nContent-Type: text/plain", "Missing blank line after the encapsulated"),
    ],
)
def test_rfc3862_2_missing_blank_lines_are_refused(data, reason):
    with pytest.raises(CPIMError) as info:
        parse_cpim(data)
    assert reason in info.value.reason


def test_rfc3862_2_4_content_type_is_required():
    with pytest.raises(CPIMError, match="Missing Content-Type"):
        parse_cpim(b"From: <im:a@b>\r\n\r\nContent-ID: <x@y>\r\n\r\nhi")


def test_rfc3862_2_4_content_headers_are_mime_headers_case_insensitive_and_foldable():
    message = parse_cpim(
        b"From: <im:a@b>\r\n\r\ncontent-TYPE: multipart/mixed;\r\n  boundary=\"x\"\r\n"
        b"Content-Disposition: notification\r\n\r\n--x--"
    )
    assert message.content_type == 'multipart/mixed; boundary="x"'
    assert message.media_type == "multipart/mixed"
    assert message.content_disposition == "notification"


def test_rfc3862_2_message_without_headers_is_allowed():
    message = parse_cpim(b"\r\nContent-Type: text/plain\r\n\r\nhi")
    assert message.headers == () and message.from_ is None and message.body == b"hi"


@pytest.mark.parametrize(
    "line, reason",
    [
        ("From:<im:a@b>", "Missing space"),
        (" From: <im:a@b>", "Folded"),
        ("\tTo: <im:a@b>", "Folded"),
        ("Subject: bell\x07", "Control character"),
        ("Subject: tab\there", "Control character"),
        ("no colon here", "without a colon"),
        (": empty name", "without a name"),
        ("a.b.c: two prefixes", "Bad message header name"),
        ("Sub ject: space in name", "Bad message header name"),
        ("(x): separator in name", "Bad message header name"),
        ("Subject:;lang beau", "Bad parameter"),
        ("Subject:;lang=\"fr beau", "Unterminated"),
        ("Subject:;=fr beau", "Bad parameter name"),
    ],
)
def test_rfc3862_3_malformed_header_lines_are_refused(line, reason):
    with pytest.raises(CPIMError) as info:
        parse_cpim(cpim(line))
    assert reason in info.value.reason


def test_rfc3862_2_2_headers_must_be_utf8():
    with pytest.raises(CPIMError, match="not UTF-8"):
        parse_cpim(b"Subject: caf\xe9\r\n\r\nContent-Type: text/plain\r\n\r\n")


def test_rfc3862_2_2_utf8_headers_and_opaque_binary_content():
    message = parse_cpim(cpim("Subject: café ☕", content=b"\xff\x00\xfe"))
    assert message.subject == "café ☕"
    assert message.body == b"\xff\x00\xfe"


def test_rfc3862_2_2_header_names_are_case_sensitive():
    message = parse_cpim(cpim("from: <im:a@example.com>", "datetime: not-a-date"))
    assert message.from_ is None and message.datetime is None
    assert message.headers[0].name == "from"


def test_rfc3862_2_2_empty_value_without_its_space_is_tolerated():
    message = parse_cpim(cpim("Subject:"))
    assert message.subject == ""


def test_oversize_body_is_refused():
    data = cpim(content=b"x" * 100)
    with pytest.raises(CPIMError, match="larger than 50 bytes"):
        parse_cpim(data, max_size=50)
    assert parse_cpim(data, max_size=len(data)).body == b"x" * 100


def test_too_many_headers_are_refused():
    with pytest.raises(CPIMError, match="More than 3 message headers"):
        parse_cpim(cpim(*["X: y"] * 4), max_headers=3)


def test_non_bytes_input_is_refused_with_cpim_error():
    with pytest.raises(CPIMError):
        parse_cpim("From: <im:a@b>")  # type: ignore[arg-type]


# -- §2.3 escapes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "escaped, text",
    [
        ("plain", "plain"),
        (r"a\\b", "a\\b"),
        (r"tab\there", "tab\there"),
        (r"\b\n\r", "\b\n\r"),
        (r"\"quoted\" \'single\'", "\"quoted\" 'single'"),
        (r"bell\u0007", "bell\x07"),
        (r"\u00e9\u00E9", "éé"),
        (r"\ud83d\ude00", "\U0001F600"),  # UCS-2 surrogate pair
        (r"lone \ud83d", "lone \ufffd"),
        (r"\q unknown", "q unknown"),  # "treated as an instance of the character following"
        (r"\u12", "u12"),  # not four hex digits: unrecognised escape
        ("trailing\\", "trailing"),  # isolated final backslash ignored
    ],
)
def test_rfc3862_2_3_escape_sequences_are_decoded(escaped, text):
    assert unescape_header_text(escaped) == text


def test_rfc3862_2_3_1_generation_escapes_backslash_and_controls_only():
    assert escape_header_text("a\\b\tc\nd\re\bf\x01g\x7f \"h\" 'i' é") == (
        "a\\\\b\\tc\\nd\\re\\bf\\u0001g\\u007f \"h\" 'i' é"
    )
    assert escape_header_text('say "hi"', quote='"') == 'say \\"hi\\"'


def test_rfc3862_2_3_subject_with_control_characters_round_trips_through_escapes():
    built = build_cpim("sip:a@example.com", "sip:b@example.com", None, "text/plain", b"",
                       subject="line1\nline2\t\\end\x00")
    wire = built.serialize()
    assert b"Subject: line1\\nline2\\t\\\\end\\u0000\r\n" in wire
    assert parse_cpim(wire).subject == "line1\nline2\t\\end\x00"


# -- §3.3 language tagging ------------------------------------------------------


def test_rfc3862_3_3_lang_parameter():
    header = parse_cpim(cpim("Subject:;lang=fr Objet de message")).headers[0]
    assert header.lang == "fr" and header.text == "Objet de message" and header.params == (("lang", "fr"),)
    assert header.to_line() == "Subject:;lang=fr Objet de message"


# -- §3.4 namespaces --------------------------------------------------------------


def test_rfc3862_3_4_any_prefix_for_the_same_urn_resolves():
    for prefix in ("imdn", "xyz", "I-M-D-N"):
        message = parse_cpim(cpim(f"NS: {prefix} <urn:ietf:params:imdn>", f"{prefix}.Message-ID: 34jk324j"))
        assert message.header(IMDN_NAMESPACE, "Message-ID") == "34jk324j"
        assert message.namespaces == {prefix: "urn:ietf:params:imdn"}


def test_rfc3862_3_4_urn_scheme_and_nid_compare_case_insensitively():
    message = parse_cpim(cpim("NS: i <URN:IETF:params:imdn>", "i.Message-ID: x"))
    assert message.header(IMDN_NAMESPACE, "Message-ID") == "x"
    # the NSS is case-sensitive (RFC 2141 §5)
    assert parse_cpim(cpim("NS: i <urn:ietf:PARAMS:imdn>", "i.Message-ID: x")).header(
        IMDN_NAMESPACE, "Message-ID") is None


def test_rfc3862_3_4_prefix_declaration_must_precede_use():
    message = parse_cpim(cpim("imdn.Message-ID: early", "NS: imdn <urn:ietf:params:imdn>", "imdn.Message-ID: late"))
    assert message.header(IMDN_NAMESPACE, "Message-ID") == "late"
    assert message.namespace_of(0) is None  # undeclared: not understood, ignored (§2.2)


def test_rfc3862_3_4_a_redeclared_prefix_applies_to_the_headers_after_it():
    message = parse_cpim(cpim(
        "NS: p <http://one.example/>", "p.h: 1", "NS: p <http://two.example/>", "p.h: 2"))
    assert message.header("http://one.example/", "h") == "1"
    assert message.header("http://two.example/", "h") == "2"


def test_rfc3862_3_4_default_namespace_declaration():
    message = parse_cpim(cpim(
        "From: <im:a@example.com>",
        "NS: <http://id.acme.widgets/wily-headers/>",
        "runner-trap: set",
        "To: <im:not-a-cpim-to@example.com>",
    ))
    assert message.header("http://id.acme.widgets/wily-headers/", "runner-trap") == "set"
    assert message.default_namespace == "http://id.acme.widgets/wily-headers/"
    # After the default changed, an unprefixed "To" is no longer the CPIM To.
    assert message.to == []
    assert message.from_ is not None


def test_rfc3862_3_4_core_headers_may_use_an_explicit_prefix():
    message = parse_cpim(cpim("NS: c <urn:ietf:params:cpim-headers:>", "c.From: <im:a@example.com>"))
    assert str(message.from_.uri) == "im:a@example.com"
    assert message.header(CPIM_NAMESPACE, "From") == "<im:a@example.com>"


def test_rfc3862_3_4_same_local_name_in_two_namespaces_stays_apart():
    message = parse_cpim(cpim(
        "NS: a <http://a.example/>", "NS: b <http://b.example/>", "a.X: 1", "b.X: 2", "a.X: 3"))
    assert [h.value for h in message.headers_in("http://a.example/", "X")] == ["1", "3"]
    assert message.header("http://b.example/", "X") == "2"


@pytest.mark.parametrize(
    "value",
    ["imdn urn:ietf:params:imdn", "imdn <not a uri>", "im.dn <urn:x:y>", "imdn <relative/path>", "x <http://a/#frag>"],
)
def test_rfc3862_4_6_malformed_ns_is_refused(value):
    with pytest.raises(CPIMError, match="Bad NS header"):
        parse_cpim(cpim(f"NS: {value}"))


# -- §4.1-4.3 addresses -----------------------------------------------------------


@pytest.mark.parametrize(
    "value, display, uri",
    [
        ("Winnie the Pooh <im:pooh@100akerwood.com>", "Winnie the Pooh", "im:pooh@100akerwood.com"),
        ("<im:tigger@100akerwood.com>", None, "im:tigger@100akerwood.com"),
        ('"Pooh \\"Bear\\""<im:pooh@100akerwood.com>', 'Pooh "Bear"', "im:pooh@100akerwood.com"),
        ('"Pooh <Bear>" <sip:pooh@example.com>', "Pooh <Bear>", "sip:pooh@example.com"),
        ("Émile Zola <sip:emile@example.com;transport=tcp>", "Émile Zola", "sip:emile@example.com;transport=tcp"),
    ],
)
def test_rfc3862_4_1_from_formal_name_and_uri(value, display, uri):
    message = parse_cpim(cpim(f"From: {value}"))
    assert message.from_.display_name == display
    assert str(message.from_.uri) == uri


def test_rfc3862_4_1_uris_are_typed_by_the_sip_layer():
    message = parse_cpim(cpim("From: <sip:alice@example.com>", "To: <tel:+15551234567>", "cc: <im:c@example.com>"))
    assert isinstance(message.from_.uri, SipURI) and message.from_.uri.user == "alice"
    assert str(message.to[0].uri) == "tel:+15551234567"
    assert message.cc[0].uri == AbsoluteURI("im", "c@example.com")


def test_rfc3862_4_2_multiple_to_headers():
    message = parse_cpim(cpim("To: <im:a@example.com>", "To: Bee <im:b@example.com>"))
    assert [str(to.uri) for to in message.to] == ["im:a@example.com", "im:b@example.com"]


@pytest.mark.parametrize(
    "line",
    [
        "From: im:a@example.com",  # no <>
        "From: <im:a@example.com",
        "From: <im:a@example.com> trailing",
        "From: <no-scheme>",
        "From: Bad,Name <im:a@example.com>",
        "To: <sip:>",
        'From: "unterminated <im:a@example.com>',
    ],
)
def test_rfc3862_4_1_malformed_addresses_are_refused(line):
    with pytest.raises(CPIMError):
        parse_cpim(cpim(line))


def test_rfc3862_4_1_a_second_from_is_refused():
    with pytest.raises(CPIMError, match="More than one From"):
        parse_cpim(cpim("From: <im:a@example.com>", "From: <im:b@example.com>"))


# -- §4.4 DateTime ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2001-02-02T10:48:54-05:00", datetime(2001, 2, 2, 10, 48, 54, tzinfo=timezone(timedelta(hours=-5)))),
        ("2001-02-02T15:48:54Z", datetime(2001, 2, 2, 15, 48, 54, tzinfo=timezone.utc)),
        ("2001-02-02t15:48:54.25z", datetime(2001, 2, 2, 15, 48, 54, 250000, tzinfo=timezone.utc)),
        ("2001-02-02T15:48:54.123456789+05:30",
         datetime(2001, 2, 2, 15, 48, 54, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),  # leap second folded
    ],
)
def test_rfc3862_4_4_datetime_is_rfc3339(text, expected):
    assert parse_cpim(cpim(f"DateTime: {text}")).datetime == expected
    assert parse_cpim(cpim(f"DateTime: {text}")).datetime_text == text


@pytest.mark.parametrize(
    "text",
    ["2001-02-02", "2001-02-02T10:48:54", "2001-13-02T10:48:54Z", "2001-02-30T10:48:54Z",
     "20010202T104854Z", "2001-02-02 10:48:54Z", "2001-02-02T10:48:54+24:00", "٢٠٠١-02-02T10:48:54Z"],
)
def test_rfc3862_4_4_bad_datetime_is_refused(text):
    with pytest.raises(CPIMError, match="Bad DateTime"):
        parse_cpim(cpim(f"DateTime: {text}"))


# -- building ------------------------------------------------------------------


def test_built_message_round_trips_through_the_parser():
    sent = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone(timedelta(hours=2)))
    built = build_cpim(
        NameAddr(uri=parse_uri("sip:alice@example.com"), display_name='Alice "Al" Smith'),
        ["Bob <sip:bob@example.com>", parse_uri("tel:+15551234567")],
        sent,
        "text/plain; charset=utf-8",
        "héllo\r\n".encode(),
        cc=["sip:carol@example.com"],
        subject="lunch?",
        subject_lang="en",
        extra_headers=[("imdn.Message-ID", "m1"), ("imdn.Disposition-Notification", "positive-delivery, display")],
        content_headers=[("Content-ID", "<c1@example.com>")],
        content_length=True,
    )
    parsed = parse_cpim(built.serialize())
    assert parsed == built
    assert parsed.serialize() == built.serialize()
    assert parsed.from_.display_name == 'Alice "Al" Smith'
    assert [str(to.uri) for to in parsed.to] == ["sip:bob@example.com", "tel:+15551234567"]
    assert parsed.datetime == sent
    assert parsed.subjects == [("lunch?", "en")]
    assert parsed.header(IMDN_NAMESPACE, "Message-ID") == "m1"
    assert parsed.content_header("Content-Length") == str(len("héllo\r\n".encode()))
    # NS is declared before the prefixed headers that use it (§3.4)
    names = [name for name, _ in parsed.headers]
    assert names.index("NS") < names.index("imdn.Message-ID")


def test_build_declares_only_the_namespaces_it_uses():
    built = build_cpim("sip:a@example.com", "sip:b@example.com", None, "text/plain", b"")
    assert all(header.name != "NS" for header in built.headers)


def test_build_refuses_an_undeclared_prefix():
    with pytest.raises(CPIMError, match="not declared"):
        build_cpim("sip:a@example.com", "sip:b@example.com", None, "text/plain", b"",
                   extra_headers=[("acme.X", "1")])


def test_build_refuses_a_naive_datetime():
    with pytest.raises(ValueError):
        build_cpim("sip:a@example.com", "sip:b@example.com", datetime(2024, 1, 1), "text/plain", b"")


def test_build_refuses_raw_control_characters_in_extra_headers():
    with pytest.raises(CPIMError, match="Control character"):
        build_cpim("sip:a@example.com", "sip:b@example.com", None, "text/plain", b"",
                   extra_headers=[("X", "a\r\nInjected: yes")])
    with pytest.raises(CPIMError):
        build_cpim("sip:a@example.com", "sip:b@example.com", None, "text/plain\r\nX: y", b"")


def test_direct_construction_is_validated():
    with pytest.raises(CPIMError):
        CPIMMessage((CPIMHeader("DateTime", "yesterday"),), (("Content-Type", "text/plain"),))
    with pytest.raises(CPIMError):
        CPIMHeader("Bad Name", "x")


def test_headers_iterate_as_name_value_pairs():
    message = parse_cpim(cpim("From: <im:a@example.com>", "Subject:;lang=en hi"))
    assert [(name, value) for name, value in message.headers] == [
        ("From", "<im:a@example.com>"), ("Subject", "hi")]

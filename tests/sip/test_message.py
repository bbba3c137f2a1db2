"""Request/Response accessors, serialization, make_response and make_error_response
(RFC 3261 §7, §8.2.6, §21.4.1)."""

import pytest

from sipim.sip import (
    CSeq,
    Headers,
    Request,
    Response,
    SIPParseError,
    make_error_response,
    make_response,
    parse_message,
    parse_uri,
    readable_top_via,
)

INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1, SIP/2.0/UDP h2;branch=z9hG4bK2\r\n"
    b"Max-Forwards: 69\r\n"
    b"To: Bob <sip:bob@biloxi.com>\r\n"
    b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_rfc3261_7_typed_accessors():
    request = parse_message(INVITE)
    assert [via.branch for via in request.vias] == ["z9hG4bK77ef4c2312983.1", "z9hG4bKnashds8", "z9hG4bK2"]
    assert request.top_via.host == "bigbox3.site3.atlanta.com"
    assert request.from_.tag == "1928301774"
    assert request.from_.display_name == "Alice"
    assert request.to.tag is None
    assert request.call_id == "a84b4c76e66710"
    assert request.cseq == CSeq(314159, "INVITE")
    assert [str(c.uri) for c in request.contacts] == ["sip:alice@pc33.atlanta.com"]
    assert request.expires is None
    assert request.max_forwards == 69


def test_accessors_are_cached_and_refreshed_after_header_changes():
    request = parse_message(INVITE)
    assert request.top_via is request.top_via
    assert request.to is request.to
    request.headers.set("To", "<sip:carol@chicago.com>;tag=9")
    assert request.to.tag == "9"
    request.headers.remove_first("Via")
    assert request.top_via.host == "pc33.atlanta.com"
    assert len(request.vias) == 2


def test_vias_returns_a_fresh_list_each_time():
    request = parse_message(INVITE)
    request.vias.clear()
    assert len(request.vias) == 3


def test_rfc3261_10_2_2_wildcard_contact():
    request = Request("REGISTER", "sip:example.com", [("Contact", "*"), ("Expires", "0")])
    assert request.contacts == "*"
    assert request.expires == 0


def test_missing_mandatory_headers_raise_from_accessors_of_built_messages():
    request = Request("OPTIONS", "sip:example.com")
    assert request.top_via is None
    assert request.vias == []
    assert request.contacts == []
    for accessor in ("from_", "to", "call_id", "cseq"):
        with pytest.raises(SIPParseError, match="Missing"):
            getattr(request, accessor)


@pytest.mark.parametrize("name, value", [("Expires", "soon"), ("Max-Forwards", "256"), ("Max-Forwards", "-1")])
def test_bad_optional_integer_headers_raise_when_read(name, value):
    request = Request("OPTIONS", "sip:example.com", [(name, value)])
    with pytest.raises(SIPParseError, match=f"Bad {name}"):
        getattr(request, name.lower().replace("-", "_"))


def test_bad_contact_raises_sip_parse_error():
    request = Request("REGISTER", "sip:example.com", [("Contact", "<sip:a@b")])
    with pytest.raises(SIPParseError, match="Bad Contact"):
        request.contacts


def test_rfc3261_7_4_1_to_bytes_writes_content_length_from_the_body():
    request = Request("MESSAGE", parse_uri("sip:bob@biloxi.com"), Headers([("Content-Length", "999"), ("Call-ID", "x")]), "héllo")
    data = request.to_bytes()
    assert data == "MESSAGE sip:bob@biloxi.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 6\r\n\r\nhéllo".encode()
    assert bytes(request) == data


def test_serialization_uses_full_header_names_and_keeps_values():
    request = parse_message(INVITE.replace(b"Call-ID:", b"i:").replace(b"Contact:", b"m:"))
    data = request.to_bytes()
    assert b"\r\nCall-ID: a84b4c76e66710\r\n" in data
    assert b"\r\nContact: <sip:alice@pc33.atlanta.com>\r\n" in data
    assert parse_message(data) == request


def test_response_default_reason_and_serialization():
    response = Response(404, headers=[("Call-ID", "x")])
    assert response.reason == "Not Found"
    assert response.to_bytes() == b"SIP/2.0 404 Not Found\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    assert Response(299).reason == "OK"  # unknown code: the class phrase


# --- make_response (RFC 3261 §8.2.6) ------------------------------------------------


def test_rfc3261_8_2_6_2_response_copies_via_from_to_call_id_cseq_only():
    request = parse_message(INVITE)
    response = make_response(request, 180, to_tag="a6c85cf")
    assert response.status == 180 and response.reason == "Ringing"
    assert [name for name, _ in response.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    assert response.headers.raw_values("Via") == request.headers.raw_values("Via")
    assert response.headers.get("From") == request.headers.get("From")
    assert response.to.tag == "a6c85cf"
    assert response.headers.get("To") == "Bob <sip:bob@biloxi.com>;tag=a6c85cf"
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.body == b""


def test_rfc3261_8_2_6_2_existing_to_tag_is_kept():
    request = parse_message(INVITE.replace(b"To: Bob <sip:bob@biloxi.com>", b"To: Bob <sip:bob@biloxi.com>;tag=old"))
    assert make_response(request, 200, to_tag="new").to.tag == "old"


def test_rfc3261_8_2_6_1_100_trying_without_tag_and_custom_reason_and_extra_headers():
    request = parse_message(INVITE)
    response = make_response(request, 100, "Giving it a go", headers=[("Server", "sipim")])
    assert response.reason == "Giving it a go"
    assert response.to.tag is None
    assert response.headers.get("Server") == "sipim"
    assert parse_message(response.to_bytes()) == response


def test_make_response_is_independent_of_later_request_changes():
    request = parse_message(INVITE)
    response = make_response(request, 200, to_tag="x")
    request.headers.remove("Via")
    assert len(response.vias) == 3


def test_headers_not_needed_for_routing_are_parsed_only_when_asked():
    # A malformed Contact does not stop the message from being parsed (the
    # hot path never looks at it); the accessor reports it when used.
    data = INVITE.replace(b"Contact: <sip:alice@pc33.atlanta.com>", b"Contact: <sip:alice@pc33")
    request = parse_message(data)
    with pytest.raises(SIPParseError, match="Bad Contact"):
        request.contacts


def test_rfc3261_8_2_6_2_response_copies_via_from_to_call_id_cseq_and_tags_to():
    from sipim.sip import make_response, parse_message

    request = parse_message(
        b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h>\r\n\r\n"
    )
    response = make_response(request, 200, to_tag="t9", headers=[("Expires", "60")])
    headers = response.headers
    assert headers.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]
    assert headers.get("To") == "<sip:a@x>;tag=t9"
    assert "Contact" not in headers and headers.get("Expires") == "60"


def test_vias_start_with_the_stamped_top_via():
    # a server stamps received/rport into the top Via and remembers the parsed
    # value (sipim.core.router.stamp_via); the full list must show the stamped one
    request = parse_message(INVITE)
    stamped = request.top_via.with_params(received="198.51.100.7", rport="5062")
    request.headers.replace_first("Via", str(stamped))
    request.headers.remember("top_via", stamped)
    vias = request.vias
    assert vias[0] is stamped and vias[0].received == "198.51.100.7"
    assert [via.host for via in vias] == ["bigbox3.site3.atlanta.com", "pc33.atlanta.com", "h2"]
    assert response_vias_after_stamp(request) == [str(stamped), *request.headers.get_all("Via")[1:]]


def response_vias_after_stamp(request):
    return make_response(request, 200).headers.get_all("Via")


def test_vias_of_a_message_with_a_bad_second_via_raise_when_read():
    request = parse_message(INVITE.replace(b"SIP/2.0/UDP h2;", b"SIP/2.0/UDP ;"))
    assert request.top_via.host == "bigbox3.site3.atlanta.com"
    with pytest.raises(SIPParseError, match="Bad Via"):
        request.vias


# --- make_error_response: answering a request that failed to parse (§8.2.6, §21.4.1) --


def partial_of(data: bytes) -> tuple[Request, SIPParseError]:
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert isinstance(info.value.partial, Request)
    return info.value.partial, info.value


def without(data: bytes, *names: bytes) -> bytes:
    lines = data.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not any(line.startswith(name + b":") for name in names))


def test_rfc3261_21_4_1_error_response_copies_what_the_request_has_and_names_what_it_lacks():
    partial, error = partial_of(without(INVITE, b"Call-ID", b"CSeq"))
    response = make_error_response(partial, error.status, error.reason, to_tag="e1")
    data = response.to_bytes()
    assert data.startswith(b"SIP/2.0 400 Missing Call-ID, CSeq\r\n")
    assert [name for name, _ in response.headers] == ["Via", "Via", "From", "To"]
    assert response.headers.raw_values("Via") == partial.headers.raw_values("Via")
    assert response.headers.get("To") == "Bob <sip:bob@biloxi.com>;tag=e1"


def test_rfc3261_18_2_2_error_response_without_via_for_a_connection():
    partial, error = partial_of(without(INVITE, b"Via"))
    assert readable_top_via(partial) is None
    response = make_error_response(partial, error.status, error.reason, to_tag="e2")
    assert response.reason == "Missing Via"
    assert "Via" not in response.headers
    assert response.call_id == "a84b4c76e66710" and response.to.tag == "e2"


def test_rfc3261_8_2_6_2_error_response_tags_to_only_when_it_exists_and_parses():
    partial, error = partial_of(without(INVITE, b"To"))
    response = make_error_response(partial, error.status, error.reason, to_tag="e3")
    assert "To" not in response.headers and response.reason == "Missing To"
    # RFC 4475 "quotbal": a To that does not parse is copied verbatim, untagged
    bad_to = INVITE.replace(b"To: Bob <sip:bob@biloxi.com>", b'To: "Bob <sip:bob@biloxi.com>')
    partial, error = partial_of(bad_to)
    response = make_error_response(partial, error.status, error.reason, to_tag="e3")
    assert response.headers.get("To") == '"Bob <sip:bob@biloxi.com>'
    assert response.reason.startswith("Bad To header")
    tagged = INVITE.replace(b"To: Bob <sip:bob@biloxi.com>", b"To: Bob <sip:bob@biloxi.com>;tag=old")
    partial, error = partial_of(tagged.replace(b"CSeq: 314159", b"CSeq: x"))
    assert make_error_response(partial, error.status, error.reason, to_tag="new").to.tag == "old"


def test_rfc4475_badvers_error_response_is_a_505():
    partial, error = partial_of(INVITE.replace(b"sip:bob@biloxi.com SIP/2.0", b"sip:bob@biloxi.com SIP/7.0"))
    response = make_error_response(partial, error.status, error.reason, to_tag="e4")
    assert response.to_bytes().startswith(b"SIP/2.0 505 Version Not Supported\r\n")
    assert response.cseq == CSeq(314159, "INVITE") and response.to.tag == "e4"


def test_rfc3261_7_2_error_response_reason_stays_on_the_status_line():
    partial, error = partial_of(without(INVITE, b"Call-ID"))
    response = make_error_response(partial, 400, "Missing\r\nCall-ID\n")
    assert response.to_bytes().startswith(b"SIP/2.0 400 Missing Call-ID\r\nVia: ")


def test_readable_top_via_never_raises():
    assert readable_top_via(parse_message(INVITE)).host == "bigbox3.site3.atlanta.com"
    partial, _ = partial_of(INVITE.replace(b"Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;", b"Via: SIP/2.0/UDP ;"))
    assert readable_top_via(partial) is None

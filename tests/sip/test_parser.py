"""Datagram parsing and stream framing: RFC 3261 §7, §18.3; RFC 5626 §4.4.1;
RFC 4475-style torture cases (reconstructed, names in the test ids)."""

import pytest

from sipim.sip import (
    KeepAlive,
    ParserLimits,
    Request,
    Response,
    SIPParseError,
    SipURI,
    StreamFramer,
    TelURI,
    parse_message,
    parse_uri,
)


def crlf(text: str) -> bytes:
    """Write messages readably: '\n' becomes CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


REGISTER = crlf(
    "REGISTER sip:example.com SIP/2.0\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;rport\n"
    "Max-Forwards: 70\n"
    "To: <sip:alice@example.com>\n"
    "From: <sip:alice@example.com>;tag=456248\n"
    "Call-ID: 843817637684230@998sdasdh09\n"
    "CSeq: 1826 REGISTER\n"
    "Contact: <sip:alice@192.0.2.1>\n"
    "Expires: 7200\n"
    "Content-Length: 0\n"
    "\n"
)

MESSAGE = crlf(
    "MESSAGE sip:bob@example.com SIP/2.0\n"
    "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776sgdkse\n"
    "Max-Forwards: 70\n"
    "From: sip:alice@example.com;tag=49583\n"
    "To: sip:bob@example.com\n"
    "Call-ID: asd88asd77a@1.2.3.4\n"
    "CSeq: 1 MESSAGE\n"
    "Content-Type: text/plain\n"
    "Content-Length: 18\n"
    "\n"
    "Watson, come here."
)

OK_RESPONSE = crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;received=192.0.2.9\n"
    "To: <sip:alice@example.com>;tag=2493k59kd\n"
    "From: <sip:alice@example.com>;tag=456248\n"
    "Call-ID: 843817637684230@998sdasdh09\n"
    "CSeq: 1826 REGISTER\n"
    "Content-Length: 0\n"
    "\n"
)


def with_header_replaced(message: bytes, name: str, new_line: str | None) -> bytes:
    """Replace (or with None, drop) the header line starting with ``name:``."""
    lines = message.split(b"\r\n")
    out = []
    for line in lines:
        if line.lower().startswith(name.lower().encode() + b":"):
            if new_line is not None:
                out.append(new_line.encode())
        else:
            out.append(line)
    return b"\r\n".join(out)


# --- basic parsing -----------------------------------------------------------------


def test_rfc3261_7_1_request_line_and_headers():
    request = parse_message(REGISTER)
    assert isinstance(request, Request)
    assert request.method == "REGISTER"
    assert request.uri == parse_uri("sip:example.com")
    assert request.call_id == "843817637684230@998sdasdh09"
    assert request.cseq.seq == 1826
    assert request.top_via.branch == "z9hG4bKnashds7"
    assert request.body == b""


def test_rfc3261_7_2_status_line():
    response = parse_message(OK_RESPONSE)
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.reason == "OK"
    assert response.to.tag == "2493k59kd"


def test_rfc3261_7_4_body_is_framed_by_content_length():
    request = parse_message(MESSAGE)
    assert request.body == b"Watson, come here."
    assert request.content_type == "text/plain"


def test_rfc3261_18_3_udp_without_content_length_body_runs_to_end_of_datagram():
    data = with_header_replaced(MESSAGE, "Content-Length", None)
    assert parse_message(data).body == b"Watson, come here."


def test_rfc3261_18_3_udp_bytes_after_content_length_are_ignored():
    assert parse_message(MESSAGE + b"garbage after the body").body == b"Watson, come here."


def test_rfc4475_dblreq_second_message_in_a_datagram_is_ignored():
    request = parse_message(REGISTER + MESSAGE)
    assert request.method == "REGISTER"
    assert request.body == b""


def test_rfc3261_18_3_udp_content_length_larger_than_datagram_is_an_error_with_partial():
    data = with_header_replaced(MESSAGE, "Content-Length", "Content-Length: 9999")
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert info.value.reason == "Content-Length mismatch"
    assert info.value.status == 400
    assert info.value.partial is not None
    assert info.value.partial.call_id == "asd88asd77a@1.2.3.4"


def test_rfc3261_7_5_leading_crlf_before_start_line_is_ignored():
    assert parse_message(b"\r\n\r\n" + REGISTER).method == "REGISTER"


def test_bare_lf_line_ends_are_tolerated():
    assert parse_message(REGISTER.replace(b"\r\n", b"\n")).cseq.seq == 1826


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\r\n"])
def test_empty_datagram_is_a_parse_error(data):
    with pytest.raises(SIPParseError):
        parse_message(data)


def test_missing_blank_line_is_a_parse_error():
    with pytest.raises(SIPParseError):
        parse_message(REGISTER[:-2])


# --- RFC 3261 §7.3.1 header syntax, RFC 4475 style valid torture cases --------------


WSINV_BODY = b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n"
WSINV = crlf(
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
    "TO :\n"
    " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n'
    "  ;\n"
    "  tag = 98asjd8\n"
    "MaX-fOrWaRdS: 0068\n"
    "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
    f"Content-Length   : {len(WSINV_BODY)}\n"
    "cseq: 0009\n"
    "  INVITE\n"
    "Via  : SIP  /   2.0\n"
    " /UDP\n"
    "    192.0.2.2;branch=390skdjuw\n"
    "s :\n"
    "NewFangledHeader:   newfangled value\n"
    " continued newfangled value\n"
    "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
    "Content-Type: application/sdp\n"
    "Route:\n"
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n"
    "  branch  =   z9hG4bK9ikj8  ,\n"
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n"
    " z9hG4bK30239\n"
    'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
    "      newvalue ;\n"
    "  secondparam ; q = 0.33\n"
    "\n"
) + WSINV_BODY


def test_rfc4475_wsinv_tortuous_whitespace_folding_compact_forms():
    request = parse_message(WSINV)
    assert request.to.uri == parse_uri("sip:vivekg@chair-dnrc.example.com")
    assert request.to.tag == "1918181833n"
    assert request.from_.display_name == 'J Rosenberg \\"'
    assert request.from_.tag == "98asjd8"
    assert request.max_forwards == 68
    assert request.cseq.seq == 9 and request.cseq.method == "INVITE"
    assert [via.host for via in request.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert request.vias[1].branch == "z9hG4bK9ikj8"
    assert request.vias[2].branch == "z9hG4bK30239"
    assert request.headers.get("Subject") == ""
    assert request.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert request.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = request.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert request.body == WSINV_BODY
    # the reserialized message parses to the same thing
    again = parse_message(request.to_bytes())
    assert again == request


def test_rfc4475_intmeth_unusual_method_token_and_uri_characters():
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    uri = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    data = crlf(
        f"{method} {uri} SIP/2.0\n"
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
        "To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\n"
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\\\"\";tag=_token~1'+`*%!-.\n"
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
        f"CSeq: 139122385 {method}\n"
        "Max-Forwards: 255\n"
        "extensionHeader-!.%*+_`'~: \n"
        "Content-Length: 0\n\n"
    ).replace(b"\\\x00", b"\\a")  # our parser rejects NUL anywhere in the head
    request = parse_message(data)
    assert request.method == method
    assert isinstance(request.uri, SipURI)
    assert request.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert request.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert request.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert request.from_.tag == "_token~1'+`*%!-."
    assert request.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert request.headers.get("extensionHeader-!.%*+_`'~") == ""


def test_rfc4475_esc01_escaped_characters_in_request_uri_user():
    data = REGISTER.replace(b"REGISTER sip:example.com", b"REGISTER sip:sips%3Auser%40example.com@example.net")
    assert parse_message(data).uri.user == "sips:user@example.com"


def test_rfc4475_esc02_escaped_method_name_matches_cseq():
    data = crlf(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0\n"
        "To: \"%Z%45\" <sip:resource@example.com>\n"
        "From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23\n"
        "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf\n"
        "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209791\n"
        "CSeq: 29344 RE%47IST%45R\n"
        "Max-Forwards: 70\n"
        "Contact: <sip:alias1@host1.example.com>\n"
        "C%6Fntact: <sip:alias2@host2.example.com>\n"
        "Contact: <sip:alias3@host3.example.com>\n"
        "l: 0\n\n"
    )
    request = parse_message(data)
    assert request.method == "RE%47IST%45R"  # escapes are not decoded in tokens
    assert len(request.contacts) == 2
    assert request.to.display_name == "%Z%45"
    assert request.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_rfc4475_escnull_escaped_nul_in_uris_is_accepted():
    data = REGISTER.replace(b"To: <sip:alice@example.com>", b"To: sip:null-%00-null@example.com")
    assert parse_message(data).to.uri.user == "null-\x00-null"


def test_rfc4475_lwsdisp_display_name_directly_followed_by_angle_bracket():
    data = REGISTER.replace(b"From: <sip:alice@example.com>", b"From: caller<sip:alice@example.com>")
    assert parse_message(data).from_.display_name == "caller"


def test_rfc4475_transports_unknown_via_transports_are_accepted():
    data = REGISTER.replace(
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;rport",
        b"Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\r\n"
        b"Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\r\n"
        b"Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\r\n"
        b"Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\r\n"
        b"Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee",
    )
    assert [via.transport for via in parse_message(data).vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_rfc4475_unreason_utf8_reason_phrase():
    data = OK_RESPONSE.replace(b"200 OK", "200 = 2**3 * 5**2 но сто девяносто девять - простое".encode())
    assert parse_message(data).reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def test_rfc4475_noreason_empty_reason_phrase():
    assert parse_message(OK_RESPONSE.replace(b"200 OK", b"100 ")).reason == ""
    assert parse_message(OK_RESPONSE.replace(b"200 OK", b"100")).reason == ""


def test_rfc4475_novelsc_unknown_request_uri_scheme_is_parsed_for_416():
    data = REGISTER.replace(b"REGISTER sip:example.com", b"OPTIONS soap.beep://192.0.2.103:3002")
    data = data.replace(b"1826 REGISTER", b"1826 OPTIONS")
    assert parse_message(data).uri.scheme == "soap.beep"


def test_tel_request_uri():
    data = MESSAGE.replace(b"MESSAGE sip:bob@example.com", b"MESSAGE tel:+1-201-555-0123")
    assert isinstance(parse_message(data).uri, TelURI)


def test_rfc3261_7_3_1_ipv6_everywhere():
    data = crlf(
        "OPTIONS sip:[2001:db8::10]:5070 SIP/2.0\n"
        "Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=[2001:db8::9:255];rport=5060\n"
        "To: sip:[2001:db8::10]\n"
        "From: \"Caller\" <sip:caller@[2001:db8::1]>;tag=81x2\n"
        "Call-ID: SSG9559905523997077@hlau_4100\n"
        "CSeq: 1 OPTIONS\n"
        "Content-Length: 0\n\n"
    )
    request = parse_message(data)
    assert request.uri.host == "[2001:db8::10]" and request.uri.port == 5070
    assert request.top_via.host == "[2001:db8::9:1]"
    assert request.top_via.received == "[2001:db8::9:255]"
    assert request.top_via.rport == 5060
    assert request.max_forwards is None  # lenient: Max-Forwards may be absent
    assert request.from_.uri.host == "[2001:db8::1]"


def test_non_utf8_header_bytes_decode_as_latin1_instead_of_failing():
    data = REGISTER.replace(b"To: <sip:alice", b'To: "Ren\xe9" <sip:alice')
    assert parse_message(data).to.display_name == "René"


# --- RFC 4475 style invalid messages ------------------------------------------------


@pytest.mark.parametrize(
    "case, data, reason",
    [
        ("missing Via", with_header_replaced(REGISTER, "Via", None), "Missing Via"),
        ("missing From", with_header_replaced(REGISTER, "From", None), "Missing From"),
        ("missing To", with_header_replaced(REGISTER, "To", None), "Missing To"),
        ("insuf: missing Call-ID", with_header_replaced(REGISTER, "Call-ID", None), "Missing Call-ID"),
        ("missing CSeq", with_header_replaced(REGISTER, "CSeq", None), "Missing CSeq"),
        ("empty Call-ID", with_header_replaced(REGISTER, "Call-ID", "Call-ID:"), "Missing Call-ID"),
        ("missing Call-ID and CSeq",
         with_header_replaced(with_header_replaced(REGISTER, "Call-ID", None), "CSeq", None), "Missing Call-ID, CSeq"),
        ("insuf: all five missing",
         crlf("REGISTER sip:example.com SIP/2.0\nMax-Forwards: 70\nContent-Length: 0\n\n"),
         "Missing Via, From, To, Call-ID, CSeq"),
    ],
)
def test_rfc3261_8_1_1_request_missing_mandatory_headers_names_every_one_and_carries_a_partial(case, data, reason):
    # §21.4.1: the 400's reason phrase identifies the problem; the partial lets
    # the server answer with what the request has (over a connection even
    # without a Via, §18.2.2).
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert (info.value.reason, info.value.status) == (reason, 400), case
    partial = info.value.partial
    assert isinstance(partial, Request) and partial.method == "REGISTER"


def test_rfc3261_8_1_1_unparsable_top_via_is_a_400_with_a_partial():
    with pytest.raises(SIPParseError) as info:
        parse_message(with_header_replaced(REGISTER, "Via", "Via: SIP/2.0/UDP"))
    assert info.value.reason.startswith("Bad Via header")
    assert info.value.partial is not None and info.value.partial.call_id == "843817637684230@998sdasdh09"


def test_rfc3261_8_1_1_response_missing_headers_has_no_partial():
    # Responses are never answered.
    with pytest.raises(SIPParseError, match="Missing Call-ID") as info:
        parse_message(with_header_replaced(OK_RESPONSE, "Call-ID", None))
    assert info.value.partial is None


def test_rfc3261_8_1_1_ack_missing_headers_still_carries_its_partial_for_the_server_to_drop():
    ack = REGISTER.replace(b"REGISTER sip:", b"ACK sip:").replace(b"1826 REGISTER", b"1826 ACK")
    with pytest.raises(SIPParseError, match="Missing Call-ID") as info:
        parse_message(with_header_replaced(ack, "Call-ID", None))
    assert info.value.partial is not None and info.value.partial.method == "ACK"


@pytest.mark.parametrize(
    "case, data, reason",
    [
        ("mismatch01", with_header_replaced(REGISTER, "CSeq", "CSeq: 1826 OPTIONS"), "CSeq method does not match"),
        ("bad CSeq", with_header_replaced(REGISTER, "CSeq", "CSeq: abc REGISTER"), "Bad CSeq header"),
        ("scalar02 huge CSeq", with_header_replaced(REGISTER, "CSeq", "CSeq: 36893488147419103232 REGISTER"), "Bad CSeq header"),
        ("quotbal", with_header_replaced(REGISTER, "To", 'To: "Mr. J. User <sip:j.user@example.com>'), "Bad To header"),
        ("baddn", with_header_replaced(REGISTER, "From", "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43"), "Bad From header"),
        ("scalar02 Max-Forwards", with_header_replaced(REGISTER, "Max-Forwards", "Max-Forwards: 300"), "Bad Max-Forwards"),
        ("negative Content-Length", with_header_replaced(REGISTER, "Content-Length", "Content-Length: -999"), "Bad Content-Length"),
        ("mcl01", with_header_replaced(MESSAGE, "Content-Length", "Content-Length: 18\r\nl: 19"), "Bad Content-Length"),
        ("multi01", with_header_replaced(REGISTER, "Call-ID", "Call-ID: a@b\r\ni: c@d"), "Multiple Call-ID headers"),
        ("header without colon", with_header_replaced(REGISTER, "Expires", "Expires 7200"), "Malformed header line"),
        ("bad header name", with_header_replaced(REGISTER, "Expires", "Exp ires: 7200"), "Malformed header line"),
    ],
)
def test_rfc4475_errors_in_answerable_requests_carry_a_partial_request(case, data, reason):
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert info.value.reason.startswith(reason), case
    assert info.value.status == 400
    partial = info.value.partial
    assert isinstance(partial, Request)
    assert partial.call_id == "843817637684230@998sdasdh09" or partial.call_id in ("asd88asd77a@1.2.3.4", "a@b")
    assert partial.top_via is not None


@pytest.mark.parametrize(
    "case, start_line, reason, status",
    [
        ("ltgtruri", "REGISTER <sip:example.com> SIP/2.0", "Malformed Request-URI", 400),
        ("lwsruri", "REGISTER sip:example.com;lr=on ;x SIP/2.0", "Malformed Request-Line", 400),
        ("lwsstart", "REGISTER  sip:example.com SIP/2.0", "Malformed Request-Line", 400),
        ("trws", "REGISTER sip:example.com SIP/2.0 ", "Malformed Request-Line", 400),
        ("escruri", "REGISTER sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0", "Malformed Request-URI", 400),
        ("badvers", "REGISTER sip:example.com SIP/7.0", "Version Not Supported", 505),
        ("no version", "REGISTER sip:example.com HTTP/1.1", "Malformed Request-Line", 400),
        ("bad method", "REG(STER sip:example.com SIP/2.0", "Malformed Request-Line", 400),
        ("bad uri", "REGISTER sip:exa@mple@x SIP/2.0", "Malformed Request-URI", 400),
    ],
)
def test_rfc4475_malformed_request_lines(case, start_line, reason, status):
    data = start_line.encode() + REGISTER[REGISTER.index(b"\r\n"):]
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert (info.value.reason, info.value.status) == (reason, status), case


BADVERS = REGISTER.replace(b"REGISTER sip:example.com SIP/2.0", b"REGISTER sip:example.com SIP/7.0")


def test_rfc4475_badvers_datagram_is_a_505_with_a_partial():
    with pytest.raises(SIPParseError) as info:
        parse_message(BADVERS)
    assert (info.value.reason, info.value.status) == ("Version Not Supported", 505)
    partial = info.value.partial
    assert isinstance(partial, Request) and partial.call_id == "843817637684230@998sdasdh09"
    assert partial.top_via is not None and partial.top_via.branch == "z9hG4bKnashds7"


def test_rfc4475_badvers_comes_before_what_else_is_wrong():
    for data in (with_header_replaced(BADVERS, "Call-ID", None),
                 with_header_replaced(BADVERS, "CSeq", "CSeq: x REGISTER"),
                 with_header_replaced(BADVERS, "Content-Length", "Content-Length: 99")):
        with pytest.raises(SIPParseError) as info:
            parse_message(data)
        assert info.value.status == 505 and info.value.partial is not None


def test_rfc3261_7_1_version_is_case_insensitive():
    assert parse_message(REGISTER.replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1)).method == "REGISTER"


def test_rfc4475_badvers_with_a_bad_request_uri_has_no_partial():
    data = BADVERS.replace(b"REGISTER sip:example.com", b"REGISTER <sip:example.com>")
    with pytest.raises(SIPParseError, match="Malformed Request-URI") as info:
        parse_message(data)
    assert info.value.partial is None


@pytest.mark.parametrize(
    "status_line", ["SIP/2.0 4294967301 Bad", "SIP/2.0 99 Low", "SIP/2.0 700 High", "SIP/2.0", "SIP/2.0 2x0 OK"]
)
def test_rfc4475_bigcode_and_other_bad_status_lines(status_line):
    with pytest.raises(SIPParseError):
        parse_message(status_line.encode() + OK_RESPONSE[OK_RESPONSE.index(b"\r\n"):])


def test_response_with_unsupported_version_is_rejected():
    with pytest.raises(SIPParseError) as info:
        parse_message(OK_RESPONSE.replace(b"SIP/2.0 200", b"SIP/3.0 200"))
    assert info.value.status == 505


def test_nul_byte_in_header_section_is_rejected():
    with pytest.raises(SIPParseError, match="NUL"):
        parse_message(REGISTER.replace(b"Expires: 7200", b"Expires: 72\x0000"))


def test_nul_byte_in_body_is_fine():
    data = MESSAGE.replace(b"Watson, come here.", b"Watson,\x00come here.")
    assert parse_message(data).body == b"Watson,\x00come here."


def test_bare_cr_in_header_section_is_rejected():
    with pytest.raises(SIPParseError):
        parse_message(REGISTER.replace(b"Expires: 7200", b"Expires: 72\r00"))


def test_folded_line_right_after_start_line_is_rejected():
    with pytest.raises(SIPParseError):
        parse_message(REGISTER.replace(b"SIP/2.0\r\nVia", b"SIP/2.0\r\n Via"))


# --- limits --------------------------------------------------------------------------


def test_limit_message_too_large_is_513_with_partial():
    body = b"x" * 70000
    data = MESSAGE.replace(b"Content-Length: 18\r\n\r\nWatson, come here.", b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert (info.value.reason, info.value.status) == ("Message Too Large", 513)
    assert info.value.partial is not None and info.value.partial.method == "MESSAGE"


def test_limit_configurable_message_size():
    with pytest.raises(SIPParseError) as info:
        parse_message(MESSAGE, ParserLimits(max_message_size=200))
    assert info.value.status == 513


def test_limit_request_uri_too_long_is_414():
    data = REGISTER.replace(b"REGISTER sip:example.com", b"REGISTER sip:" + b"a" * 5000 + b"@example.com")
    with pytest.raises(SIPParseError) as info:
        parse_message(data)
    assert info.value.status == 414


def test_limit_request_uri_length_is_configurable():
    with pytest.raises(SIPParseError) as info:
        parse_message(REGISTER, ParserLimits(max_uri_length=10))
    assert info.value.status == 414


def test_limit_too_many_headers():
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(130))
    with pytest.raises(SIPParseError, match="Too many headers") as info:
        parse_message(REGISTER.replace(b"Expires: 7200\r\n", extra))
    assert info.value.status == 400
    assert parse_message(REGISTER, ParserLimits(max_headers=10)).method == "REGISTER"
    with pytest.raises(SIPParseError, match="Too many headers"):
        parse_message(REGISTER, ParserLimits(max_headers=8))


def test_limit_header_line_too_long():
    data = REGISTER.replace(b"Expires: 7200", b"X-Long: " + b"v" * 9000)
    with pytest.raises(SIPParseError, match="Header line too long"):
        parse_message(data)


# --- stream framing -------------------------------------------------------------------


def feed_pieces(framer: StreamFramer, data: bytes, cuts: list[int]) -> list:
    out = []
    previous = 0
    for cut in sorted(cuts) + [len(data)]:
        out += framer.feed(data[previous:cut])
        previous = cut
    return out


def test_rfc3261_18_3_stream_framing_at_every_split_point():
    stream = REGISTER + MESSAGE + OK_RESPONSE
    expected = [parse_message(REGISTER), parse_message(MESSAGE), parse_message(OK_RESPONSE)]
    for cut in range(len(stream) + 1):
        assert feed_pieces(StreamFramer(), stream, [cut]) == expected, cut


def test_stream_framing_one_byte_at_a_time():
    stream = MESSAGE + REGISTER
    framer = StreamFramer()
    out = []
    for index in range(len(stream)):
        out += framer.feed(stream[index : index + 1])
    assert out == [parse_message(MESSAGE), parse_message(REGISTER)]
    assert framer.buffered == 0


def test_rfc5626_4_4_1_crlfcrlf_ping_between_messages_is_a_keepalive():
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlive()]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlive()]
    out = framer.feed(REGISTER + b"\r\n\r\n" + MESSAGE)
    assert out == [parse_message(REGISTER), KeepAlive(), parse_message(MESSAGE)]


def test_rfc3261_7_5_lone_crlf_between_stream_messages_is_skipped():
    framer = StreamFramer()
    assert framer.feed(b"\r\n" + REGISTER + b"\r\n" + MESSAGE) == [parse_message(REGISTER), parse_message(MESSAGE)]


def test_rfc3261_18_3_stream_message_without_content_length_breaks_the_stream():
    framer = StreamFramer()
    with pytest.raises(SIPParseError, match="Missing Content-Length") as info:
        framer.feed(with_header_replaced(MESSAGE, "Content-Length", None))
    assert not info.value.recoverable
    assert info.value.partial is not None
    with pytest.raises(SIPParseError):
        framer.feed(REGISTER)  # no resynchronisation after lost framing


def test_stream_bad_content_length_is_fatal():
    with pytest.raises(SIPParseError, match="Bad Content-Length") as info:
        StreamFramer().feed(with_header_replaced(MESSAGE, "Content-Length", "Content-Length: 1x"))
    assert not info.value.recoverable


def test_stream_invalid_but_framed_message_is_recoverable_and_later_messages_survive():
    bad = with_header_replaced(REGISTER, "CSeq", "CSeq: 1826 INVITE")
    framer = StreamFramer()
    out = framer.feed(MESSAGE + bad + REGISTER)
    assert out == [parse_message(MESSAGE)]  # what came before the error is delivered
    with pytest.raises(SIPParseError) as info:
        framer.feed(b"")  # ...and the error is raised by the next call
    assert info.value.recoverable
    assert info.value.partial.method == "REGISTER"
    assert framer.feed(b"") == [parse_message(REGISTER)]


def test_rfc4475_badvers_on_a_stream_is_a_recoverable_505_framed_by_content_length():
    framer = StreamFramer()
    with pytest.raises(SIPParseError) as info:
        framer.feed(BADVERS + MESSAGE)
    assert (info.value.status, info.value.recoverable) == (505, True)
    assert info.value.partial is not None and info.value.partial.call_id == "843817637684230@998sdasdh09"
    assert framer.feed(b"") == [parse_message(MESSAGE)]  # the stream is still in sync


@pytest.mark.parametrize("content_length", [None, "Content-Length: x", "Content-Length: 70000"])
def test_rfc4475_badvers_on_a_stream_without_framing_is_a_fatal_505(content_length):
    framer = StreamFramer()
    with pytest.raises(SIPParseError) as info:
        framer.feed(with_header_replaced(BADVERS, "Content-Length", content_length))
    assert (info.value.status, info.value.recoverable) == (505, False)
    assert info.value.partial is not None  # answered, then the connection is closed
    with pytest.raises(SIPParseError):
        framer.feed(REGISTER)


def test_rfc3261_8_1_1_stream_request_missing_headers_is_recoverable_and_names_them():
    framer = StreamFramer()
    bad = with_header_replaced(with_header_replaced(REGISTER, "Call-ID", None), "CSeq", None)
    with pytest.raises(SIPParseError) as info:
        framer.feed(bad + MESSAGE)
    assert (info.value.reason, info.value.status, info.value.recoverable) == ("Missing Call-ID, CSeq", 400, True)
    assert info.value.partial is not None and info.value.partial.method == "REGISTER"
    assert framer.feed(b"") == [parse_message(MESSAGE)]


def test_rfc3261_18_3_stream_request_missing_headers_and_content_length_is_fatal_with_a_partial():
    framer = StreamFramer()
    bad = with_header_replaced(with_header_replaced(REGISTER, "Via", None), "Content-Length", None)
    with pytest.raises(SIPParseError, match="Missing Content-Length") as info:
        framer.feed(bad)
    assert not info.value.recoverable and info.value.partial is not None


def test_stream_message_too_large_is_fatal_513():
    framer = StreamFramer(ParserLimits(max_message_size=300))
    with pytest.raises(SIPParseError) as info:
        framer.feed(MESSAGE.replace(b"Content-Length: 18", b"Content-Length: 5000"))
    assert info.value.status == 513
    framer = StreamFramer(ParserLimits(max_message_size=300))
    with pytest.raises(SIPParseError) as info:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 100)  # no end of head in sight
    assert info.value.status == 513


def test_stream_body_bytes_are_not_scanned_for_message_boundaries():
    body = b"\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n"
    data = MESSAGE.replace(b"Content-Length: 18\r\n\r\nWatson, come here.", b"Content-Length: %d\r\n\r\n" % len(body) + body)
    out = feed_pieces(StreamFramer(), data + REGISTER, [10, 300, len(data) - 3])
    assert [m.body for m in out] == [body, b""]


def test_rfc3261_8_2_6_a_400_can_be_built_from_the_partial_of_a_bad_cseq():
    from sipim.sip import make_response

    with pytest.raises(SIPParseError) as info:
        parse_message(with_header_replaced(REGISTER, "CSeq", "CSeq: one REGISTER"))
    response = make_response(info.value.partial, info.value.status, info.value.reason, to_tag="x")
    data = response.to_bytes()
    assert data.startswith(b"SIP/2.0 400 Bad CSeq header\r\n")
    assert b"\r\nCSeq: one REGISTER\r\n" in data
    assert b"\r\nTo: <sip:alice@example.com>;tag=x\r\n" in data

"""Headers multi-dict, Via, CSeq and grammar helpers (RFC 3261 §7.3, §20, §25)."""

import pytest

from sipim.sip import CSeq, Headers, SIPParseError, Via, parse_params, quote, split_list, unquote

# --- Headers ---------------------------------------------------------------------


def test_rfc3261_7_3_1_lookups_are_case_insensitive():
    headers = Headers([("call-id", "abc"), ("CSEQ", "1 INVITE")])
    assert headers.get("Call-ID") == "abc"
    assert headers.get("cseq") == "1 INVITE"
    assert "CALL-ID" in headers
    assert list(headers) == [("Call-ID", "abc"), ("CSeq", "1 INVITE")]


@pytest.mark.parametrize(
    "compact, full",
    [("v", "Via"), ("f", "From"), ("t", "To"), ("i", "Call-ID"), ("m", "Contact"), ("l", "Content-Length"),
     ("c", "Content-Type"), ("k", "Supported"), ("s", "Subject"), ("e", "Content-Encoding"), ("o", "Event"),
     ("u", "Allow-Events"), ("r", "Refer-To"), ("b", "Referred-By")],
)
def test_rfc3261_7_3_3_compact_forms_resolve_to_the_full_name(compact, full):
    headers = Headers([(compact.upper(), "x")])
    assert headers.get(full) == "x"
    assert headers.get(compact) == "x"
    assert list(headers) == [(full, "x")]


def test_rfc3261_7_3_1_list_headers_split_on_commas_outside_quotes_and_angle_brackets():
    headers = Headers(
        [
            ("Contact", '"Doe, John" <sip:j@x;a=b,c>;q=0.5, <sip:k@y>'),
            ("Contact", "sip:l@z"),
        ]
    )
    assert headers.get_all("Contact") == ['"Doe, John" <sip:j@x;a=b,c>;q=0.5', "<sip:k@y>", "sip:l@z"]
    assert headers.get("Contact") == '"Doe, John" <sip:j@x;a=b,c>;q=0.5'
    assert headers.raw_values("Contact") == ['"Doe, John" <sip:j@x;a=b,c>;q=0.5, <sip:k@y>', "sip:l@z"]


def test_non_list_headers_are_not_split_on_commas():
    headers = Headers([("Date", "Sat, 13 Nov 2010 23:29:00 GMT"), ("WWW-Authenticate", 'Digest realm="a", nonce="b"')])
    assert headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.get("WWW-Authenticate") == 'Digest realm="a", nonce="b"'


def test_headers_add_first_set_remove_keep_order():
    headers = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:t@x>"), ("Via", "SIP/2.0/UDP b")])
    headers.add("v", "SIP/2.0/UDP new", first=True)
    assert headers.get_all("Via") == ["SIP/2.0/UDP new", "SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    headers.add("Route", "<sip:r@x;lr>", first=True)  # none yet: goes to the top
    assert list(headers)[0] == ("Route", "<sip:r@x;lr>")
    headers.set("To", "<sip:other@x>")
    assert headers.get_all("To") == ["<sip:other@x>"]
    headers.set_all("Via", ["SIP/2.0/UDP only"])
    assert [name for name, _ in headers] == ["Route", "Via", "To"]
    assert headers.remove("via") == 1
    assert "Via" not in headers
    assert headers.remove("Via") == 0


def test_remove_first_pops_one_value_of_a_combined_line():
    headers = Headers([("Route", "<sip:a;lr>, <sip:b;lr>"), ("Route", "<sip:c;lr>")])
    assert headers.remove_first("Route") == "<sip:a;lr>"
    assert headers.get_all("Route") == ["<sip:b;lr>", "<sip:c;lr>"]
    assert headers.remove_first("Route") == "<sip:b;lr>"
    assert headers.remove_first("Route") == "<sip:c;lr>"
    assert headers.remove_first("Route") is None


def test_headers_copy_is_independent_and_equality_ignores_name_spelling():
    headers = Headers([("i", "x")])
    clone = headers.copy()
    clone.add("To", "<sip:a@b>")
    assert len(headers) == 1 and len(clone) == 2
    assert Headers([("Call-ID", "x")]) == headers


def test_cache_is_invalidated_by_every_mutation():
    headers = Headers([("Expires", "1")])
    assert headers.cached("e", lambda: headers.get("Expires")) == "1"
    headers.set("Expires", "2")
    assert headers.cached("e", lambda: headers.get("Expires")) == "2"


def test_mutations_drop_the_views_made_of_that_header_and_views_of_unknown_origin():
    headers = Headers([("Via", "SIP/2.0/UDP h"), ("To", "<sip:a@b>"), ("Expires", "1")])
    headers.remember("top_via", "via view")
    headers.remember("to", "to view")
    headers.remember("mine", "a view of unknown origin")
    assert headers.remove("Route") == 0  # absent: nothing changes, every view stays
    assert headers._cache == {"top_via": "via view", "to": "to view", "mine": "a view of unknown origin"}
    headers.add("Subject", "x")  # no known view is made of Subject
    assert headers._cache == {"top_via": "via view", "to": "to view"}
    assert headers.remove("To") == 1
    assert headers._cache == {"top_via": "via view"} and "To" not in headers
    headers.replace_first("Via", "SIP/2.0/TCP h2")
    assert headers._cache == {} and headers.get("Via") == "SIP/2.0/TCP h2"


# --- quoting, lists, parameters ---------------------------------------------------


def test_rfc3261_25_1_quoted_pair_round_trip():
    text = 'say "hi" \\ bye'
    assert quote(text) == '"say \\"hi\\" \\\\ bye"'
    assert unquote(quote(text)) == text
    assert unquote("token") == "token"


def test_split_list_ignores_empty_elements_and_trims():
    assert split_list(" a ,, b ,") == ["a", "b"]
    assert split_list("") == []


def test_unterminated_quote_in_a_list_raises_sip_parse_error():
    with pytest.raises(SIPParseError):
        split_list('"a, b')
    with pytest.raises(SIPParseError):
        split_list("<sip:a, b")


def test_parse_params_lowercases_names_keeps_values_and_flags():
    assert parse_params(';Expires=60; Q = 0.5 ;lr;x="a;b"') == {"expires": "60", "q": "0.5", "lr": None, "x": '"a;b"'}


@pytest.mark.parametrize("text", [";=x", ";a b=1", ';x="open', ';x="a"b'])
def test_malformed_parameters_raise(text):
    with pytest.raises(SIPParseError):
        parse_params(text)


# --- Via (RFC 3261 §20.42, §18.2.1; RFC 3581) ------------------------------------


def test_rfc3261_20_42_via_components():
    via = Via.parse("SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;maddr=224.2.0.1;ttl=16")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert via.host == "pc33.atlanta.com"
    assert via.port == 5066
    assert via.sent_by == "pc33.atlanta.com:5066"
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "192.0.2.1"
    assert via.maddr == "224.2.0.1"
    assert via.ttl == 16


def test_rfc3581_rport_without_and_with_value():
    bare = Via.parse("SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKx")
    assert bare.has_rport and bare.rport is None
    filled = bare.with_params(received="192.0.2.7", rport="3456")
    assert filled.rport == 3456
    assert str(filled) == "SIP/2.0/UDP 10.0.0.1;rport=3456;branch=z9hG4bKx;received=192.0.2.7"
    assert not Via.parse("SIP/2.0/UDP h").has_rport


def test_rfc3261_25_1_via_with_lws_around_slashes_and_colon_and_lowercase_transport():
    via = Via.parse("SIP / 2.0 / tcp   [2001:db8::9] : 5061 ; branch = z9hG4bKabc")
    assert via.transport == "TCP"
    assert via.host == "[2001:db8::9]"
    assert via.port == 5061
    assert via.branch == "z9hG4bKabc"
    assert str(via) == "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKabc"


def test_via_round_trip_and_equality():
    text = "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf;rport"
    assert str(Via.parse(text)) == text
    assert Via.parse(text) == Via.parse(text)
    assert hash(Via.parse(text)) == hash(Via.parse(text))


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0", "SIP/2.0/UDP", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP bad_host", "SIP/2.0/UDP host;=x", "SIP/2.0 UDP host",
     "SIP/2.0/UDP [::1"],
)
def test_malformed_via_raises_bad_via(text):
    with pytest.raises(SIPParseError, match="Bad Via"):
        Via.parse(text)


# --- CSeq (RFC 3261 §20.16, §8.1.1.5) --------------------------------------------


def test_rfc3261_20_16_cseq():
    cseq = CSeq.parse("4711 INVITE")
    assert cseq == CSeq(4711, "INVITE")
    assert str(cseq) == "4711 INVITE"
    assert CSeq.parse("  1\t REGISTER ") == CSeq(1, "REGISTER")


@pytest.mark.parametrize("text", ["", "INVITE", "1", "-1 INVITE", "x INVITE", "4294967296 INVITE", "1 IN VITE", "١ INVITE"])
def test_rfc3261_8_1_1_5_bad_cseq_raises(text):
    with pytest.raises(SIPParseError, match="Bad CSeq"):
        CSeq.parse(text)


@pytest.mark.parametrize("value", ["a\r\nVia: injected", "a\nb", "a\rb", "a\x00b"])
def test_header_values_with_cr_lf_or_nul_are_refused_so_serialization_cannot_inject_lines(value):
    headers = Headers()
    with pytest.raises(ValueError):
        headers.add("Subject", value)
    with pytest.raises(ValueError):
        headers.set("Subject", value)
    with pytest.raises(ValueError):
        Headers([("Subject", value)])


def test_rfc3261_18_2_1_replace_first_rewrites_only_the_top_value_in_place():
    from sipim.sip.headers import Headers

    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
                       ("To", "<sip:bob@x>"), ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3")])
    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"  # builds the index
    assert headers.replace_first("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.1")
    assert headers.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.1",
                                      "SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c;branch=z9hG4bK3"]
    assert [name for name, _ in headers] == ["Via", "To", "Via"]  # position kept
    assert headers.replace_first("To", "<sip:bob@x>;tag=1")
    assert headers.get("To") == "<sip:bob@x>;tag=1"
    assert not headers.replace_first("Route", "<sip:p>")
    with pytest.raises(ValueError):
        headers.replace_first("To", "x\r\nInjected: 1")

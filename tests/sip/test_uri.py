"""URI parsing, serialization and comparison: RFC 3261 §19.1, RFC 3966."""

import pytest

from sipim.sip import AbsoluteURI, NameAddr, SIPParseError, SipURI, TelURI, parse_name_addr, parse_uri

# --- RFC 3261 §19.1.1 / §19.1.3 syntax ------------------------------------------


def test_rfc3261_19_1_3_full_sip_uri_components():
    uri = parse_uri("sip:alice:secretword@atlanta.com:5061;transport=TCP;lr?subject=project%20x&priority=urgent")
    assert isinstance(uri, SipURI)
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secretword"
    assert uri.host == "atlanta.com"
    assert uri.port == 5061
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.headers == {"subject": "project x", "priority": "urgent"}


def test_rfc3261_19_1_3_sips_scheme_and_no_user():
    uri = parse_uri("SIPS:Example.COM")
    assert isinstance(uri, SipURI)
    assert uri.scheme == "sips"
    assert uri.user is None
    assert uri.host == "Example.COM"


def test_rfc3261_19_1_3_telephone_subscriber_user_with_visual_separators():
    uri = parse_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert uri.user == "+1-212-555-1212"
    assert uri.password == "1234"
    assert uri.params["user"] == "phone"


def test_rfc3261_25_1_ipv6_reference_host_with_port():
    uri = parse_uri("sip:[2001:db8::10]:5070;transport=udp")
    assert uri.host == "[2001:db8::10]"
    assert uri.port == 5070
    assert uri.host_port == "[2001:db8::10]:5070"


def test_rfc3261_25_1_ipv6_with_embedded_ipv4():
    uri = parse_uri("sip:user@[::ffff:192.0.2.1]")
    assert uri.host == "[::ffff:192.0.2.1]"
    assert uri.port is None


def test_rfc3261_25_1_user_unreserved_characters_including_semicolon_and_question_mark():
    # RFC 4475 §3.1.1.11 style: ';' and '?' are legal in the user part
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == {}


def test_rfc3261_19_1_2_escaped_characters_are_decoded():
    uri = parse_uri("sip:%61lice@atlanta.com;maddr=239.255.255.1;ttl=15")
    assert uri.user == "alice"
    assert uri.params == {"maddr": "239.255.255.1", "ttl": "15"}


def test_rfc4475_escaped_nul_in_user_part_is_accepted():
    uri = parse_uri("sip:null-%00-null@example.com")
    assert uri.user == "null-\x00-null"
    assert parse_uri(str(uri.with_params())) == uri  # re-escaped on output
    assert "%00" in str(uri.with_params())


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:port",
        "sip:alice@example.com:65536",
        "sip:alice@[::1",
        "sip:alice@[zz::1]",
        "sip:al<ice@example.com",
        "sip:alice@example.com;=x",
        "sip:%zzalice@example.com",
        "sip:alice@-example.com",
        "sip:alice@example..com",
        "nocolon",
        ":nothing",
        "1sip:alice@example.com",
        "sip:alice@example.com?novalue",
    ],
)
def test_rfc3261_25_1_malformed_uris_are_rejected_with_sip_parse_error(text):
    with pytest.raises(SIPParseError):
        parse_uri(text)


def test_other_schemes_are_kept_as_absolute_uri():
    uri = parse_uri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    assert isinstance(uri, AbsoluteURI)
    assert uri.scheme == "urn"
    assert str(uri) == "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    assert parse_uri("IM:bob@example.com") == AbsoluteURI("im", "bob@example.com")


# --- serialization ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?h=v",
        "sip:%61lice@Atlanta.COM;maddr=x",
        "tel:+1-201-555-0123;ext=1234",
    ],
)
def test_parsed_uri_serializes_exactly_as_received(text):
    assert str(parse_uri(text)) == text


def test_constructed_sip_uri_is_serialized_with_minimal_escaping():
    uri = SipURI("sip", "example.com", user="a b@c", port=5070, params={"lr": None, "x": "y z"}, headers={"Subject": "hi there"})
    text = str(uri)
    assert text == "sip:a%20b%40c@example.com:5070;lr;x=y%20z?Subject=hi%20there"
    assert parse_uri(text) == uri


def test_modified_uri_is_reserialized_from_components():
    uri = parse_uri("sip:%61lice@atlanta.com")
    assert str(uri.with_params(lr=None)) == "sip:alice@atlanta.com;lr"
    assert str(uri.with_params(lr=None).without_params("lr")) == "sip:alice@atlanta.com"


# --- RFC 3261 §19.1.4 comparison -------------------------------------------------


@pytest.mark.parametrize(
    "a, b",
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ],
)
def test_rfc3261_19_1_4_equivalent_uris(a, b):
    assert parse_uri(a) == parse_uri(b)
    assert hash(parse_uri(a)) == hash(parse_uri(b))


@pytest.mark.parametrize(
    "a, b",
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user case
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # default port explicit
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # transport in one only
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # header only in one
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # name vs address
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),  # scheme
        ("sip:alice:pw1@atlanta.com", "sip:alice:pw2@atlanta.com"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),  # both present
        ("sip:carol@chicago.com;user=phone", "sip:carol@chicago.com"),  # user param in one
        ("sip:carol@chicago.com;maddr=1.2.3.4", "sip:carol@chicago.com"),
        ("sip:carol@chicago.com;ttl=1", "sip:carol@chicago.com"),
        ("sip:carol@chicago.com;method=INVITE", "sip:carol@chicago.com"),
    ],
)
def test_rfc3261_19_1_4_non_equivalent_uris(a, b):
    assert parse_uri(a) != parse_uri(b)


def test_rfc3261_19_1_4_uris_usable_as_dict_keys():
    table = {parse_uri("sip:alice@atlanta.com"): 1}
    assert table[parse_uri("sip:alice@ATLANTA.com;newparam=1")] == 1


def test_aor_is_scheme_user_lowercase_host_without_params_or_default_port():
    assert parse_uri("sip:Alice@Atlanta.COM:5060;transport=tcp?x=y").aor == "sip:Alice@atlanta.com"
    assert parse_uri("sips:bob@biloxi.com:5061").aor == "sips:bob@biloxi.com"
    assert parse_uri("sip:bob@biloxi.com:5070").aor == "sip:bob@biloxi.com:5070"
    assert parse_uri("sip:%62ob@biloxi.com").aor == "sip:bob@biloxi.com"
    assert parse_uri("sip:biloxi.com").aor == "sip:biloxi.com"


# --- RFC 3966 tel ----------------------------------------------------------------


def test_rfc3966_global_number_with_parameters():
    uri = parse_uri("tel:+1-201-555-0123;ext=1234;isub=5")
    assert isinstance(uri, TelURI)
    assert uri.is_global
    assert uri.digits == "+12015550123"
    assert uri.params == {"ext": "1234", "isub": "5"}


def test_rfc3966_5_1_5_local_number_requires_phone_context():
    uri = parse_uri("tel:7042;phone-context=example.com")
    assert not uri.is_global
    assert uri.phone_context == "example.com"
    with pytest.raises(SIPParseError):
        parse_uri("tel:7042")


@pytest.mark.parametrize("text", ["tel:", "tel:+", "tel:+1-x-2", "tel:+--", "tel:12;phone-context=", "tel:+1;=x"])
def test_rfc3966_malformed_tel_uris_are_rejected(text):
    with pytest.raises(SIPParseError):
        parse_uri(text)


@pytest.mark.parametrize(
    "a, b",
    [
        ("tel:+1-201-555-0123", "tel:+1(201)555.0123"),
        ("tel:7042;phone-context=EXAMPLE.com", "tel:7042;phone-context=example.com"),
        ("tel:+1-201-555-0123;ext=1-2;isub=x", "tel:+12015550123;isub=X;ext=12"),
        ("tel:863-1234;phone-context=+1-914-555", "tel:8631234;phone-context=+1914555"),
        ("tel:AB12;phone-context=example.com", "tel:ab12;phone-context=example.com"),
    ],
)
def test_rfc3966_4_equivalent_tel_uris(a, b):
    assert parse_uri(a) == parse_uri(b)
    assert hash(parse_uri(a)) == hash(parse_uri(b))


@pytest.mark.parametrize(
    "a, b",
    [
        ("tel:+12015550123", "tel:12015550123;phone-context=example.com"),  # global vs local
        ("tel:+12015550123", "tel:+12015550123;ext=1"),  # parameter in one only
        ("tel:+12015550123", "tel:+12015550124"),
    ],
)
def test_rfc3966_4_non_equivalent_tel_uris(a, b):
    assert parse_uri(a) != parse_uri(b)


# --- name-addr / addr-spec (RFC 3261 §20.10, §25.1) -----------------------------


def test_rfc3261_20_10_name_addr_with_quoted_display_name_and_params():
    value = parse_name_addr('"Mr. Watson" <sip:watson@worcester.bell-telephone.com>;q=0.7; expires=3600')
    assert value.display_name == "Mr. Watson"
    assert value.uri == parse_uri("sip:watson@worcester.bell-telephone.com")
    assert value.params == {"q": "0.7", "expires": "3600"}
    assert value.q == 0.7
    assert value.expires == 3600


def test_rfc3261_25_1_quoted_display_name_with_escaped_quote_and_backslash():
    value = parse_name_addr(r'"Bob \"the\" \\ Builder" <sip:bob@biloxi.com>;tag=a48s')
    assert value.display_name == 'Bob "the" \\ Builder'
    assert value.tag == "a48s"
    assert parse_name_addr(str(value)) == value


def test_rfc3261_25_1_token_display_name_and_unusual_whitespace():
    value = parse_name_addr("  Bob   Smith\t<sip:bob@biloxi.com> ;tag=1 ")
    assert value.display_name == "Bob Smith"
    assert value.tag == "1"


def test_rfc3261_20_10_addr_spec_parameters_belong_to_the_header_not_the_uri():
    value = parse_name_addr("sip:bob@biloxi.com;tag=1928301774;expires=60")
    assert value.uri == parse_uri("sip:bob@biloxi.com")
    assert value.uri.params == {}
    assert value.params == {"tag": "1928301774", "expires": "60"}


def test_rfc3261_20_10_name_addr_uri_parameters_stay_in_the_uri():
    value = parse_name_addr("<sip:bob@biloxi.com;transport=tcp>;tag=x")
    assert value.uri.params == {"transport": "tcp"}
    assert value.params == {"tag": "x"}
    assert value.display_name is None


def test_rfc5626_instance_id_is_kept_quoted_verbatim():
    value = parse_name_addr('<sip:bob@192.0.2.4>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1')
    assert value.params["+sip.instance"] == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    assert value.params["reg-id"] == "1"


def test_name_addr_with_tel_and_empty_display_name():
    value = parse_name_addr('"" <tel:+1-555-123>')
    assert value.display_name == ""
    assert isinstance(value.uri, TelURI)


def test_name_addr_serialization_round_trips():
    value = NameAddr(parse_uri("sip:a@b;lr"), 'Jo "J"', {"tag": "t1", "flag": None})
    assert str(value) == '"Jo \\"J\\"" <sip:a@b;lr>;tag=t1;flag'
    assert parse_name_addr(str(value)) == value
    assert value.with_tag("t2").tag == "t2"


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        '"x" sip:a@b',
        "<sip:a@b> junk",
        "bad\"name <sip:a@b>",
        "<sip:a@b>;=1",
        "",
        "<>",
    ],
)
def test_malformed_name_addr_raises_sip_parse_error(text):
    with pytest.raises(SIPParseError):
        parse_name_addr(text)


def test_sip_uri_built_in_code_is_normalised_like_a_parsed_one():
    built = SipURI("SIP", "Example.com", user="bob", params={"Transport": "TCP"})
    assert built.scheme == "sip"
    assert built.params == {"transport": "TCP"}
    assert built == parse_uri("sip:bob@example.com;transport=tcp")


def test_rfc3261_19_1_4_ipv6_hosts_compare_as_addresses():
    assert parse_uri("sip:a@[2001:DB8:0::1]") == parse_uri("sip:a@[2001:db8::1]")
    assert hash(parse_uri("sip:a@[2001:DB8:0::1]")) == hash(parse_uri("sip:a@[2001:db8::1]"))
    assert parse_uri("sip:a@[2001:db8::1]") != parse_uri("sip:a@[2001:db8::2]")


def test_parsed_uris_are_shared_by_text_and_the_cache_is_bounded():
    from sipim.sip import uri as uri_module

    first = parse_uri("sip:carol@cache.example;transport=tcp")
    assert parse_uri("sip:carol@cache.example;transport=tcp") is first
    assert parse_name_addr("<sip:carol@cache.example;transport=tcp>;tag=1").uri is first
    # a URI the full parser handled is shared too, and equal to a fresh parse
    escaped = parse_uri("sip:%61lice@cache.example")
    assert parse_uri("sip:%61lice@cache.example") is escaped
    assert escaped == uri_module._parse_uri("sip:%61lice@cache.example") and escaped.user == "alice"
    # long texts are not kept; the table never grows past its limit
    long_text = "sip:" + "a" * 300 + "@cache.example"
    assert parse_uri(long_text) is not parse_uri(long_text)
    for number in range(uri_module._URI_CACHE_LIMIT + 10):
        parse_uri(f"sip:user{number}@cache.example")
    assert len(uri_module._URI_CACHE) <= uri_module._URI_CACHE_LIMIT
    # errors are not cached: the same bad text fails every time
    for _ in range(2):
        with pytest.raises(SIPParseError):
            parse_uri("sip:bad host@cache.example")

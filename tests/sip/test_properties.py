"""Property-based tests (hypothesis) for the SIP message layer.

1. generated valid messages round-trip: parse(serialize(m)) == m, and the
   parsed fields are the generated ones;
2. arbitrary (and mutated valid) bytes make parse_message / StreamFramer raise
   SIPParseError and nothing else;
3. a stream of several messages split at random points frames to the same
   messages.
"""

import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipim.sip import (
    KeepAlive,
    NameAddr,
    Request,
    Response,
    SIPParseError,
    StreamFramer,
    Via,
    parse_message,
    parse_name_addr,
    parse_uri,
)
from sipim.sip.grammar import TOKEN_CHARS, quote

# SIPIM_FUZZ_SCALE=50 pytest tests/sip/test_properties.py  -> a long fuzzing run
SCALE = int(os.environ.get("SIPIM_FUZZ_SCALE", "1"))
SETTINGS = settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(SETTINGS, max_examples=1000 * SCALE)
EXPENSIVE = settings(SETTINGS, max_examples=40 * SCALE)
# fast path vs full parser on generated near-valid text
FAST_PATH = settings(SETTINGS, max_examples=400 * SCALE)

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
labels = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
domain_hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4_hosts = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6_hosts = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
    lambda groups: "[" + ":".join(f"{g:x}" for g in groups) + "]"
)
hosts = st.one_of(domain_hosts, ipv4_hosts, ipv6_hosts)
ports = st.none() | st.integers(1, 65535)
# user parts: unreserved plus characters that need escaping
users = st.text(alphabet=string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/ %@:é", min_size=1, max_size=12)
param_values = st.none() | st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)
param_names = st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=8)


@st.composite
def sip_uris(draw, with_headers=True):
    from sipim.sip import SipURI

    return SipURI(
        draw(st.sampled_from(["sip", "sips"])),
        draw(hosts),
        user=draw(st.none() | users),
        port=draw(ports),
        params=draw(st.dictionaries(param_names, param_values, max_size=3)),
        headers=draw(st.dictionaries(tokens.filter(lambda t: "%" not in t), st.text(alphabet=string.ascii_letters + " <>@", max_size=6), max_size=2))
        if with_headers
        else {},
    )


display_names = st.none() | st.text(alphabet=string.ascii_letters + string.digits + ' "\\,;<>@é', max_size=12)
header_params = st.dictionaries(
    param_names.filter(lambda n: n != "tag"),
    st.none() | tokens | st.text(alphabet=string.ascii_letters + " ;,<>:", max_size=8).map(quote),
    max_size=3,
)


@st.composite
def name_addrs(draw, with_tag=True):
    params = draw(header_params)
    if with_tag and draw(st.booleans()):
        params = {"tag": draw(tokens), **params}
    uri = draw(sip_uris()).without_params()  # fresh object: serialized from components
    return NameAddr(uri, draw(display_names), params)


@st.composite
def vias(draw):
    params = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(1, 65535).map(str))
    if draw(st.booleans()):
        params["received"] = draw(ipv4_hosts)
    return Via(draw(st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS"])), draw(hosts), draw(ports), params)


methods = st.sampled_from(["INVITE", "REGISTER", "MESSAGE", "OPTIONS", "BYE", "SUBSCRIBE", "NOTIFY"]) | tokens
bodies = st.binary(max_size=200)
call_ids = st.text(alphabet=string.ascii_letters + string.digits + "-.!%*_+`'~()<>:\\\"/[]?{}@", min_size=1, max_size=20)


@st.composite
def requests(draw):
    method = draw(methods)
    headers = [("Via", str(via)) for via in draw(st.lists(vias(), min_size=1, max_size=3))]
    headers += [
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
        ("From", str(draw(name_addrs()))),
        ("To", str(draw(name_addrs()))),
        ("Call-ID", draw(call_ids)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
    ]
    headers += [("Contact", str(c)) for c in draw(st.lists(name_addrs(with_tag=False), max_size=2))]
    headers += draw(st.lists(st.tuples(st.sampled_from(["Subject", "X-Custom", "User-Agent"]), st.text(alphabet=string.printable.strip() + " é", max_size=20).map(str.strip)), max_size=3))
    return Request(method, draw(sip_uris(with_headers=False)), headers, draw(bodies))


@st.composite
def responses(draw):
    request = draw(requests())
    status = draw(st.integers(100, 699))
    headers = [(name, value) for name, value in request.headers if name in ("Via", "From", "To", "Call-ID", "CSeq")]
    reason = draw(st.text(alphabet=string.ascii_letters + " é", max_size=15).map(str.strip))
    return Response(status, reason, headers, draw(bodies))


messages = st.one_of(requests(), responses())


# --- 1. round trips ---------------------------------------------------------------------


@SETTINGS
@given(messages)
def test_property_generated_messages_round_trip(message):
    data = message.to_bytes()
    parsed = parse_message(data)
    assert parsed == message
    assert parsed.to_bytes() == data
    # and the typed views agree with what was generated
    assert parsed.vias == message.vias
    assert parsed.from_ == message.from_
    assert parsed.to == message.to
    assert parsed.cseq == message.cseq


@SETTINGS
@given(sip_uris())
def test_property_uri_round_trip_and_hash_consistency(uri):
    again = parse_uri(str(uri))
    assert again == uri
    assert hash(again) == hash(uri)
    assert str(parse_uri(str(again))) == str(again)


@SETTINGS
@given(name_addrs())
def test_property_name_addr_round_trip(value):
    assert parse_name_addr(str(value)) == value


@SETTINGS
@given(vias())
def test_property_via_round_trip(via):
    assert Via.parse(str(via)) == via


# --- 2. hostile input raises SIPParseError only ------------------------------------------


_INTERESTING = [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b'"', b"\\", b"<", b">", b"[", b"]", b"@",
                b"%", b"=", b"/", b"\x00", b"\xff", b"\xc3", b"SIP/2.0", b"Content-Length: 99999999999", b"l: -1"]


_HEADER_STARTS = [b"Via: SIP/2.0/UDP h;branch=z9hG4bK1", b"f: <sip:a@b>;tag=1", b"t: sip:c@d", b"i: x", b"CSeq: 1 INVITE",
                  b"m: *", b"Contact: ", b"Expires: ", b"Max-Forwards: ", b"l: 4", b"Content-Length: "]


def _only_parse_errors(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SIPParseError:
        pass
    else:
        # whatever parsed must serialize and its accessors must not blow up
        message.to_bytes()
        for accessor in ("vias", "contacts", "expires", "max_forwards"):
            try:
                getattr(message, accessor)
            except SIPParseError:
                pass
    framer = StreamFramer()
    try:
        for index in range(0, len(data), 7):
            framer.feed(data[index : index + 7])
    except SIPParseError:
        pass


@CHEAP
@given(st.binary(max_size=400))
def test_property_arbitrary_bytes_raise_only_sip_parse_error(data):
    _only_parse_errors(data)


@CHEAP
@given(
    st.sampled_from([b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"\r\n\r\n"]),
    st.lists(st.sampled_from(_INTERESTING) | st.binary(max_size=5) | st.sampled_from(_HEADER_STARTS), max_size=40),
)
def test_property_arbitrary_header_soup_after_a_valid_start_line_raises_only_sip_parse_error(start, pieces):
    _only_parse_errors(start + b"".join(pieces) + b"\r\n\r\nbody")


@SETTINGS
@given(messages, st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=0, max_size=3)), min_size=1, max_size=6))
def test_property_mutated_valid_messages_raise_only_sip_parse_error(message, edits):
    data = bytearray(message.to_bytes())
    for position, replacement in edits:
        position %= len(data) + 1
        data[position : position + len(replacement) or position + 1] = replacement
    _only_parse_errors(bytes(data))


@SETTINGS
@given(messages, st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(_INTERESTING)), min_size=1, max_size=6))
def test_property_grammar_characters_inserted_anywhere_raise_only_sip_parse_error(message, inserts):
    data = bytearray(message.to_bytes())
    for position, fragment in inserts:
        position %= len(data) + 1
        data[position:position] = fragment
    _only_parse_errors(bytes(data))


# --- 3. stream framing independent of segmentation ------------------------------------------


@EXPENSIVE
@given(
    st.lists(st.one_of(messages, st.just("ping")), min_size=1, max_size=4),
    st.lists(st.integers(0, 5000), max_size=12),
)
def test_property_stream_split_at_random_points_yields_the_same_messages(items, cuts):
    stream = b"".join(b"\r\n\r\n" if item == "ping" else item.to_bytes() for item in items)
    expected = [KeepAlive() if item == "ping" else item for item in items]
    framer = StreamFramer()
    out = []
    previous = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]:
        out += framer.feed(stream[previous:cut])
        previous = cut
    assert out == expected
    assert framer.buffered == 0



# --- the Headers look-up index agrees with a plain scan of the lines ---------------

_HEADER_NAMES = ["Via", "v", "VIA", "Route", "route", "Contact", "m", "To", "t", "Call-ID", "i", "X-Custom", "x-custom"]
_HEADER_VALUES = st.sampled_from(["", ",", "a", "a, b", "<sip:x@y;a=b,c>, c", '"q, r" <sip:z>', "SIP/2.0/UDP h"])
_header_operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(_HEADER_NAMES), _HEADER_VALUES, st.booleans()),
        st.tuples(st.just("set_all"), st.sampled_from(_HEADER_NAMES), st.lists(_HEADER_VALUES, max_size=3)),
        st.tuples(st.just("remove"), st.sampled_from(_HEADER_NAMES)),
        st.tuples(st.just("remove_first"), st.sampled_from(_HEADER_NAMES)),
        st.tuples(st.just("edit_items"), st.sampled_from(_HEADER_NAMES), _HEADER_VALUES),
    ),
    max_size=12,
)


def _scanned(headers, name):
    """Reference look-ups by scanning the lines (RFC 3261 §7.3.1): raw values,
    comma-split values, first value."""
    from sipim.sip.grammar import split_list
    from sipim.sip.headers import LIST_HEADERS, header_key

    key = header_key(name)
    raw = [value for item_key, _, value in headers._items if item_key == key]
    if key not in LIST_HEADERS:
        return raw, raw, raw[0] if raw else None
    split = [part for value in raw for part in split_list(value)]
    first = raw[0] if raw else None
    if first is not None and "," in first:  # only a combined line is split
        first = (split_list(first) or [None])[0]
    return raw, split, first


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), _HEADER_VALUES), max_size=8), _header_operations)
def test_property_header_index_matches_a_scan_after_any_edits(initial, operations):
    from sipim.sip import Headers
    from sipim.sip.headers import header_key

    headers = Headers(initial)
    headers.get("Via")  # build the index, so the edits below must maintain it
    for operation in operations:
        kind = operation[0]
        if kind == "add":
            headers.add(operation[1], operation[2], first=operation[3])
        elif kind == "set_all":
            headers.set_all(operation[1], operation[2])
        elif kind == "remove":
            headers.remove(operation[1])
        elif kind == "remove_first":
            headers.remove_first(operation[1])
        else:  # code editing the lines directly must say so
            headers._items.append((header_key(operation[1]), operation[1], operation[2]))
            headers._changed()
        for name in _HEADER_NAMES:
            raw, split, first = _scanned(headers, name)
            assert headers.raw_values(name) == raw
            assert headers.get_all(name) == split
            assert headers.get(name) == first
            assert (name in headers) == bool(raw)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["Via", "v", "Route", "Contact", "m", "Subject", "X-A"]),
                          st.sampled_from(["a", "a, b", "<sip:x@y>, c"])), max_size=8))
def test_property_parser_builds_the_same_header_index_as_a_scan(lines):
    text = "".join(f"{name}: {value}\r\n" for name, value in lines)
    message = parse_message(
        f"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
        f"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n{text}\r\n".encode()
    )
    headers = message.headers
    assert headers._index is not None
    assert headers._index == type(headers)._from_triples(list(headers._items))._build_index()


# --- fast paths of parse_uri / parse_name_addr give what the full parsers give -----

# pieces of the §25.1 grammar, the characters that break it, and good and bad values
_URI_PIECES = st.sampled_from(
    ["sip:", "sips:", "SIP:", "tel:", "alice", "a", "@", ":", "5060", "99999", "65536", "0", "007", ";", "=",
     "transport=udp", "lr", "tag=x", "host.example", "127.0.0.1", "-", ".", "..", "[::1]", "?", "&", "%41", "%",
     " ", "\t", '"', "\\", "<", ">", ",", "é", "*", "(", "+", "_", "~", "!", "'", "UPPER", "x-"]
)


# (valid choices, invalid choices) per component of a URI and of a name-addr
_URI_PARTS = {
    "user": (["", "bob@", "a;b=c@", "a.b-c_d!~*'()@", "A=1@"], ["u:p@", "@", "a@b@", "%41@", "a b@", "é@", "a?b@"]),
    "host": (["h", "host.example", "h.", "1.2.3.4", "a-b.c"], [".h", "h..x", "-h", "h-", "[::1]", "", "h_x", "h!"]),
    "port": (["", ":5060", ":0", ":65535", ":007"], [":65536", ":", ":123456", ":000001", ":5x", ":-1", ":٣"]),
    "param": ([";lr", ";transport=UDP", ";Maddr=1.2.3.4", ";", ";a=", ";x:y=z:w", ";A!~"],
              [";=", ";a=b=c", ";a?b", ";%41", ";a b", ';a="b"', ";a@b"]),
}
_NAME_ADDR_PARTS = {
    "display": (["", '"Alice" ', '"Alice"', '"" ', '"a<b>, c" ', '"\t x" '],
                ['"A \\"B\\"" ', "Alice ", " ", '"unterminated ', "\t", '"a\\\\" ']),
    "param": ([";tag=abc", ";expires=3600", ";q=0.5", ";", ";Tag=X", ";a=b=c", ";+sip.instance", ";a="],
              [";=", ";=x", " ;a", ";a ", ';+sip.instance="<urn:x>"', ",", ";é", "x", ";a;=b"]),
}


@st.composite
def _near_valid(draw, parts: dict, broken: str | None, name: str, count=None):
    """One component: valid, or from the invalid choices when it is the broken one."""
    valid, invalid = parts[name]
    if count is None:
        return draw(st.sampled_from(invalid if broken == name else valid))
    pieces = draw(st.lists(st.sampled_from(valid), max_size=count))
    if broken == name:
        pieces.insert(draw(st.integers(0, len(pieces))), draw(st.sampled_from(invalid)))
    return "".join(pieces)


@st.composite
def _near_valid_uris(draw, may_break=True):
    """A simple SIP URI with at most one component broken: text on either side
    of the fast path's boundary."""
    broken = draw(st.sampled_from([None, "user", "host", "port", "param"])) if may_break else None
    user, host, port = (draw(_near_valid(_URI_PARTS, broken, name)) for name in ("user", "host", "port"))
    return f"sip:{user}{host}{port}{draw(_near_valid(_URI_PARTS, broken, 'param', count=3))}"


@st.composite
def _near_valid_name_addrs(draw):
    broken = draw(st.sampled_from([None, "display", "uri", "param"]))
    display = draw(_near_valid(_NAME_ADDR_PARTS, broken, "display"))
    uri = draw(_near_valid_uris(may_break=broken == "uri"))
    return f"{display}<{uri}>{draw(_near_valid(_NAME_ADDR_PARTS, broken, 'param', count=3))}"


_uri_texts = st.one_of(
    _near_valid_uris(),
    st.lists(_URI_PIECES, max_size=12).map(lambda pieces: "sip:" + "".join(pieces)),
    st.lists(_URI_PIECES, max_size=12).map("".join),
)


def _fields(value):
    """Every attribute of a sip value object (slotted, or a mypyc native class:
    no __dict__), as its pickling recipe lists them."""
    return value.__reduce__()[1]


def _uri_fields(uri):
    return (type(uri), _fields(uri), list(getattr(uri, "params", {}).items()))


@FAST_PATH
@given(_uri_texts)
def test_property_sip_uri_fast_path_agrees_with_the_full_parser(text):
    from sipim.sip.uri import _parse_simple_sip_uri, _parse_uri

    fast = _parse_simple_sip_uri(text)
    if fast is not None:  # None: the full parser decides, so nothing to compare
        assert _uri_fields(fast) == _uri_fields(_parse_uri(text))
        assert str(fast) == text


_name_addr_texts = st.one_of(_near_valid_name_addrs(), st.lists(_URI_PIECES, max_size=14).map("".join))


@FAST_PATH
@given(_name_addr_texts)
def test_property_name_addr_fast_path_agrees_with_the_full_parser(text):
    from sipim.sip.uri import _parse_name_addr, _parse_simple_name_addr

    fast = _parse_simple_name_addr(text)
    if fast is not None:
        full = _parse_name_addr(text)
        assert (fast.display_name, list(fast.params.items())) == (full.display_name, list(full.params.items()))
        assert _uri_fields(fast.uri) == _uri_fields(full.uri)


def test_common_uri_and_name_addr_shapes_take_the_fast_path():
    from sipim.sip.uri import _parse_simple_name_addr, _parse_simple_sip_uri

    assert _parse_simple_sip_uri("sip:bench.example") is not None
    assert _parse_simple_sip_uri("sip:user7@127.0.0.1:5070;transport=UDP") is not None
    assert _parse_simple_name_addr("<sip:user7@bench.example>;tag=abc2") is not None
    assert _parse_simple_name_addr('"User Zero" <sip:user0@bench.example>;tag=3f2a1b') is not None
    assert _parse_simple_name_addr("<sip:user7@127.0.0.1:5070;transport=UDP>;expires=3600") is not None


_VIA_PARTS = {
    "protocol": (["SIP/2.0/"], ["sip/2.0/", "SIP/2.0 /", "SIP/3.0/", "SIP / 2.0 / "]),
    "transport": (["UDP ", "TCP ", "tls ", "WSS ", "SCTP "], ["UDP  ", "UDP\t", "udp\t ", "XYZ ", "U DP ", "UDP"]),
    "host": (["h", "host.example", "127.0.0.1", "a-b.c", "h."], ["[::1]", "-h", "h..x", "", "h_x", " h", "h "]),
    "port": (["", ":5060", ":0", ":65535"], [":65536", ":", ":000001", ":5x", " :5060", ": 5060", ":٣"]),
    "param": ([";branch=z9hG4bK776asdhds", ";rport", ";received=192.0.2.1", ";rport=5070", ";", ";TTL=1", ";a=b=c"],
              [";=", ";=x", " ;a", ";a ", ';a="q"', ";a b", ";é", ";received=::1", ";a:b"]),
}


@st.composite
def _near_valid_vias(draw):
    broken = draw(st.sampled_from([None, *_VIA_PARTS]))
    pieces = [draw(_near_valid(_VIA_PARTS, broken, name)) for name in ("protocol", "transport", "host", "port")]
    return "".join(pieces) + draw(_near_valid(_VIA_PARTS, broken, "param", count=3))


@FAST_PATH
@given(st.one_of(_near_valid_vias(), st.lists(_URI_PIECES, max_size=10).map(lambda p: "SIP/2.0/UDP " + "".join(p))))
def test_property_via_fast_path_agrees_with_the_full_parser(text):
    from sipim.sip.headers import _parse_simple_via

    fast = _parse_simple_via(text)
    if fast is not None:
        full = Via._parse(text)
        assert (_fields(fast), list(fast.params.items())) == (_fields(full), list(full.params.items()))


@FAST_PATH
@given(st.lists(_near_valid(_NAME_ADDR_PARTS, None, "param") | st.sampled_from(_NAME_ADDR_PARTS["param"][1]),
                max_size=5).map("".join))
def test_property_parameter_fast_path_agrees_with_parse_params(text):
    from sipim.sip.grammar import parse_params, parse_simple_params

    fast = parse_simple_params(text)
    if fast is not None:
        assert list(fast.items()) == list(parse_params(text).items())


def test_common_via_and_parameter_shapes_take_the_fast_path():
    from sipim.sip.grammar import parse_simple_params
    from sipim.sip.headers import _parse_simple_via

    assert _parse_simple_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK0123456789ab;rport") is not None
    assert _parse_simple_via("SIP/2.0/TLS client.example.com;branch=z9hG4bK0;received=192.0.2.4") is not None
    assert parse_simple_params(";tag=abc;expires=3600") == {"tag": "abc", "expires": "3600"}

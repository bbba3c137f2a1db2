import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipim.sip.clock import FakeClock
from sipim.sip.digest import (
    DigestCredentials,
    DigestError,
    DigestResult,
    DigestServer,
    build_authorization,
    digest_response,
    ha1,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "sip.example.org"

# RFC 7616 §3.9.1
MUFASA_REALM = "http-auth@example.org"
MUFASA_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
MUFASA_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
MUFASA_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
MUFASA_MD5_AUTHORIZATION = """Digest username="Mufasa",
    realm="http-auth@example.org",
    uri="/dir/index.html",
    algorithm=MD5,
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    nc=00000001,
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    qop=auth,
    response="8ca523f5e9506fed4657c9700eebdbec",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def server(clock: FakeClock) -> DigestServer:
    return DigestServer(REALM, SECRET, clock, nonce_lifetime=300, max_tracked_nonces=1000)


def answer(server: DigestServer, *, password="secret", algorithm="SHA-256", nc=1,
           method="REGISTER", uri="sip:sip.example.org", username="alice",
           challenge_index=None) -> DigestCredentials:
    values = server.challenges((algorithm,))
    challenge = parse_challenge(values[0] if challenge_index is None else values[challenge_index])
    value = build_authorization(challenge, method, uri, username,
                                ha1(username, challenge.realm, password, algorithm),
                                cnonce="abcdef", nc=nc)
    return parse_credentials(value)


# --- known answers ----------------------------------------------------------

@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_3_9_1_known_answer_for_mufasa(algorithm, expected):
    secret_ha1 = ha1("Mufasa", MUFASA_REALM, "Circle of Life", algorithm)
    response = digest_response(secret_ha1, MUFASA_NONCE, "GET", "/dir/index.html",
                               algorithm=algorithm, qop="auth", nc="00000001",
                               cnonce=MUFASA_CNONCE)
    assert response == expected


def test_rfc7616_3_9_1_authorization_header_parses_to_its_fields():
    credentials = parse_credentials(MUFASA_MD5_AUTHORIZATION)
    assert credentials == DigestCredentials(
        username="Mufasa", realm=MUFASA_REALM, nonce=MUFASA_NONCE, uri="/dir/index.html",
        response="8ca523f5e9506fed4657c9700eebdbec", algorithm="MD5", qop="auth",
        nc="00000001", nc_value=1, cnonce=MUFASA_CNONCE, opaque=MUFASA_OPAQUE)
    assert digest_response(ha1("Mufasa", MUFASA_REALM, "Circle of Life"), credentials.nonce,
                           "GET", credentials.uri, qop=credentials.qop, nc=credentials.nc,
                           cnonce=credentials.cnonce) == credentials.response


def test_rfc2069_response_without_qop_is_h_of_ha1_nonce_ha2():
    # RFC 2617 §3.5 example values (same Mufasa, RFC 2069 form has no nc/cnonce).
    import hashlib
    secret_ha1 = ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    expected = hashlib.md5(f"{secret_ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}".encode()).hexdigest()
    assert digest_response(secret_ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET",
                           "/dir/index.html") == expected


# --- challenges (RFC 8760 §2.3) --------------------------------------------

def test_rfc8760_2_3_one_challenge_per_algorithm_in_preference_order_same_nonce(server):
    values = server.challenges(("SHA-256", "MD5"))
    assert len(values) == 2
    first, second = (parse_challenge(value) for value in values)
    assert (first.algorithm, second.algorithm) == ("SHA-256", "MD5")
    assert first.nonce == second.nonce
    assert first.realm == second.realm == REALM
    assert first.qop_options == ("auth",)
    assert not first.stale
    assert values[0].startswith('Digest realm="sip.example.org", nonce="')


def test_rfc7616_3_3_stale_challenge_carries_stale_true_and_opaque(server):
    value = server.challenges(("MD5",), stale=True, opaque="xyz")[0]
    challenge = parse_challenge(value)
    assert challenge.stale and challenge.opaque == "xyz"
    assert "stale=true" in value


def test_every_challenge_gets_a_fresh_nonce(server):
    nonces = {parse_challenge(server.challenges(("MD5",))[0]).nonce for _ in range(50)}
    assert len(nonces) == 50


def test_challenge_rejects_unknown_algorithm(server):
    with pytest.raises(ValueError):
        server.challenges(("SHA-1",))


# --- verification -----------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_rfc7616_3_4_correct_password_is_ok(server, algorithm):
    credentials = answer(server, algorithm=algorithm)
    assert credentials.algorithm == algorithm
    assert credentials.ha1_algorithm == algorithm.removesuffix("-sess")
    stored = ha1("alice", REALM, "secret", credentials.ha1_algorithm)
    result = server.verify(credentials, "REGISTER", stored)
    assert result is DigestResult.OK


def test_rfc8760_client_picks_any_offered_algorithm_and_server_verifies_with_that_hash(server):
    values = server.challenges(("SHA-256", "MD5"))
    md5_challenge = parse_challenge(values[1])
    value = build_authorization(md5_challenge, "REGISTER", "sip:sip.example.org", "alice",
                                ha1("alice", REALM, "secret", "MD5"), cnonce="c")
    credentials = parse_credentials(value)
    assert credentials.algorithm == "MD5"
    # The caller passes the HA1 stored for the credentials' algorithm.
    assert server.verify(credentials, "REGISTER", ha1("alice", REALM, "secret", "MD5")) is DigestResult.OK
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.BAD_RESPONSE


def test_wrong_password_is_bad_response(server):
    credentials = answer(server, password="guess")
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.BAD_RESPONSE


def test_response_is_bound_to_the_method(server):
    credentials = answer(server, method="REGISTER")
    assert server.verify(credentials, "INVITE",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.BAD_RESPONSE


def test_rfc8760_2_6_uri_of_credentials_is_used_not_the_request_uri(server):
    # sipp signs "sip:127.0.0.1:5060" while the Request-URI names the domain: accepted,
    # because verify() hashes credentials.uri.
    credentials = answer(server, uri="sip:127.0.0.1:5060")
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.OK


def test_credentials_for_another_realm_are_bad_realm(server, clock):
    other = DigestServer("other.example", SECRET, clock)
    credentials = answer(other)
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", "other.example", "secret", "SHA-256")) is DigestResult.BAD_REALM


def test_forged_nonce_is_bad_nonce(server, clock):
    forger = DigestServer(REALM, b"another secret of 32 bytes......", clock)
    credentials = answer(forger)
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.BAD_NONCE


@pytest.mark.parametrize("nonce", [
    "", "x", MUFASA_NONCE, "A" * 48, "!" * 48, "é" * 48,
])
def test_garbage_nonce_is_bad_nonce(server, nonce):
    secret_ha1 = ha1("alice", REALM, "secret")
    response = digest_response(secret_ha1, nonce, "REGISTER", "sip:a", qop="auth",
                               nc="00000001", cnonce="c")
    credentials = DigestCredentials("alice", REALM, nonce, "sip:a", response, "MD5",
                                    "auth", "00000001", 1, "c")
    assert server.verify(credentials, "REGISTER", secret_ha1) is DigestResult.BAD_NONCE


def test_tampered_timestamp_in_nonce_is_bad_nonce(server):
    credentials = answer(server, algorithm="MD5")
    raw = bytearray(base64.urlsafe_b64decode(credentials.nonce))
    raw[7] ^= 0x01  # move the issue time by a millisecond
    nonce = base64.urlsafe_b64encode(bytes(raw)).decode()
    secret_ha1 = ha1("alice", REALM, "secret")
    response = digest_response(secret_ha1, nonce, "REGISTER", credentials.uri, qop="auth",
                               nc="00000001", cnonce="c")
    forged = DigestCredentials("alice", REALM, nonce, credentials.uri, response, "MD5",
                               "auth", "00000001", 1, "c")
    assert server.verify(forged, "REGISTER", secret_ha1) is DigestResult.BAD_NONCE


def test_nonce_signed_by_same_secret_for_another_node_is_accepted(server, clock):
    # Several nodes sharing the secret accept each other's nonces (no lookup).
    other_node = DigestServer(REALM, SECRET, clock)
    credentials = answer(other_node)
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.OK


def test_rfc7616_3_3_expired_genuine_nonce_with_right_password_is_stale(server, clock):
    credentials = answer(server)
    clock.advance(301)
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.STALE


def test_rfc7616_3_3_expired_nonce_with_wrong_password_is_not_stale(server, clock):
    # stale=true tells the client to retry silently: only when it knows the password.
    credentials = answer(server, password="guess")
    clock.advance(301)
    assert server.verify(credentials, "REGISTER",
                         ha1("alice", REALM, "secret", "SHA-256")) is DigestResult.BAD_RESPONSE


def _fields(credentials: DigestCredentials) -> dict:
    from sipim.sip.digest import _CREDENTIAL_FIELDS

    return dict(zip(_CREDENTIAL_FIELDS, credentials.__reduce__()[1]))


def sign_again(credentials: DigestCredentials, password: str, nc: int,
               method="REGISTER") -> DigestCredentials:
    """Same nonce, another nonce-count (a client's next request)."""
    nc_text = f"{nc:08x}"
    response = digest_response(ha1(credentials.username, credentials.realm, password,
                                   credentials.algorithm),
                               credentials.nonce, method, credentials.uri,
                               algorithm=credentials.algorithm, qop="auth", nc=nc_text,
                               cnonce=credentials.cnonce)
    return DigestCredentials(**{**_fields(credentials), "nc": nc_text, "nc_value": nc,
                                "response": response})


def test_rfc7616_3_4_increasing_nonce_count_reuses_the_nonce(server):
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    first = answer(server)
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.OK
    for nc in (2, 3, 7):
        assert server.verify(sign_again(first, "secret", nc), "REGISTER",
                             secret_ha1) is DigestResult.OK


def test_rfc7616_5_3_replayed_nonce_count_is_replay(server):
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    first = answer(server)
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.OK
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.REPLAY
    assert server.verify(sign_again(first, "secret", 5), "REGISTER", secret_ha1) is DigestResult.OK
    assert server.verify(sign_again(first, "secret", 4), "REGISTER", secret_ha1) is DigestResult.REPLAY


def test_expired_tracked_nonce_is_stale_before_replay_check(server, clock):
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    first = answer(server)
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.OK
    clock.advance(301)
    assert server.verify(sign_again(first, "secret", 2), "REGISTER", secret_ha1) is DigestResult.STALE


def test_failed_verification_does_not_consume_a_nonce_count(server):
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    first = answer(server)
    assert server.verify(sign_again(first, "guess", 1), "REGISTER",
                         secret_ha1) is DigestResult.BAD_RESPONSE
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.OK


def test_nonce_count_table_is_bounded_and_eviction_cannot_reopen_a_replay(clock):
    server = DigestServer(REALM, SECRET, clock, max_tracked_nonces=3)
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    first = answer(server)
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.OK
    for _ in range(5):
        clock.advance(1)
        assert server.verify(answer(server), "REGISTER", secret_ha1) is DigestResult.OK
    assert server.tracked_nonces() == 3
    # `first` was evicted; replaying it must not be accepted.
    assert server.verify(first, "REGISTER", secret_ha1) is DigestResult.STALE
    # A fresh nonce still works.
    clock.advance(1)
    assert server.verify(answer(server), "REGISTER", secret_ha1) is DigestResult.OK


def test_expired_nonces_are_dropped_from_the_count_table(server, clock):
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    for _ in range(3):
        assert server.verify(answer(server), "REGISTER", secret_ha1) is DigestResult.OK
    clock.advance(400)
    for _ in range(3):
        assert server.verify(answer(server), "REGISTER", secret_ha1) is DigestResult.OK
    assert server.tracked_nonces() == 3


def test_rfc2069_credentials_without_qop_are_accepted(server):
    challenge = parse_challenge(server.challenges(("MD5",))[0])
    secret_ha1 = ha1("alice", REALM, "secret")
    response = digest_response(secret_ha1, challenge.nonce, "REGISTER", "sip:sip.example.org")
    credentials = parse_credentials(
        f'Digest username="alice", realm="{REALM}", nonce="{challenge.nonce}", '
        f'uri="sip:sip.example.org", response="{response}"')
    assert credentials.qop is None and credentials.algorithm == "MD5"
    assert server.verify(credentials, "REGISTER", secret_ha1) is DigestResult.OK


def test_rfc7616_3_4_3_auth_int_hashes_the_body(server):
    challenge = parse_challenge(server.challenges(("SHA-256",))[0])
    secret_ha1 = ha1("alice", REALM, "secret", "SHA-256")
    body = "héllo".encode()
    response = digest_response(secret_ha1, challenge.nonce, "MESSAGE", "sip:bob@x",
                               algorithm="SHA-256", qop="auth-int", nc="00000001",
                               cnonce="c", body=body)
    credentials = parse_credentials(
        f'Digest username="alice", realm="{REALM}", nonce="{challenge.nonce}", uri="sip:bob@x", '
        f'response="{response}", algorithm=SHA-256, qop=auth-int, nc=00000001, cnonce="c"')
    assert server.verify(credentials, "MESSAGE", secret_ha1, body=b"tampered") is DigestResult.BAD_RESPONSE
    assert server.verify(credentials, "MESSAGE", secret_ha1, body=body) is DigestResult.OK


# --- parsing ----------------------------------------------------------------

def test_parse_tolerates_case_whitespace_unquoted_values_and_empty_elements():
    credentials = parse_credentials(
        '  digest  UserName = alice ,REALM="sip.example.org",, nonce=abc,'
        '\turi="sip:x" , Response="ABCDEF0123456789ABCDEF0123456789", ALGORITHM=sha-256, '
        'QOP="auth", NC=1, cnonce=xyz, userhash=TRUE ,')
    assert credentials.username == "alice"
    assert credentials.realm == "sip.example.org"
    assert credentials.algorithm == "SHA-256"
    assert credentials.response == "abcdef0123456789abcdef0123456789"
    assert credentials.qop == "auth" and credentials.nc == "1" and credentials.nc_value == 1
    assert credentials.userhash is True


def test_parse_unescapes_quoted_pairs():
    credentials = parse_credentials(
        r'Digest username="al\"ice\\", realm="r", nonce="n", uri="u", response="00"')
    assert credentials.username == 'al"ice\\'


@pytest.mark.parametrize("value, message", [
    ('Basic dXNlcjpwYXNz', "not a Digest"),
    ('Digest realm="r", nonce="n", uri="u", response="00"', "Missing username"),
    ('Digest username="a", realm="r", nonce="n", uri="u"', "Missing response"),
    ('Digest username="a", username="b", realm="r", nonce="n", uri="u", response="00"', "Duplicate"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="zz"', "not hex"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="00", algorithm=SHA-1', "algorithm"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth', "nc and cnonce"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth, nc=123456789, cnonce=c', "nc"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=foo, nc=1, cnonce=c', "qop"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="00", algorithm=MD5-sess', "qop"),
    ('Digest username="unterminated, realm="r"', "Malformed"),
    ('Digest username', "Malformed"),
    ('', "not a Digest"),
])
def test_malformed_authorization_raises_digest_error_with_reason(value, message):
    with pytest.raises(DigestError, match=message):
        parse_credentials(value)


def test_oversized_authorization_is_rejected():
    with pytest.raises(DigestError, match="too long"):
        parse_credentials("Digest username=" + "a" * 10_000)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_parse_credentials_raises_only_digest_error_on_arbitrary_text(value):
    try:
        parse_credentials(value)
    except DigestError:
        pass


_param_names = st.sampled_from(["username", "realm", "nonce", "uri", "response", "algorithm",
                                "qop", "nc", "cnonce", "opaque", "userhash", "X"])
_param_values = st.one_of(st.text(max_size=20), st.from_regex(r'"[^"]*"', fullmatch=True))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_param_names, _param_values), max_size=12),
       st.sampled_from([", ", ",", " ,\r\n ", ",,"]))
def test_parse_credentials_raises_only_digest_error_on_digest_shaped_text(params, separator):
    value = "Digest " + separator.join(f"{name}={raw}" for name, raw in params)
    try:
        parse_credentials(value)
    except DigestError:
        pass


def test_parse_challenge_rejects_non_digest():
    with pytest.raises(DigestError):
        parse_challenge('Basic realm="x"')


def test_short_secret_is_refused(clock):
    with pytest.raises(ValueError):
        DigestServer(REALM, b"short", clock)


# --- fast paths agree with the reference code ----------------------------------

def _regex_auth_params(value):
    """The reference parser: _parse_auth_params with its fast path disabled."""
    from sipim.sip import digest

    scheme = digest._SCHEME.match(value)
    if scheme is None or scheme.group(1).lower() != "digest":
        raise DigestError("not a Digest value")
    if digest._PARAM_LIST.fullmatch(value, scheme.end()) is None:
        raise DigestError("Malformed")
    params = {}
    for name, quoted, token in digest._PARAM.findall(value, scheme.end()):
        if name.lower() in params:
            raise DigestError("Duplicate")
        params[name.lower()] = digest._UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else (quoted or token)
    return params


_fast_values = st.one_of(
    st.sampled_from(['"alice"', '"sip:bench.example"', "MD5", "SHA-256", "auth", "00000001", '""', '"a,b=c"',
                     '"a\\"b"', "", "a b", "é", '"', "x=y", "-", '"tab\there"', "md5 "]),
    st.text(max_size=6).map(lambda text: f'"{text}"'),
    st.text(max_size=6),
)
_fast_names = st.sampled_from(["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc",
                               "cnonce", "Opaque", "x-y", "", " realm", "é", "n1"])


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["Digest ", "digest ", "DIGEST ", "Digest  ", "DiGest ", "Basic ", "Digest"]),
       st.lists(st.tuples(_fast_names, _fast_values), max_size=6),
       st.sampled_from([", ", ",", " ,", ",  ", ",,"]),
       st.sampled_from(["", " ", ","]))
def test_property_auth_param_fast_path_agrees_with_the_regular_expressions(scheme, params, separator, tail):
    from sipim.sip.digest import _parse_simple_auth_params

    value = scheme + separator.join(f"{name}={raw}" for name, raw in params) + tail
    fast = _parse_simple_auth_params(value)
    if fast is not None:  # None: the regular expressions decide
        assert list(fast.items()) == list(_regex_auth_params(value).items())


def test_common_authorization_takes_the_fast_path():
    from sipim.sip.digest import _parse_simple_auth_params

    assert _parse_simple_auth_params(MUFASA_MD5_AUTHORIZATION) is None  # folded lines: the full parser
    value = ('Digest username="user7", realm="bench.example", nonce="MTcw", uri="sip:bench.example", '
             'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, cnonce="xyz"')
    assert _parse_simple_auth_params(value) == _regex_auth_params(value)


@pytest.mark.parametrize("secret", [SECRET, b"k" * 16, b"x" * 64, b"y" * 65, bytes(range(200))])
def test_nonce_mac_is_hmac_sha256(clock, secret):
    import hmac

    server = DigestServer(REALM, secret, clock)
    stamp = b"\x00\x01" * 10
    assert server._mac(stamp) == hmac.digest(secret, stamp + REALM.encode(), "sha256")[:16]
    nonce = server.new_nonce()
    raw = base64.urlsafe_b64decode(nonce)
    assert len(nonce) == 48 and raw[20:] == hmac.digest(secret, raw[:20] + REALM.encode(), "sha256")[:16]
    assert server.nonce_issued_at(nonce) == clock.now()
    assert server.nonce_issued_at(nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")) is None
    assert server.nonce_issued_at(nonce.replace(nonce[5], "+", 1)) in (None, clock.now())
    assert server.nonce_issued_at("é" * 48) is None and server.nonce_issued_at("=" * 48) is None


def test_server_exposes_parse_credentials(server):
    value = 'Digest username="a", realm="r", nonce="n", uri="sip:r", response="0a"'
    assert server.parse_credentials(value) == DigestServer.parse_credentials(value) == parse_credentials(value)

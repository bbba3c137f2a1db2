"""Client-side registration, keep-alive and flow-recovery state (sans-IO)."""

from __future__ import annotations

import pytest

from sipim.client.challenges import Credentials
from sipim.client.signalling import (
    KeepAlive,
    Registered,
    RegistrationFailed,
    Registration,
    RequestFactory,
    Resend,
    Unregistered,
    recovery_delay,
)
from sipim.sip.clock import FakeClock
from sipim.sip.digest import DigestResult, DigestServer, ha1, parse_credentials
from sipim.sip.message import Request, make_response

AOR = "sip:alice@example.test"
INSTANCE = "urn:uuid:00000000-0000-0000-0000-0000000000a1"
SECRET = b"0123456789abcdef0123456789abcdef"


def registration(expires: int = 600, password: str = "alice-secret") -> Registration:
    factory = RequestFactory(AOR)
    factory.local = ("192.0.2.10", 40000)
    return Registration(factory, registrar="sip:example.test", instance_id=INSTANCE,
                        credentials=Credentials("alice", password, "example.test"), expires=expires)


def digest_server() -> DigestServer:
    return DigestServer("example.test", SECRET, FakeClock(1000.0))


def challenge(request: Request, server: DigestServer, algorithms=("SHA-256", "MD5"), status: int = 401,
              stale: bool = False):
    response = make_response(request, status, "Unauthorized" if status == 401 else "Proxy Authentication Required")
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for value in server.challenges(algorithms, stale=stale):
        response.headers.add(name, value)
    return response


def test_rfc5626_4_2_1_register_carries_instance_reg_id_and_supported_outbound():
    request = registration().request()
    assert request.method == "REGISTER"
    assert str(request.uri) == "sip:example.test"
    contact = request.contacts[0]
    assert contact.params["+sip.instance"] == f'"<{INSTANCE}>"'
    assert contact.params["reg-id"] == "1"
    assert "outbound" in [tag.strip() for tag in request.headers.get("Supported").split(",")]
    assert request.expires == 600
    assert ";rport" in request.headers.get("Via")


def test_rfc8760_2_4_answers_the_topmost_supported_challenge_and_the_server_accepts_it():
    reg = registration()
    server = digest_server()
    action = reg.handle_response(challenge(reg.request(), server, ("SHA-256", "MD5")))
    assert isinstance(action, Resend)
    credentials = parse_credentials(action.request.headers.get("Authorization"))
    assert credentials.algorithm == "SHA-256"
    stored = ha1("alice", "example.test", "alice-secret", "SHA-256")
    assert server.verify(credentials, "REGISTER", stored) is DigestResult.OK


def test_md5_challenge_is_answered_with_md5():
    reg = registration()
    server = digest_server()
    action = reg.handle_response(challenge(reg.request(), server, ("MD5",)))
    credentials = parse_credentials(action.request.headers.get("Authorization"))
    assert credentials.algorithm == "MD5"
    assert server.verify(credentials, "REGISTER", ha1("alice", "example.test", "alice-secret")) is DigestResult.OK


def test_rfc3261_22_2_proxy_challenge_gets_proxy_authorization_and_same_call_id_next_cseq():
    reg = registration()
    first = reg.request()
    action = reg.handle_response(challenge(first, digest_server(), status=407))
    assert action.request.headers.get("Proxy-Authorization")
    assert action.request.call_id == first.call_id
    assert action.request.cseq.seq == first.cseq.seq + 1


def test_rfc3261_22_2_a_second_challenge_means_wrong_credentials():
    reg = registration(password="wrong")
    server = digest_server()
    retry = reg.handle_response(challenge(reg.request(), server)).request
    failed = reg.handle_response(challenge(retry, server))
    assert isinstance(failed, RegistrationFailed)
    assert failed.status == 403
    assert "wrong user name or password" in failed.reason


def test_rfc7616_3_3_stale_nonce_is_answered_again():
    reg = registration()
    server = digest_server()
    retry = reg.handle_response(challenge(reg.request(), server)).request
    again = reg.handle_response(challenge(retry, server, stale=True))
    assert isinstance(again, Resend)


def test_rfc3261_10_2_8_interval_too_brief_retries_with_min_expires():
    reg = registration(expires=30)
    response = make_response(reg.request(), 423, "Interval Too Brief")
    response.headers.add("Min-Expires", "60")
    action = reg.handle_response(response)
    assert isinstance(action, Resend)
    assert action.request.expires == 60


def test_granted_expiry_and_flow_timer_are_read_from_our_contact():
    reg = registration()
    request = reg.request()
    ok = make_response(request, 200, "OK")
    ok.headers.add("Contact", '<sip:alice@198.51.100.1:5060>;+sip.instance="<urn:uuid:other>";reg-id=1;expires=3600')
    ok.headers.add("Contact", reg.contact(expires=300) + ';pub-gruu="sip:alice@example.test;gr=x"')
    ok.headers.add("Flow-Timer", "120")
    action = reg.handle_response(ok)
    assert action == Registered(300, 240.0, 120, "sip:alice@example.test;gr=x", None)


def test_refresh_comes_a_margin_before_expiry_for_long_registrations():
    reg = registration()
    assert reg.refresh_delay(3600) == 3540
    assert reg.refresh_delay(60) == 30


def test_rfc3261_10_2_2_expires_zero_unregisters_with_the_same_contact():
    reg = registration()
    first = reg.request()
    removal = reg.request(0)
    assert removal.expires == 0
    assert removal.call_id == first.call_id
    assert str(removal.contacts[0]) == str(first.contacts[0])
    assert isinstance(reg.handle_response(make_response(removal, 200, "OK")), Unregistered)


def test_other_failures_are_reported_with_retry_after():
    reg = registration()
    response = make_response(reg.request(), 503, "Service Unavailable")
    response.headers.add("Retry-After", "30")
    assert reg.handle_response(response) == RegistrationFailed(503, "Service Unavailable", 30)


@pytest.mark.parametrize("draw, expected", [(0.0, 96.0), (1.0, 120.0)])
def test_rfc5626_4_4_1_keepalive_interval_is_80_to_100_percent_of_the_bound(draw, expected):
    keepalive = KeepAlive(120, rng=lambda: draw)
    assert keepalive.next_delay() == pytest.approx(expected)


def test_rfc5626_4_4_1_flow_timer_replaces_the_default_bound():
    keepalive = KeepAlive(120, rng=lambda: 1.0)
    keepalive.use_flow_timer(30)
    assert keepalive.next_delay() == 30
    keepalive.use_flow_timer(None)
    assert keepalive.next_delay() == 120


def test_rfc5626_4_4_1_no_pong_within_ten_seconds_fails_the_flow():
    keepalive = KeepAlive(120, timeout=10)
    keepalive.ping_sent(100.0)
    assert not keepalive.failed(109.9)
    assert keepalive.failed(110.0)
    keepalive.ping_sent(200.0)
    keepalive.data_received()
    assert not keepalive.failed(300.0)


def test_rfc5626_4_5_recovery_wait_doubles_up_to_the_maximum():
    # "if the base-time is 30 seconds, and there were three failures, then the
    # upper-bound wait time is min(1800, 30*(2^3)) or 240 seconds" -- then 50..100%.
    assert recovery_delay(3, rng=lambda: 1.0) == 240
    assert recovery_delay(3, rng=lambda: 0.0) == 120
    assert recovery_delay(0, all_failed=False, rng=lambda: 1.0) == 90
    assert recovery_delay(20, rng=lambda: 1.0) == 1800

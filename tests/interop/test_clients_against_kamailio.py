"""Self-check of the client drivers in clients.py against a real Kamailio 5.6.

Temporary: proves the drivers (and what they report) before the sipim server
tests use them. Also pins down each client's behaviour that sipim must cope
with: the digest uri each signs, and which WWW-Authenticate each answers when
offered SHA-256 and MD5 (RFC 8760 §2.4, RFC 7616 §3.7).
"""

from __future__ import annotations

import pytest

from .clients import (
    Baresip,
    RecordingRegistrar,
    User,
    digest_params,
    header_values,
    run_sipp_scenario,
    send_garbage_tcp,
    send_garbage_udp,
    sip_options_ping,
    sipsak_register,
)
from .conftest import KAMAILIO_USERS

pytestmark = pytest.mark.interop

ALICE = User("alice", KAMAILIO_USERS["alice"])
BOB = User("bob", KAMAILIO_USERS["bob"])

SHA256_CHALLENGE = 'Digest realm="example.test", nonce="nonce-sha", qop="auth", algorithm=SHA-256'
MD5_CHALLENGE = 'Digest realm="example.test", nonce="nonce-md5", qop="auth", algorithm=MD5'


def _authorization_of_last_register(requests: list[str]) -> dict[str, str]:
    registers = [r for r in requests if header_values(r, "Authorization")]
    assert registers, "no authenticated REGISTER was sent"
    return digest_params(header_values(registers[-1], "Authorization")[0])


# --- sipp -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rfc3261_22_2_sipp_registers_after_digest_challenge(sipp_binary, kamailio, transport):
    instance = ';+sip.instance="<urn:uuid:00000000-0000-4000-8000-0000000000a1>";reg-id=1'
    result = run_sipp_scenario("register_auth", kamailio.target(transport),
                               users=[ALICE, BOB], keys={"contact_params": instance})
    assert result.ok, result.describe()
    assert (result.successful_calls, result.failed_calls) == (2, 0)
    assert result.received_statuses() == [401, 200, 401, 200]
    authorization = digest_params(
        header_values(result.sent_requests("REGISTER")[1], "Authorization")[0])
    # the driver makes sipp sign the Request-URI (RFC 3261 §22.4)
    assert authorization["uri"] == "sip:example.test"
    assert authorization["algorithm"] == "MD5"
    assert "reg-id=1" in header_values(result.sent_requests("REGISTER")[1], "Contact")[0]


def test_sipp_left_alone_signs_the_remote_socket_not_the_request_uri(sipp_binary, kamailio):
    target = kamailio.target("udp")
    result = run_sipp_scenario("register_auth", target, users=[ALICE], auth_uri=None)
    assert result.ok, result.describe()  # Kamailio does not compare uri with the R-URI
    register = result.sent_requests("REGISTER")[1]
    assert register.startswith("REGISTER sip:example.test SIP/2.0")
    assert digest_params(header_values(register, "Authorization")[0])["uri"] == (
        f"sip:{target.host}:{target.port}")


def test_rfc3261_22_4_sipp_wrong_password_is_refused(sipp_binary, kamailio):
    result = run_sipp_scenario("register_wrong_password", kamailio.target("udp"),
                               users=[User("alice", "not-the-password")])
    assert result.ok, result.describe()
    assert result.received_statuses()[-1] in (401, 403)


def test_sipp_scenario_fails_when_the_server_refuses(sipp_binary, kamailio):
    result = run_sipp_scenario("register_auth", kamailio.target("udp"),
                               users=[User("alice", "not-the-password")], timeout=5)
    assert not result.ok
    assert result.failed_calls == 1


def test_rfc3261_11_sipp_options_gets_an_answer(sipp_binary, kamailio):
    result = run_sipp_scenario("options", kamailio.target("tcp"))
    assert result.ok, result.describe()
    assert result.received_statuses() == [200]


def test_sipp_refuses_tls_because_debian_builds_it_without_openssl(sipp_binary, kamailio):
    with pytest.raises(ValueError):
        run_sipp_scenario("options", kamailio.target("tls"))


# --- sipsak -----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_rfc3261_22_2_sipsak_registers_after_digest_challenge(sipsak_binary, kamailio,
                                                              transport):
    result = sipsak_register(kamailio.target(transport), ALICE)
    assert result.ok, result.describe()
    assert result.received_statuses() == [401, 200]
    authorization = digest_params(
        header_values(result.sent_requests("REGISTER")[-1], "Authorization")[0])
    assert authorization["uri"] == "sip:example.test"


def test_sipsak_wrong_password_is_not_registered(sipsak_binary, kamailio):
    result = sipsak_register(kamailio.target("udp"), User("alice", "not-the-password"))
    assert not result.ok
    assert 200 not in result.received_statuses()


# --- baresip ----------------------------------------------------------------


def test_rfc5626_two_baresip_devices_of_one_user_register_and_both_get_a_message(
        baresip_binary, kamailio):
    target = kamailio.target("tls")
    phone = Baresip(target, ALICE, instance_uuid="11111111-1111-4111-8111-111111111111")
    laptop = Baresip(target, ALICE, instance_uuid="22222222-2222-4222-8222-222222222222")
    bob = Baresip(target, BOB, contacts=["sip:alice@example.test"])
    with phone, laptop, bob:
        for agent in (phone, laptop, bob):
            assert agent.wait_registered() == 200
        for agent, instance in ((phone, "11111111"), (laptop, "22222222")):
            contact = agent.sent_requests("REGISTER")[-1].header("Contact")[0]
            assert f'+sip.instance="<urn:uuid:{instance}' in contact
            assert "reg-id=1" in contact
        bob.send_message("sip:alice@example.test", "hello both devices")
        for device in (phone, laptop):
            received = device.wait_for_message("hello both devices", timeout=5)
            assert received.sender.startswith("<sip:bob@example.test>")
            assert received.content_type == "text/plain"


def test_baresip_wrong_password_is_reported(baresip_binary, kamailio):
    with Baresip(kamailio.target("udp"), User("alice", "not-the-password")) as agent:
        with pytest.raises(Exception, match="401"):
            agent.wait_registered(timeout=5)


# --- what each client does with two challenges (a scripted registrar) --------


@pytest.mark.parametrize("challenges, picked_nonce", [
    ([MD5_CHALLENGE, SHA256_CHALLENGE], "nonce-md5"),
    ([SHA256_CHALLENGE, MD5_CHALLENGE], None),  # answers only the first: SHA-256 -> gives up
])
def test_rfc8760_sipp_and_sipsak_answer_only_the_first_challenge(
        sipp_binary, sipsak_binary, challenges, picked_nonce):
    with RecordingRegistrar(challenges) as registrar:
        sipp = run_sipp_scenario("register_auth", registrar.target(), users=[ALICE], timeout=3)
        sipp_authorizations = registrar.authorizations()
    with RecordingRegistrar(challenges) as registrar:
        sipsak = sipsak_register(registrar.target(), ALICE, timeout=5)
        sipsak_authorizations = registrar.authorizations()
    if picked_nonce is None:
        assert not sipp.ok and not sipp_authorizations
        assert not sipsak.ok and not sipsak_authorizations
    else:
        assert sipp.ok and sipsak.ok
        for authorization in (sipp_authorizations[0], sipsak_authorizations[0]):
            assert authorization["nonce"] == picked_nonce
            assert authorization["algorithm"] == "MD5"
            assert authorization["qop"] == "auth" and authorization["nc"] == "00000001"


@pytest.mark.parametrize("challenges", [
    [MD5_CHALLENGE],
    [MD5_CHALLENGE, SHA256_CHALLENGE],
])
def test_rfc8760_baresip_needs_a_401_with_md5_only(baresip_binary, challenges):
    with RecordingRegistrar(challenges) as registrar:
        with Baresip(registrar.target(), ALICE, outbound=False) as agent:
            if len(challenges) == 1:
                assert agent.wait_registered(timeout=5) == 200
                authorization = registrar.authorizations()[0]
                # baresip signs its Request-URI, uri-params included; no algorithm param
                assert authorization["uri"] == "sip:example.test;transport=udp"
                assert "algorithm" not in authorization
                contact = agent.sent_requests("REGISTER")[0].header("Contact")[0]
                assert "+sip.instance=" in contact and "reg-id" not in contact
            else:
                with pytest.raises(Exception, match="Function not implemented"):
                    agent.wait_registered(timeout=5)
                assert registrar.authorizations() == []


# --- garbage ----------------------------------------------------------------


def test_garbage_helpers_reach_the_server_and_it_survives(kamailio):
    udp = kamailio.target("udp")
    replies = send_garbage_udp(udp.host, udp.port, [b"\x00\xff" * 10, b"NOT SIP\r\n\r\n"],
                               wait_for_reply=0.2)
    assert len(replies) == 2
    tcp = kamailio.target("tcp")
    result = send_garbage_tcp(tcp.host, tcp.port, [b"GARBAGE / SIP/9.9\r\n\r\n"],
                              read_timeout=0.5)
    assert result.send_error is None
    assert sip_options_ping(udp.host, udp.port) == 200
    assert sip_options_ping(tcp.host, tcp.port, transport="tcp") == 200

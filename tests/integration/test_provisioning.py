"""Device auto-configuration over HTTPS against a real `sipim serve`, on both engines:
one-time codes by SMS (outbox gateway), password sign-in, QR pairing, the
network-asserted number, per-device credentials that register over TLS, revocation."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.provision import https, outbox, post, wait_for_code, with_digest
from tests.support.server import SipimProcess
from tests.support.sipua import TestUA

ALICE_PHONE = "+4915112345671"
BOB_PHONE = "+4915112345672"
UNKNOWN_PHONE = "+4915112345679"
GENEROUS = "lockout_threshold = 1000\notp_rate_per_number = 1000\notp_rate_per_source = 1000\n" \
           "provisioning_attempts_per_source = 1000\n"


@pytest.fixture(scope="module")
def server(engine_database, tmp_path_factory):
    process = SipimProcess(tmp_path_factory.mktemp("prov"), database=engine_database, config_text=GENEROUS).start()
    try:
        process.add_user("alice", "alice-secret", "--phone", ALICE_PHONE, "--display-name", "Alice")
        process.add_user("bob", "bob-secret", "--phone", BOB_PHONE)
        yield process
    finally:
        process.stop()


def audit(server, result: str) -> list[dict]:
    return json.loads(server.cli("audit", "--result", result, "--json").stdout)


def otp_config(server, phone: str, **device) -> dict:
    seen = len(outbox(server))
    answer = post(server, "otp", {"phone": phone})
    assert answer.status == 202 and answer.json == {"status": "code-sent", "expires_in": 300}
    code = wait_for_code(server, phone, seen)
    answer = post(server, "config", {"phone": phone, "code": code, **device})
    assert answer.status == 200, answer.body
    return answer.json


def device_ua(server, config: dict) -> TestUA:
    """A TLS user agent set up from a configuration document only."""
    instance = config["device"]["instance_id"].removeprefix("urn:uuid:")
    tls = config["sip"]["outbound_proxy"]["tls"]
    port = int(tls.split(";")[0].rsplit(":", 1)[1])
    return TestUA("tls", "127.0.0.1", port, config["username"], config["device"]["password"],
                  domain=config["domain"], ca_file=server.ca_file, instance=instance,
                  auth_user=config["device"]["auth_username"]).connect()


def password_ua(server, user: str) -> TestUA:
    agent = TestUA("tls", "127.0.0.1", server.ports["tls"], user, f"{user}-secret", ca_file=server.ca_file,
                   instance=str(uuid.uuid4())).connect()
    assert agent.register().status == 200
    return agent


def test_otp_configuration_registers_over_tls_with_its_own_credentials_and_sends_as_the_user(server):
    instance = f"urn:uuid:{uuid.uuid4()}"
    config = otp_config(server, ALICE_PHONE, device_name="Alice's phone", instance_id=instance)
    assert config["user_id"] == "sip:alice@example.test" and config["display_name"] == "Alice"
    device = config["device"]
    assert device["instance_id"] == instance and device["name"] == "Alice's phone"
    assert device["auth_username"].startswith("alice!") and device["id"].startswith("d-")
    assert config["sip"]["outbound_proxy"]["tls"] == f"sips:127.0.0.1:{server.ports['tls']};transport=tls"
    assert config["sip"]["outbound_proxy"]["wss"] == f"wss://127.0.0.1:{server.ports['wss']}/"
    assert config["ca_pem"] == server.ca_file.read_text()
    bob = password_ua(server, "bob")
    with device_ua(server, config) as phone:
        assert phone.register().status == 200
        assert phone.message("bob", "sent from a provisioned phone").status == 200
        received = bob.wait_request("MESSAGE", body=b"sent from a provisioned phone")
        # The device's own credentials act for the user's AOR (RFC 3325 §9.1).
        assert [v.split("<")[-1] for v in received.headers.get_all("P-Asserted-Identity")] == \
            ["sip:alice@example.test>"]
        assert received.from_.uri.user == "alice"
        phone.register(expires=0)
    bob.close()
    registered = [r for r in audit(server, "registered") if r["user"] == device["auth_username"]]
    assert registered and registered[0]["aor"] == "sip:alice@example.test"
    assert any(device["id"] in r["reason"] for r in audit(server, "config-issued"))
    assert any(ALICE_PHONE in r["reason"] for r in audit(server, "otp-sent"))


def test_device_credentials_cannot_register_another_instance_or_the_password_user(server):
    config = otp_config(server, ALICE_PHONE)
    agent = device_ua(server, config)
    agent.instance = str(uuid.uuid4())  # not the instance the credentials were issued for
    assert agent.register().status == 403
    agent.close()


def test_device_without_instance_in_its_contact_is_bound_under_its_own_instance(server):
    config = otp_config(server, ALICE_PHONE)
    agent = device_ua(server, config)
    agent.instance = None  # a plain Contact, no +sip.instance
    assert agent.register().status == 200
    registrations = json.loads(server.cli("device", "list", "alice", "--json").stdout)
    mine = [r for r in registrations if r["device_id"] == config["device"]["id"]]
    assert [r["instance"] for r in mine] == [f"<{config['device']['instance_id']}>"]
    agent.register(expires=0)
    agent.close()


def test_wrong_code_is_refused_and_recorded_and_a_used_code_cannot_be_reused(server):
    seen = len(outbox(server))
    assert post(server, "otp", {"phone": BOB_PHONE}).status == 202
    code = wait_for_code(server, BOB_PHONE, seen)
    wrong = str((int(code) + 1) % 1_000_000).zfill(6)
    refused = post(server, "config", {"phone": BOB_PHONE, "code": wrong})
    assert refused.status == 403 and "code" in refused.json["error"]
    assert any(r["aor"] == "sip:bob@example.test" and "wrong code" in r["reason"] for r in audit(server, "otp-failed"))
    assert post(server, "config", {"phone": BOB_PHONE, "code": code}).status == 200
    assert post(server, "config", {"phone": BOB_PHONE, "code": code}).status == 403  # single use


def test_unknown_number_gets_the_same_answer_and_no_code(server):
    seen = len(outbox(server))
    answer = post(server, "otp", {"phone": UNKNOWN_PHONE})
    assert answer.status == 202 and answer.json == {"status": "code-sent", "expires_in": 300}
    assert any(r["aor"] == f"tel:{UNKNOWN_PHONE}" for r in audit(server, "otp-not-sent"))
    assert all(m["to"] != UNKNOWN_PHONE for m in outbox(server)[seen:])
    assert post(server, "config", {"phone": UNKNOWN_PHONE, "code": "123456"}).status == 403


@pytest.mark.parametrize("body, status", [
    ({"phone": "not a number"}, 400), ({"phone": "+49"}, 400), ({}, 400), ([1, 2], 400)])
def test_bad_requests_get_a_clear_400(server, body, status):
    answer = post(server, "otp", body)
    assert answer.status == status and answer.json["error"]


def test_malformed_json_and_oversized_bodies_are_refused(server):
    assert post(server, "otp", raw=b"{not json").status == 400
    assert post(server, "otp", raw=b"{" + b" " * 10000 + b"}").status == 413


def test_password_signin_and_reissue_for_the_same_instance_adds_no_device(server):
    instance = f"urn:uuid:{uuid.uuid4()}"
    first = post(server, "signin", {"user": "bob", "password": "bob-secret", "instance_id": instance,
                                    "device_name": "laptop"}).json
    again = post(server, "signin", {"user": "sip:bob@example.test", "password": "bob-secret",
                                    "instance_id": instance}).json
    assert again["device"]["id"] == first["device"]["id"]
    assert again["device"]["auth_username"] == first["device"]["auth_username"]
    assert again["device"]["password"] != first["device"]["password"]
    assert again["device"]["name"] == "laptop"
    credentials = json.loads(server.cli("device", "list", "bob", "--json", "--credentials").stdout)
    assert [c["device_id"] for c in credentials].count(first["device"]["id"]) == 1
    assert sum(c["instance"] == instance for c in credentials) == 1
    # The re-issued password replaced the old one.
    with device_ua(server, first) as stale:
        assert stale.register().status == 403
    with device_ua(server, again) as fresh:
        assert fresh.register().status == 200
        fresh.register(expires=0)


def test_wrong_password_signin_is_refused_and_recorded(server):
    answer = post(server, "signin", {"user": "alice", "password": "guess"})
    assert answer.status == 403
    assert any(r["aor"] == "sip:alice@example.test" and "wrong password" in r["reason"]
               for r in audit(server, "signin-failed"))
    assert post(server, "signin", {"user": "nobody", "password": "x"}).status == 403


def test_bearer_token_authenticates_the_http_api_and_a_bad_one_does_not(server):
    config = otp_config(server, ALICE_PHONE)
    ok = https(server, "GET", "/api/v1/history?limit=5",
               headers={"Authorization": f"Bearer {config['device']['token']}"})
    assert ok.status == 200 and ok.json["owner"] == "sip:alice@example.test"
    bad = https(server, "GET", "/api/v1/history", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status == 401 and "invalid_token" in bad.headers["WWW-Authenticate"]


def test_pairing_gives_a_second_device_its_own_credentials_and_registration(server):
    first = otp_config(server, ALICE_PHONE)
    created = post(server, "pairing", headers={"Authorization": f"Bearer {first['device']['token']}"})
    assert created.status == 201, created.body
    code = created.json["code"]
    assert created.json["url"] == f"https://127.0.0.1:{server.ports['wss']}/#pair={code}"
    assert created.json["qr_svg"].startswith("<svg") and created.json["expires_in"] == 120
    second = post(server, "pair", {"code": code, "device_name": "tablet"})
    assert second.status == 200, second.body
    second = second.json
    assert second["user_id"] == "sip:alice@example.test"
    assert second["device"]["id"] != first["device"]["id"]
    assert second["device"]["auth_username"] != first["device"]["auth_username"]
    assert post(server, "pair", {"code": code}).status == 403  # single use
    bob = password_ua(server, "bob")
    with device_ua(server, first) as phone, device_ua(server, second) as tablet:
        assert phone.register().status == 200 and tablet.register().status == 200
        registrations = json.loads(server.cli("device", "list", "alice", "--json").stdout)
        mine = {r["device_id"] for r in registrations} & {first["device"]["id"], second["device"]["id"]}
        assert len(mine) == 2  # two distinct registrations
        assert bob.message("alice", "to both devices").status == 200
        for agent in (phone, tablet):
            assert agent.wait_request("MESSAGE", body=b"to both devices")
        phone.register(expires=0)
        tablet.register(expires=0)
    bob.close()
    assert any("created by" in r["reason"] for r in audit(server, "pairing-created"))


def test_pairing_with_the_password_digest_and_unauthenticated_pairing_is_refused(server):
    assert post(server, "pairing").status == 401
    created = with_digest(server, "POST", "/provisioning/v1/pairing", "bob", "bob-secret")
    assert created.status == 201
    assert post(server, "pair", {"code": "WRONGCODE"}).status == 403
    assert any("unknown" in r["reason"] for r in audit(server, "pairing-failed"))


def test_trusted_network_path_needs_a_trusted_source(server):
    # This server trusts no network: the asserted number alone is not believed.
    answer = post(server, "config", {}, headers={"X-MSISDN": ALICE_PHONE})
    assert answer.status == 403
    assert any("not in a trusted network" in r["reason"] for r in audit(server, "config-refused"))


def test_revoked_device_is_unregistered_and_cannot_register_again(server):
    config = otp_config(server, ALICE_PHONE)
    token = config["device"]["token"]
    phone = device_ua(server, config)
    assert phone.register().status == 200
    out = server.cli("device", "revoke", "alice", config["device"]["id"]).stdout
    assert config["device"]["id"] in out and "1 registration" in out
    # The running server closes the device's connection once it learns of the revocation.
    with pytest.raises(ConnectionError):
        phone.receive(timeout=10)
    phone.close()
    with device_ua(server, config) as again:
        assert again.register().status == 403
    assert https(server, "GET", "/api/v1/history", headers={"Authorization": f"Bearer {token}"}).status == 401
    registrations = json.loads(server.cli("device", "list", "alice", "--json").stdout)
    assert all(r["device_id"] != config["device"]["id"] for r in registrations)
    listed = server.cli("device", "list", "alice").stdout
    assert config["device"]["id"] in listed and "revoked" in listed
    assert any(r["user"] == config["device"]["auth_username"] for r in audit(server, "device-revoked"))


# -- servers with their own settings ---------------------------------------------------------

def test_trusted_network_gives_zero_typing_configuration(make_server):
    trusted = make_server(config_text='provisioning_trusted_networks = ["127.0.0.0/8"]\n')
    trusted.add_user("carol", "carol-secret", "--phone", "+4915112345673")
    answer = post(trusted, "config", {"device_name": "phone"}, headers={"X-MSISDN": "4915112345673"})
    assert answer.status == 200, answer.body
    assert answer.json["user_id"] == "sip:carol@example.test"
    with device_ua(trusted, answer.json) as phone:
        assert phone.register().status == 200
    assert post(trusted, "config", {}).status == 403  # trusted, but no asserted number
    assert post(trusted, "config", {}, headers={"X-MSISDN": UNKNOWN_PHONE}).status == 403


def test_rate_limit_per_number_answers_429_with_retry_after(make_server):
    limited = make_server(config_text="otp_rate_per_number = 2\n")
    limited.add_user("dave", "dave-secret", "--phone", "+4915112345674")
    for _ in range(2):
        assert post(limited, "otp", {"phone": "+4915112345674"}).status == 202
    refused = post(limited, "otp", {"phone": "+4915112345674"})
    assert refused.status == 429 and 1 <= int(refused.headers["Retry-After"]) <= 900
    assert post(limited, "otp", {"phone": "+4915112345675"}).status == 202  # another number is not limited
    assert audit(limited, "rate-limited")


def test_expired_code_is_refused_and_recorded(make_server):
    # A one-second lifetime; the wait is for the code's expiry itself.
    short = make_server(config_text="otp_lifetime = 1\n")
    short.add_user("erin", "erin-secret", "--phone", "+4915112345676")
    seen = len(outbox(short))
    assert post(short, "otp", {"phone": "+4915112345676"}).status == 202
    code = wait_for_code(short, "+4915112345676", seen)
    import time

    time.sleep(1.1)
    assert post(short, "config", {"phone": "+4915112345676", "code": code}).status == 403
    assert audit(short, "otp-expired")


def test_self_signup_creates_a_user_for_a_verified_unknown_number(make_server):
    open_server = make_server(config_text="provisioning_self_signup = true\n")
    config = otp_config(open_server, "+4915112345677")
    assert config["user_id"] == "sip:u4915112345677@example.test"
    users = json.loads(open_server.cli("user", "list", "--json").stdout)
    assert [u["phones"] for u in users if u["user"] == "u4915112345677"] == [["+4915112345677"]]
    with device_ua(open_server, config) as phone:
        assert phone.register().status == 200


def test_provisioning_is_refused_over_plain_http(make_server):
    import urllib.error
    import urllib.request

    plain = make_server(listen=("tls:127.0.0.1:0", "ws:127.0.0.1:0"), allow_insecure=False)
    request = urllib.request.Request(f"http://127.0.0.1:{plain.ports['ws']}/provisioning/v1/signin",
                                     data=b'{"user": "x", "password": "y"}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403 and b"HTTPS" in refused.value.read()


def test_a_user_lists_and_revokes_their_own_devices_over_https(server):
    keeper, doomed = otp_config(server, ALICE_PHONE), otp_config(server, ALICE_PHONE)
    bearer = {"Authorization": f"Bearer {keeper['device']['token']}"}
    listed = https(server, "GET", "/provisioning/v1/devices", headers=bearer)
    assert listed.status == 200 and listed.json["current"] == keeper["device"]["id"]
    assert {keeper["device"]["id"], doomed["device"]["id"]} <= {d["id"] for d in listed.json["devices"]}
    assert all("password" not in d and "token" not in d for d in listed.json["devices"])
    with device_ua(server, doomed) as agent:
        assert agent.register().status == 200
        gone = https(server, "DELETE", f"/provisioning/v1/devices/{doomed['device']['id']}", headers=bearer)
        assert gone.status == 204
        with pytest.raises(ConnectionError):  # the server ends its registration and connection
            agent.receive(timeout=10)
    with device_ua(server, doomed) as again:
        assert again.register().status == 403
    assert https(server, "DELETE", f"/provisioning/v1/devices/{doomed['device']['id']}", headers=bearer).status == 404
    bob = post(server, "signin", {"user": "bob", "password": "bob-secret"}).json
    assert https(server, "DELETE", f"/provisioning/v1/devices/{keeper['device']['id']}",
                 headers={"Authorization": f"Bearer {bob['device']['token']}"}).status == 404


def test_a_code_survives_a_restart(make_server, tmp_path):
    node = make_server(data_dir=tmp_path / "restart")
    node.add_user("frank", "frank-secret", "--phone", "+4915112345678")
    seen = len(outbox(node))
    assert post(node, "otp", {"phone": "+4915112345678"}).status == 202
    code = wait_for_code(node, "+4915112345678", seen)
    node.stop()
    node.start()
    answer = post(node, "config", {"phone": "+4915112345678", "code": code})
    assert answer.status == 200 and answer.json["user_id"] == "sip:frank@example.test"


def test_a_code_sent_by_one_node_is_taken_on_another_sharing_the_database(tmp_path):
    from tests.integration.conftest import _postgres_url_or_skip
    import asyncio
    import shutil

    from tests.conftest import _drop_schema

    url, schema = _postgres_url_or_skip()
    first = SipimProcess(tmp_path / "a", database=url).start()
    try:
        # Nodes of one service share the server secret (nonces, GRUUs, code hashes).
        (tmp_path / "b").mkdir()
        shutil.copy(tmp_path / "a" / "secret.key", tmp_path / "b" / "secret.key")
        second = SipimProcess(tmp_path / "b", database=url).start()
        try:
            first.add_user("grace", "grace-secret", "--phone", "+4915112345679")
            assert post(first, "otp", {"phone": "+4915112345679"}).status == 202
            code = wait_for_code(first, "+4915112345679", 0)
            answer = post(second, "config", {"phone": "+4915112345679", "code": code})
            assert answer.status == 200, answer.body
            assert post(first, "config", {"phone": "+4915112345679", "code": code}).status == 403  # used
            # The device registers on the other node with credentials issued on this one.
            with device_ua(first, {**answer.json, "sip": {"outbound_proxy": {
                    "tls": f"sips:127.0.0.1:{first.ports['tls']};transport=tls"}}}) as phone:
                assert phone.register().status == 200
        finally:
            second.stop()
    finally:
        first.stop()
        asyncio.run(_drop_schema(schema))

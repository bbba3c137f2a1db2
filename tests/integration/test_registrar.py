"""The registrar of a real `sipim serve`, driven over real sockets (RFC 3261 §10.3,
RFC 5626 §6, RFC 5627 §5, RFC 3327 §5.3), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from sipim.sip.uri import parse_name_addr
from tests.support.sipua import TestUA


def ua(server, user="alice", transport="tls", instance=None, password=None) -> TestUA:
    return TestUA(transport, "127.0.0.1", server.ports[transport], user, password or f"{user}-secret",
                  ca_file=server.ca_file, instance=instance).connect()


def contacts_of(response):
    return [parse_name_addr(value) for value in response.headers.get_all("Contact")]


def audit(server, *args):
    return json.loads(server.cli("audit", "--json", *args).stdout)


def test_rfc3261_10_3_register_over_tls_with_digest_then_query_and_remove(server):
    with ua(server, instance=str(uuid.uuid4())) as alice:
        first = alice.transact(alice.build("REGISTER", headers=[("Contact", alice.contact()), ("Expires", "600")]))
        assert first.status == 401
        algorithms = [v.split("algorithm=")[1].split(",")[0].strip() for v in first.headers.get_all("WWW-Authenticate")]
        assert algorithms == ["SHA-256", "MD5"]  # RFC 8760 §2.4: both offered, SHA-256 first
        ok = alice.register()
        assert ok.status == 200, ok
        assert ok.to.tag  # §8.2.6.2
        [contact] = [c for c in contacts_of(ok) if c.params.get("+sip.instance")]
        assert 590 <= int(contact.params["expires"]) <= 600
        query = alice.transact(alice.build("REGISTER"))
        assert query.status == 401
        _, query = alice.request_with_auth("REGISTER")
        assert query.status == 200 and len(contacts_of(query)) >= 1
        removed = alice.register(expires=0)
        assert removed.status == 200
        assert not [c for c in contacts_of(removed) if c.params.get("+sip.instance") == contact.params["+sip.instance"]]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc8760_either_offered_algorithm_authenticates(server, algorithm):
    with ua(server, user="bob") as bob:
        assert bob.register(algorithm=algorithm).status == 200
        assert bob.register(expires=0, algorithm=algorithm).status == 200


def test_wrong_password_is_refused_and_recorded(server):
    with ua(server, user="carol", password="not-her-password") as carol:
        response = carol.register()
    assert response.status == 403
    assert response.reason == "Authentication failed"
    records = audit(server, "--user", "carol", "--result", "auth failed")
    assert records and "wrong password" in records[0]["reason"]
    assert records[0]["source"].startswith("127.0.0.1:") and records[0]["transport"] == "tls"


def test_rfc5626_rfc5627_two_devices_get_two_bindings_and_distinct_gruus(server):
    phone, laptop = str(uuid.uuid4()), str(uuid.uuid4())
    with ua(server, user="bob", instance=phone) as one, ua(server, user="bob", instance=laptop) as two:
        first = one.register()
        second = two.register()
        assert first.status == 200 and second.status == 200
        mine = [c for c in contacts_of(second) if c.params.get("+sip.instance") in
                (f'"<urn:uuid:{phone}>"', f'"<urn:uuid:{laptop}>"')]
        assert len(mine) == 2
        gruus = {c.params["pub-gruu"] for c in mine}
        assert gruus == {f'"sip:bob@example.test;gr=urn:uuid:{phone}"', f'"sip:bob@example.test;gr=urn:uuid:{laptop}"'}
        temp = {c.params["temp-gruu"] for c in mine}
        # RFC 5627 §3.2: a temporary GRUU does not reveal the AOR.  (Its user part is
        # random base32, which spells "bob" now and then: look for the AOR itself.)
        assert len(temp) == 2 and all("sip:bob@" not in t for t in temp)
        # Re-registering one device replaces its binding instead of adding a third.
        again = one.register()
        mine_again = [c for c in contacts_of(again) if c.params.get("+sip.instance") in
                      (f'"<urn:uuid:{phone}>"', f'"<urn:uuid:{laptop}>"')]
        assert len(mine_again) == 2
        assert again.headers.get("Require") == "outbound"  # RFC 5626 §6
        devices = json.loads(server.cli("device", "list", "bob", "--json").stdout)
        assert {d["instance"] for d in devices} >= {f"<urn:uuid:{phone}>", f"<urn:uuid:{laptop}>"}
        one.register(expires=0)
        two.register(expires=0)


def test_rfc3261_10_3_interval_too_brief_gives_423_with_min_expires(server):
    with ua(server) as alice:
        response = alice.register(expires=5)
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"


def test_rfc3261_10_3_star_removes_every_binding_and_needs_expires_zero(server):
    with ua(server, user="carol", instance=str(uuid.uuid4())) as one, \
            ua(server, user="carol", instance=str(uuid.uuid4())) as two:
        assert one.register().status == 200 and two.register().status == 200
        bad = one.register(contact="*", expires=60)
        assert bad.status == 400
        cleared = one.register(contact="*", expires=0)
        assert cleared.status == 200
        assert contacts_of(cleared) == []


def test_register_for_someone_else_is_refused(server):
    with ua(server, user="alice") as alice:
        to = "<sip:bob@example.test>"
        first, second = alice.request_with_auth("REGISTER", to=to, headers=[("Contact", alice.contact())])
    assert second is not None and second.status == 403


def test_rfc3327_path_is_stored_and_echoed(server):
    with ua(server, user="alice", transport="tcp") as alice:
        path = "<sip:edge.example.test;lr>"
        response = alice.register(extra_headers=[("Path", path)])
        assert response.status == 200
        assert response.headers.get_all("Path") == [path]
        alice.register(expires=0)


def test_registrations_survive_a_restart(make_server, tmp_path):
    server = make_server(data_dir=tmp_path / "restart")
    server.add_user("alice", "alice-secret")
    instance = str(uuid.uuid4())
    with ua(server, transport="udp", instance=instance) as alice:
        assert alice.register().status == 200
    server.stop()
    server.start()
    with ua(server, transport="udp") as alice:
        _, query = alice.request_with_auth("REGISTER")
    assert any(c.params.get("+sip.instance") == f'"<urn:uuid:{instance}>"' for c in contacts_of(query))


def test_register_over_plain_transport_needs_allow_insecure(make_server, tmp_path):
    server = make_server(allow_insecure=False, listen=("udp:127.0.0.1:0", "tls:127.0.0.1:0"))
    server.add_user("alice", "alice-secret")
    with ua(server, transport="udp") as alice:
        response = alice.register()
    assert response.status == 403
    assert "secure transport" in response.reason
    with ua(server, transport="tls") as alice:
        assert alice.register().status == 200
    assert audit(server, "--result", "refused")


def test_device_limit_answers_the_next_new_device(make_server):
    server = make_server(config_text="max_devices_per_user = 2\n")
    server.add_user("alice", "alice-secret")
    devices = [ua(server, instance=str(uuid.uuid4())) for _ in range(3)]
    try:
        assert devices[0].register().status == 200
        assert devices[1].register().status == 200
        refused = devices[2].register()
        assert refused.status == 403 and "Device limit" in refused.reason
        assert devices[0].register().status == 200  # a known device still refreshes
    finally:
        for device in devices:
            device.close()


def test_repeated_failures_lock_out_user_and_source(make_server):
    server = make_server(config_text="lockout_threshold = 3\nlockout_window = 60\n")
    server.add_user("alice", "alice-secret")
    with ua(server, password="wrong") as alice:
        for _ in range(3):
            assert alice.register().status == 403
    with ua(server) as alice:  # right password, but locked now
        response = alice.register()
    assert response.status == 403 and "Too many failed attempts" in response.reason
    assert audit(server, "--result", "locked")


def test_device_revoke_unregisters_at_once(make_server):
    server = make_server()
    server.add_user("alice", "alice-secret")
    instance = str(uuid.uuid4())
    device = ua(server, instance=instance)
    assert device.register().status == 200
    out = server.cli("device", "revoke", "alice", f"<urn:uuid:{instance}>")
    assert "revoked 1" in out.stdout
    # The server drops the binding and closes the device's connection.
    with pytest.raises(ConnectionError):
        device.receive(timeout=5)
    device.close()
    with ua(server) as other:
        _, query = other.request_with_auth("REGISTER")
    assert contacts_of(query) == []


def test_rfc5626_binding_goes_when_connection_closes_and_device_does_not_return(make_server):
    server = make_server(config_text="flow_timer = 1\n")
    server.add_user("alice", "alice-secret")
    browser = ua(server, instance=str(uuid.uuid4()))
    assert browser.register().status == 200
    browser.close()
    time.sleep(2.5)
    with ua(server) as other:
        _, query = other.request_with_auth("REGISTER")
    assert contacts_of(query) == []


def test_registration_attempts_are_recorded_with_their_details(server):
    with ua(server, user="bob", instance=str(uuid.uuid4())) as bob:
        bob.register()
    records = audit(server, "--user", "bob", "--since", "5m")
    results = {r["result"] for r in records}
    assert {"challenged", "registered"} <= results
    registered = next(r for r in records if r["result"] == "registered")
    assert registered["user"] == "bob" and registered["user_agent"] == "sipim-test-ua"
    assert registered["instance"].startswith("<urn:uuid:")
    assert registered["reason"].endswith("digest SHA-256")  # the test UA answers the first challenge


def test_rfc3261_8_2_7_a_retransmitted_unauthenticated_register_is_challenged_anew(server):
    # The challenge is answered statelessly (no transaction is kept for it): a
    # retransmission is a new request, with a fresh nonce, and is audited as such.
    from sipim.sip.digest import parse_challenge

    with ua(server, user="alice", transport="udp") as alice:
        data = alice.build("REGISTER", headers=[("Contact", alice.contact()), ("Expires", "600")]).to_bytes()
        alice.send_raw(data)
        first = alice.receive()
        alice.send_raw(data)  # same branch, same CSeq
        second = alice.receive()
    assert first.status == second.status == 401
    nonces = {parse_challenge(r.headers.get_all("WWW-Authenticate")[0]).nonce for r in (first, second)}
    assert len(nonces) == 2


def test_rfc3261_17_2_2_retransmitted_register_gets_the_same_answer_once_processed(server):
    with ua(server, user="alice", transport="udp", instance=str(uuid.uuid4())) as alice:
        first = alice.transact(alice.build("REGISTER", headers=[("Contact", alice.contact()), ("Expires", "600")]))
        assert first.status == 401
        from sipim.sip.digest import build_authorization, ha1, parse_challenge

        challenge = parse_challenge(first.headers.get_all("WWW-Authenticate")[1])  # MD5
        authorization = build_authorization(challenge, "REGISTER", "sip:example.test", "alice",
                                            ha1("alice", "example.test", "alice-secret", "MD5"))
        request = alice.build("REGISTER", headers=[("Contact", alice.contact()), ("Expires", "600"),
                                                   ("Authorization", authorization)])
        data = request.to_bytes()
        alice.send_raw(data)
        answer = alice.receive()
        alice.send_raw(data)  # a UDP retransmission: same branch, same CSeq
        again = alice.receive()
        assert answer.status == again.status == 200
        assert answer.to.tag == again.to.tag  # the transaction re-sent its response (§17.2.2)
        alice.register(expires=0)

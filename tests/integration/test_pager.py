"""Pager-mode messaging through a real `sipim serve` (RFC 3428), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.im import cpim_message, wait_imdn
from tests.support.sipua import TestUA, device_pool, registered_device


def device(server, user, transport="tls", instance=None) -> TestUA:
    return registered_device(server, user, transport, instance)


def alice_and_bob(server):
    """A server of its own (make_server) with users alice and bob."""
    for name in ("alice", "bob"):
        server.add_user(name, f"{name}-secret")
    return server


@pytest.fixture
def devices(server):
    with device_pool(server, "tls") as open_device:
        yield open_device


def history(server, user, *args):
    return json.loads(server.cli("history", user, "--json", *args).stdout)


def test_rfc3428_message_reaches_the_recipient_with_the_asserted_sender(server, devices):
    alice, bob = devices("alice"), devices("bob")
    spoofed = [("P-Asserted-Identity", "<sip:ceo@example.test>")]
    response = alice.message("bob", "hello bob", extra_headers=spoofed)
    assert response.status == 200, response
    received = bob.wait_request("MESSAGE", body=b"hello bob")
    assert received.from_.uri.user == "alice"
    assert received.headers.get_all("P-Asserted-Identity") == ["<sip:alice@example.test>"]
    assert received.headers.get("Content-Type") == "text/plain"


def test_from_that_is_not_the_authenticated_user_is_refused(server, devices):
    alice = devices("alice")
    first, second = alice.request_with_auth(
        "MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
        from_=f"<sip:bob@example.test>;tag={uuid.uuid4().hex[:6]}",
        headers=[("Content-Type", "text/plain")], body=b"spoof")
    assert second is not None and second.status == 403


def test_every_device_gets_it_and_the_senders_other_device_gets_a_copy(server, devices):
    bob_phone, bob_laptop = devices("bob"), devices("bob")
    alice_phone, alice_laptop = devices("alice"), devices("alice")
    assert alice_phone.message("bob", "to all of bob").status == 200
    for bob in (bob_phone, bob_laptop):
        assert bob.wait_request("MESSAGE", body=b"to all of bob").body == b"to all of bob"
    copy = alice_laptop.wait_request("MESSAGE", body=b"to all of bob")
    assert copy.body == b"to all of bob"
    assert copy.from_.uri.user == "alice" and copy.to.uri.user == "bob"  # marked as sent by alice
    assert b"to all of bob" not in [r.body for r in alice_phone.drain(timeout=0.5)]  # no copy to the sender


def test_rfc5627_message_to_a_gruu_reaches_only_that_device(server, devices):
    phone_id = str(uuid.uuid4())
    bob_phone, bob_laptop = devices("bob", instance=phone_id), devices("bob")
    alice = devices("alice")
    response = alice.message("bob", "just the phone", uri=f"sip:bob@example.test;gr=urn:uuid:{phone_id}")
    assert response.status == 200
    assert bob_phone.wait_request("MESSAGE", body=b"just the phone").body == b"just the phone"
    # (The laptop may be owed messages stored by earlier tests; this one must not be among them.)
    assert b"just the phone" not in [r.body for r in bob_laptop.drain(timeout=1.0)]


def test_rfc3428_offline_recipient_gets_202_and_each_device_gets_it_once_later(server, devices):
    alice = devices("alice")
    text = f"while you were away {uuid.uuid4()}"
    assert alice.message("carol", text).status == 202
    first = devices("carol")
    assert first.wait_request("MESSAGE", body=text.encode()).body == text.encode()
    assert text.encode() not in [r.body for r in first.drain(timeout=1.0)]  # exactly once
    later = devices("carol")  # a second device that registers later still gets it
    late = later.wait_request("MESSAGE", body=text.encode())
    assert late.body == text.encode() and late.headers.get("Date")
    assert text.encode() not in [r.body for r in first.drain(timeout=0.5)]


def test_a_resent_message_is_delivered_once(server, devices):
    alice, bob = devices("alice"), devices("bob")
    request = alice.build("MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
                          headers=[("Content-Type", "text/plain")], body=b"once")
    first = alice.transact(request)
    assert first.status == 407
    from sipim.sip.digest import build_authorization, ha1, parse_challenge

    challenge = parse_challenge(first.headers.get("Proxy-Authenticate"))
    auth = build_authorization(challenge, "MESSAGE", "sip:bob@example.test", "alice",
                               ha1("alice", "example.test", "alice-secret", challenge.algorithm))
    signed = alice.build("MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
                         headers=[("Content-Type", "text/plain"), ("Proxy-Authorization", auth)], body=b"once")
    assert alice.transact(signed).status == 200
    # The same request again with a new branch (a client re-sending after a timeout).
    again = alice.build("MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
                        headers=[("Content-Type", "text/plain"), ("Proxy-Authorization",
                                 build_authorization(challenge, "MESSAGE", "sip:bob@example.test", "alice",
                                                     ha1("alice", "example.test", "alice-secret",
                                                         challenge.algorithm), nc=2))], body=b"once")
    again.headers.set("CSeq", str(signed.headers.get("CSeq")))
    assert alice.transact(again).status == 200
    assert bob.wait_request("MESSAGE", body=b"once").body == b"once"
    assert b"once" not in [r.body for r in bob.drain(timeout=1.0)]


def test_rfc3428_8_too_large_for_udp_gets_513(server, devices):
    alice = devices("alice", transport="udp")
    assert alice.message("bob", "x" * 1400).status == 513


def test_message_over_the_stream_limit_gets_413(server, devices):
    alice = devices("alice", transport="tcp")
    assert alice.message("bob", "x" * 70_000).status == 413


def test_unknown_recipient_gets_404(server, devices):
    alice = devices("alice")
    assert alice.message("nobody", "hello?").status == 404


def test_history_keeps_both_sides(server, devices):
    alice, bob = devices("alice"), devices("bob")
    text = f"for the record {uuid.uuid4()}"
    assert alice.message("bob", text).status == 200
    bob.wait_request("MESSAGE", body=text.encode())
    mine = [e for e in history(server, "alice", "--with", "bob") if e["body"] == text]
    theirs = [e for e in history(server, "bob", "--with", "alice") if e["body"] == text]
    assert mine and mine[0]["direction"] == "out"
    assert theirs and theirs[0]["direction"] == "in"


async def test_history_over_https_with_digest_is_the_users_own(server, devices):
    import ssl

    import aiohttp

    alice, bob = devices("alice"), devices("bob")
    text = f"over https {uuid.uuid4()}"
    assert alice.message("bob", text).status == 200
    assert bob.wait_request("MESSAGE", body=text.encode()).body == text.encode()
    base = f"https://127.0.0.1:{server.ports['wss']}/api/v1/history"
    context = ssl.create_default_context(cafile=str(server.ca_file))
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(base, ssl=context) as response:
            assert response.status == 401
            assert len(response.headers.getall("WWW-Authenticate")) == 2
    digest = aiohttp.DigestAuthMiddleware("bob", "bob-secret")
    async with aiohttp.ClientSession(middlewares=(digest,)) as session:
        async with session.get(f"{base}?with=alice&limit=5", ssl=context) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
    assert page["owner"] == "sip:bob@example.test"
    assert any(e["body"] == text and e["direction"] == "in" for e in page["entries"])
    wrong = aiohttp.DigestAuthMiddleware("bob", "not-bobs")
    async with aiohttp.ClientSession(middlewares=(wrong,)) as session:
        async with session.get(base, ssl=context) as response:
            assert response.status in (401, 403)


def test_a_stored_message_survives_kill_9_and_is_delivered_after_restart(make_server, tmp_path):
    server = alice_and_bob(make_server(data_dir=tmp_path / "crash"))
    alice = device(server, "alice")
    text = f"survives a crash {uuid.uuid4()}"
    assert alice.message("bob", text).status == 202
    alice.close()
    server.kill()  # kill -9 between the 202 and any delivery
    server.start()
    bob = device(server, "bob")
    try:
        assert bob.wait_request("MESSAGE", body=text.encode()).body == text.encode()
    finally:
        bob.close()


def test_rfc3428_content_type_policy_refuses_unknown_types_when_configured(make_server, tmp_path):
    server = alice_and_bob(make_server(config_text="im_refuse_other_types = true\n"))
    alice = device(server, "alice")
    try:
        refused = alice.message("bob", b"\x00\x01", content_type="application/octet-stream")
        assert refused.status == 415
        assert "text/plain" in refused.headers.get("Accept")
        assert alice.message("bob", "plain is fine").status == 202
    finally:
        alice.close()


def test_rfc3261_20_12_coded_bodies_are_stored_and_delivered_decoded(make_server):
    # liblinphone deflates its IMDNs.  The server reads bodies and delivers them later in
    # requests of its own, so it undoes the coding on receipt: the stored message and
    # every delivery carry the plain body and no Content-Encoding.
    import gzip
    import zlib

    server = alice_and_bob(make_server())
    alice = device(server, "alice")
    try:
        raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        codings = {
            "gzip": gzip.compress(b"gzip text"),
            "deflate": zlib.compress(b"zlib text"),
            "Deflate": raw_deflate.compress(b"raw deflate text") + raw_deflate.flush(),
        }
        for coding, body in codings.items():
            assert alice.message("bob", body, extra_headers=[("Content-Encoding", coding)]).status == 202
        bob = device(server, "bob")
        try:
            for text in (b"gzip text", b"zlib text", b"raw deflate text"):
                delivered = bob.wait_request("MESSAGE", body=text)
                assert delivered.headers.get("Content-Encoding") is None
        finally:
            bob.close()
        history = json.loads(server.cli("history", "bob", "--json").stdout)
        assert {entry["body"] for entry in history} >= {"gzip text", "zlib text", "raw deflate text"}
    finally:
        alice.close()


def test_rfc3261_8_2_3_coded_bodies_the_server_cannot_take_are_refused(make_server):
    import zlib

    server = alice_and_bob(make_server(config_text="im_max_message_size = 4096\n"))
    alice = device(server, "alice")
    try:
        unknown = alice.message("bob", b"\x00\x01", extra_headers=[("Content-Encoding", "br")])
        assert unknown.status == 415
        assert unknown.headers.get_all("Accept-Encoding") == ["identity", "gzip", "deflate"]
        # 1 MB of zeros deflates to 1 KB: decoding stops at the size limit.
        bomb = alice.message("bob", zlib.compress(b"\0" * 1_000_000), extra_headers=[("Content-Encoding", "deflate")])
        assert bomb.status == 413
        assert alice.message("bob", b"not deflated", extra_headers=[("Content-Encoding", "deflate")]).status == 400
        assert alice.message("bob", "plain", extra_headers=[("Content-Encoding", "identity")]).status == 202
    finally:
        alice.close()


def test_rfc3862_a_device_that_refuses_cpim_gets_the_content_alone(make_server):
    # baresip answers 415 (Accept: text/plain) to message/cpim: the server tries that
    # device once more with the encapsulated content, and the sender hears 200.
    from concurrent.futures import ThreadPoolExecutor

    server = alice_and_bob(make_server())
    alice, bob = device(server, "alice"), device(server, "bob")
    bob.auto_answer = 0
    try:
        body, _ = cpim_message("alice", "bob", "plain inside", "positive-delivery")
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(alice.message, "bob", body, content_type="message/cpim")
            first = bob.wait_request("MESSAGE", body=body)
            bob.answer(first, 415, "Unsupported Media Type")
            second = bob.wait_request("MESSAGE", body=b"plain inside")
            assert second.headers.get("Content-Type") == "text/plain"
            assert second.from_.uri.user == "alice"
            bob.answer(second, 200)
            assert sent.result(timeout=10).status == 200
    finally:
        alice.close()
        bob.close()


def test_rfc5438_a_delivery_notification_from_the_recipient_reaches_the_sender(server, devices):
    from datetime import datetime, timezone

    from sipim.cpim import parse_cpim
    from sipim.imdn import DELIVERY, build_notification_cpim

    alice, bob = devices("alice"), devices("bob")
    body, imdn_id = cpim_message("alice", "bob", "did you get this?", "positive-delivery")
    assert alice.message("bob", body, content_type="message/cpim").status == 200
    received = bob.wait_request("MESSAGE", body=body)  # the CPIM envelope arrives intact
    report = build_notification_cpim(parse_cpim(received.body), notifier_uri="<sip:bob@example.test>",
                                     kind=DELIVERY, status="delivered", now=datetime.now(timezone.utc))
    assert bob.message("alice", report.serialize(), content_type="message/cpim").status == 200
    got, notification = wait_imdn(alice, imdn_id)
    assert (notification.message_id, notification.status) == (imdn_id, "delivered")
    assert got.from_.uri.user == "bob"
    statuses = {e["status"] for e in history(server, "alice", "--with", "bob") if e["imdn_message_id"] == imdn_id}
    assert statuses == {"delivered"}


def test_rfc5438_8_1_server_reports_stored_when_the_sender_asked_for_processing(server, devices):
    alice = devices("alice")
    body, imdn_id = cpim_message("alice", "carol", "store me", "positive-delivery, processing")
    assert alice.message("carol", body, content_type="message/cpim").status == 202
    _, notification = wait_imdn(alice, imdn_id)
    assert (notification.message_id, notification.kind, notification.status) == (imdn_id, "processing", "stored")
    carol = devices("carol")
    assert carol.wait_request("MESSAGE", body=body).body == body


def test_rfc5438_expired_stored_message_gives_the_sender_a_failed_report(make_server):
    server = alice_and_bob(make_server(config_text="deferred_lifetime = 2\nim_expiry_sweep_interval = 0.5\n"))
    alice = device(server, "alice")
    try:
        body, imdn_id = cpim_message("alice", "bob", "nobody reads this", "positive-delivery, negative-delivery")
        assert alice.message("bob", body, content_type="message/cpim").status == 202
        _, notification = wait_imdn(alice, imdn_id, timeout=8)
        assert (notification.message_id, notification.kind, notification.status) == (imdn_id, "delivery", "failed")
        assert {e["status"] for e in history(server, "alice")} == {"failed"}
    finally:
        alice.close()
    bob = device(server, "bob")  # an expired message is not delivered any more
    try:
        assert bob.no_request(timeout=1.0)
    finally:
        bob.close()


def test_rfc5438_6_3_a_message_re_sent_with_the_same_imdn_id_is_delivered_once(server, devices):
    alice, bob = devices("alice"), devices("bob")
    body, _ = cpim_message("alice", "bob", "only once, even re-sent", "positive-delivery")
    assert alice.message("bob", body, content_type="message/cpim").status == 200
    assert bob.wait_request("MESSAGE", body=body).body == body
    # A new transaction and CSeq (the client gave up and sent it again): same IMDN Message-ID.
    assert alice.message("bob", body, content_type="message/cpim").status == 200
    assert body not in [r.body for r in bob.drain(timeout=1.0)]


@pytest.fixture
def numbered_server(make_server):
    server = make_server()
    server.add_user("alice", "alice-secret", "--phone", "+14155550101")
    server.add_user("bob", "bob-secret", "--phone", "+1 415 555 0102")
    server.add_user("carol", "carol-secret", "--phone", "+14155550199")
    server.add_user("dave", "dave-secret", "--phone", "+14155550199")
    return server


def send_to_uri(agent, uri: str, text: str):
    first, second = agent.request_with_auth("MESSAGE", uri=uri, to=f"<{uri}>",
                                            headers=[("Content-Type", "text/plain")], body=text.encode())
    return second if second is not None else first


@pytest.mark.parametrize("uri", ["tel:+1-415-555-0102", "sip:+14155550102@example.test;user=phone"])
def test_a_phone_number_starts_a_conversation_the_server_looks_it_up(numbered_server, uri):
    alice, bob = device(numbered_server, "alice"), device(numbered_server, "bob")
    try:
        text = f"found you by number {uuid.uuid4()}"
        assert send_to_uri(alice, uri, text).status == 200
        received = bob.wait_request("MESSAGE", body=text.encode())
        assert received.from_.uri.user == "alice"
    finally:
        alice.close()
        bob.close()


def test_unknown_and_ambiguous_numbers_give_404_and_485(numbered_server):
    alice = device(numbered_server, "alice")
    try:
        assert send_to_uri(alice, "tel:+14155550100", "anyone?").status == 404
        assert send_to_uri(alice, "tel:+14155550199", "which one?").status == 485
        assert send_to_uri(alice, "tel:5550102;phone-context=example.test", "local").status == 404
    finally:
        alice.close()

"""sipim behind a real SIP/IP core: Kamailio with deploy/kamailio/kamailio.cfg,
two sipim nodes (external-core mode) on one PostgreSQL schema.

RFC 3325 (asserted identity inside a trust domain), RFC 3261 §10.2
(third-party registration), RFC 3428 (store-and-forward of MESSAGE).
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests.support.sipua import TestUA
from tests.support.waiting import wait_for

from .clients import User, run_sipp_scenario
from .conftest import require_binary
from .kamailio_core import CoreDeployment, start_deployment

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3", "dave": "dave-pw-4",
             "erin": "erin-pw-5", "frank": "frank-pw-6", "grace": "grace-pw-7"}


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> CoreDeployment:
    require_binary("kamailio", "kamailio")
    require_binary("kamcmd", "kamailio")
    from tests.conftest import _check_postgres
    import asyncio

    reason = asyncio.run(_check_postgres())
    if reason:
        pytest.fail(reason)
    deployment = start_deployment(tmp_path_factory.mktemp("kamailio-core"), ["A", "B"])
    try:
        for name, password in PASSWORDS.items():
            deployment.add_user(name, password)
        yield deployment
    finally:
        deployment.stop()


def audit(core: CoreDeployment, user: str) -> list[dict]:
    node = next(iter(core.nodes.values()))
    return json.loads(node.cli("audit", "--user", user, "--json").stdout)


def devices(core: CoreDeployment, user: str) -> list[dict]:
    node = next(iter(core.nodes.values()))
    return json.loads(node.cli("device", "list", user, "--json").stdout)


def registered(core: CoreDeployment, ua: TestUA) -> None:
    """Register through Kamailio, then wait until sipim recorded the device: the core
    answers the device before its third-party REGISTER reaches a node."""
    response = ua.register(expires=600)
    assert response.status == 200, (response.status, response.reason, core.kamailio_log()[-3000:])
    instance = f"<urn:uuid:{ua.instance}>"
    wait_for(lambda: any(d["instance"] == instance for d in devices(core, ua.user)),
             what=f"sipim's record of {ua.user}'s device")


# --- registration through the core ----------------------------------------------


def test_rfc3261_10_2_sipp_registers_through_kamailio_with_sipim_credentials(core, sipp_binary):
    """Credentials made by `sipim user add` work at Kamailio (auth_db on the view), and
    sipim records the registration from the third-party REGISTER."""
    instance = "00000000-0000-4000-8000-00000000c0de"
    result = run_sipp_scenario("register_auth", core.sipp_target(),
                               users=[User("carol", PASSWORDS["carol"])],
                               keys={"contact_params": f';+sip.instance="<urn:uuid:{instance}>"'})
    assert result.ok, result.describe() + core.kamailio_log()[-3000:]
    assert result.received_statuses() == [401, 200]
    records = wait_for(lambda: [r for r in audit(core, "carol") if r["result"] == "registered"],
                       what="sipim's audit record of carol's registration")
    assert records[0]["user"] == "carol"
    assert records[0]["instance"] == f"<urn:uuid:{instance}>"
    assert records[0]["transport"] == "tcp"
    devices = json.loads(next(iter(core.nodes.values())).cli("device", "list", "carol", "--json").stdout)
    assert [d["instance"] for d in devices] == [f"<urn:uuid:{instance}>"]


def test_rfc3261_10_2_2_unregistering_at_the_core_removes_the_device_in_sipim(core):
    with core.ua("grace", PASSWORDS["grace"]) as grace:
        registered(core, grace)
        instance = f"<urn:uuid:{grace.instance}>"
        assert grace.register(expires=0).status == 200
        wait_for(lambda: not any(d["instance"] == instance for d in devices(core, "grace")),
                 what="the device gone from sipim's bindings")
        assert any(r["result"] == "removed" for r in audit(core, "grace"))


def test_rfc3261_22_4_wrong_password_refused_by_kamailio_and_recorded_by_sipim(core, sipp_binary):
    result = run_sipp_scenario("register_wrong_password", core.sipp_target(),
                               users=[User("dave", "not-daves-password")])
    assert result.ok, result.describe()
    assert result.received_statuses()[-1] == 403
    records = wait_for(lambda: [r for r in audit(core, "dave") if r["result"] == "auth failed"],
                       what="sipim's audit record of the refused attempt")
    assert "wrong password" in records[0]["reason"]
    assert records[0]["transport"] == "tcp"
    assert not [r for r in audit(core, "dave") if r["result"] == "registered"]


def test_device_credentials_register_as_their_owner_until_revoked(core):
    """A per-device credential (provisioning) is in the view with its owner: Kamailio
    lets it register and send as the owner's AOR and asserts the owner; once the device
    is revoked the view no longer has it and Kamailio refuses it."""
    import asyncio

    from sipim.provisioning.credentials import new_device
    from sipim.store import open_store

    async def issue():
        store = await open_store(core.database)
        try:
            issued = new_device("carol", "example.test", "tablet", f"urn:uuid:{uuid.uuid4()}", time.time())
            await store.add_device(issued.device)
            return issued
        finally:
            await store.close()

    async def revoke(device_id):
        store = await open_store(core.database)
        try:
            await store.revoke_device(device_id, time.time())
        finally:
            await store.close()

    issued = asyncio.run(issue())
    owner = "<sip:carol@example.test>"
    with core.ua(issued.device.auth_username, issued.password) as tablet, \
            core.ua("bob", PASSWORDS["bob"]) as bob:
        registered(core, bob)
        contact = f'<sip:carol@{tablet.local[0]}:{tablet.local[1]};transport=tls>'
        first, second = tablet.request_with_auth(
            "REGISTER", to=owner, from_=f"{owner};tag={uuid.uuid4().hex[:8]}",
            headers=[("Contact", contact), ("Expires", "600")])
        assert second is not None and second.status == 200, (second.status, second.reason)
        body = f"from carol's tablet {uuid.uuid4()}".encode()
        first, second = tablet.request_with_auth(
            "MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
            from_=f"{owner};tag={uuid.uuid4().hex[:8]}", headers=[("Content-Type", "text/plain")], body=body)
        assert second is not None and second.status == 200, (second.status, second.reason)
        assert bob.wait_request("MESSAGE", body=body).headers.get("P-Asserted-Identity") == owner
        asyncio.run(revoke(issued.device.device_id))
        first, second = tablet.request_with_auth(
            "REGISTER", to=owner, from_=f"{owner};tag={uuid.uuid4().hex[:8]}",
            headers=[("Contact", contact), ("Expires", "600")])
        assert second is not None and second.status == 403


# --- messages through the core ------------------------------------------------------


def test_rfc3325_message_reaches_every_device_through_the_core_with_the_asserted_identity(core):
    """client -> Kamailio -> sipim -> Kamailio -> each of bob's devices, and a copy to
    alice's other device; what the client claimed as its identity is replaced."""
    with core.ua("alice", PASSWORDS["alice"]) as alice, core.ua("alice", PASSWORDS["alice"]) as alice_tablet, \
            core.ua("bob", PASSWORDS["bob"]) as bob, core.ua("bob", PASSWORDS["bob"]) as bob_laptop:
        for ua in (alice, alice_tablet, bob, bob_laptop):
            registered(core, ua)
        body = f"hello through the core {uuid.uuid4()}"
        response = alice.message("bob", body, extra_headers=[("P-Asserted-Identity", "<sip:frank@example.test>")])
        assert response.status == 200, (response.status, response.reason)
        for device in (bob, bob_laptop):
            delivered = device.wait_request("MESSAGE", body=body.encode())
            assert delivered.headers.get("P-Asserted-Identity") == "<sip:alice@example.test>"
            assert "sip:alice@example.test" in delivered.headers.get("From")
        copy = alice_tablet.wait_request("MESSAGE", body=body.encode())
        assert "sip:bob@example.test" in copy.headers.get("To")


def test_rfc3966_phone_number_target_and_history_behind_the_core(core):
    """The IM role behind the core is the same: a tel: target is looked up by sipim,
    and both sides' history (shared database) has the message."""
    node = core.nodes["B"]
    node.cli("user", "phone", "add", "frank", "+14155550106")
    with core.ua("carol", PASSWORDS["carol"]) as carol, core.ua("frank", PASSWORDS["frank"]) as frank:
        registered(core, carol)
        registered(core, frank)
        body = f"by number {uuid.uuid4()}"
        response = carol.message("frank", body, uri="tel:+14155550106")
        assert response.status == 200, (response.status, response.reason)
        assert frank.wait_request("MESSAGE", body=body.encode()).headers.get("P-Asserted-Identity") == \
            "<sip:carol@example.test>"
    for owner, peer in (("carol", "frank"), ("frank", "carol")):
        entries = json.loads(node.cli("history", owner, "--with", peer, "--json").stdout)
        entries = entries["entries"] if isinstance(entries, dict) else entries
        assert any(body in json.dumps(e) for e in entries), entries


def test_rfc3325_from_must_be_the_authenticated_user(core):
    with core.ua("alice", PASSWORDS["alice"]) as alice:
        first, second = alice.request_with_auth(
            "MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
            from_=f"<sip:bob@example.test>;tag={uuid.uuid4().hex[:8]}",
            headers=[("Content-Type", "text/plain")], body=b"spoofed")
        assert first.status == 407
        assert second is not None and second.status == 403


def test_rfc3325_request_from_untrusted_address_is_refused_by_the_node(core):
    """A node accepts requests only from the trusted core (127.0.0.1): a MESSAGE with a
    forged P-Asserted-Identity from 127.0.0.2 gets 403."""
    port = core.node_port("A")
    request = (
        f"MESSAGE sip:bob@example.test SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.2:5099;branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.test>;tag={uuid.uuid4().hex[:8]}\r\n"
        "To: <sip:bob@example.test>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 MESSAGE\r\n"
        "P-Asserted-Identity: <sip:alice@example.test>\r\n"
        "Content-Type: text/plain\r\nContent-Length: 6\r\n\r\nforged"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(request)
        answer = sock.recv(4096).decode()
    assert answer.startswith("SIP/2.0 403 "), answer


def test_rfc7118_device_on_secure_websocket_registers_and_gets_messages(core):
    """A browser-like device on Kamailio's WSS port: digest against sipim's
    credentials, third-party REGISTER, and a delivery over its WebSocket."""
    import asyncio
    import ssl

    import aiohttp

    from sipim.sip.digest import build_authorization, ha1, parse_challenge
    from sipim.sip.message import make_response
    from sipim.sip.parser import parse_message

    instance = str(uuid.uuid4())
    body = f"to the browser {uuid.uuid4()}".encode()

    def register_text(cseq: int, authorization: str | None) -> str:
        lines = ["REGISTER sip:example.test SIP/2.0",
                 f"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
                 "Max-Forwards: 70", "From: <sip:grace@example.test>;tag=ws1", "To: <sip:grace@example.test>",
                 "Call-ID: ws-call-1", f"CSeq: {cseq} REGISTER",
                 f'Contact: <sip:grace@df7jal23ls0d.invalid;transport=ws>;+sip.instance="<urn:uuid:{instance}>";reg-id=1',
                 "Expires: 600", "Supported: path, outbound, gruu"]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        return "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"

    async def scenario() -> None:
        context = ssl.create_default_context(cafile=str(core.ca_file))
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"wss://127.0.0.1:{core.wss_port}/", protocols=("sip",),
                                          ssl=context) as ws:
                await ws.send_str(register_text(1, None))
                challenge = parse_message((await ws.receive_str(timeout=10)).encode())
                assert challenge.status == 401
                parsed = parse_challenge(challenge.headers.get("WWW-Authenticate"))
                authorization = build_authorization(parsed, "REGISTER", "sip:example.test", "grace",
                                                    ha1("grace", parsed.realm, PASSWORDS["grace"], parsed.algorithm))
                await ws.send_str(register_text(2, authorization))
                assert parse_message((await ws.receive_str(timeout=10)).encode()).status == 200
                await asyncio.to_thread(
                    wait_for, lambda: any(d["instance"] == f"<urn:uuid:{instance}>" for d in devices(core, "grace")),
                    10.0, "sipim's record of the WebSocket device")

                def send_from_frank() -> int:
                    with core.ua("frank", PASSWORDS["frank"]) as frank:
                        return frank.message("grace", body).status

                sent = asyncio.ensure_future(asyncio.to_thread(send_from_frank))
                while True:
                    message = parse_message((await ws.receive_str(timeout=15)).encode())
                    if getattr(message, "method", None) == "MESSAGE":
                        await ws.send_str(make_response(message, 200, "OK", to_tag="ws").to_bytes().decode())
                        if message.body == body:
                            break
                assert message.headers.get("P-Asserted-Identity") == "<sip:frank@example.test>"
                assert await sent == 200

    asyncio.run(scenario())


# --- several nodes ----------------------------------------------------------------------


def test_rfc3428_stored_by_node_a_delivered_when_node_b_handles_the_registration(core):
    """Only node A gets traffic while erin is offline; then only node B: the
    third-party REGISTER reaches B, which finds the message A stored and delivers it."""
    try:
        core.reload_dispatcher(["A"])
        with core.ua("frank", PASSWORDS["frank"]) as frank:
            body = f"while you were away {uuid.uuid4()}"
            response = frank.message("erin", body)
            assert response.status == 202, (response.status, response.reason)
        core.reload_dispatcher(["B"])
        with core.ua("erin", PASSWORDS["erin"]) as erin:
            registered(core, erin)
            delivered = erin.wait_request("MESSAGE", body=body.encode(), timeout=10)
            assert delivered.headers.get("P-Asserted-Identity") == "<sip:frank@example.test>"
        devices = json.loads(core.nodes["A"].cli("device", "list", "erin", "--json").stdout)
        assert [d["node_id"] for d in devices] == ["B"]
    finally:
        core.reload_dispatcher(["A", "B"])


def collect_messages(ua: TestUA, wanted: set[bytes], timeout: float = 30.0) -> list[bytes]:
    """Every MESSAGE body that arrives until all of ``wanted`` did."""
    bodies: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(bodies):
        if time.monotonic() > deadline:
            raise AssertionError(f"missing: {sorted(wanted - set(bodies))[:5]}")
        bodies += [r.body for r in ua.drain(0.2) if r.method == "MESSAGE"]
    return bodies


def test_rfc3428_node_killed_during_a_stream_every_acknowledged_message_delivered_once(core):
    """kill -9 of node A while alice sends to bob through Kamailio: the dispatcher
    fails over to B; every message answered 2xx reaches bob exactly once (the claim
    of each delivery is taken in the shared database)."""
    import threading

    run = uuid.uuid4().hex[:8]
    acked: list[bytes] = []
    refused: list[tuple] = []
    answered_some = threading.Event()
    killer = threading.Thread(target=lambda: (answered_some.wait(30), core.nodes["A"].kill()))
    with core.ua("alice", PASSWORDS["alice"]) as alice, core.ua("bob", PASSWORDS["bob"]) as bob:
        registered(core, alice)
        registered(core, bob)
        killer.start()
        for index in range(40):
            body = f"stream {run} #{index}".encode()
            response = alice.message("bob", body)
            if 200 <= response.status < 300:
                acked.append(body)
            else:
                refused.append((index, response.status, response.reason))
            if index == 12:
                answered_some.set()
        killer.join()
        assert not core.nodes["A"].alive()
        marker = f"stream {run} end".encode()
        answer = alice.message("bob", marker)
        assert answer.status == 200, (answer.status, answer.reason, [(r.status, r.cseq.seq) for r in alice.stray_responses])
        received = collect_messages(bob, set(acked) | {marker})
    # The dispatcher fails over: no message is lost to the dead node.
    assert not refused, refused
    ours = [b for b in received if b.startswith(f"stream {run}".encode())]
    duplicates = {b for b in ours if ours.count(b) > 1}
    assert not duplicates, duplicates

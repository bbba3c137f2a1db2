"""`sipim serve --workers 2`: two processes behave as one server (real sockets, both stores).

UDP datagrams are spread over the workers at random (sipim/cluster/sockets.py), so
these tests exercise responses and retransmissions passed between workers,
deliveries over a connection another worker holds, and the replicated location table.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
import uuid

import pytest

from tests.support.server import SipimProcess, run_cli
from tests.support.sipua import TestUA, device_pool

from .helpers import alive, device, messages_with, registrations, wait_for, worker_of, worker_pid, worker_pids


@pytest.fixture
def devices(cluster):
    with device_pool(cluster, "udp") as open_device:
        yield open_device


def tls_devices_on_both_workers(cluster, devices, users):
    """One TLS device per user, with connections held by both workers (the kernel picks
    the worker of each connection: open more until both hold some)."""
    agents = {}
    for attempt in range(40):
        for user in users:
            if user not in agents:
                agents[user] = devices(user, "tls")
        held = {worker_of(b) for user in users for b in registrations(cluster, user)
                if b["transport"] == "tls" and b["instance"].strip("<>").endswith(agents[user].instance)}
        if held == {"w0", "w1"}:
            return agents
        agents.pop(users[attempt % len(users)]).register(expires=0)
    raise AssertionError("the kernel never gave a TLS connection to the second worker")


def test_the_supervisor_runs_two_workers_on_the_same_ports(cluster):
    assert len(worker_pids(cluster)) == 2
    assert any("2 worker processes" in line for line in cluster.output)


def test_every_message_reaches_every_device_exactly_once(cluster, devices):
    users = ["alice", "bob", "carol", "dave"]
    tls = tls_devices_on_both_workers(cluster, devices, users)
    udp = {user: devices(user, "udp") for user in users}
    tag = uuid.uuid4().hex[:8]
    expected = {user: [] for user in users}
    for sender in users:
        for recipient in users:
            if recipient == sender:
                continue
            for transport, agent in (("udp", udp[sender]), ("tls", tls[sender])):
                text = f"{tag} {sender}->{recipient} over {transport}"
                assert agent.message(recipient, text).status == 200, text
                expected[recipient].append(text.encode())
    for user in users:
        for agent in (udp[user], tls[user]):
            got = messages_with(agent, tag.encode(), timeout=2.0)
            # Each device got each message once; copies of the user's own sent messages
            # reach their other device too (From = the user).
            mine = [body for body in got if not body.startswith(f"{tag} {user}->".encode())]
            assert sorted(mine) == sorted(expected[user]), (user, agent.transport)
            sent_copies = [body for body in got if body.startswith(f"{tag} {user}->".encode())]
            assert len(sent_copies) == len(set(sent_copies))


def test_udp_registrations_taken_by_both_workers_serve_lookups_everywhere(cluster, devices):
    bob = [devices("bob", "udp") for _ in range(6)]
    instances = {f"<urn:uuid:{agent.instance}>" for agent in bob}

    def held():
        return {worker_of(b) for b in registrations(cluster, "bob") if b["instance"] in instances}

    for attempt in range(30):  # the REGISTERs land on a random worker each: refresh until both took some
        if held() == {"w0", "w1"}:
            break
        assert bob[attempt % len(bob)].register().status == 200
    assert held() == {"w0", "w1"}
    alice = devices("alice", "udp")
    tag = uuid.uuid4().hex[:8]
    for n in range(6):
        assert alice.message("bob", f"{tag} {n}").status == 200
    for agent in bob:
        assert sorted(messages_with(agent, tag.encode())) == sorted(f"{tag} {n}".encode() for n in range(6))


def test_rfc3428_stored_message_is_delivered_once_when_the_device_registers(cluster, devices):
    alice = devices("alice", "udp")
    tag = uuid.uuid4().hex[:8]
    texts = [f"{tag} while away {n}" for n in range(8)]
    for text in texts:
        assert alice.message("erin", text).status == 202
    # Registrations over UDP land on either worker; TLS stays with its connection's worker.
    first = devices("erin", "udp")
    second = devices("erin", "tls")
    for agent in (first, second):
        got = messages_with(agent, tag.encode(), timeout=3.0)
        assert got == [text.encode() for text in texts], agent.transport  # once each, in order


def every_worker_agrees(check, what):
    """Wait until ``check()`` holds for 10 requests in a row: over UDP they land on the
    workers at random, so each worker has answered (each reads the change feed itself)."""
    wait_for(lambda: all(check() for _ in range(10)), timeout=30, what=what)


def test_device_revoke_takes_effect_on_every_worker(cluster, devices):
    phone = devices("frank", "udp")
    cluster.cli("device", "revoke", "frank", f"urn:uuid:{phone.instance}")
    alice = devices("alice", "udp")
    tag = uuid.uuid4().hex[:8]
    every_worker_agrees(lambda: alice.message("frank", f"{tag} probe").status == 202, "the revocation")
    phone.drain(timeout=0.5)  # probes taken before every worker had read the change
    for n in range(10):
        assert alice.message("frank", f"{tag} {n}").status == 202  # stored, delivered nowhere
    assert messages_with(phone, f"{tag} ".encode(), timeout=1.0) == []


def test_user_remove_takes_effect_on_every_worker(cluster, devices):
    cluster.add_user("gone", "gone-secret")
    gone = devices("gone", "udp")
    alice = devices("alice", "udp")
    assert alice.message("gone", "before").status == 200
    cluster.cli("user", "remove", "gone")
    every_worker_agrees(lambda: alice.message("gone", "probe").status == 404, "the removal")
    for n in range(10):
        assert alice.message("gone", f"after {n}").status == 404
    assert [b for b in messages_with(gone, b"after", timeout=0.5)] == []
    assert gone.register().status in (401, 403)


def test_lockout_counts_failures_across_workers_once(tmp_path):
    threshold = 6
    server = SipimProcess(tmp_path / "lockout", extra_args=("--workers", "2"),
                          config_text=f"lockout_threshold = {threshold}\n").start()
    try:
        server.add_user("victim", "right-secret")
        attempts = []
        for n in range(threshold):
            # A new socket each time: the attempts come from many source ports and land
            # on both workers.
            agent = TestUA("udp", "127.0.0.1", server.ports["udp"], "victim", "right-secret",
                           instance=str(uuid.uuid4())).connect()
            attempts.append(agent.register(password="wrong").status)
            agent.close()
        assert attempts == [403] * threshold
        agent = TestUA("udp", "127.0.0.1", server.ports["udp"], "victim", "right-secret",
                       instance=str(uuid.uuid4())).connect()
        # Locked after `threshold` failures in all, not `threshold` per worker.
        assert [agent.register().status for _ in range(4)] == [403] * 4
        agent.close()
        audit = json.loads(server.cli("audit", "--user", "victim", "--json").stdout)
        failed = [r for r in audit if r["result"] == "auth failed"]
        assert len(failed) == threshold
        assert sum("now locked out" in r["reason"] for r in failed) == 1
        assert sum(r["result"] == "locked" for r in audit) >= 4
    finally:
        server.stop()


def test_a_killed_worker_is_started_again_and_service_continues(tmp_path):
    server = SipimProcess(tmp_path / "crash", extra_args=("--workers", "2")).start()
    try:
        server.add_user("alice", "alice-secret")
        server.add_user("bob", "bob-secret")
        before = worker_pids(server)
        assert len(before) == 2
        os.kill(before[1], signal.SIGKILL)
        # Datagrams sent while the worker is down wait in its socket and are answered
        # by its next process (half of these go there).
        assert options_answered(server.ports["udp"], 20, timeout=20) == 20
        after = wait_for(lambda: (pids := worker_pids(server)) and len(pids) == 2 and before[1] not in pids
                         and pids, timeout=20, what="the worker to be started again")
        assert before[0] in after
        bob = device(server, "bob", "udp")
        bob_tls = device(server, "bob", "tls")
        alice = device(server, "alice", "udp")
        for n in range(10):  # over UDP these land on both workers
            assert alice.message("bob", f"after crash {n}").status == 200
        for agent in (bob, bob_tls):
            assert sorted(messages_with(agent, b"after crash")) == sorted(
                f"after crash {n}".encode() for n in range(10))
        for agent in (alice, bob, bob_tls):
            agent.close()
        assert "was killed by SIGKILL" in server.log()
    finally:
        server.stop()


def options_answered(port: int, count: int, timeout: float) -> int:
    """Send OPTIONS from ``count`` sockets at once; how many got an answer."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        sock.sendto((f"OPTIONS sip:example.test SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                     f"Max-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=1\r\nTo: <sip:example.test>\r\n"
                     f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                    ("127.0.0.1", port))
        sockets.append(sock)
    waiting, answered = set(sockets), 0
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        readable, _, _ = select.select(list(waiting), [], [], 0.2)
        for sock in readable:
            if sock.recv(65535).startswith(b"SIP/2.0 200"):
                answered += 1
            waiting.discard(sock)
    for sock in sockets:
        sock.close()
    return answered


def test_sigterm_stops_every_worker_with_accepted_messages_committed(tmp_path):
    data = tmp_path / "stop"
    server = SipimProcess(data, extra_args=("--workers", "2")).start()
    server.add_user("alice", "alice-secret")
    server.add_user("bob", "bob-secret")
    alice = device(server, "alice", "udp")
    texts = [f"kept {n}" for n in range(20)]
    for text in texts:
        assert alice.message("bob", text).status == 202  # acknowledged: on disk
    alice.close()
    pids = worker_pids(server)
    process = server.process
    server.process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not [pid for pid in pids if alive(pid)]
    server.process = None
    history = json.loads(server.cli("history", "bob", "--json").stdout)
    assert sorted(e["body"] for e in history if e["body"].startswith("kept")) == sorted(texts)
    # And they are delivered when bob comes back (to a single-process server this time).
    again = SipimProcess(data).start()
    try:
        bob = device(again, "bob", "tls")
        assert messages_with(bob, b"kept", timeout=3.0) == [text.encode() for text in texts]
        bob.close()
    finally:
        again.stop()


def test_external_core_with_workers_is_refused_in_one_line(tmp_path):
    outcome = run_cli(tmp_path / "refused", "serve", "--workers", "2", "--external-core", "--trusted-core",
                      "127.0.0.1", "--core-uri", "sip:127.0.0.1:5070", check=False)
    assert outcome.returncode != 0
    assert outcome.stderr.strip().count("\n") == 0
    assert "--workers is not supported with --external-core" in outcome.stderr


def test_provisioning_rate_limit_holds_across_workers(tmp_path):
    from tests.support.provision import post

    limit = 4
    server = SipimProcess(tmp_path / "otp", extra_args=("--workers", "2"),
                          config_text=f"otp_rate_per_number = {limit}\n").start()
    try:
        server.add_user("dave", "dave-secret", "--phone", "+4915112345674")
        # Each request is a new HTTPS connection: the kernel spreads them over the workers.
        answers = [post(server, "otp", {"phone": "+4915112345674"}).status for _ in range(limit + 3)]
        assert answers == [202] * limit + [429] * 3
    finally:
        server.stop()


async def test_rfc7118_websocket_devices_get_messages_through_whichever_worker(cluster):
    """Browser devices on WSS connections held by both workers; MESSAGEs over UDP land
    on either worker, which sends each down the device's own WebSocket (RFC 5626 §5.3)
    directly or through the worker holding it."""
    import asyncio
    import ssl

    import aiohttp

    from sipim.sip.digest import build_authorization, ha1, parse_challenge
    from sipim.sip.message import Request, Response, make_response
    from sipim.sip.parser import parse_message

    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    url = f"wss://127.0.0.1:{cluster.ports['wss']}/"
    tag = uuid.uuid4().hex[:8]

    def register(call_id, instance, cseq, auth=None):
        headers = [("Via", f"SIP/2.0/WSS {uuid.uuid4().hex[:8]}.invalid;branch=z9hG4bK{uuid.uuid4().hex}"),
                   ("Max-Forwards", "70"), ("To", "<sip:carol@example.test>"),
                   ("From", f"<sip:carol@example.test>;tag={uuid.uuid4().hex[:6]}"), ("Call-ID", call_id),
                   ("CSeq", f"{cseq} REGISTER"),
                   ("Contact", f'<sip:b{cseq}@{uuid.uuid4().hex[:8]}.invalid;transport=ws>;reg-id=1;'
                               f'+sip.instance="<urn:uuid:{instance}>"'),
                   ("Expires", "600"), ("Supported", "path, gruu, outbound")]
        if auth:
            headers.append(("Authorization", auth))
        return Request("REGISTER", "sip:example.test", headers).to_bytes().decode()

    async def browser(session):
        ws = await session.ws_connect(url, protocols=("sip",), ssl=context)
        call_id, instance = uuid.uuid4().hex, str(uuid.uuid4())
        await ws.send_str(register(call_id, instance, 1))
        challenge = parse_challenge(parse_message((await ws.receive(timeout=5)).data.encode())
                                    .headers.get_all("WWW-Authenticate")[0])
        auth = build_authorization(challenge, "REGISTER", "sip:example.test", "carol",
                                   ha1("carol", "example.test", "carol-secret", challenge.algorithm))
        await ws.send_str(register(call_id, instance, 2, auth))
        while True:  # (a catch-up of earlier tests' messages may come first)
            answer = parse_message((await ws.receive(timeout=5)).data.encode())
            if isinstance(answer, Response):
                assert answer.status == 200, answer
                return ws, instance
            await ws.send_str(make_response(answer, 200, "OK").to_bytes().decode())

    async def receive_all(ws, seconds, expected):
        bodies = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                frame = await ws.receive(timeout=left)
            except asyncio.TimeoutError:
                break
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            request = parse_message(frame.data.encode())
            if isinstance(request, Request):
                await ws.send_str(make_response(request, 200, "OK").to_bytes().decode())
                if request.body.startswith(tag.encode()):
                    bodies.append(request.body)
                    if len(bodies) == expected:
                        # Anything more (a duplicate) would come within the same moment.
                        end = min(end, loop.time() + 0.5)
        return bodies

    async with aiohttp.ClientSession() as session:
        browsers = []
        for _ in range(12):  # until both workers hold some of the WebSockets
            browsers.append(await browser(session))
            instances = {f"<urn:uuid:{instance}>" for _, instance in browsers}
            held = {worker_of(b) for b in await asyncio.to_thread(registrations, cluster, "carol")
                    if b["instance"] in instances}
            if held == {"w0", "w1"} and len(browsers) >= 2:
                break
        assert held == {"w0", "w1"}
        alice = await asyncio.to_thread(device, cluster, "alice", "udp")
        texts = [f"{tag} to the browser {n}" for n in range(6)]
        readers = [asyncio.ensure_future(receive_all(ws, 10.0, len(texts))) for ws, _ in browsers]
        for text in texts:
            assert (await asyncio.to_thread(alice.message, "carol", text)).status == 200
        for reader in readers:
            assert sorted(await reader) == sorted(text.encode() for text in texts)
        for ws, _ in browsers:
            await ws.close()
        alice.close()


def test_reissued_device_credentials_apply_at_every_worker_at_once(cluster):
    """A device's credentials re-issued through one worker: the very next REGISTERs,
    wherever they land, accept the new password and refuse the old one."""
    from tests.support.provision import post

    instance = f"urn:uuid:{uuid.uuid4()}"

    def udp_agent(config, password=None):
        return TestUA("udp", "127.0.0.1", cluster.ports["udp"], config["username"],
                      password or config["device"]["password"], domain=config["domain"],
                      instance=instance.removeprefix("urn:uuid:"),
                      auth_user=config["device"]["auth_username"]).connect()

    first = post(cluster, "signin", {"user": "dave", "password": "dave-secret", "instance_id": instance}).json
    agent = udp_agent(first)
    # Over UDP these land on both workers, which then hold the device's HA1s in memory.
    assert [agent.register().status for _ in range(10)] == [200] * 10
    again = post(cluster, "signin", {"user": "dave", "password": "dave-secret", "instance_id": instance}).json
    assert again["device"]["password"] != first["device"]["password"]
    fresh = udp_agent(again)
    assert [fresh.register().status for _ in range(10)] == [200] * 10
    stale = udp_agent(first)
    assert [stale.register().status for _ in range(6)] == [403] * 6
    for each in (agent, fresh, stale):
        each.close()
    fresh = udp_agent(again)
    fresh.register(expires=0)
    fresh.close()


def test_privacy_rules_apply_at_every_worker_at_once(cluster, devices):
    """bob blocks alice over HTTPS (one worker); her next MESSAGEs, at either worker,
    never reach him (RFC 4745 rules, sipim/xdm/policy.py)."""
    import requests
    from requests.auth import HTTPDigestAuth

    session = requests.Session()
    session.trust_env = False
    session.verify = str(cluster.ca_file)
    session.auth = HTTPDigestAuth("bob", "bob-secret")
    base = f"https://127.0.0.1:{cluster.ports['wss']}"
    bob, alice = devices("bob", "udp"), devices("alice", "udp")
    tag = uuid.uuid4().hex[:8]
    assert alice.message("bob", f"{tag} before").status == 200
    try:
        assert session.put(base + "/api/v1/privacy", json={"blocked_users": ["alice"]}, timeout=10).status_code == 200
        for n in range(10):
            assert alice.message("bob", f"{tag} blocked {n}").status in (200, 202)  # silent
        assert messages_with(bob, tag.encode(), timeout=1.0) == [f"{tag} before".encode()]
    finally:
        session.put(base + "/api/v1/privacy", json={}, timeout=10)


def test_messages_reach_devices_while_their_home_worker_is_down(tmp_path):
    """Each device's deliveries go out from one worker, its home; while that worker is
    being started again the others deliver in its place (the sender gets 200, not a 202
    after im_delivery_wait), and every device gets every message once."""
    server = SipimProcess(tmp_path / "home", extra_args=("--workers", "2"),
                          config_text="im_delivery_wait = 0.5\n").start()
    try:
        users = [f"bob{n}" for n in range(10)]
        for name in ("alice", *users):
            server.add_user(name, f"{name}-secret")
        # One TLS device each (its connection stays with the worker that accepted it);
        # its home is a hash of the device: about half are homed at each worker.
        bobs = {name: device(server, name, "tls") for name in users}
        alice = device(server, "alice", "tls")
        survivor = worker_of(registrations(server, "alice")[0])
        victim = worker_pid(server, 1 if survivor == "w0" else 0)
        reachable = [name for name in users if worker_of(registrations(server, name)[0]) == survivor]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in worker_pids(server), timeout=20, what="the worker to be reaped")
        # It is started again 1 s later: messages sent now find some devices' home down.
        statuses = [alice.message(name, f"home down {name}").status for name in reachable]
        assert statuses == [200] * len(reachable)
        for name in reachable:
            assert messages_with(bobs[name], b"home down", timeout=1.0) == [f"home down {name}".encode()]
        for agent in (*bobs.values(), alice):
            agent.close()
    finally:
        server.stop()


def test_rfc3261_17_2_retransmissions_landing_on_another_worker_are_absorbed(cluster, devices):
    """Copies of an authenticated MESSAGE sent again over UDP reach either worker; each
    gets the answer the transaction gave, and the message is delivered once."""
    from sipim.sip.digest import build_authorization, ha1, parse_challenge

    alice, bob = devices("alice", "udp"), devices("bob", "udp")
    text = f"said once {uuid.uuid4().hex[:8]}"
    headers = [("Content-Type", "text/plain")]
    first = alice.transact(alice.build("MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
                                       headers=headers, body=text.encode()))
    challenge = parse_challenge(first.headers.get("Proxy-Authenticate"))
    authorization = build_authorization(challenge, "MESSAGE", "sip:bob@example.test", "alice",
                                        ha1("alice", "example.test", "alice-secret", challenge.algorithm))
    request = alice.build("MESSAGE", uri="sip:bob@example.test", to="<sip:bob@example.test>",
                          headers=[*headers, ("Proxy-Authorization", authorization)], body=text.encode())
    assert alice.transact(request).status == 200
    answers = []
    for _ in range(12):  # RFC 3261 §17.1.2.2 Timer E retransmissions, same bytes
        answers.append(alice.transact(request).status)
    assert answers == [200] * 12
    assert messages_with(bob, text.encode(), timeout=1.0) == [text.encode()]

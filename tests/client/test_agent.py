"""The client library against a real `sipim serve`: TLS, outbound registration,
messages both ways with another UA, IMDN reports, keep-alives, flow recovery."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid

import pytest

from sipim.client.agent import UserAgent
from sipim.client.api import ApiClient
from sipim.client.errors import CertificateUntrusted, RequestFailed, ServerUnreachable
from sipim.client.flow import SipFlow
from sipim.client.messaging import DispositionReport, IncomingMessage
from sipim.client.config import ClientConfig
from sipim.cpim import parse_cpim
from sipim.imdn import message_id
from sipim.transport.tls import ensure_certificates, server_ssl_context
from tests.support.sipua import TestUA

from .conftest import DOMAIN, tls_ports

TIMEOUT = 10


async def next_of(agent: UserAgent, kind: type, predicate=lambda event: True):
    """The next event of ``kind`` matching ``predicate`` (a shared server may owe others)."""
    while True:
        event = await agent.next_event(TIMEOUT)
        if isinstance(event, kind) and predicate(event):
            return event


def devices_of(server, user: str) -> list[dict]:
    return json.loads(server.cli("device", "list", user, "--json").stdout)


async def test_rfc5626_registers_over_tls_with_instance_and_reg_id(server, device):
    config = device("alice")
    async with UserAgent(config) as agent:
        registered = await agent.register()
        assert registered.expires > 0
        assert registered.flow_timer == 120  # RFC 5626 §4.4.1: the registrar's Flow-Timer
        assert config.instance_id in (registered.pub_gruu or "")
        listed = await asyncio.to_thread(devices_of, server, "alice")
        assert any(config.instance_id in json.dumps(entry) for entry in listed)
        await agent.unregister()
        listed = await asyncio.to_thread(devices_of, server, "alice")
        assert not any(config.instance_id in json.dumps(entry) for entry in listed)


async def test_rfc8760_md5_only_listener_is_answered_with_md5(server, device):
    async with UserAgent(device("alice", md5=True)) as agent:
        assert (await agent.register(keep=False)).expires > 0
        await agent.unregister()


async def test_library_sends_to_a_test_ua_over_its_registered_tls_connection(server, device):
    port, _ = tls_ports(server)
    bob = TestUA("tls", "127.0.0.1", port, "bob", "bob-secret", domain=DOMAIN, ca_file=server.ca_file,
                 instance=str(uuid.uuid4()))
    with bob:
        assert (await asyncio.to_thread(bob.register)).status == 200
        text = f"to the test UA {uuid.uuid4().hex[:8]}"
        async with UserAgent(device("alice")) as alice:
            result = await alice.send_message("bob", text)
        assert result.status == 200
        cpim_body = None
        for _ in range(20):
            request = await asyncio.to_thread(bob.wait_request, "MESSAGE")
            if text.encode() in request.body:
                cpim_body = request.body
                assert request.headers.get("P-Asserted-Identity") == f"<sip:alice@{DOMAIN}>"
                break
        assert cpim_body is not None
        assert message_id(parse_cpim(cpim_body)) == result.message_id
        await asyncio.to_thread(bob.register, expires=0)


async def test_library_receives_from_a_test_ua_and_answers_200(server, device):
    port, _ = tls_ports(server)
    text = f"from the test UA {uuid.uuid4().hex[:8]}"
    async with UserAgent(device("carol")) as carol:
        await carol.register()
        with TestUA("tls", "127.0.0.1", port, "bob", "bob-secret", domain=DOMAIN, ca_file=server.ca_file) as bob:
            response = await asyncio.to_thread(bob.message, "carol", text)
        # 200, not 202: the library took it on its registered flow (RFC 3428 §7).
        assert response.status == 200
        event = await next_of(carol, IncomingMessage, lambda e: e.text == text)
        assert event.sender == f"sip:bob@{DOMAIN}"


async def test_rfc5438_delivered_and_displayed_reports_reach_the_sender(server, device):
    text = f"please confirm {uuid.uuid4().hex[:8]}"
    async with UserAgent(device("dave")) as dave, UserAgent(device("erin")) as erin:
        await dave.register()
        await erin.register()
        sent = await dave.send_message("erin", text)
        received = await next_of(erin, IncomingMessage, lambda e: e.text == text)
        assert received.message_id == sent.message_id
        delivered = await next_of(dave, DispositionReport, lambda r: r.message_id == sent.message_id)
        assert (delivered.kind, delivered.status, delivered.reporter) == ("delivery", "delivered", f"sip:erin@{DOMAIN}")
        assert await erin.send_displayed(received)
        displayed = await next_of(dave, DispositionReport,
                                  lambda r: r.message_id == sent.message_id and r.kind == "display")
        assert displayed.status == "displayed"
    async with ApiClient(device("dave")) as api:
        page = await api.history(peer=f"sip:erin@{DOMAIN}")
    entry = next(e for e in page["entries"] if e["imdn_message_id"] == sent.message_id)
    assert entry["status"] == "displayed"


async def test_message_to_a_number_reaches_its_user(server, device):
    text = f"by number {uuid.uuid4().hex[:8]}"
    async with UserAgent(device("phoned", password="phoned-secret")) as phoned, UserAgent(device("alice")) as alice:
        await phoned.register()
        result = await alice.send_message("+14155550122", text)
        assert result.status == 200
        await next_of(phoned, IncomingMessage, lambda e: e.text == text)


@pytest.mark.parametrize("target, status", [("nobody", 404), ("+14155550111", 485), ("+14155550199", 404)])
async def test_refused_messages_raise_with_the_status(server, device, target, status):
    async with UserAgent(device("alice")) as alice:
        with pytest.raises(RequestFailed) as refused:
            await alice.send_message(target, "hello?")
    assert refused.value.status == status
    assert target in str(refused.value)


async def test_rfc3261_22_wrong_password_fails_registration_readably(server, device):
    async with UserAgent(device("alice", password="not-it")) as agent:
        with pytest.raises(RequestFailed, match="wrong or revoked credentials"):
            await agent.register()


async def test_a_server_signed_by_another_ca_is_not_trusted(server, device, tmp_path):
    other_ca = ensure_certificates(tmp_path / "other", "other.test").ca_cert.read_text()
    with pytest.raises(CertificateUntrusted, match="not trusted"):
        await UserAgent(device("alice", ca_pem=other_ca)).connect()


async def test_unreachable_server_is_reported(server, device):
    with pytest.raises(ServerUnreachable, match="cannot reach 127.0.0.1"):
        await UserAgent(device("alice", sip_port=1)).connect()


async def test_rfc5626_4_4_1_crlf_keepalive_is_answered_by_the_server(server, device):
    config = ClientConfig(client_keepalive_interval=0.2)
    async with UserAgent(device("alice"), config=config) as agent:
        agent.flow.keepalive.use_flow_timer(None)
        await asyncio.wait_for(agent.flow.pong_received.wait(), TIMEOUT)
        assert agent.flow.is_open


async def test_rfc5626_4_4_1_a_silent_server_fails_the_flow(tmp_path):
    files = ensure_certificates(tmp_path / "tls", "silent.test")
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(4096):
            pass  # never a pong

    listener = await asyncio.start_server(swallow, "127.0.0.1", 0,
                                          ssl=server_ssl_context(files.server_cert, files.server_key))
    port = listener.sockets[0].getsockname()[1]
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    flow = SipFlow("127.0.0.1", port, context,
                   config=ClientConfig(client_keepalive_interval=0.1, client_keepalive_timeout=0.3),
                   on_request=lambda request: None)
    try:
        await flow.connect()
        await asyncio.wait_for(flow.closed.wait(), TIMEOUT)
        assert "no keep-alive answer" in flow.failure
    finally:
        await flow.close()
        for writer in connections:
            writer.close()
        listener.close()


class Forwarder:
    """A TCP relay in front of the server whose connections a test can cut."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    async def start(self) -> int:
        self.listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.listener.sockets[0].getsockname()[1]

    async def _relay(self, client_reader, client_writer) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [client_writer, server_writer]

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


async def test_rfc5626_4_5_a_failed_flow_is_replaced_and_registered_again(server, device):
    port, _ = tls_ports(server)
    forwarder = Forwarder(port)
    relay_port = await forwarder.start()
    lost, recovered = asyncio.Event(), asyncio.Event()
    config = ClientConfig(client_recovery_base_all_failed=0.05)
    text = f"after recovery {uuid.uuid4().hex[:8]}"
    try:
        async with UserAgent(device("bob", sip_port=relay_port), config=config) as bob, \
                UserAgent(device("alice")) as alice:
            bob.on_flow_lost = lambda reason, delay: lost.set()
            bob.on_flow_recovered = recovered.set
            await bob.register()
            first_flow = bob.flow
            forwarder.cut()
            await asyncio.wait_for(lost.wait(), TIMEOUT)
            # It reaches bob only over a new flow with a new registration (RFC 5626 §4.5):
            # at once if bob is back already, else stored and sent when he registers.
            result = await alice.send_message("bob", text)
            await next_of(bob, IncomingMessage, lambda e: e.text == text)
            assert result.status in (200, 202)
            await asyncio.wait_for(recovered.wait(), TIMEOUT)
            assert bob.flow is not first_flow and bob.registered is not None
            assert forwarder.connections == 2
    finally:
        forwarder.close()


async def test_rfc3428_a_message_stored_while_offline_arrives_when_the_device_registers(server, device):
    text = f"while you were away {uuid.uuid4().hex[:8]}"
    async with UserAgent(device("alice")) as alice:
        result = await alice.send_message("erin", text, cpim=False)
    assert result.stored
    async with UserAgent(device("erin")) as erin:
        await erin.register()
        event = await next_of(erin, IncomingMessage, lambda e: e.text == text)
        assert event.sent_at is not None  # the server's Date header: when it was sent


async def test_rfc5626_4_2_2_a_503_on_refresh_keeps_the_flow_and_retries_after_retry_after(tmp_path):
    """A registrar answering the first refresh with 503 + Retry-After: the client
    waits and refreshes again over the same connection (no new flow)."""
    from sipim.client.profile import local_password_config
    from sipim.sip.message import Request, make_response
    from sipim.sip.parser import StreamFramer

    files = ensure_certificates(tmp_path / "tls", DOMAIN)
    statuses = iter([200, 503, 200])
    answered: list[int] = []
    connections = 0
    third = asyncio.Event()

    async def registrar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        framer = StreamFramer()
        while data := await reader.read(65536):
            for message in framer.feed(data):
                if not isinstance(message, Request) or message.method != "REGISTER":
                    continue
                status = next(statuses, 200)
                response = make_response(message, status, "OK" if status == 200 else "Service Unavailable",
                                         to_tag="r1")
                if status == 200 and message.expires:
                    response.headers.add("Contact", f"{message.headers.get('Contact')};expires=2")
                if status == 503:
                    response.headers.add("Retry-After", "1")
                writer.write(response.to_bytes())
                answered.append(status)
                if len(answered) == 3:
                    third.set()
        writer.close()

    listener = await asyncio.start_server(registrar, "127.0.0.1", 0,
                                          ssl=server_ssl_context(files.server_cert, files.server_key))
    port = listener.sockets[0].getsockname()[1]
    device = local_password_config(user="alice", password="x", domain=DOMAIN, sip_host="127.0.0.1", sip_port=port,
                                   https_base="https://127.0.0.1:1", ca_pem=files.ca_cert.read_text())
    try:
        async with UserAgent(device) as agent:
            await agent.register()  # 200, expires 2: refreshed after 1 s
            await asyncio.wait_for(third.wait(), TIMEOUT)  # 503, then after Retry-After the retry
            assert answered == [200, 503, 200]
            assert connections == 1 and agent.flow.is_open
    finally:
        listener.close()

"""The provisioning contract between the server and sipim's own client library:
a device set up from a one-time code and from a pairing code registers over TLS
with its own credentials, sends as the user, and uses its bearer token."""

from __future__ import annotations

import asyncio
import ssl
import uuid

import pytest

from sipim.client.agent import UserAgent
from sipim.client.api import ProvisioningClient, RequestFailed
from sipim.client.profile import DeviceConfig
from tests.support.provision import outbox, post, wait_for_code
from tests.support.server import SipimProcess
from tests.support.sipua import TestUA

PHONE = "+4915112345681"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = SipimProcess(tmp_path_factory.mktemp("prov-client"), config_text="lockout_threshold = 1000\n").start()
    process.add_user("alice", "alice-secret", "--phone", PHONE)
    process.add_user("bob", "bob-secret")
    yield process
    process.stop()


async def test_client_library_sets_up_from_an_otp_and_sends_as_the_user(server):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    base = f"https://127.0.0.1:{server.ports['wss']}"
    instance = f"urn:uuid:{uuid.uuid4()}"
    async with ProvisioningClient(base, context) as provisioning:
        seen = len(outbox(server))
        await provisioning.request_code(PHONE)
        code = await asyncio.to_thread(wait_for_code, server, PHONE, seen)
        with pytest.raises(RequestFailed):
            await provisioning.config_with_code(PHONE, "000000" if code != "000000" else "111111")
        document = await provisioning.config_with_code(PHONE, code, device_name="laptop", instance_id=instance)
    device = DeviceConfig.from_document(document)
    assert device.auth_username.startswith("alice!") and device.instance_id == instance
    bob = await asyncio.to_thread(lambda: TestUA("tls", "127.0.0.1", server.ports["tls"], "bob", "bob-secret",
                                                 ca_file=server.ca_file, instance=str(uuid.uuid4())).connect())
    try:
        assert (await asyncio.to_thread(bob.register)).status == 200
        async with UserAgent(device) as agent:
            await agent.register()
            sent = await agent.send_message("bob", "from the client library")
            assert sent.status in (200, 202)
            received = await asyncio.to_thread(bob.wait_request, "MESSAGE", timeout=10)
            assert "<sip:alice@example.test>" in received.headers.get("P-Asserted-Identity")
    finally:
        await asyncio.to_thread(bob.close)


async def test_client_library_pairs_a_second_device(server):
    first = (await asyncio.to_thread(post, server, "signin", {"user": "alice", "password": "alice-secret"})).json
    created = await asyncio.to_thread(post, server, "pairing", None,
                                      headers={"Authorization": f"Bearer {first['device']['token']}"})
    context = ssl.create_default_context(cafile=str(server.ca_file))
    async with ProvisioningClient(f"https://127.0.0.1:{server.ports['wss']}", context) as provisioning:
        document = await provisioning.pair(created.json["code"], device_name="tablet")
    second = DeviceConfig.from_document(document)
    assert second.device_id != first["device"]["id"]
    async with UserAgent(second) as agent:
        await agent.register()

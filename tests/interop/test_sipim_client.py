"""sipim's Python client with a third-party SIP client (baresip) through sipim.

baresip 1.0 knows only MD5 digest, so the server offers MD5 on its TLS listener;
the library answers the same challenges.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sipim.client.agent import UserAgent
from sipim.client.messaging import IncomingMessage
from sipim.client.profile import local_password_config
from tests.support.server import SipimProcess

from .clients import Baresip, Target, User

pytestmark = pytest.mark.interop

DOMAIN = "example.test"
ALICE = User("alice", "alice-secret")
BOB = User("bob", "bob-secret")


@pytest.fixture(scope="module")
def sipim(tmp_path_factory):
    server = SipimProcess(tmp_path_factory.mktemp("client-interop"),
                          listen=("tls:127.0.0.1:0?digest=MD5", "wss:127.0.0.1:0"),
                          config_text="lockout_threshold = 1000\n").start()
    server.add_user(ALICE.name, ALICE.password)
    server.add_user(BOB.name, BOB.password)
    yield server
    server.stop()


def alice_device(server: SipimProcess):
    return local_password_config(user="alice", password=ALICE.password, domain=DOMAIN, sip_host="127.0.0.1",
                                 sip_port=server.ports["tls"], https_base=f"https://127.0.0.1:{server.ports['wss']}",
                                 ca_pem=server.ca_file.read_text())


async def test_baresip_receives_what_the_library_sends(baresip_binary, sipim):
    # text/plain: baresip 1.0 refuses message/cpim bodies (the server then stores them, 202).
    target = Target("127.0.0.1", sipim.ports["tls"], "tls", DOMAIN, ca_file=sipim.ca_file)
    text = f"from the sipim client {uuid.uuid4().hex[:8]}"
    with Baresip(target, BOB) as bob:
        assert await asyncio.to_thread(bob.wait_registered) == 200
        async with UserAgent(alice_device(sipim)) as alice:
            result = await alice.send_message("bob", text, cpim=False)
        assert result.status == 200  # baresip took it on its own flow
        received = await asyncio.to_thread(bob.wait_for_message, text)
        assert received.sender.startswith(f"<sip:alice@{DOMAIN}>")
        assert (received.content_type or "").startswith("text/plain")


async def test_the_library_receives_what_baresip_sends(baresip_binary, sipim):
    target = Target("127.0.0.1", sipim.ports["tls"], "tls", DOMAIN, ca_file=sipim.ca_file)
    text = f"from baresip {uuid.uuid4().hex[:8]}"
    async with UserAgent(alice_device(sipim)) as alice:
        await alice.register()
        with Baresip(target, BOB, contacts=[f"sip:alice@{DOMAIN}"]) as bob:
            assert await asyncio.to_thread(bob.wait_registered) == 200
            await asyncio.to_thread(bob.send_message, f"sip:alice@{DOMAIN}", text)
            while True:
                event = await alice.next_event(15)
                if isinstance(event, IncomingMessage) and event.text == text:
                    break
            assert event.sender == f"sip:bob@{DOMAIN}"

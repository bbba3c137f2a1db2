"""A real client with provisioned device credentials: baresip signs in with the
credentials of its configuration document, registers over TLS, messages -- and
after `sipim device revoke` it is unregistered and cannot register again."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support.provision import post
from tests.support.server import SipimProcess
from tests.support.sipua import TestUA

from .clients import Baresip, BaresipError, Target, User

pytestmark = pytest.mark.interop

DOMAIN = "example.test"


@pytest.fixture(scope="module")
def sipim(tmp_path_factory):
    # baresip 1.0 needs an MD5-only listener; the wss listener serves HTTPS.
    server = SipimProcess(tmp_path_factory.mktemp("prov-interop"),
                          listen=("tls:127.0.0.1:0?digest=MD5", "wss:127.0.0.1:0"),
                          config_text="lockout_threshold = 1000\n").start()
    server.add_user("alice", "alice-secret")
    server.add_user("bob", "bob-secret")
    yield server
    server.stop()


def provisioned(server, instance: str) -> tuple[Target, User, dict]:
    answer = post(server, "signin", {"user": "alice", "password": "alice-secret",
                                     "instance_id": f"urn:uuid:{instance}", "device_name": "baresip"})
    assert answer.status == 200, answer.body
    config = answer.json
    port = int(config["sip"]["outbound_proxy"]["tls"].split(";")[0].rsplit(":", 1)[1])
    target = Target("127.0.0.1", port, "tls", config["domain"], ca_file=server.ca_file)
    return target, User(config["username"], config["device"]["password"], config["device"]["auth_username"]), config


def wait_until_revocation_applies(server, user: User, timeout: float = 10.0) -> None:
    """The running server learns of a revocation from the store's change feed (polled
    every second): probe with the device's credentials (a query REGISTER, RFC 3261
    §10.2.3, which changes nothing) until they are refused."""
    deadline = time.monotonic() + timeout
    with TestUA("tls", "127.0.0.1", server.ports["tls"], user.name, user.password, ca_file=server.ca_file,
                auth_user=user.auth_user).connect() as probe:
        while True:
            first, second = probe.request_with_auth("REGISTER")
            status = (second or first).status
            if status == 403:
                return
            assert time.monotonic() < deadline, f"the revoked credentials still get {status}"
            time.sleep(0.1)


def test_baresip_registers_with_device_credentials_and_is_stopped_by_revocation(baresip_binary, sipim):
    instance = str(uuid.uuid4())
    target, user, config = provisioned(sipim, instance)
    bob = TestUA("tls", "127.0.0.1", sipim.ports["tls"], "bob", "bob-secret", ca_file=sipim.ca_file,
                 instance=str(uuid.uuid4())).connect()
    assert bob.register().status == 200
    with Baresip(target, user, instance_uuid=instance, contacts=[f"sip:bob@{DOMAIN}"]) as phone:
        assert phone.wait_registered() == 200
        registrations = json.loads(sipim.cli("device", "list", "alice", "--json").stdout)
        assert [r["device_id"] for r in registrations] == [config["device"]["id"]]
        phone.send_message(f"sip:bob@{DOMAIN}", "hello from baresip")
        received = bob.wait_request("MESSAGE", body=b"hello from baresip", timeout=10)
        assert "<sip:alice@example.test>" in received.headers.get("P-Asserted-Identity")

        sipim.cli("device", "revoke", "alice", f"urn:uuid:{instance}")
        assert json.loads(sipim.cli("device", "list", "alice", "--json").stdout) == []
    # The running server learns of the revocation from the store's change feed (polled
    # every second); once the device's token is refused, its digest credentials are too.
    wait_until_revocation_applies(sipim, user)
    # baresip retries a lost flow only after RFC 5626 §4.5's 15-30 s back-off; a fresh
    # start with the same credentials shows the refusal at once.
    with Baresip(target, user, instance_uuid=instance) as again:
        with pytest.raises(BaresipError, match="403"):
            again.wait_registered()
    bob.close()

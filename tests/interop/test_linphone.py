"""Linphone's console client (linphonec 5.1, belle-sip) registers with a real `sipim serve`.

linphonec is the first client here that speaks SHA-256 digest (RFC 8760), verifies the
server's TLS certificate against a configured root CA, and asks for GRUUs (RFC 5627)
with a +sip.instance but no reg-id. The driver is tests/interop/linphone.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import trustme

from tests.support.server import DOMAIN, SipimProcess

from .linphone import Linphone

pytestmark = pytest.mark.interop

ALICE = ("alice", "alice-secret")
BOB = ("bob", "bob-secret")
MD5_FIRST = "?digest=MD5,SHA-256"

# Index 0 of each transport is a listener with the DEFAULT challenge order (SHA-256
# first, then MD5: RFC 8760 §2.4 lets the client take the topmost it supports).
LISTEN = (
    "udp:127.0.0.1:0",
    "tcp:127.0.0.1:0",
    "tls:127.0.0.1:0",
    f"tls:127.0.0.1:0{MD5_FIRST}",
)


@pytest.fixture(scope="module")
def sipim(tmp_path_factory: pytest.TempPathFactory):
    server = SipimProcess(tmp_path_factory.mktemp("linphone"), listen=LISTEN,
                          config_text="lockout_threshold = 1000\n").start()
    try:
        for name, password in (ALICE, BOB):
            server.add_user(name, password)
        yield server
    finally:
        server.stop()


def port_of(server: SipimProcess, transport: str, index: int = 0) -> int:
    return [port for name, port in server.listening if name == transport][index]


def linphone(server: SipimProcess, transport: str = "tls", account: tuple[str, str] = ALICE,
             *, index: int = 0, **options) -> Linphone:
    name, password = account
    options.setdefault("ca_file", server.ca_file)
    return Linphone("127.0.0.1", port_of(server, transport, index), transport, name, password,
                    DOMAIN, **options)


def audit(server: SipimProcess, *args: str) -> list[dict]:
    return json.loads(server.cli("audit", "--json", *args).stdout)


def devices(server: SipimProcess, user: str) -> list[dict]:
    return json.loads(server.cli("device", "list", user, "--json").stdout)


# --- digest ------------------------------------------------------------------------

def test_rfc8760_linphone_answers_the_default_challenge_with_sha256_over_tls(linphonec_binary, sipim):
    with linphone(sipim, "tls") as agent:
        outcome = agent.wait_registered()
        assert outcome.ok and outcome.status == 200, agent.describe()
        challenge = agent.received_responses("REGISTER")[0]
        offered = [value.split("algorithm=")[1].split(",")[0]
                   for value in challenge.header("WWW-Authenticate")]
        assert offered == ["SHA-256", "MD5"]
        register = agent.sent_requests("REGISTER")[1]
        credentials = register.authorization()
        assert credentials is not None
        assert credentials["algorithm"] == "SHA-256"
        # RFC 3261 §22.4 / RFC 7616 §3.4: the digest uri is the Request-URI.
        assert credentials["uri"] == register.start_line.split(" ")[1] == f"sip:{DOMAIN}"
        assert credentials["qop"] == "auth" and credentials["username"] == "alice"
    registered = audit(sipim, "--user", "alice", "--result", "registered")
    assert any(r["transport"] == "tls" and r["user_agent"].startswith("Linphonec/")
               for r in registered)


def test_rfc8760_2_4_linphone_takes_the_topmost_challenge_when_md5_comes_first(linphonec_binary, sipim):
    # belle-sip answers the first challenge whose algorithm it knows, as RFC 8760
    # §2.4 says: an operator who puts MD5 first gets MD5 from Linphone.
    with linphone(sipim, "tls", index=1) as agent:
        assert agent.wait_registered().ok, agent.describe()
        credentials = agent.sent_requests("REGISTER")[1].authorization()
        assert credentials is not None and credentials["algorithm"] == "MD5"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rfc3261_10_linphone_registers_over_plain_transports(linphonec_binary, sipim, transport):
    with linphone(sipim, transport, BOB) as agent:
        outcome = agent.wait_registered()
        assert outcome.ok and outcome.status == 200, agent.describe()
        assert agent.sent_requests("REGISTER")[1].authorization()["algorithm"] == "SHA-256"
        contact = agent.sent_requests("REGISTER")[0].header("Contact")[0]
        assert f";transport={transport}>" in contact
    assert any(r["transport"] == transport for r in
               audit(sipim, "--user", "bob", "--result", "registered"))


def test_rfc3261_10_2_8_linphone_retries_with_min_expires_after_423(linphonec_binary, sipim):
    # sipim's default min_expires is 60: a 30 s registration gets 423 + Min-Expires,
    # and linphonec asks again for that interval (re-using the nonce, nc=2).
    with linphone(sipim, "tcp", BOB, expires=30) as agent:
        assert agent.wait_registered().ok, agent.describe()
        answers = agent.received_responses("REGISTER")
        assert [m.status for m in answers] == [401, 423, 200]
        assert answers[1].header("Min-Expires") == ["60"]
        assert agent.sent_requests("REGISTER")[-1].header("Expires") == ["60"]


def test_rfc3261_22_4_linphone_with_a_wrong_password_is_refused_and_recorded(linphonec_binary, sipim):
    instance = str(uuid.uuid4())
    with linphone(sipim, "tls", ("alice", "not-alices-password"), instance_uuid=instance) as agent:
        outcome = agent.wait_registered()
        assert not outcome.ok and outcome.status == 403, agent.describe()
    failures = [r for r in audit(sipim, "--result", "auth failed")
                if r["instance"] == f"<urn:uuid:{instance}>"]
    assert failures, audit(sipim, "--result", "auth failed")
    assert "wrong password" in failures[0]["reason"]
    assert failures[0]["aor"] == f"sip:alice@{DOMAIN}" and failures[0]["transport"] == "tls"
    assert not any(d["instance"] == f"<urn:uuid:{instance}>" for d in devices(sipim, "alice"))


# --- GRUU and the device list ---------------------------------------------------------

def test_rfc5627_linphone_device_is_listed_by_instance_and_gets_its_gruus(linphonec_binary, sipim):
    instance = str(uuid.uuid4())
    with linphone(sipim, "tls", instance_uuid=instance) as agent:
        assert agent.wait_registered().ok, agent.describe()
        register = agent.sent_requests("REGISTER")[-1]
        # RFC 5627 §4.1: Supported: gruu and a +sip.instance; no reg-id (no RFC 5626 flow).
        assert "gruu" in [s.strip() for v in register.header("Supported") for s in v.split(",")]
        contact = register.header("Contact")[0]
        assert f'+sip.instance="<urn:uuid:{instance}>"' in contact and "reg-id" not in contact
        mine = [d for d in devices(sipim, "alice") if d["instance"] == f"<urn:uuid:{instance}>"]
        assert len(mine) == 1, devices(sipim, "alice")
        # RFC 5626 §6: without reg-id the binding is keyed by the instance alone.
        assert mine[0]["binding_key"] == f"<urn:uuid:{instance}>"
        assert mine[0]["transport"] == "tls" and mine[0]["user_agent"].startswith("Linphonec/")
        # RFC 5627 §5.2: the 200 OK carries this device's public and temporary GRUU.
        answered = agent.received_responses("REGISTER")[-1].header("Contact")
        assert any(f'pub-gruu="sip:alice@{DOMAIN};gr=urn:uuid:{instance}"' in c for c in answered)
        assert any("temp-gruu=" in c for c in answered)


def test_rfc3261_10_2_2_linphone_quit_unregisters_its_device(linphonec_binary, sipim):
    instance = str(uuid.uuid4())
    agent = linphone(sipim, "tcp", BOB, instance_uuid=instance)
    with agent:
        assert agent.wait_registered().ok, agent.describe()
        assert any(d["instance"] == f"<urn:uuid:{instance}>" for d in devices(sipim, "bob"))
    # `quit` sent REGISTER with Expires: 0 (the Contact has no expires parameter).
    last = agent.sent_requests("REGISTER")[-1]
    assert last.header("Expires") == ["0"], agent.describe()
    assert agent.received_responses("REGISTER")[-1].status == 200
    assert not any(d["instance"] == f"<urn:uuid:{instance}>" for d in devices(sipim, "bob"))


# --- TLS server authentication ---------------------------------------------------------

def test_rfc5922_linphone_refuses_a_server_certificate_from_another_ca(linphonec_binary, sipim,
                                                                        tmp_path: Path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with linphone(sipim, "tls", ca_file=other_ca) as agent:
        outcome = agent.wait_registered()
        assert not outcome.ok and outcome.status is None, agent.describe()
        assert "Certificate verification failed" in agent.log()
        assert agent.received_responses("REGISTER") == []


def test_rfc5922_7_2_linphone_checks_the_server_name_against_the_certificate(linphonec_binary, sipim):
    # sipim's certificate names example.test (and localhost): any other name is refused.
    with linphone(sipim, "tls", server_name="not-the-domain.test") as agent:
        outcome = agent.wait_registered()
        assert not outcome.ok and outcome.status is None, agent.describe()
        assert "CN-mismatch" in agent.log()

"""Third-party SIP clients register with a real `sipim serve` (sipp, sipsak, baresip).

sipp and sipsak answer only the first challenge and know only MD5; baresip gives up
when any offered challenge is not MD5.  sipim's per-listener challenge order
(`?digest=...` on --listen) serves each of them; the default listeners keep
SHA-256 first (RFC 8760 §2.4).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import SipimProcess

from .clients import Baresip, Target, User, run_sipp_scenario, sipsak_register

pytestmark = pytest.mark.interop

DOMAIN = "example.test"
ALICE = User("alice", "alice-secret")
BOB = User("bob", "bob-secret")
MD5_FIRST = "?digest=MD5,SHA-256"

LISTEN = (
    f"udp:127.0.0.1:0{MD5_FIRST}",
    f"tcp:127.0.0.1:0{MD5_FIRST}",
    f"tls:127.0.0.1:0{MD5_FIRST}",
    "tls:127.0.0.1:0?digest=MD5",  # for baresip
)


def start_server(data_dir: Path, config_text: str = "") -> SipimProcess:
    server = SipimProcess(data_dir, listen=LISTEN, config_text=config_text).start()
    for user in (ALICE, BOB):
        server.add_user(user.name, user.password)
    return server


@pytest.fixture(scope="module")
def sipim(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("interop"), "lockout_threshold = 1000\n")
    yield server
    server.stop()


def target(server: SipimProcess, transport: str, index: int = 0) -> Target:
    ports = [port for name, port in server.listening if name == transport]
    return Target("127.0.0.1", ports[index], transport, DOMAIN, ca_file=server.ca_file)


def audit(server: SipimProcess, *args: str) -> list[dict]:
    return json.loads(server.cli("audit", "--json", *args).stdout)


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tls_bridge(server: SipimProcess):
    """Debian's sipp is built without TLS: socat wraps its TCP in TLS, verifying sipim's CA."""
    assert shutil.which("socat"), "socat is needed for sipp over TLS (scripts/install-test-deps.sh installs it)"
    port = free_tcp_port()
    tls = target(server, "tls")
    process = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
         f"OPENSSL:127.0.0.1:{tls.port},cafile={server.ca_file},verify=1,commonname={DOMAIN}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield Target("127.0.0.1", port, "tcp", DOMAIN)
    finally:
        process.terminate()
        process.wait(timeout=5)


# --- sipp ------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_registers_with_digest(sipp_binary, sipim, transport):
    instance = f';+sip.instance="<urn:uuid:{uuid.uuid4()}>";reg-id=1'
    result = run_sipp_scenario("register_auth", target(sipim, transport), users=[ALICE, BOB],
                               keys={"contact_params": instance})
    assert result.ok, result.describe()
    assert result.received_statuses() == [401, 200, 401, 200]
    records = audit(sipim, "--user", "alice", "--result", "registered")
    assert any(r["transport"] == transport for r in records)


def test_sipp_registers_over_tls(sipp_binary, sipim):
    with tls_bridge(sipim) as bridge:
        result = run_sipp_scenario("register_auth", bridge, users=[ALICE])
    assert result.ok, result.describe()
    assert result.received_statuses() == [401, 200]
    assert any(r["transport"] == "tls" for r in audit(sipim, "--user", "alice", "--result", "registered"))


def test_sipp_signing_another_uri_than_the_request_uri_is_accepted(sipp_binary, sipim):
    # Left alone, sipp signs sip:HOST:PORT instead of the Request-URI; mature cores accept it.
    result = run_sipp_scenario("register_auth", target(sipim, "udp"), users=[BOB], auth_uri=None)
    assert result.ok, result.describe()


def test_sipp_wrong_password_is_refused_and_recorded(sipp_binary, sipim):
    result = run_sipp_scenario("register_wrong_password", target(sipim, "udp"),
                               users=[User("bob", "not-bobs-password")])
    assert result.ok, result.describe()
    assert result.received_statuses()[-1] == 403
    failures = audit(sipim, "--user", "bob", "--result", "auth failed")
    assert failures and "wrong password" in failures[0]["reason"]


def test_sipp_repeated_failures_trigger_the_lock_out(sipp_binary, tmp_path):
    server = start_server(tmp_path / "lockout", "lockout_threshold = 3\nlockout_window = 60\n")
    try:
        for _ in range(3):
            result = run_sipp_scenario("register_wrong_password", target(server, "udp"),
                                       users=[User("alice", "guess")])
            assert result.received_statuses()[-1] == 403
        locked = run_sipp_scenario("register_auth", target(server, "udp"), users=[ALICE], timeout=5)
        assert not locked.ok  # the right password no longer helps
        assert locked.received_statuses()[-1] == 403
        assert audit(server, "--result", "locked")
    finally:
        server.stop()


# --- sipsak -----------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_sipsak_registers_with_digest(sipsak_binary, sipim, transport):
    result = sipsak_register(target(sipim, transport), ALICE)
    assert result.ok, result.describe()
    assert result.received_statuses() == [401, 200]


# --- baresip ---------------------------------------------------------------------

def devices(server: SipimProcess, user: str) -> list[dict]:
    return json.loads(server.cli("device", "list", user, "--json").stdout)


def test_rfc5627_two_baresip_devices_get_distinct_bindings_and_gruus(baresip_binary, sipim):
    where = target(sipim, "tls", index=1)  # the MD5-only listener
    phone_id, laptop_id = str(uuid.uuid4()), str(uuid.uuid4())
    phone = Baresip(where, BOB, instance_uuid=phone_id)
    laptop = Baresip(where, BOB, instance_uuid=laptop_id)
    with phone, laptop:
        assert phone.wait_registered() == 200
        assert laptop.wait_registered() == 200
        mine = [d for d in devices(sipim, "bob") if d["instance"] in
                (f"<urn:uuid:{phone_id}>", f"<urn:uuid:{laptop_id}>")]
        assert len(mine) == 2
        for agent, instance in ((phone, phone_id), (laptop, laptop_id)):
            ok = [m for m in agent.traced_messages()
                  if not m.outgoing and m.start_line.startswith("SIP/2.0 200") and "REGISTER" in m.header("CSeq")[0]]
            # RFC 5627 §5.2: each device's own public GRUU in the 200 OK.
            assert any(f'pub-gruu="sip:bob@{DOMAIN};gr=urn:uuid:{instance}"' in c
                       for c in ok[-1].header("Contact"))
    # The same phone comes back (same instance id): its binding is replaced, not added.
    again = Baresip(where, BOB, instance_uuid=phone_id)
    with again:
        assert again.wait_registered() == 200
        mine = [d for d in devices(sipim, "bob") if d["instance"] in
                (f"<urn:uuid:{phone_id}>", f"<urn:uuid:{laptop_id}>")]
        assert len([d for d in mine if d["instance"] == f"<urn:uuid:{phone_id}>"]) == 1


def test_baresip_needs_an_md5_only_listener(baresip_binary, sipim):
    # baresip 1.0 gives up when any offered challenge is not MD5 (even with MD5
    # first); the operator's per-listener setting (?digest=MD5) is what serves it.
    with Baresip(target(sipim, "tls", index=0), ALICE) as agent:
        with pytest.raises(Exception):
            agent.wait_registered(timeout=3)
    with Baresip(target(sipim, "tls", index=1), ALICE) as agent:
        assert agent.wait_registered() == 200

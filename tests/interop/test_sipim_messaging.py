"""Pager-mode MESSAGE between third-party clients through sipim (RFC 3428).

sipp sends and sipp receives (the benchmark's scenarios, one call each); baresip
devices exchange messages; a wrong From is refused.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.server import SipimProcess
from tests.support.waiting import wait_for

from .clients import Baresip, Target, User, free_port

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
DOMAIN = "example.test"
ALICE = User("alice", "alice-secret")
BOB = User("bob", "bob-secret")


@pytest.fixture(scope="module")
def sipim(tmp_path_factory):
    server = SipimProcess(tmp_path_factory.mktemp("messaging"),
                          listen=("udp:127.0.0.1:0?digest=MD5", "tls:127.0.0.1:0?digest=MD5"),
                          config_text="lockout_threshold = 1000\n").start()
    server.add_user(ALICE.name, ALICE.password)
    server.add_user(BOB.name, BOB.password, "--phone", "+14155550102")
    server.add_user("carol", "carol-secret", "--phone", "+14155550199")
    server.add_user("dave", "dave-secret", "--phone", "+14155550199")
    yield server
    server.stop()


def sipp(server: SipimProcess, scenario: str, injection: str, workdir: Path, *extra: str) -> subprocess.Popen:
    workdir.mkdir(exist_ok=True)
    (workdir / "users.csv").write_text(injection)
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{server.ports['udp']}", "-sf", str(SCENARIOS / scenario),
         "-inf", str(workdir / "users.csv"), "-t", "u1", "-i", "127.0.0.1", "-key", "domain", DOMAIN,
         "-key", "expires", "300", "-nostdin", "-nd", "-m", "1", "-trace_msg", "-message_file",
         str(workdir / "messages.log"), *extra],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_sipp_sender_to_sipp_receiver_through_sipim(sipp_binary, sipim, tmp_path):
    receiver_port = free_port()
    receiver = sipp(sipim, "message_auth_uas.xml", "SEQUENTIAL\nbob;bob-secret\n", tmp_path / "receiver",
                    "-oocsf", str(SCENARIOS / "message_answer_ooc.xml"), "-p", str(receiver_port),
                    "-d", "20000", "-auth_uri", DOMAIN, "-trace_logs", "-log_file",
                    str(tmp_path / "receiver" / "registered.log"))
    try:
        log = tmp_path / "receiver" / "registered.log"
        wait_for(lambda: log.exists() and "registered" in log.read_text(), 15, "the receiving sipp to register")
        sender = sipp(sipim, "message_auth_uac.xml", "SEQUENTIAL\nalice;alice-secret;bob\n", tmp_path / "sender",
                      "-auth_uri", f"bob@{DOMAIN}")
        assert sender.wait(timeout=20) == 0, sender.stderr.read()
        received = (tmp_path / "receiver" / "messages.log").read_text()
        assert "MESSAGE sip:bob@" in received
        # The receiver sees the identity the core asserted after authentication.
        assert "P-Asserted-Identity: <sip:alice@example.test>" in received
    finally:
        receiver.terminate()
        receiver.wait(timeout=5)


def test_sipp_messages_a_phone_number_and_the_server_finds_the_user(sipp_binary, sipim, tmp_path):
    receiver = sipp(sipim, "message_auth_uas.xml", "SEQUENTIAL\nbob;bob-secret\n", tmp_path / "receiver",
                    "-oocsf", str(SCENARIOS / "message_answer_ooc.xml"), "-p", str(free_port()),
                    "-d", "20000", "-auth_uri", DOMAIN, "-trace_logs", "-log_file",
                    str(tmp_path / "receiver" / "registered.log"))
    try:
        log = tmp_path / "receiver" / "registered.log"
        wait_for(lambda: log.exists() and "registered" in log.read_text(), 15, "the receiving sipp to register")
        # sip:+14155550102@example.test -- a number, not a User ID; the device does no lookup.
        sender = sipp(sipim, "message_auth_uac.xml", "SEQUENTIAL\nalice;alice-secret;+14155550102\n",
                      tmp_path / "sender", "-auth_uri", f"+14155550102@{DOMAIN}")
        assert sender.wait(timeout=20) == 0, sender.stderr.read()
        received = (tmp_path / "receiver" / "messages.log").read_text()
        assert "MESSAGE sip:bob@" in received
    finally:
        receiver.terminate()
        receiver.wait(timeout=5)


def sipp_to_uri(server: SipimProcess, uri: str, expected: int, workdir: Path) -> subprocess.Popen:
    workdir.mkdir(exist_ok=True)
    template = (Path(__file__).parent / "scenarios" / "message_to_uri_uac.xml").read_text()
    scenario = workdir / "message_to_uri_uac.xml"
    scenario.write_text(template.replace("EXPECTED_STATUS", str(expected)))
    (workdir / "users.csv").write_text(f"SEQUENTIAL\nalice;alice-secret;{uri}\n")
    return subprocess.Popen(
        ["sipp", f"127.0.0.1:{server.ports['udp']}", "-sf", str(scenario), "-inf", str(workdir / "users.csv"),
         "-t", "u1", "-i", "127.0.0.1", "-key", "domain", DOMAIN, "-nostdin", "-nd", "-m", "1",
         "-auth_uri", uri.split(":", 1)[1].split(";", 1)[0]],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.parametrize("uri, expected", [("tel:+14155550177", 404), ("tel:+1-415-555-0199", 485),
                                           (f"sip:+14155550177@{DOMAIN};user=phone", 404),
                                           (f"sip:+14155550199@{DOMAIN};user=phone", 485)])
def test_sipp_numbers_unknown_give_404_and_shared_give_485_ambiguous(sipp_binary, sipim, tmp_path, uri, expected):
    sender = sipp_to_uri(sipim, uri, expected, tmp_path / "sender")
    assert sender.wait(timeout=20) == 0, sender.stderr.read()


def test_sipp_messages_a_tel_uri_and_it_reaches_the_right_user(sipp_binary, sipim, tmp_path):
    receiver = sipp(sipim, "message_auth_uas.xml", "SEQUENTIAL\nbob;bob-secret\n", tmp_path / "receiver",
                    "-oocsf", str(SCENARIOS / "message_answer_ooc.xml"), "-p", str(free_port()),
                    "-d", "20000", "-auth_uri", DOMAIN, "-trace_logs", "-log_file",
                    str(tmp_path / "receiver" / "registered.log"))
    try:
        log = tmp_path / "receiver" / "registered.log"
        wait_for(lambda: log.exists() and "registered" in log.read_text(), 15, "the receiving sipp to register")
        sender = sipp_to_uri(sipim, "tel:+1-415-555-0102", 200, tmp_path / "sender")
        assert sender.wait(timeout=20) == 0, sender.stderr.read()
        received = (tmp_path / "receiver" / "messages.log").read_text()
        assert "MESSAGE sip:bob@" in received and "P-Asserted-Identity: <sip:alice@example.test>" in received
    finally:
        receiver.terminate()
        receiver.wait(timeout=5)


def test_baresip_devices_exchange_messages_and_every_device_gets_them(baresip_binary, sipim):
    tls_port = sipim.ports["tls"]
    target = Target("127.0.0.1", tls_port, "tls", DOMAIN, ca_file=sipim.ca_file)
    text = f"hello from alice {uuid.uuid4().hex[:8]}"
    with Baresip(target, BOB, instance_uuid=str(uuid.uuid4())) as phone, \
            Baresip(target, BOB, instance_uuid=str(uuid.uuid4())) as laptop, \
            Baresip(target, ALICE, contacts=[f"sip:bob@{DOMAIN}"]) as alice:
        for agent in (phone, laptop, alice):
            assert agent.wait_registered() == 200
        alice.send_message(f"sip:bob@{DOMAIN}", text)
        for device in (phone, laptop):
            received = device.wait_for_message(text, timeout=10)
            assert received.sender.startswith("<sip:alice@example.test>")
    history = json.loads(sipim.cli("history", "bob", "--json", "--with", "alice").stdout)
    assert any(entry["body"] == text for entry in history)

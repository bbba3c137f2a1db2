"""`sipim client` with the server's provisioning and XDM sides: a device set up
with a one-time code from the SMS outbox, pairing, per-device credentials and
bearer tokens, contacts -- end to end, as subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import pytest

from tests.support.provision import outbox, wait_for_code
from tests.support.server import DOMAIN, sipim_command

from .test_cli_client import Listener, assert_one_line_error, client, client_env

OLGA_PHONE = "+14155550144"
PETE_PHONE = "+14155550155"


@pytest.fixture(scope="module")
def people(server):
    server.cli("user", "add", "olga", "--password", "olga-secret", "--phone", OLGA_PHONE)
    server.cli("user", "add", "pete", "--password", "pete-secret", "--phone", PETE_PHONE)
    return server


def server_args(server) -> list[str]:
    return ["--server", f"https://127.0.0.1:{server.ports['wss']}", "--ca", str(server.ca_file)]


def setup_with_code_from_the_outbox(server, home, phone: str, *extra: str) -> subprocess.CompletedProcess:
    """`setup +NUMBER`: the client asks for a code and prompts; the test reads the
    SMS the outbox gateway "sent" and types it in."""
    seen = len(outbox(server))
    process = subprocess.Popen(sipim_command("client", "setup", phone, *server_args(server), *extra),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=client_env(home))
    prompt = process.stderr.readline()
    assert prompt.startswith(f"A code was sent to {phone}"), prompt
    code = wait_for_code(server, phone, seen)
    stdout, stderr = process.communicate(f"{code}\n", timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, prompt + stderr)


@pytest.fixture(scope="module")
def olga_home(people, tmp_path_factory):
    home = tmp_path_factory.mktemp("olga")
    result = setup_with_code_from_the_outbox(people, home, OLGA_PHONE, "--device-name", "olga-laptop")
    assert result.returncode == 0, result.stderr
    assert f"set up sip:olga@{DOMAIN}" in result.stdout
    return home


@pytest.fixture(scope="module")
def bob_home(people, tmp_path_factory):
    home = tmp_path_factory.mktemp("bob")
    result = client(home, "setup", "--user", "bob", "--password", "bob-secret", *server_args(people))
    assert result.returncode == 0, result.stderr
    return home


def profile(home) -> dict:
    return json.loads((home / "profiles" / "default.json").read_text())


def test_otp_setup_gives_the_device_its_own_credentials_and_token(olga_home):
    document = profile(olga_home)
    assert document["user_id"] == f"sip:olga@{DOMAIN}"
    device = document["device"]
    assert device["token"] and device["id"] and device["name"] == "olga-laptop"
    assert device["auth_username"] != "olga"  # a device credential, not the user's password
    assert "BEGIN CERTIFICATE" in document["ca_pem"]


def test_otp_device_sends_the_other_side_listens_and_the_delivery_report_comes_back(olga_home, bob_home):
    text = f"hello from olga's laptop {uuid.uuid4().hex[:8]}"
    bob = Listener(bob_home)
    olga = Listener(olga_home)
    try:
        bob.wait_for(f"listening as sip:bob@{DOMAIN}")
        olga.wait_for(f"listening as sip:olga@{DOMAIN}")
        sent = client(olga_home, "send", "bob", text)
        assert sent.returncode == 0, sent.stderr
        identifier = re.search(r"message id (\S+)", sent.stdout).group(1)
        bob.wait_for(re.escape(f"sip:olga@{DOMAIN}: {text}"))
        olga.wait_for(re.escape(f"delivered: your message {identifier} to sip:bob@{DOMAIN}"))
    finally:
        bob.stop()
        olga.stop()
    # The HTTP API takes the device's bearer token.
    history = client(olga_home, "history", "--with", "bob")
    assert history.returncode == 0, history.stderr
    assert text in history.stdout


def test_a_wrong_code_is_refused(people, tmp_path):
    result = client(tmp_path, "setup", PETE_PHONE, "--code", "000000", *server_args(people))
    assert_one_line_error(result, "one-time code was refused (403)")
    assert not (tmp_path / "profiles" / "default.json").exists()


def test_pairing_gives_a_second_device_its_own_credentials(olga_home, people, tmp_path):
    shown = client(olga_home, "pair")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"Pairing code: \S+", shown.stdout)
    assert "█" in shown.stdout or "▀" in shown.stdout  # the QR code, drawn in the terminal
    link = json.loads(client(olga_home, "pair", "--json").stdout)["url"]
    assert "#pair=" in link
    paired = client(tmp_path, "setup", "--pair", link, "--ca", str(people.ca_file), "--device-name", "olga-phone")
    assert paired.returncode == 0, paired.stderr
    first, second = profile(olga_home)["device"], profile(tmp_path)["device"]
    assert second["id"] != first["id"] and second["auth_username"] != first["auth_username"]
    assert second["instance_id"] != first["instance_id"]
    # A pairing code is single use.
    again = client(tmp_path, "setup", "--pair", link, "--ca", str(people.ca_file), "--profile", "again")
    assert_one_line_error(again, "pairing code was refused")


def test_network_setup_outside_a_trusted_network_is_refused(people, tmp_path):
    result = client(tmp_path, "setup", "--network", *server_args(people))
    assert_one_line_error(result, "403", "a code is needed")


def test_contacts_add_list_and_remove(bob_home, people):
    added = client(bob_home, "contacts", "add", "olga", "--name", "Olga")
    assert added.returncode == 0, added.stderr
    assert f"added sip:olga@{DOMAIN}" in added.stdout
    # A number is looked up to its User ID first: the list holds User IDs only.
    by_number = client(bob_home, "contacts", "add", PETE_PHONE)
    assert by_number.returncode == 0, by_number.stderr
    assert f"added sip:pete@{DOMAIN}" in by_number.stdout
    listed = client(bob_home, "contacts")
    assert f"sip:olga@{DOMAIN}  Olga" in listed.stdout and f"sip:pete@{DOMAIN}" in listed.stdout
    removed = client(bob_home, "contacts", "remove", "olga")
    assert removed.returncode == 0, removed.stderr
    assert f"sip:olga@{DOMAIN}" not in client(bob_home, "contacts").stdout
    assert_one_line_error(client(bob_home, "contacts", "remove", "olga"), "not in the contact list")
    assert_one_line_error(client(bob_home, "contacts", "add", "+14155550177"), "no user with this number")
    assert_one_line_error(client(bob_home, "contacts", "frobnicate"), "contacts add URI")


def test_a_revoked_device_stops_listening_and_is_refused_readably(people, tmp_path):
    result = setup_with_code_from_the_outbox(people, tmp_path, PETE_PHONE)
    assert result.returncode == 0, result.stderr
    device_id = profile(tmp_path)["device"]["id"]
    settings = tmp_path / "client.toml"
    settings.write_text("client_recovery_base_all_failed = 0.05\n")  # reconnect at once
    listener = Listener(tmp_path, "--config", str(settings))
    listener.wait_for(f"listening as sip:pete@{DOMAIN}")
    people.cli("device", "revoke", "pete", device_id)
    # The server closes the device's connection; the client reconnects, is refused, and says so.
    assert listener.process.wait(timeout=30) == 1
    stderr = listener.process.stderr.read()
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("sipim client: the server no longer accepts this device")
    assert_one_line_error(client(tmp_path, "history"), "the API refused this device (401)")
    assert_one_line_error(client(tmp_path, "send", "olga", "still there?"), "refused this device's credentials")


def test_first_contact_trusted_by_a_confirmed_fingerprint(people, tmp_path):
    """No --ca: the user confirms the server certificate's fingerprint; the CA the
    configuration brings must have issued that certificate, and is used from then on."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate((people.data_dir / "tls" / "server.pem").read_bytes())
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    result = client(tmp_path, "setup", "--user", "pete", "--password", "pete-secret",
                    "--server", f"https://127.0.0.1:{people.ports['wss']}", "--trust-fingerprint", fingerprint)
    assert result.returncode == 0, result.stderr
    assert profile(tmp_path)["ca_pem"] == people.ca_file.read_text()
    assert client(tmp_path, "history").returncode == 0


def test_first_contact_asks_the_user_to_confirm_the_fingerprint_on_a_terminal(people, tmp_path):
    """On a terminal, setup shows the certificate's fingerprint and asks; "y" pins it."""
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificate = x509.load_pem_x509_certificate((people.data_dir / "tls" / "server.pem").read_bytes())
    expected = certificate.fingerprint(hashes.SHA256()).hex().upper()
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            sipim_command("client", "setup", "--user", "pete", "--password", "pete-secret",
                          "--server", f"https://127.0.0.1:{people.ports['wss']}"),
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env(tmp_path))
        os.write(controller, b"y\n")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, stderr
    shown = stderr.replace(":", "").replace("\n", " ")
    assert expected in shown  # the fingerprint the user compares with the operator's
    assert "Trust this server?" in stdout
    assert profile(tmp_path)["ca_pem"] == people.ca_file.read_text()


def test_first_contact_declined_on_a_terminal_stops(people, tmp_path):
    import os

    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            sipim_command("client", "setup", "--user", "pete", "--password", "pete-secret",
                          "--server", f"https://127.0.0.1:{people.ports['wss']}"),
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env(tmp_path))
        os.write(controller, b"n\n")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line_error(result, "not signed by a CA this computer trusts")
    assert not (tmp_path / "profiles" / "default.json").exists()

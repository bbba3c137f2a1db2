"""`sipim serve` start-up: secure defaults, the private CA, the operator's certificate, expiry."""

from __future__ import annotations

import socket
import ssl
import time
import uuid

import pytest
import requests
import trustme
from cryptography.hazmat.primitives import serialization

from tests.support.server import SipimProcess
from tests.support.sipua import TestUA


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_default_listeners_are_tls_5061_and_wss_8443_only(tmp_path):
    if not (port_free(5061) and port_free(8443)):
        pytest.skip("ports 5061/8443 are in use on this machine")
    server = SipimProcess(tmp_path / "d", listen=(), allow_insecure=False).start()
    try:
        assert server.listening == [("tls", 5061), ("wss", 8443)]
        banner = "".join(server.output)
        assert "CA SHA-256 fingerprint" in banner and str(server.ca_file) in banner
        # Bound to every address: the download link names the server, not 0.0.0.0.
        assert ":8443/ca.pem" in banner and "https://0.0.0.0" not in banner
        assert "plain transport" not in server.log()
    finally:
        server.stop()


def test_plain_listener_opens_with_a_warning(make_server):
    server = make_server(listen=("udp:127.0.0.1:0", "tls:127.0.0.1:0"), allow_insecure=False)
    assert "plain transport udp:127.0.0.1:0 is open" in server.log()


def test_private_ca_is_created_once_and_reused(make_server, tmp_path):
    data = tmp_path / "ca"
    first = make_server(data_dir=data)
    fingerprint = [l for l in first.output if "fingerprint" in l]
    first.stop()
    second = make_server(data_dir=data)
    assert [l for l in second.output if "fingerprint" in l] == fingerprint
    assert oct((data / "tls" / "ca.key").stat().st_mode & 0o777) == "0o600"
    context = ssl.create_default_context(cafile=str(second.ca_file))
    with socket.create_connection(("127.0.0.1", second.ports["tls"])) as raw:
        with context.wrap_socket(raw, server_hostname="example.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # on purpose: first contact
def test_the_private_ca_certificate_is_downloadable_and_matches_the_printed_fingerprint(make_server):
    import hashlib

    from cryptography import x509

    server = make_server()
    session = requests.Session()
    session.trust_env = False
    # Fetched as a new device would, before it trusts anything; the fingerprint is the check.
    response = session.get(f"https://127.0.0.1:{server.ports['wss']}/ca.pem", verify=False, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-pem-file"
    assert response.content == server.ca_file.read_bytes()
    der = x509.load_pem_x509_certificate(response.content).public_bytes(serialization.Encoding.DER)
    fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    banner = "".join(server.output)
    assert f"CA SHA-256 fingerprint {fingerprint}" in banner
    assert f"download: https://127.0.0.1:{server.ports['wss']}/ca.pem" in banner
    assert b"PRIVATE KEY" not in response.content


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_operator_certificate_is_used(make_server, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("sip.operator.example")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = make_server(extra_args=("--tls-cert", str(cert_file), "--tls-key", str(key_file)))
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", server.ports["tls"])) as raw:
        with context.wrap_socket(raw, server_hostname="sip.operator.example"):
            pass
    assert not (server.data_dir / "tls" / "ca.pem").exists()
    # No private CA, nothing to download (the operator's CA is the operator's business).
    session = requests.Session()
    session.trust_env = False
    # (The operator's certificate names sip.operator.example, not 127.0.0.1.)
    response = session.get(f"https://127.0.0.1:{server.ports['wss']}/ca.pem", verify=False, timeout=10)
    assert response.status_code == 404


def test_rfc3261_10_3_stale_bindings_expire(make_server):
    server = make_server(config_text="min_expires = 1\ndefault_expires = 2\n")
    server.add_user("alice", "alice-secret")
    with TestUA("udp", "127.0.0.1", server.ports["udp"], "alice", "alice-secret",
                instance=str(uuid.uuid4())) as alice:
        assert alice.register(expires=2).status == 200
        assert server.cli("device", "list", "alice").stdout.count("urn:uuid") == 1
        time.sleep(3.5)
        _, query = alice.request_with_auth("REGISTER")
        assert query.headers.get_all("Contact") == []
    assert "no registered devices" in server.cli("device", "list", "alice").stdout

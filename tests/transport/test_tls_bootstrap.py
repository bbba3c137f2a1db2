"""First-start TLS material: private CA + server certificate, reused afterwards."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sipim.transport.tls import client_ssl_context, ensure_certificates, server_ssl_context


def _sans(path) -> set:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_first_start_creates_ca_and_server_cert_with_ip_sans_and_private_keys_0600(tmp_path):
    files = ensure_certificates(tmp_path, "example.test")
    assert files.created
    assert files.ca_cert.parent == tmp_path / "tls"
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert _sans(files.server_cert) == {
        x509.DNSName("example.test"), x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1")),
    }
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert files.ca_fingerprint_sha256 == ":".join(
        f"{b:02X}" for b in ca.fingerprint(hashes.SHA256()))


def test_second_start_reuses_the_certificates(tmp_path):
    first = ensure_certificates(tmp_path, "example.test")
    contents = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, first.server_cert, first.server_key)}
    second = ensure_certificates(tmp_path, "example.test")
    assert not second.created
    assert second.ca_fingerprint_sha256 == first.ca_fingerprint_sha256
    assert {p: p.read_bytes() for p in contents} == contents


def test_missing_hostname_regenerates_server_cert_but_keeps_the_ca(tmp_path):
    first = ensure_certificates(tmp_path, "example.test")
    ca_bytes = first.ca_cert.read_bytes()
    second = ensure_certificates(tmp_path, "example.test", ("localhost", "sip.example.test", "10.1.2.3"))
    assert second.created
    assert second.ca_cert.read_bytes() == ca_bytes
    assert x509.DNSName("sip.example.test") in _sans(second.server_cert)
    assert x509.IPAddress(ipaddress.ip_address("10.1.2.3")) in _sans(second.server_cert)


def test_expiring_server_cert_is_renewed(tmp_path):
    first = ensure_certificates(tmp_path, "example.test")
    old = x509.load_pem_x509_certificate(first.server_cert.read_bytes())
    later = old.not_valid_after_utc - datetime.timedelta(days=1)
    renewed = ensure_certificates(tmp_path, "example.test", now=later)
    assert renewed.created
    new = x509.load_pem_x509_certificate(renewed.server_cert.read_bytes())
    assert new.not_valid_after_utc > old.not_valid_after_utc
    assert renewed.ca_fingerprint_sha256 == first.ca_fingerprint_sha256


def test_contexts_require_tls_1_2_and_the_client_verifies_against_the_ca(tmp_path):
    files = ensure_certificates(tmp_path, "example.test")
    server = server_ssl_context(files.server_cert, files.server_key)
    client = client_ssl_context(files.ca_cert)
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname

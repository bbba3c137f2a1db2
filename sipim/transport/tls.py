"""TLS bootstrap: a private CA and a server certificate made on first start, and SSL contexts.

A fresh install must speak TLS and WSS at once (secure transports are the default), so
the first start creates in `data_dir/tls/`:

    ca.pem / ca.key          a private CA (EC P-256, 10 years); clients import ca.pem
    server.pem / server.key  the server certificate for the SIP domain and host names,
                             with IP addresses as iPAddress SANs, signed by that CA

Later starts reuse the files.  The server certificate is made again when it is about to
expire, when a requested host name is missing from it, or when it was not signed by
the CA on disk.  The CA is never replaced by this module: devices trust it.
Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TLSFiles", "ensure_certificates", "server_ssl_context", "client_ssl_context"]

CA_VALIDITY = datetime.timedelta(days=3650)
# Below the 398 days browsers accept for server certificates; renewed automatically.
SERVER_VALIDITY = datetime.timedelta(days=397)
# Renew the server certificate this long before it expires.
RENEW_BEFORE = datetime.timedelta(days=30)
# Tolerate clocks of clients slightly behind ours.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    # "AB:CD:..." (upper-case hex, colon separated), shown to users who pin the CA.
    ca_fingerprint_sha256: str
    # True when this call wrote a new CA or server certificate.
    created: bool


def ensure_certificates(data_dir: str | os.PathLike[str], domain: str,
                        hostnames: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
                        *, now: datetime.datetime | None = None) -> TLSFiles:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    tls_dir = Path(data_dir) / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    files = dict(ca_cert=tls_dir / "ca.pem", ca_key=tls_dir / "ca.key",
                 server_cert=tls_dir / "server.pem", server_key=tls_dir / "server.key")
    names = _unique([domain, *hostnames])
    created = False

    if files["ca_cert"].exists() and files["ca_key"].exists():
        ca_cert = x509.load_pem_x509_certificate(files["ca_cert"].read_bytes())
        ca_key = serialization.load_pem_private_key(files["ca_key"].read_bytes(), password=None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _make_ca(ca_key, domain, now)
        _write_private(files["ca_key"], _key_pem(ca_key))
        _write_public(files["ca_cert"], ca_cert.public_bytes(serialization.Encoding.PEM))
        created = True

    if created or not _server_cert_usable(files["server_cert"], files["server_key"], ca_cert, names, now):
        server_key = ec.generate_private_key(ec.SECP256R1())
        server_cert = _make_server_cert(server_key, ca_cert, ca_key, names, now)
        _write_private(files["server_key"], _key_pem(server_key))
        _write_public(files["server_cert"], server_cert.public_bytes(serialization.Encoding.PEM))
        created = True

    fingerprint = ca_cert.fingerprint(hashes.SHA256()).hex().upper()
    return TLSFiles(**files,
                    ca_fingerprint_sha256=":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)),
                    created=created)


def server_ssl_context(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """Server side of TLS/WSS: TLS 1.2 or later, no client certificate asked for.

    Clients authenticate with SIP digest (RFC 3261 §22), not certificates.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(os.fspath(cert), os.fspath(key))
    return context


def client_ssl_context(cafile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """Client side: verifies the server against `cafile` (the system store when None)."""
    context = ssl.create_default_context(cafile=os.fspath(cafile) if cafile is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# ---------------------------------------------------------------------------

def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for name in names:
        name = name.strip().lower().strip("[]")
        if name:
            seen.setdefault(name, None)
    return list(seen)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _make_ca(key: ec.EllipticCurvePrivateKey, domain: str, now: datetime.datetime) -> x509.Certificate:
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipim"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"sipim private CA for {domain}"[:64]),
    ])
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_server_cert(key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, ca_key,
                      names: list[str], now: datetime.datetime) -> x509.Certificate:
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_cert_usable(cert_path: Path, key_path: Path, ca_cert: x509.Certificate,
                        names: list[str], now: datetime.datetime) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE <= now or cert.not_valid_before_utc > now:
        return False
    present = {_general_name(n) for n in names}
    return present <= set(sans)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start (never world-readable, even briefly), then renamed in.
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _write_public(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)

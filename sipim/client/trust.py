"""Trusting the server at first contact, before the device has its CA.

A fresh device does not yet hold the CA the device configuration will bring
(``ca_pem``), yet it must not send a phone number's code or a password to
whoever answers.  Three ways, in this order:

1. ``--ca FILE``: the server's CA certificate (``DATA_DIR/tls/ca.pem``) handed
   over by the operator -- the server is verified as usual;
2. the system's CA store, for a server with a publicly trusted certificate;
3. the server certificate's SHA-256 fingerprint, compared by the user with the
   one the operator gives (``openssl x509 -in DATA_DIR/tls/server.pem -noout
   -fingerprint -sha256``) and confirmed at the prompt or with
   ``--trust-fingerprint``: the connection is then pinned to exactly that
   certificate, and the CA in the configuration received must have issued it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .errors import CertificateUntrusted, ClientError, ServerUnreachable
from .flow import open_tls


def format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


def parse_fingerprint(text: str) -> bytes:
    cleaned = text.strip().replace(":", "").replace(" ", "")
    if cleaned.lower().startswith("sha256="):
        cleaned = cleaned[7:]
    try:
        digest = bytes.fromhex(cleaned)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ClientError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return digest


def context_from_ca(ca_pem: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    except ssl.SSLError as error:
        raise ClientError(f"the CA certificate is not usable: {error.reason or error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def read_ca_file(path: str) -> str:
    try:
        text = open(path, encoding="ascii").read()
    except OSError as error:
        raise ClientError(f"cannot read the CA file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ClientError(f"{path} is not a PEM certificate file") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ClientError(f"{path} is not a PEM certificate file")
    return text


async def verified_by(host: str, port: int, context: ssl.SSLContext, timeout: float) -> bool:
    """True when the server's certificate verifies with ``context``; False when it does not."""
    try:
        _, writer = await open_tls(host, port, context, timeout=timeout)
    except CertificateUntrusted:
        return False
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (asyncio.TimeoutError, OSError, ssl.SSLError):
        pass
    return True


async def server_certificate(host: str, port: int, timeout: float) -> bytes:
    """The server's certificate (DER) without verifying it, to show its fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await open_tls(host, port, context, timeout=timeout)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
    if not der:
        raise ServerUnreachable(f"{host}:{port} sent no certificate")
    return der


def fingerprint_of(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


def pinned(digest: bytes) -> aiohttp.Fingerprint:
    return aiohttp.Fingerprint(digest)


def check_issued_by(certificate_der: bytes, ca_pem: str) -> None:
    """The pinned server certificate must come from the CA the configuration names,
    or the device would trust a CA the confirmed server never vouched for."""
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
        authorities = x509.load_pem_x509_certificates(ca_pem.encode("ascii"))
    except ValueError as error:
        raise CertificateUntrusted(f"the configuration's CA is not readable: {error}") from None
    for authority in authorities:
        try:
            certificate.verify_directly_issued_by(authority)
            return
        except (ValueError, TypeError, InvalidSignature):
            continue
    raise CertificateUntrusted("the CA in the configuration did not issue the certificate you confirmed")

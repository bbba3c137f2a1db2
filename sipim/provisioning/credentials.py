"""New per-device credentials (sans-IO apart from the system's random numbers).

A device gets a digest username of its own (``alice!3f9a2c7d10``), a random
password of which only the HA1 values are kept (RFC 7616 §3.4.2, RFC 8760), and a
bearer token of which only a hash is kept.  The password and token appear once, in
the configuration document handed to the device.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, replace

from sipim.core.auth import DEVICE_SEPARATOR, token_hash
from sipim.sip.digest import ha1
from sipim.store.models import DeviceCredential

MAX_NAME = 64
MAX_INSTANCE = 200
# RFC 8141 URN (as RFC 5626 §4.1 wants for +sip.instance): urn:NID:NSS, no quotes or <>.
_URN = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[^\s<>\"]+")


class BadDeviceRequest(ValueError):
    """An instance id or device name a device asked for is unusable; says why."""


@dataclass(frozen=True, slots=True)
class IssuedDevice:
    device: DeviceCredential
    password: str
    token: str


def normalise_instance(value: object) -> str:
    """``<urn:uuid:...>`` or ``urn:uuid:...`` -> ``urn:uuid:...``; None -> a new urn:uuid."""
    if value is None or value == "":
        return f"urn:uuid:{uuid.uuid4()}"
    if not isinstance(value, str) or len(value) > MAX_INSTANCE:
        raise BadDeviceRequest(f"instance_id must be a URN of at most {MAX_INSTANCE} characters")
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not _URN.fullmatch(text) or any(0xD800 <= ord(ch) <= 0xDFFF or ord(ch) < 32 for ch in text):
        raise BadDeviceRequest("instance_id must be a URN such as urn:uuid:6f1d... (RFC 5626 §4.1)")
    return text.lower() if text.lower().startswith("urn:uuid:") else text


def normalise_name(value: object, fallback: str) -> str:
    if value is None or value == "":
        return normalise_name(fallback[:MAX_NAME], "device") if fallback else "device"
    if not isinstance(value, str):
        raise BadDeviceRequest("device_name must be a string")
    name = " ".join(value.split())
    if not name or len(name) > MAX_NAME or any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in name):
        raise BadDeviceRequest(f"device_name must be 1 to {MAX_NAME} printable characters")
    return name


def _secrets(auth_username: str, realm: str) -> tuple[str, str, str, str]:
    password = secrets.token_urlsafe(18)
    token = secrets.token_urlsafe(32)
    return (password, token, ha1(auth_username, realm, password, "MD5"),
            ha1(auth_username, realm, password, "SHA-256"))


def new_device(username: str, domain: str, name: str, instance_id: str, now: float) -> IssuedDevice:
    short = secrets.token_hex(5)
    auth_username = f"{username}{DEVICE_SEPARATOR}{short}"
    password, token, md5, sha256 = _secrets(auth_username, domain)
    device = DeviceCredential(device_id=f"d-{short}", username=username, domain=domain, name=name,
                              instance_id=instance_id, auth_username=auth_username, ha1_md5=md5,
                              ha1_sha256=sha256, token_hash=token_hash(token), created_at=now)
    return IssuedDevice(device, password, token)


def reissue(device: DeviceCredential, name: str | None) -> IssuedDevice:
    """Fresh password and token for the same device (same id, username, instance)."""
    password, token, md5, sha256 = _secrets(device.auth_username, device.domain)
    return IssuedDevice(replace(device, name=name or device.name, ha1_md5=md5, ha1_sha256=sha256,
                                token_hash=token_hash(token)), password, token)

"""The device configuration document (JSON), in the spirit of GSMA RCS
auto-configuration: who the user is, the device's own credentials, where to
register and over which transports, and which CA to trust.  Sans-IO."""

from __future__ import annotations

from dataclasses import dataclass

from sipim.provisioning.credentials import IssuedDevice
from sipim.store.models import User


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the device reaches the server: a host name and the public ports."""

    host: str
    https_port: int
    tls_port: int | None  # None: no SIP over TLS listener
    wss: bool = True


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_device_config(user: User, issued: IssuedDevice, endpoints: Endpoints, ca_pem: str | None) -> dict:
    device = issued.device
    https = _hostport(endpoints.host, endpoints.https_port)
    outbound: dict[str, str] = {}
    if endpoints.tls_port:
        outbound["tls"] = f"sips:{_hostport(endpoints.host, endpoints.tls_port)};transport=tls"
    if endpoints.wss:
        outbound["wss"] = f"wss://{https}/"
    return {
        "user_id": f"sip:{user.username}@{user.domain}",
        "username": user.username,
        "domain": user.domain,
        "display_name": user.display_name,
        "device": {
            "id": device.device_id,
            "name": device.name,
            "instance_id": device.instance_id,
            "auth_username": device.auth_username,
            "password": issued.password,
            "token": issued.token,
        },
        "sip": {
            "realm": user.domain,
            "registrar": f"sip:{user.domain}",
            "outbound_proxy": outbound,
        },
        "http": {
            "api": f"https://{https}/api/v1",
            "xcap_root": f"https://{https}/xcap",
        },
        "ca_pem": ca_pem,
    }

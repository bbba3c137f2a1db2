"""A shared sipim server for the client tests, and device configurations for its users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sipim.client.profile import DeviceConfig, local_password_config
from tests.support.server import DOMAIN, SipimProcess

USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret", "dave": "dave-secret",
         "erin": "erin-secret"}


@pytest.fixture(scope="package")  # stopped once tests/client is done
def server(tmp_path_factory) -> Iterator[SipimProcess]:
    """tls (SHA-256 first), tls with MD5 only, and wss (the HTTPS API) on one server,
    shared by every client test (each test uses its own texts, users or profiles)."""
    process = SipimProcess(tmp_path_factory.mktemp("client-server"),
                           listen=("tls:127.0.0.1:0", "tls:127.0.0.1:0?digest=MD5", "wss:127.0.0.1:0"),
                           config_text="lockout_threshold = 1000\n").start()
    try:
        for name, password in USERS.items():
            process.add_user(name, password)
        # One number, two users: a message to it is ambiguous (RFC 3261 §21.4.23, 485).
        process.cli("user", "add", "shared1", "--password", "x-secret", "--phone", "+14155550111")
        process.cli("user", "add", "shared2", "--password", "x-secret", "--phone", "+14155550111")
        process.cli("user", "add", "phoned", "--password", "phoned-secret", "--phone", "+14155550122")
        yield process
    finally:
        process.stop()


def tls_ports(server: SipimProcess) -> tuple[int, int]:
    """(SHA-256-first TLS port, MD5-only TLS port)."""
    ports = [port for transport, port in server.listening if transport == "tls"]
    return ports[0], ports[1]


def device_for(server: SipimProcess, user: str, *, password: str | None = None, md5: bool = False,
               sip_port: int | None = None, ca_pem: str | None = None) -> DeviceConfig:
    default, md5_port = tls_ports(server)
    return local_password_config(
        user=user, password=password or USERS.get(user, f"{user}-secret"), domain=DOMAIN, sip_host="127.0.0.1",
        sip_port=sip_port or (md5_port if md5 else default), https_base=f"https://127.0.0.1:{server.ports['wss']}",
        ca_pem=ca_pem or server.ca_file.read_text())


@pytest.fixture
def device(server):
    def make(user: str, **kwargs) -> DeviceConfig:
        return device_for(server, user, **kwargs)

    return make

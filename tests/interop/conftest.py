"""Fixtures for interop tests: locate the third-party SIP clients.

CI installs sipp (sip-tester), sipsak, baresip and kamailio from Debian, so a
missing binary FAILS the test — unless SIPIM_ALLOW_MISSING_CLIENTS=1, for a
developer machine without them, where it is skipped instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clients import find_binary

ALLOW_MISSING_ENV = "SIPIM_ALLOW_MISSING_CLIENTS"


def require_binary(name: str, debian_package: str) -> str:
    """Path of ``name``; fail (or skip when allowed) if it is not installed."""
    path = find_binary(name)
    if path is None:
        message = (f"{name} not found (Debian package {debian_package}); "
                   f"set {ALLOW_MISSING_ENV}=1 to skip instead of failing")
        if os.environ.get(ALLOW_MISSING_ENV) == "1":
            pytest.skip(message)
        pytest.fail(message)
    return path


@pytest.fixture(scope="session")
def sipp_binary() -> str:
    return require_binary("sipp", "sip-tester")


@pytest.fixture(scope="session")
def sipsak_binary() -> str:
    return require_binary("sipsak", "sipsak")


@pytest.fixture(scope="session")
def linphonec_binary() -> str:
    return require_binary("linphonec", "linphone-cli")


@pytest.fixture(scope="session")
def baresip_binary() -> str:
    require_binary("stdbuf", "coreutils")
    return require_binary("baresip", "baresip-core")


@pytest.fixture(scope="session")
def kamailio_binary() -> str:
    return require_binary("kamailio", "kamailio")


# Accounts provisioned in the self-check Kamailio.
KAMAILIO_USERS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(scope="module")
def kamailio(kamailio_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A Kamailio registrar (udp, tcp, tls) for tests/interop/test_clients_against_kamailio.py."""
    from .kamailio_fixture import kamailio_has_tls, start_kamailio

    if not kamailio_has_tls():
        require_binary("kamailio-tls-module(tls.so)", "kamailio-tls-modules")
    workdir: Path = tmp_path_factory.mktemp("kamailio")
    server = start_kamailio(workdir, KAMAILIO_USERS)
    try:
        yield server
    finally:
        server.stop()

"""Fixtures for the transport tests: real sockets on 127.0.0.1, port 0, on both loops.

Every async test here runs twice, on the default asyncio loop and on uvloop (the
production loop), through pytest-asyncio's loop factory hook.
"""

from __future__ import annotations

import asyncio
import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
    uvloop = None

from sipim.transport.tls import TLSFiles, ensure_certificates

from transport_helpers import Recorder


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> TLSFiles:
    return ensure_certificates(tmp_path_factory.mktemp("data"), "example.test")

"""Fixtures running `sipim serve --workers 2` on both storage engines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import _drop_schema
from tests.integration.conftest import _postgres_url_or_skip
from tests.support.server import SipimProcess

USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine_database(request) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    url, schema = _postgres_url_or_skip()
    yield url
    asyncio.run(_drop_schema(schema))


@pytest.fixture(scope="module")
def cluster(engine_database, tmp_path_factory) -> Iterator[SipimProcess]:
    """Two workers, users provisioned; lock-out out of the way (tested on its own server)."""
    process = SipimProcess(tmp_path_factory.mktemp("cluster"), database=engine_database,
                           extra_args=("--workers", "2"),
                           config_text="lockout_threshold = 100000\nchange_poll_interval = 0.5\n").start()
    try:
        for name in USERS:
            process.add_user(name, f"{name}-secret")
        yield process
    finally:
        process.stop()

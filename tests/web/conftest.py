"""Fixtures for the browser client tests: Debian's Chromium driven by Playwright.

`make test` installs chromium (scripts/install-test-deps.sh) and builds the
client bundle, so in CI these tests run.  A machine without chromium gets it
installed here; only when it cannot be installed are the tests skipped.
Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_BASE_URL, _check_postgres, _drop_schema
from tests.support.server import SipimProcess

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SIPIM_TEST_CHROMIUM", "/usr/bin/chromium")
BUNDLE = ROOT / "sipim" / "web" / "static" / "index.html"
PHONES = {"ivan": "+4915112345601"}
PASSWORDS = {name: f"{name}-secret" for name in
             ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "kate")}


def run_coroutine(coroutine):
    """asyncio.run in a thread of its own: Playwright's sync API keeps an event loop
    running in this one."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    installed = subprocess.run(["bash", "-c", ". scripts/lib.sh && apt_install_missing chromium"],
                               cwd=ROOT, capture_output=True, text=True, timeout=900)
    if Path(CHROMIUM).exists():
        return CHROMIUM
    pytest.skip(f"{CHROMIUM} is absent and could not be installed: {installed.stderr.strip()[-300:]}")


def _bundle() -> None:
    """Build the client bundle when it is missing or older than its sources."""
    sources = [p for p in (ROOT / "web").rglob("*") if p.is_file() and "node_modules" not in p.parts]
    if BUNDLE.exists() and all(p.stat().st_mtime <= BUNDLE.stat().st_mtime for p in sources):
        return
    result = subprocess.run([str(ROOT / "scripts" / "build-web.sh")], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"building the web client failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium per module: its event loop must be gone before async tests run."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra)")
    executable = _chromium_or_skip()
    _bundle()
    with playwright_api.sync_playwright() as playwright:
        # --no-sandbox: the suite runs as root in CI, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def web_server(request, tmp_path_factory) -> Iterator[SipimProcess]:
    """A server per engine with TLS (MD5 only, for baresip) and WSS, and users alice..grace."""
    database = schema = None
    if request.param == "postgresql":
        reason = run_coroutine(_check_postgres())
        if reason:
            pytest.skip(reason)
        schema = f"t_{uuid.uuid4().hex[:16]}"
        separator = "&" if "?" in POSTGRES_BASE_URL else "?"
        database = f"{POSTGRES_BASE_URL}{separator}schema={schema}"
    process = SipimProcess(tmp_path_factory.mktemp("web"), database=database,
                           listen=("tls:127.0.0.1:0?digest=MD5", "wss:127.0.0.1:0"),
                           config_text="lockout_threshold = 1000\n").start()
    try:
        for name, password in PASSWORDS.items():
            process.add_user(name, password, *(("--phone", PHONES[name]) if name in PHONES else ()))
        yield process
    finally:
        process.stop()
        if schema:
            run_coroutine(_drop_schema(schema))


def have_binary(name: str) -> bool:
    return shutil.which(name) is not None

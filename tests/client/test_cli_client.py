"""`sipim client ...` as a user runs it: subprocesses against a real server.

Profiles live in a temporary SIPIM_CLIENT_HOME.  Errors must be one readable
line on stderr with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import os
import queue
import re
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support.server import DOMAIN, sipim_command

from .conftest import tls_ports


def client_env(home: Path) -> dict[str, str]:
    return {**os.environ, "SIPIM_CLIENT_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def client(home: Path, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(sipim_command("client", *args), capture_output=True, text=True, timeout=timeout,
                          env=client_env(home), input=stdin)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    # Progress notes may come first; the error itself is one line, the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("sipim client: ")]
    assert len(errors) == 1 and result.stderr.rstrip("\n").endswith(errors[0]), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def setup_args(server, user: str, password: str, *extra: str) -> list[str]:
    port, _ = tls_ports(server)
    return ["setup", "--user", f"{user}@{DOMAIN}", "--password", password,
            "--server", f"https://127.0.0.1:{server.ports['wss']}", "--sip", f"127.0.0.1:{port}", *extra]


class Listener:
    """A running `sipim client listen`, its output lines read as they come."""

    def __init__(self, home: Path, *args: str) -> None:
        self.process = subprocess.Popen(sipim_command("client", "listen", *args), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=client_env(home),
                                        start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 15) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}; "
                                     f"stderr: {self.process.stderr.read()}") from None
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(2)  # Ctrl-C
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def home(tmp_path_factory, server) -> Path:
    """alice and bob set up once (password sign-in, or a local profile where the server
    has no provisioning) and shared by the tests of this module."""
    home = tmp_path_factory.mktemp("client-home")
    ca = str(server.ca_file)
    for user, profile in (("alice", "default"), ("bob", "bob")):
        result = client(home, *setup_args(server, user, f"{user}-secret", "--ca", ca, "--profile", profile))
        assert result.returncode == 0, result.stderr
        assert f"sip:{user}@{DOMAIN}" in result.stdout
    return home


def test_setup_saves_a_private_profile(home):
    path = home / "profiles" / "default.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["user_id"] == f"sip:alice@{DOMAIN}"
    assert document["device"]["instance_id"].startswith("urn:uuid:")
    assert "BEGIN CERTIFICATE" in document["ca_pem"]


def test_send_listen_and_reports_between_two_profiles(home):
    text = f"hello bob {uuid.uuid4().hex[:8]}"
    bob = Listener(home, "--profile", "bob")
    alice = Listener(home, "--json")
    try:
        bob.wait_for(f"listening as sip:bob@{DOMAIN}")
        alice.wait_for(f"listening as sip:alice@{DOMAIN}")
        sent = client(home, "send", "bob", *text.split(" "), "--json")
        assert sent.returncode == 0, sent.stderr
        answer = json.loads(sent.stdout)
        assert answer["status"] == 200 and answer["to"] == f"sip:bob@{DOMAIN}"
        # bob sees the sender's identity as the server asserted it.
        bob.wait_for(re.escape(f"sip:alice@{DOMAIN}: {text}"))
        # alice's listener gets the delivery report (bob's client sent it by itself),
        # then the display report (bob's listener printed it).
        reports = {}
        while len(reports) < 2:
            line = alice.wait_for(r'"type": "report"').string
            event = json.loads(line)
            if event["message_id"] == answer["message_id"]:
                reports[event["status"]] = event
        assert set(reports) == {"delivered", "displayed"}
        assert reports["delivered"]["by"] == f"sip:bob@{DOMAIN}"
    finally:
        assert bob.stop() == 0
        alice.stop()

    history = client(home, "history", "--with", "bob")
    assert history.returncode == 0, history.stderr
    assert re.search(rf"-> sip:bob@{re.escape(DOMAIN)}: {re.escape(text)}\s+\[displayed\]", history.stdout)
    as_json = json.loads(client(home, "history", "--profile", "bob", "--json").stdout)
    assert any(entry["text"] == text and entry["direction"] == "in" for entry in as_json["entries"])


def test_a_message_to_an_offline_user_is_stored(home, server):
    result = client(home, "send", "carol", "are you there?")
    assert result.returncode == 0, result.stderr
    assert "stored for sip:carol@" in result.stdout and "202" in result.stdout


@pytest.mark.parametrize("target, fragments", [
    ("nobody", ("nobody: no such user", "404")),
    ("+14155550111", ("several users", "485")),
    ("+12", ("invalid phone number",)),
])
def test_send_errors_are_one_readable_line(home, target, fragments):
    assert_one_line_error(client(home, "send", target, "hi"), *fragments)


def test_missing_profile(home):
    assert_one_line_error(client(home, "send", "--profile", "nope", "bob", "hi"), "no profile 'nope'",
                          "sipim client setup --profile nope")


def test_setup_with_a_wrong_password_fails(home, server):
    result = client(home, *setup_args(server, "bob", "wrong", "--ca", str(server.ca_file), "--profile", "wrong"))
    assert_one_line_error(result, "403")
    assert not (home / "profiles" / "wrong.json").exists()


def test_setup_refuses_an_untrusted_certificate_and_shows_its_fingerprint(home, server):
    result = client(home, *setup_args(server, "bob", "bob-secret", "--profile", "untrusted"))
    assert_one_line_error(result, "not signed by a CA this computer trusts", "--ca FILE", "--trust-fingerprint")


def test_setup_stops_when_the_fingerprint_does_not_match(home, server):
    result = client(home, *setup_args(server, "bob", "bob-secret", "--profile", "pinned",
                                      "--trust-fingerprint", "00" * 32))
    assert_one_line_error(result, "do not continue")


def test_setup_against_an_unreachable_server(home, server):
    result = client(home, "setup", "--user", "bob", "--password", "x", "--server", "https://127.0.0.1:1",
                    "--profile", "nowhere")
    assert_one_line_error(result, "cannot reach 127.0.0.1:1", "refused")


def test_setup_without_a_way_to_sign_in(home):
    assert_one_line_error(client(home, "setup", "--server", "https://127.0.0.1:1"), "phone number")


def test_listen_with_credentials_the_server_refuses_fails_readably(tmp_path, server):
    result = client(tmp_path, *setup_args(server, "erin", "erin-secret", "--ca", str(server.ca_file)))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "profiles" / "default.json"
    document = json.loads(path.read_text())
    document["device"]["password"] = "no-longer-valid"
    path.write_text(json.dumps(document))
    listen = subprocess.run(sipim_command("client", "listen"), capture_output=True, text=True, timeout=60,
                            env=client_env(tmp_path))
    assert_one_line_error(listen, "registration refused", "wrong or revoked credentials")


@pytest.fixture
def https_without_provisioning(server):
    """An HTTPS server with the sipim server's certificate that has no routes at all,
    like a sipim from before provisioning existed."""
    import asyncio

    from aiohttp import web

    from sipim.transport.tls import server_ssl_context

    ready: queue.Queue = queue.Queue()
    loop = asyncio.new_event_loop()

    async def start():
        runner = web.AppRunner(web.Application())
        await runner.setup()
        context = server_ssl_context(server.data_dir / "tls" / "server.pem", server.data_dir / "tls" / "server.key")
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        ready.put(site._server.sockets[0].getsockname()[1])
        return runner

    def run():
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield ready.get(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_setup_builds_a_password_profile_when_the_server_has_no_provisioning(tmp_path, server,
                                                                              https_without_provisioning):
    port, _ = tls_ports(server)
    result = client(tmp_path, "setup", "--user", f"alice@{DOMAIN}", "--password", "alice-secret",
                    "--server", f"https://127.0.0.1:{https_without_provisioning}", "--ca", str(server.ca_file),
                    "--sip", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert "this server has no provisioning" in result.stderr
    document = json.loads((tmp_path / "profiles" / "default.json").read_text())
    assert document["device"]["auth_username"] == "alice" and document["device"]["token"] is None
    sent = client(tmp_path, "send", "carol", "over a password profile")
    assert sent.returncode == 0, sent.stderr


def test_profile_and_config_options_go_before_or_after_the_action(home):
    before = client(home, "--profile", "bob", "show")
    after = client(home, "show", "--profile", "bob")
    assert before.returncode == after.returncode == 0
    assert f"sip:bob@{DOMAIN}" in before.stdout and before.stdout == after.stdout

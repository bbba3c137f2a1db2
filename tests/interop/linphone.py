"""Driver for Linphone's console client, linphonec (Debian package ``linphone-cli``, 5.1).

:class:`Linphone` runs one headless ``linphonec`` registered as ``user@domain``
with a sipim listener, controlled through its stdin (the commands a user types:
``status register``, ``chat``, ``quit``), with liblinphone's full log (``-d 6
-l FILE``) as the source of truth: belle-sip writes every SIP message it sends
or receives there, and liblinphone each registration state change.

What it takes to run linphonec 5.1 headless (found the hard way):

* a fresh ``HOME`` per agent (``-c`` names the config, but liblinphone also
  writes ``$HOME/.local/share/linphone/linphone.db``, history and ZRTP caches).
  That directory MUST exist: without it the database cannot be opened, the core
  stays in ``LinphoneGlobalStartup``, no SIP listening point is ever created and
  every REGISTER fails locally ("No listening point matching for [tls://...]");
* no sound card is needed: mediastreamer logs that it found none and carries on;
* ``sip_*port=-1`` binds random local ports (0 would disable the transport);
* stdin may be a pipe: readline still calls linphonec's idle hook
  (``linphone_core_iterate``) while it waits for input, so SIP keeps flowing;
* ``quit`` unregisters (REGISTER with ``Expires: 0``) before exiting.

TLS (belle-sip with mbedTLS): ``root_ca`` in ``[sip]`` is the only trust anchor
and the server certificate IS verified (chain and name, ``verify_server_certs``
and ``verify_server_cn``). The name checked is the host of the proxy URI, and
this mbedTLS build cannot match iPAddress subjectAltNames ("<unsupported>" in
the log): a proxy written ``sip:127.0.0.1:PORT`` fails with "CN-mismatch"
although sipim's certificate lists 127.0.0.1. The driver therefore writes the
proxy as ``<sip:DOMAIN:PORT;transport=tls;maddr=127.0.0.1>``: belle-sip connects
to the ``maddr`` address and checks the certificate against DOMAIN (RFC 5922
§7.2: the SIP domain, from a dNSName subjectAltName).

What it sends (see tests/interop/test_linphone.py): ``Supported: replaces,
outbound, gruu``; ``Contact: <sip:USER@127.0.0.1:PORT;transport=T>;
+sip.instance="<urn:uuid:UUID>"`` (UUID from ``[misc] uuid``) and NO ``reg-id``
(no RFC 5626 flow); digest ``uri`` = the Request-URI ``sip:DOMAIN``.

Every wait has a timeout; linphonec runs in its own process group, killed on
:meth:`Linphone.stop` if ``quit`` does not end it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid as uuid_module
from dataclasses import dataclass
from pathlib import Path

from .clients import TRANSPORTS, ConsoleOutput, _kill_group, digest_params, find_binary, header_values

# A log line starts with "2026-11-25 19:24:06:204 " (date, time, milliseconds).
_LOG_LINE_START = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} "
# belle-sip logs each message after one of these lines, up to the next log line.
_SIP_TRACE = re.compile(
    rf"^{_LOG_LINE_START}belle-sip-message-channel \[[^\]]*\]: "
    r"(?:(?P<sent>message sent to)|received \[\d+\] new bytes from) "
    r"\[(?P<peer>[A-Za-z]+://[^\]]+)\][^\n]*\n"
    rf"(?P<text>.*?)(?=^{_LOG_LINE_START}|\Z)",
    re.MULTILINE | re.DOTALL)
_SIP_START_LINE = re.compile(r"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} [^\r\n]*)\r?$", re.MULTILINE)
_REGISTRATION_STATE = re.compile(
    r"for identity \[(?P<identity>[^\]]+)\] moving from state \[\w+\] to \[(?P<state>\w+)\]")


class LinphoneError(RuntimeError):
    pass


@dataclass(frozen=True)
class SipLogMessage:
    """One SIP message from the belle-sip trace; ``outgoing`` is from linphonec's side."""

    outgoing: bool
    peer: str  # e.g. "TLS://127.0.0.1:5061"
    text: str  # start line, headers, blank line, body ("\n" line ends)

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int | None:
        return int(self.start_line.split(" ", 2)[1]) if self.is_response else None

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        if not self.is_response:
            return self.start_line.split(" ", 1)[0]
        cseq = self.header("CSeq")
        return cseq[0].split()[-1] if cseq else ""

    @property
    def head(self) -> str:
        return self.text.split("\n\n", 1)[0]

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1] if len(parts) == 2 else ""

    def header(self, name: str) -> list[str]:
        return header_values(self.head, name)

    def authorization(self) -> dict[str, str] | None:
        """The parsed Authorization (or Proxy-Authorization) digest, if any."""
        values = self.header("Authorization") or self.header("Proxy-Authorization")
        return digest_params(values[0]) if values else None


@dataclass(frozen=True)
class RegistrationOutcome:
    """Where the account's registration ended up (a terminal state, or the last one seen)."""

    state: str  # liblinphone's: LinphoneRegistrationOk, ...Failed, ...Progress, ...Cleared
    status: int | None  # the last final response to a REGISTER, None if none arrived

    @property
    def ok(self) -> bool:
        return self.state == "LinphoneRegistrationOk"

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class ReceivedChat:
    """A MESSAGE (RFC 3428) that reached linphonec, as linphonec printed it."""

    sender: str
    text: str


def _split_messages(text: str) -> list[str]:
    """One traced chunk may hold several messages (a TCP read): cut at start lines."""
    text = text.replace("\r\n", "\n")
    starts = [m.start() for m in _SIP_START_LINE.finditer(text)]
    chunks = [text[start:end] for start, end in zip(starts, starts[1:] + [len(text)])]
    return [chunk.rstrip("\n") for chunk in chunks]


class Linphone:
    """One headless linphonec 5.1 registered as ``user@domain`` at ``target_host:port``.

    ``transport``: "udp", "tcp" or "tls". ``ca_file``: the only root CA trusted
    for TLS (sipim's ``server.ca_file``). ``instance_uuid`` becomes
    ``+sip.instance="<urn:uuid:...>"`` in the Contact (a fresh one by default).
    ``server_name``: the host written in the proxy URI, i.e. the name the TLS
    certificate is checked against (default ``domain``; the socket is always
    ``target_host:port`` through ``maddr``). ``verify_server_cn`` off keeps the
    chain check but skips the name check.

    Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, target_host: str, port: int, transport: str, user: str, password: str,
                 domain: str, ca_file: Path | str | None = None,
                 instance_uuid: str | None = None, *, expires: int = 600,
                 server_name: str | None = None, verify_server_cn: bool = True,
                 workdir: Path | None = None) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.target_host = target_host
        self.port = port
        self.transport = transport
        self.user = user
        self.password = password
        self.domain = domain
        self.ca_file = Path(ca_file) if ca_file else None
        self.instance_uuid = instance_uuid or str(uuid_module.uuid4())
        self.expires = expires
        self.server_name = server_name or domain
        self.verify_server_cn = verify_server_cn
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="linphonec-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._console: ConsoleOutput | None = None
        self._final_log = ""  # the log, kept when stop() removes our own workdir

    # -- set-up ------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "linphonerc"

    @property
    def log_file(self) -> Path:
        return self.workdir / "linphone.log"

    @property
    def proxy_uri(self) -> str:
        return (f"<sip:{self.server_name}:{self.port};transport={self.transport};"
                f"maddr={self.target_host}>")

    def config_text(self) -> str:
        # Random local port (-1) for the transport in use, the others off (0).
        ports = {name: ("-1" if name == self.transport else "0") for name in TRANSPORTS}
        lines = [
            "[sip]",
            f"sip_port={ports['udp']}",
            f"sip_tcp_port={ports['tcp']}",
            f"sip_tls_port={ports['tls']}",
            "default_proxy=0",
            "verify_server_certs=1",
            f"verify_server_cn={int(self.verify_server_cn)}",
        ]
        if self.ca_file:
            lines.append(f"root_ca={self.ca_file}")
        lines += [
            "",
            "[proxy_0]",
            f"reg_proxy={self.proxy_uri}",
            f"reg_identity={self.aor}",
            f"reg_expires={self.expires}",
            "reg_sendregister=1",
            "publish=0",
            "",
            "[auth_info_0]",
            f"username={self.user}",
            f"passwd={self.password}",
            f"realm={self.domain}",
            f"domain={self.domain}",
            "",
            "[misc]",
            f"uuid={self.instance_uuid}",
            "",
            "[video]",
            "capture=0",
            "display=0",
        ]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        # Without this directory liblinphone cannot open its database and never starts.
        (self.workdir / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config_text())

    # -- life cycle --------------------------------------------------------

    def start(self, timeout: float = 5.0) -> Linphone:
        """Launch linphonec; return once it reads commands (registration runs on its own)."""
        binary = find_binary("linphonec")
        if binary is None:
            raise FileNotFoundError("linphonec (Debian package linphone-cli)")
        self._write_config()
        home = str(self.workdir)
        env = {**os.environ, "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config",
               "XDG_DATA_HOME": f"{home}/.local/share", "XDG_CACHE_HOME": f"{home}/.cache"}
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config_file), "-d", "6", "-l", str(self.log_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.workdir, env=env, start_new_session=True)
        self._console = ConsoleOutput(self.process, f"linphonec-{self.user}", LinphoneError)
        try:
            self.wait_for_output(r"linphonec> ", timeout)
        except LinphoneError:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """``quit`` (unregisters and exits), then kill the process group; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self._write_line("quit")
                self.process.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired, LinphoneError):
                pass
        _kill_group(self.process)  # no-op when it already exited
        if self.process.stdin:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        if self._console is not None:
            self._console.join()
        if self.process.stdout:
            self.process.stdout.close()
        if self._own_workdir:
            self._final_log = self.log()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> Linphone:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------

    def _write_line(self, line: str) -> None:
        if not self.running() or self.process is None or self.process.stdin is None:
            raise LinphoneError(f"linphonec is not running\n{self.output()[-4000:]}")
        if "\n" in line or "\r" in line:
            raise ValueError("one command per line")
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def command(self, line: str, expect: str | None = None, timeout: float = 5.0) -> str:
        """Type ``line``; with ``expect`` (regex), wait for it in the output that follows.

        Returns the output printed after the command was sent (up to the match).
        """
        start = len(self.output())
        self._write_line(line)
        if expect is None:
            return ""
        match = self.wait_for_output(expect, timeout, start=start)
        return self.output()[start:match.end()]

    def send_message(self, to_uri: str, text: str,
                     timeout: float | None = None) -> SipLogMessage | None:
        """``chat <uri> <text>``: an RFC 3428 MESSAGE (text/plain) to ``to_uri``.

        With ``timeout``, wait for the request's outcome and return it: the first
        new final response to a MESSAGE other than a 401/407 challenge (which
        linphonec answers itself, with the same credentials as for REGISTER).
        """
        def outcomes() -> list[SipLogMessage]:
            return [m for m in self.received_responses("MESSAGE")
                    if m.status is not None and m.status >= 200 and m.status not in (401, 407)]

        already = len(outcomes())
        self.command(f"chat {to_uri} {text}")
        if timeout is None:
            return None
        deadline = time.monotonic() + timeout
        while len(answers := outcomes()) <= already:
            if time.monotonic() > deadline or not self.running():
                raise LinphoneError(f"no answer to the MESSAGE within {timeout}s\n{self.describe()}")
            time.sleep(0.05)
        return answers[already]

    def received_messages(self) -> list[ReceivedChat]:
        """Chats linphonec printed as "Message received from SENDER: TEXT" (the line may
        start with the prompt: linphonec prints it while waiting for a command)."""
        return [ReceivedChat(m.group(1), m.group(2)) for m in
                re.finditer(r"Message received from (\S+): (.*)$", self.output(), re.MULTILINE)]

    def wait_for_message(self, text: str, timeout: float = 10.0) -> ReceivedChat:
        self.wait_for_output(r"Message received from \S+: .*" + re.escape(text), timeout)
        return next(m for m in self.received_messages() if text in m.text)

    # -- output and log ----------------------------------------------------

    def output(self) -> str:
        """What linphonec printed on stdout/stderr (prompts, command answers, chats)."""
        return self._console.text() if self._console is not None else ""

    def wait_for_output(self, pattern: str, timeout: float = 5.0,
                        start: int = 0) -> re.Match[str]:
        if self._console is None:
            raise LinphoneError("linphonec is not running")
        return self._console.wait_for(pattern, timeout, start)

    def log(self) -> str:
        """liblinphone's log so far (also after :meth:`stop`)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return self._final_log

    def sip_messages(self) -> list[SipLogMessage]:
        """Every SIP message linphonec sent or received so far, in order."""
        messages = []
        for trace in _SIP_TRACE.finditer(self.log()):
            for text in _split_messages(trace["text"]):
                messages.append(SipLogMessage(outgoing=trace["sent"] is not None,
                                              peer=trace["peer"], text=text))
        return messages

    def sent_requests(self, method: str) -> list[SipLogMessage]:
        return [m for m in self.sip_messages()
                if m.outgoing and not m.is_response and m.method == method]

    def received_responses(self, method: str) -> list[SipLogMessage]:
        return [m for m in self.sip_messages()
                if not m.outgoing and m.is_response and m.method == method]

    def registration_states(self) -> list[str]:
        """liblinphone's registration states for this account, in order."""
        return [m["state"] for m in _REGISTRATION_STATE.finditer(self.log())
                if m["identity"] == self.aor]

    def wait_registered(self, timeout: float = 10.0) -> RegistrationOutcome:
        """Wait until the registration succeeds or fails; return the outcome (never raises
        on a refusal: check ``.ok``/``bool()``; raises LinphoneError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.registration_states()
            finals = [m.status for m in self.received_responses("REGISTER")
                      if m.status is not None and m.status >= 200]
            last_state = states[-1] if states else "LinphoneRegistrationNone"
            if last_state in ("LinphoneRegistrationOk", "LinphoneRegistrationFailed"):
                return RegistrationOutcome(last_state, finals[-1] if finals else None)
            if time.monotonic() > deadline or not self.running():
                raise LinphoneError(f"no registration outcome within {timeout}s "
                                    f"(states {states}, statuses {finals}):\n"
                                    f"{self.output()[-2000:]}\n--- log ---\n{self.log()[-6000:]}")
            time.sleep(0.05)

    def describe(self) -> str:
        """Output and the SIP part of the log, for assertion messages."""
        sip = "\n".join(("--> " if m.outgoing else "<-- ") + m.text for m in self.sip_messages())
        return f"--- linphonec output ---\n{self.output()[-3000:]}\n--- SIP ---\n{sip[-8000:]}"

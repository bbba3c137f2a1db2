"""Drivers for real third-party SIP clients, for interop tests.

Three clients from Debian are driven as subprocesses:

* sipp (package ``sip-tester``) — scripted scenarios from tests/interop/scenarios/:
  :func:`run_sipp_scenario` -> :class:`SippResult`.
  Debian's build has NO TLS (``-t l1`` exits: "To use a TLS transport you must
  compile SIPp with OpenSSL"), so only "udp" and "tcp" are accepted.
* sipsak: :func:`sipsak_register` -> :class:`SipsakResult` (udp, tcp, tls).
* baresip 1.0.0: :class:`Baresip`, a long-running user agent controlled over
  its ``ctrl_tcp`` module (netstring JSON), with SIP tracing (``-s``) on so
  that every message it sends or receives can be asserted on (udp, tcp, tls).

Plus plain-socket helpers: :func:`send_garbage_udp`, :func:`send_garbage_tcp`,
:func:`sip_options_ping`, :func:`free_port`.

Every call has a timeout; every child runs in its own process group
(``start_new_session=True``) and the whole group is killed on timeout or
teardown, so a wedged client can never hang the test run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCENARIOS_DIR = Path(__file__).with_name("scenarios")

TRANSPORTS = ("udp", "tcp", "tls")


# ---------------------------------------------------------------------------
# Values shared by all drivers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a client sends its requests, and in which SIP domain.

    ``host``/``port``/``transport`` are the server's socket; ``domain`` is the
    host part of AORs and of the REGISTER Request-URI (RFC 3261 §10.2) — it
    need not resolve, since every client is told the socket explicitly.
    ``ca_file`` is the PEM file of the CA that signed the server's TLS
    certificate (used by clients that can verify it).
    """

    host: str
    port: int
    transport: str = "udp"
    domain: str = "example.test"
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {self.transport!r}")

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def with_transport(self, transport: str, port: int) -> Target:
        return Target(self.host, port, transport, self.domain, self.ca_file)


@dataclass(frozen=True)
class User:
    """A subscriber: AOR ``sip:name@domain``; digest username = ``name`` unless ``auth_user``."""

    name: str
    password: str
    auth_user: str | None = None

    @property
    def digest_username(self) -> str:
        return self.auth_user or self.name


@dataclass(frozen=True)
class ProcessResult:
    """What a finished (or killed) client process left behind."""

    argv: tuple[str, ...]
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    timed_out: bool
    duration: float

    def describe(self) -> str:
        """Everything useful for an assertion message."""
        return (f"$ {' '.join(self.argv)}\nexit={self.returncode} timed_out={self.timed_out} "
                f"({self.duration:.2f}s)\n--- stdout ---\n{self.stdout[-6000:]}\n"
                f"--- stderr ---\n{self.stderr[-4000:]}")


def _kill_group(process: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_process(argv: Sequence[str], *, timeout: float, cwd: Path | None = None,
                stdin_data: bytes | None = None,
                env: dict[str, str] | None = None) -> ProcessResult:
    """Run ``argv`` to completion or kill its process group after ``timeout`` seconds.

    ``env`` entries are added to this process's environment.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        list(argv), cwd=cwd, start_new_session=True,
        env={**os.environ, **env} if env else None,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(stdin_data, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process)
        stdout, stderr = process.communicate()
    return ProcessResult(
        argv=tuple(argv), returncode=None if timed_out else process.returncode,
        stdout=stdout.decode(errors="replace"), stderr=stderr.decode(errors="replace"),
        timed_out=timed_out, duration=time.monotonic() - started,
    )


def find_binary(name: str) -> str | None:
    """Path of a client binary (also looks in /usr/sbin, where kamailio lives)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


# ---------------------------------------------------------------------------
# Plain sockets: ports, liveness, garbage
# ---------------------------------------------------------------------------


def free_port(kind: str = "udp", *, host: str = "127.0.0.1",
              avoid: Iterable[int] = ()) -> int:
    """A port that is currently free for ``kind`` ("udp" or "tcp") on ``host``.

    Free for both UDP and TCP when possible, so one number can serve both.
    (Racy by nature: another process may take it before it is used.)
    """
    avoid = set(avoid)
    for _ in range(50):
        primary = socket.socket(socket.AF_INET,
                                socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        with primary:
            primary.bind((host, 0))
            port = primary.getsockname()[1]
            if port in avoid:
                continue
            other = socket.socket(socket.AF_INET,
                                  socket.SOCK_STREAM if kind == "udp" else socket.SOCK_DGRAM)
            with other:
                try:
                    other.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port found")


def _options_request(host: str, port: int, local_port: int, transport: str) -> bytes:
    branch = "z9hG4bK" + uuid_module.uuid4().hex[:16]
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:ping@127.0.0.1>;tag={uuid_module.uuid4().hex[:8]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {uuid_module.uuid4().hex}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_options_ping(host: str, port: int, *, transport: str = "udp",
                     timeout: float = 1.0) -> int | None:
    """Send one OPTIONS (RFC 3261 §11) over UDP or TCP; return the status code, None if silent.

    Good for "is the server up yet" polling; provisional responses are skipped.
    """
    deadline = time.monotonic() + timeout
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(timeout)
            if transport == "udp":
                sock.bind(("127.0.0.1", 0))
                sock.sendto(_options_request(host, port, sock.getsockname()[1], "udp"),
                            (host, port))
            else:
                sock.connect((host, port))
                sock.sendall(_options_request(host, port, sock.getsockname()[1], "tcp"))
            buffer = b""
            while (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                data = sock.recv(65535)
                if not data:
                    return None
                buffer = data if transport == "udp" else buffer + data
                for match in re.finditer(rb"SIP/2\.0 (\d{3}) ", buffer):
                    status = int(match.group(1))
                    if status >= 200:
                        return status
    except OSError:
        return None
    return None


def send_garbage_udp(host: str, port: int, payloads: Iterable[bytes], *,
                     wait_for_reply: float = 0.0) -> list[bytes | None]:
    """Send each payload as one UDP datagram from one socket.

    With ``wait_for_reply`` > 0, waits that long after each datagram for an
    answer (e.g. a 400 per RFC 3261 §16.3 / §8.2) and returns it (None if none).
    """
    replies: list[bytes | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for payload in payloads:
            sock.sendto(payload, (host, port))
            reply = None
            if wait_for_reply > 0:
                sock.settimeout(wait_for_reply)
                try:
                    reply = sock.recv(65535)
                except (TimeoutError, OSError):
                    reply = None
            replies.append(reply)
    return replies


@dataclass(frozen=True)
class GarbageTcpResult:
    received: bytes  # everything the server sent back before closing / the timeout
    closed_by_server: bool  # EOF or RST seen before the timeout
    send_error: str | None  # e.g. BrokenPipe when the server closed mid-stream


def send_garbage_tcp(host: str, port: int, payloads: Iterable[bytes], *,
                     read_timeout: float = 1.0, pause_between: float = 0.0) -> GarbageTcpResult:
    """Write each payload on ONE TCP connection, then read until EOF or ``read_timeout``.

    Shows whether the server answers garbage (400) and/or closes the
    connection when framing is lost (RFC 3261 §18.3).
    """
    received = b""
    send_error: str | None = None
    closed = False
    with socket.create_connection((host, port), timeout=read_timeout) as sock:
        try:
            for payload in payloads:
                sock.sendall(payload)
                if pause_between:
                    time.sleep(pause_between)
        except OSError as error:
            send_error = repr(error)
        deadline = time.monotonic() + read_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            except OSError:
                closed = True
                break
            if not data:
                closed = True
                break
            received += data
    return GarbageTcpResult(received=received, closed_by_server=closed, send_error=send_error)


# ---------------------------------------------------------------------------
# SIP text helpers shared by the drivers' results
# ---------------------------------------------------------------------------


def split_sip_messages(text: str) -> list[str]:
    """Cut a log into SIP messages: each starts at a request or status line."""
    start = re.compile(
        r"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} .*?)\r?$", re.MULTILINE)
    positions = [match.start() for match in start.finditer(text)]
    messages = []
    for index, position in enumerate(positions):
        end = positions[index + 1] if index + 1 < len(positions) else len(text)
        chunk = text[position:end]
        # a message ends at the first blank line (bodies are not used here)
        head = re.split(r"\r?\n\r?\n", chunk, maxsplit=1)[0]
        messages.append(head.replace("\r\n", "\n"))
    return messages


def header_values(message: str, name: str) -> list[str]:
    """All values of header ``name`` (case-insensitive; no compact forms) in one message."""
    values = []
    for line in message.split("\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


def digest_params(authorization: str) -> dict[str, str]:
    """``Digest a=b, c="d"`` -> {"a": "b", "c": "d"} (RFC 7616 §3.4 syntax)."""
    _, _, rest = authorization.partition(" ")
    params = {}
    for match in re.finditer(r'([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)', rest):
        value = match.group(2)
        if value.startswith('"'):
            value = value[1:-1]
        params[match.group(1).lower()] = value
    return params


# ---------------------------------------------------------------------------
# sipp
# ---------------------------------------------------------------------------

SIPP_TRANSPORT_FLAGS = {"udp": "u1", "tcp": "t1"}  # Debian's sipp is built without TLS


@dataclass(frozen=True)
class SippResult:
    """Outcome of one sipp run.

    ``successful_calls``/``failed_calls`` come from the ``-trace_stat`` CSV
    (None if sipp died before writing it). ``ok`` means sipp exited 0 (every
    call passed) — sipp exits 1 if at least one call failed, 99 if no call
    was processed, 255/254 on fatal errors.
    ``messages`` is the ``-trace_msg`` log cut into SIP messages, both
    directions, in order (``sent``/``received`` filter them).
    """

    process: ProcessResult
    successful_calls: int | None
    failed_calls: int | None
    message_log: str
    messages: tuple[str, ...]
    sent: tuple[str, ...]
    received: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0

    def sent_requests(self, method: str) -> list[str]:
        return [m for m in self.sent if m.startswith(method + " ")]

    def received_statuses(self) -> list[int]:
        return [int(m.split(" ", 2)[1]) for m in self.received if m.startswith("SIP/2.0 ")]

    def describe(self) -> str:
        return (f"successful={self.successful_calls} failed={self.failed_calls}\n"
                f"{self.process.describe()}\n--- messages ---\n{self.message_log[-8000:]}")


def _parse_sipp_stat_csv(text: str) -> tuple[int | None, int | None]:
    """Last row's cumulative SuccessfulCall(C) / FailedCall(C) from a -trace_stat file."""
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    if len(rows) < 2:
        return None, None
    header, last = rows[0], rows[-1]
    try:
        return (int(last[header.index("SuccessfulCall(C)")]),
                int(last[header.index("FailedCall(C)")]))
    except (ValueError, IndexError):
        return None, None


def _split_sipp_message_log(text: str) -> tuple[list[str], list[str], list[str]]:
    """Cut a -trace_msg file into messages.

    sipp writes a dashed banner line, then "UDP message sent (N bytes):" or
    "TCP message received [N] bytes :", a blank line, then the message.
    """
    everything: list[str] = []
    sent: list[str] = []
    received: list[str] = []
    for chunk in re.split(r"^-{10,}.*$", text, flags=re.MULTILINE):
        title, _, body = chunk.strip("\r\n").partition("\n")
        if "message sent" in title:
            direction: list[str] | None = sent
        elif "message received" in title:
            direction = received
        else:
            continue  # e.g. "Dead call ... received": not part of a live call
        for message in split_sip_messages(body):
            everything.append(message)
            direction.append(message)
    return everything, sent, received


def _run_sipp_once(binary: str, scenario_path: Path, target: Target, transport: str,
                   user: User | None, auth_uri: str | None, calls: int, keys: dict[str, str],
                   extra_args: Sequence[str], rate: int, timeout: float,
                   directory: Path) -> SippResult:
    stat_file = directory / "stat.csv"
    message_file = directory / "messages.log"
    error_file = directory / "errors.log"
    for stale in (stat_file, message_file, error_file):
        stale.unlink(missing_ok=True)
    argv = [binary, target.hostport, "-sf", str(scenario_path),
            "-t", SIPP_TRANSPORT_FLAGS[transport],
            "-i", "127.0.0.1", "-p", str(free_port("udp" if transport == "udp" else "tcp")),
            # An unexpected response fails the call at once (abortunexp), but
            # without sipp's usual BYE/CANCEL to the server after it (-bye).
            "-nostdin", "-default_behaviors", "all,-bye",
            "-r", str(rate), "-m", str(calls),
            "-timeout", f"{max(1, int(timeout))}s", "-timeout_error",
            "-max_retrans", "3", "-recv_timeout", f"{int(min(timeout, 8) * 1000)}",
            "-trace_stat", "-stf", str(stat_file), "-fd", "1",
            "-trace_msg", "-message_file", str(message_file),
            "-trace_err", "-error_file", str(error_file)]
    if user is not None:
        argv += ["-s", user.name, "-au", user.digest_username, "-ap", user.password]
    if auth_uri:
        # sipp writes uri="sip:" + this value, so the scheme must not be passed
        argv += ["-auth_uri", auth_uri.removeprefix("sip:")]
    for name, value in keys.items():
        argv += ["-key", name, value]
    argv += list(extra_args)
    process = run_process(argv, timeout=timeout + 5, cwd=directory)
    stat_text = stat_file.read_text(errors="replace") if stat_file.exists() else ""
    message_log = message_file.read_text(errors="replace") if message_file.exists() else ""
    errors = error_file.read_text(errors="replace") if error_file.exists() else ""
    if errors.strip():
        process = ProcessResult(process.argv, process.returncode, process.stdout,
                                process.stderr + "\n--- sipp error file ---\n" + errors,
                                process.timed_out, process.duration)
    successful, failed = _parse_sipp_stat_csv(stat_text)
    everything, sent, received = _split_sipp_message_log(message_log)
    return SippResult(process=process, successful_calls=successful, failed_calls=failed,
                      message_log=message_log, messages=tuple(everything),
                      sent=tuple(sent), received=tuple(received))


def _merge_sipp_results(results: list[SippResult]) -> SippResult:
    """One result for several sequential runs: counts add up, the worst exit code wins."""
    if len(results) == 1:
        return results[0]
    worst = next((r for r in results if not r.ok), results[-1])

    def total(values: list[int | None]) -> int | None:
        return None if any(v is None for v in values) else sum(v for v in values if v)

    return SippResult(
        process=ProcessResult(
            argv=worst.process.argv, returncode=worst.process.returncode,
            stdout="\n".join(r.process.stdout for r in results),
            stderr="\n".join(r.process.stderr for r in results),
            timed_out=any(r.process.timed_out for r in results),
            duration=sum(r.process.duration for r in results)),
        successful_calls=total([r.successful_calls for r in results]),
        failed_calls=total([r.failed_calls for r in results]),
        message_log="".join(r.message_log for r in results),
        messages=tuple(m for r in results for m in r.messages),
        sent=tuple(m for r in results for m in r.sent),
        received=tuple(m for r in results for m in r.received),
    )


def run_sipp_scenario(scenario: str | Path, target: Target, *, transport: str | None = None,
                      users: Sequence[User] = (), calls: int = 1,
                      keys: dict[str, str] | None = None, extra_args: Sequence[str] = (),
                      auth_uri: str | None = "", rate: int = 10,
                      timeout: float = 15.0) -> SippResult:
    """Run a sipp scenario against ``target``; return call counts and the message trace.

    ``scenario``: a path, or a bare name from tests/interop/scenarios/
    ("register_auth", "register_wrong_password", "options").
    ``users``: accounts to run it as. Debian's sipp 3.6.1 cannot take per-call
    credentials from an injection file (``[authentication username=[field0]]``
    is not expanded), so each user gets its own sipp run (``-s``/``-au``/``-ap``)
    of ``calls`` calls, one after the other, and the results are merged.
    ``keys``: ``-key NAME VALUE``; the shipped scenarios need ``user``,
    ``domain``, ``expires`` (3600) and ``contact_params`` ("", or e.g.
    ``;+sip.instance="<urn:uuid:...>";reg-id=1``), all defaulted here.
    ``auth_uri``: the digest ``uri`` sipp signs. Left alone, Debian's sipp
    signs ``uri="sip:<target host>:<target port>"`` (the remote socket), NOT
    the Request-URI ``sip:<domain>`` — RFC 3261 §22.4 / RFC 7616 §3.4 want the
    Request-URI. The default "" passes ``-auth_uri sip:<domain>`` so the two
    match; None keeps sipp's own behaviour (to test a server's tolerance).
    ``transport`` defaults to ``target.transport``; "tls" raises ValueError
    (not compiled into Debian's sipp). sipp bounds itself with ``-timeout``;
    its process group is killed ``timeout`` + 5 s later in any case.
    """
    binary = find_binary("sipp")
    if binary is None:
        raise FileNotFoundError("sipp (Debian package sip-tester)")
    transport = transport or target.transport
    if transport not in SIPP_TRANSPORT_FLAGS:
        raise ValueError(f"sipp cannot use {transport!r} (Debian's sipp has no TLS)")
    scenario_path = Path(scenario)
    if not scenario_path.suffix:
        scenario_path = SCENARIOS_DIR / f"{scenario}.xml"
    if not scenario_path.exists():
        raise FileNotFoundError(scenario_path)
    results = []
    with tempfile.TemporaryDirectory(prefix="sipp-") as directory:
        for user in (list(users) or [None]):
            run_keys = {"expires": "3600", "contact_params": "", "domain": target.domain,
                        "user": user.name if user else "sipp"}
            run_keys.update(keys or {})
            signed_uri = f"sip:{target.domain}" if auth_uri == "" else auth_uri
            results.append(_run_sipp_once(binary, scenario_path, target, transport, user,
                                          signed_uri, calls, run_keys, extra_args, rate, timeout,
                                          Path(directory)))
    return _merge_sipp_results(results)


# ---------------------------------------------------------------------------
# sipsak
# ---------------------------------------------------------------------------

# sipsak 0.9.8.1 (GnuTLS) sends its request over TLS 1.3 and then fails to
# read the answer ("nothing received, select returned error"), with Kamailio
# and with a Python ssl server alike; over TLS 1.2 it works. GnuTLS reads this
# override file from the environment, so the driver caps sipsak at TLS 1.2
# without touching the server.
_GNUTLS_NO_TLS13 = "[overrides]\ndisabled-version = tls1.3\n"


@dataclass(frozen=True)
class SipsakResult:
    """Outcome of one sipsak run; ``messages`` are the SIP messages of its -vvv log."""

    process: ProcessResult
    messages: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Exit 0 and a final 200 seen (sipsak exits 0 when its usrloc test passed)."""
        return self.process.returncode == 0 and 200 in self.received_statuses()

    @property
    def sent(self) -> tuple[str, ...]:
        # -vvv prints each request twice (as built, then as sent): keep one of each.
        unique: list[str] = []
        for message in self.messages:
            if not message.startswith("SIP/2.0 ") and message not in unique:
                unique.append(message)
        return tuple(unique)

    def sent_requests(self, method: str) -> list[str]:
        return [m for m in self.sent if m.startswith(method + " ")]

    def received_statuses(self) -> list[int]:
        return [int(m.split(" ", 2)[1]) for m in self.messages if m.startswith("SIP/2.0 ")]

    def describe(self) -> str:
        return self.process.describe()


def sipsak_register(target: Target, user: User, *, expires: int = 60,
                    contact: str | None = None, force_tls12: bool = True,
                    extra_args: Sequence[str] = (), timeout: float = 10.0) -> SipsakResult:
    """REGISTER ``user`` at ``target`` with sipsak's usrloc mode (``-U``), answering 401s.

    Transports: udp, tcp, tls (GnuTLS). Quirks of Debian's sipsak 0.9.8.1:
    * it resolves the host of ``-s`` unless the outbound proxy ``-p`` comes
      FIRST on the command line — the driver puts ``-p host:port`` first, so
      ``target.domain`` need not resolve;
    * over TLS it never verifies the server certificate (a wrong
      ``--tls-ca-cert`` still connects), and it fails on TLS 1.3 unless
      ``force_tls12`` (see ``_GNUTLS_NO_TLS13``);
    * the digest ``uri`` it signs is the Request-URI ``sip:<domain>``;
      MD5 only, no qop support observed with a qop-less challenge.
    ``contact``: a Contact URI instead of sipsak's own (``-C``).
    """
    binary = find_binary("sipsak")
    if binary is None:
        raise FileNotFoundError("sipsak")
    argv = [binary, "-U", "-vvv",
            "-p", target.hostport,  # must precede -s (see above)
            "-s", f"sip:{user.name}@{target.domain}",
            "-u", user.digest_username, "-a", user.password,
            "-H", "127.0.0.1", "-x", str(expires), "-E", target.transport]
    if contact:
        argv += ["-C", contact]
    if target.transport == "tls" and target.ca_file:
        argv += ["--tls-ca-cert", str(target.ca_file)]
    argv += list(extra_args)
    with tempfile.TemporaryDirectory(prefix="sipsak-") as directory:
        env_file = Path(directory) / "gnutls.conf"
        env_file.write_text(_GNUTLS_NO_TLS13)
        extra_env = ({"GNUTLS_SYSTEM_PRIORITY_FILE": str(env_file)}
                     if target.transport == "tls" and force_tls12 else {})
        process = run_process(argv, timeout=timeout, cwd=Path(directory), env=extra_env)
    return SipsakResult(process=process,
                        messages=tuple(split_sip_messages(process.stdout)))


# ---------------------------------------------------------------------------
# baresip
# ---------------------------------------------------------------------------

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# With -s, baresip prints every SIP message as
#   ESC[36;1m#\n<TRANSPORT> <src> -> <dst>\n<message>ESC[;m
_BARESIP_TRACE_BLOCK = re.compile(
    r"\x1b\[36;1m#\r?\n(?P<transport>[A-Z]+) (?P<source>\S+) -> (?P<destination>\S+)\r?\n"
    r"(?P<message>.*?)\x1b\[;m", re.DOTALL)
_BARESIP_REGISTERED = re.compile(r"^(?P<aor>\S+): \{[^}]*\} (?P<status>\d{3}) (?P<reason>.*)$",
                                 re.MULTILINE)


@dataclass(frozen=True)
class TracedMessage:
    """One SIP message from baresip's -s trace; ``outgoing`` is from baresip's side."""

    transport: str
    source: str
    destination: str
    text: str  # start line + headers + (after a blank line) the body
    outgoing: bool

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def body(self) -> str:
        parts = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)
        return parts[1] if len(parts) == 2 else ""

    def header(self, name: str) -> list[str]:
        head = re.split(r"\r?\n\r?\n", self.text, maxsplit=1)[0].replace("\r\n", "\n")
        return header_values(head, name)


@dataclass(frozen=True)
class ReceivedMessage:
    """A SIP MESSAGE (RFC 3428) that reached baresip."""

    sender: str  # the From header value
    request_uri: str
    content_type: str | None
    body: str
    traced: TracedMessage


class ConsoleOutput:
    """What a client process prints, read on a thread and searchable while it grows.

    Shared by the baresip and linphonec drivers: both are driven through their
    console and judged by what they print.
    """

    def __init__(self, process: subprocess.Popen[bytes], name: str, error: type[Exception],
                 clean: Callable[[str], str] = lambda text: text) -> None:
        self._process = process
        self._error = error
        self._clean = clean
        self._output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name=name)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        stream = self._process.stdout
        while chunk := stream.read1(65536):
            with self._changed:
                self._output += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def text(self, raw: bool = False) -> str:
        with self._changed:
            text = self._output.decode(errors="replace")
        return text if raw else self._clean(text)

    def wait_changed(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (regex, MULTILINE) appears in the cleaned output."""
        compiled = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = self._clean(self._output.decode(errors="replace"))
                match = compiled.search(text, start)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                exited = self._process.poll() is not None
                if remaining <= 0 or (exited and not self._reader.is_alive()):
                    raise self._error(f"{pattern!r} not seen within {timeout}s "
                                      f"(exit={self._process.poll()}):\n{text[-6000:]}")
                self._changed.wait(min(remaining, 0.2))

    def join(self, timeout: float = 2.0) -> None:
        self._reader.join(timeout=timeout)


class BaresipError(RuntimeError):
    pass


class _CtrlTcp:
    """Client of baresip's ctrl_tcp module: netstring-framed JSON.

    Commands: ``{"command": ..., "params": ..., "token": ...}``; answers
    ``{"response": true, "ok": ..., "data": ..., "token": ...}``; events
    (``{"event": true, "type": "REGISTER_OK", ...}``) arrive unasked.
    """

    def __init__(self, port: int, timeout: float) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""
        self._lock = threading.Lock()
        self.events: list[dict] = []
        self._next_token = 0

    def close(self) -> None:
        self._socket.close()

    def _read_netstring(self, deadline: float) -> dict:
        while True:
            length_text, colon, rest = self._buffer.partition(b":")
            if colon and length_text.isdigit() and len(rest) > int(length_text):
                length = int(length_text)
                payload, self._buffer = rest[:length], rest[length + 1:]  # drop the ","
                return json.loads(payload)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from baresip ctrl_tcp")
            self._socket.settimeout(remaining)
            data = self._socket.recv(65535)
            if not data:
                raise BaresipError("baresip closed its ctrl_tcp connection")
            self._buffer += data

    def command(self, command: str, params: str | None, timeout: float) -> dict:
        with self._lock:
            self._next_token += 1
            token = str(self._next_token)
            request = {"command": command, "token": token}
            if params is not None:
                request["params"] = params
            payload = json.dumps(request).encode()
            self._socket.sendall(str(len(payload)).encode() + b":" + payload + b",")
            deadline = time.monotonic() + timeout
            while True:
                answer = self._read_netstring(deadline)
                if answer.get("event"):
                    self.events.append(answer)
                elif answer.get("response") and answer.get("token") == token:
                    return answer


class Baresip:
    """One headless baresip 1.0.0 user agent registered as ``user`` at ``target``.

    Writes a fresh config directory (no audio/video modules; ``account``,
    ``uuid``, ``contact``, ``menu`` for its commands, ``ctrl_tcp`` on a free
    loopback port for control), an ``accounts`` line

        <sip:user@domain;transport=T>;auth_pass=...;outbound="sip:host:port;transport=T";
        regint=N[;sipnat=outbound]

    and the ``uuid`` file that becomes ``+sip.instance="<urn:uuid:...>"``.
    baresip always puts ``+sip.instance`` (from the uuid file) in its Contact;
    ``reg-id=1`` only comes with ``sipnat=outbound`` (``outbound=True``,
    RFC 5626 §4.2), and so does ``Supported: gruu, outbound, path``. It runs in the foreground in its own process group with
    SIP tracing (``-s``) on; :meth:`stop` unregisters (baresip REGISTERs with
    expires=0 on SIGTERM) and kills the group if needed.

    Transports: udp, tcp, tls (``sip_cafile`` = ``target.ca_file`` is written,
    but baresip 1.0.0 does NOT verify the server certificate: it registers
    with no CA file and with a CA that did not sign the server's cert).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, target: Target, user: User, *, instance_uuid: str | None = None,
                 outbound: bool = True, regint: int = 600,
                 contacts: Sequence[str] = (), extra_account_params: str = "",
                 workdir: Path | None = None, command_timeout: float = 5.0) -> None:
        self.target = target
        self.user = user
        self.instance_uuid = instance_uuid or str(uuid_module.uuid4())
        self.outbound = outbound
        self.regint = regint
        self.contacts = list(contacts)
        self.extra_account_params = extra_account_params
        self.command_timeout = command_timeout
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="baresip-"))
        self.ctrl_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._console: ConsoleOutput | None = None
        self._ctrl: _CtrlTcp | None = None

    # -- set-up ------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.user.name}@{self.target.domain}"

    def account_line(self) -> str:
        transport = self.target.transport
        params = [f"auth_pass={self.user.password}",
                  f'outbound="sip:{self.target.hostport};transport={transport}"',
                  f"regint={self.regint}"]
        if self.user.auth_user:
            params.insert(0, f"auth_user={self.user.auth_user}")
        if self.outbound:
            params.append("sipnat=outbound")
        line = f"<{self.aor};transport={transport}>;" + ";".join(params)
        return line + self.extra_account_params

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ctrl_port = free_port("tcp")
        lines = [
            "poll_method\t\tepoll",
            "sip_listen\t\t127.0.0.1:0",  # any free port; Contact carries the real one
            "module_path\t\t/usr/lib/baresip/modules",
            "module_tmp\t\tuuid.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tcontact.so",
            "module\t\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}",
        ]
        if self.target.ca_file:
            lines.append(f"sip_cafile\t\t{self.target.ca_file}")
        (self.workdir / "config").write_text("\n".join(lines) + "\n")
        # NO trailing newline: baresip 1.0.0 copies the file verbatim into
        # +sip.instance="<urn:uuid:...\n>", which breaks the Contact header.
        (self.workdir / "uuid").write_text(self.instance_uuid)
        (self.workdir / "accounts").write_text(self.account_line() + "\n")
        (self.workdir / "contacts").write_text(
            "".join(f"<{uri}>\n" for uri in self.contacts))

    # -- life cycle --------------------------------------------------------

    def start(self, timeout: float = 5.0) -> None:
        binary = find_binary("baresip")
        if binary is None:
            raise FileNotFoundError("baresip")
        self._write_config()
        # baresip prints through stdio: to a pipe that is block-buffered, and
        # registration lines could sit unflushed for ever. stdbuf makes it line-buffered.
        stdbuf = shutil.which("stdbuf")
        prefix = [stdbuf, "-oL", "-eL"] if stdbuf else []
        self.process = subprocess.Popen(
            [*prefix, binary, "-f", str(self.workdir), "-s"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True)
        self._console = ConsoleOutput(self.process, f"baresip-{self.user.name}", BaresipError,
                                      clean=lambda text: _ANSI_ESCAPE.sub("", text))
        self.wait_for_output(r"ctrl_tcp|baresip is ready", timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._ctrl = _CtrlTcp(self.ctrl_port, self.command_timeout)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise BaresipError(f"ctrl_tcp not reachable\n{self.output()}")
                time.sleep(0.05)


    def stop(self, timeout: float = 5.0) -> int | None:
        """Quit (SIGTERM lets baresip unregister), then kill the group; returns the exit code."""
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(self.process, grace=0)
            if self.process.stdin:
                self.process.stdin.close()
            if self._console is not None:
                self._console.join()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode if self.process else None

    def __enter__(self) -> Baresip:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- output ------------------------------------------------------------

    def output(self, raw: bool = False) -> str:
        """Everything baresip printed (ANSI colours stripped unless ``raw``)."""
        return self._console.text(raw) if self._console is not None else ""

    def wait_for_output(self, pattern: str, timeout: float = 10.0,
                        start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (regex, MULTILINE) appears in the plain output."""
        if self._console is None:
            raise BaresipError("baresip is not running")
        return self._console.wait_for(pattern, timeout, start)

    def wait_registered(self, timeout: float = 10.0) -> int:
        """Wait for the account's REGISTER outcome line; return its status (raise unless 2xx).

        baresip prints ``alice@example.test: {1/TLS/v4} 200 OK (server) [1 binding]``,
        or on a local failure ``reg: sip:alice@example.test: Register: <error>``
        (e.g. "Function not implemented" when a 401 carries any challenge whose
        algorithm libre 1.1 does not know, such as SHA-256 — even next to MD5).
        """
        user = re.escape(self.user.name)
        match = self.wait_for_output(
            rf"^{user}@\S+: \{{[^}}]*\}} (?P<status>\d{{3}}) .*$"
            rf"|^reg: sip:{user}@\S+: (?P<error>.*)$", timeout)
        if match.group("error"):
            raise BaresipError(f"registration failed: {match.group('error')}\n"
                               f"{self.output()[-6000:]}")
        status = int(match.group("status"))
        if not 200 <= status < 300:
            raise BaresipError(f"registration failed with {status}:\n{self.output()[-6000:]}")
        return status

    def traced_messages(self) -> list[TracedMessage]:
        """Every SIP message baresip sent or received so far (needs -s, always on)."""
        local_server = {self.target.hostport}
        messages = []
        for block in _BARESIP_TRACE_BLOCK.finditer(self.output(raw=True)):
            messages.append(TracedMessage(
                transport=block["transport"], source=block["source"],
                destination=block["destination"],
                text=_ANSI_ESCAPE.sub("", block["message"]).replace("\r\n", "\n"),
                outgoing=block["source"] not in local_server))
        return messages

    def sent_requests(self, method: str) -> list[TracedMessage]:
        return [m for m in self.traced_messages()
                if m.outgoing and m.start_line.startswith(method + " ")]

    def received_messages(self) -> list[ReceivedMessage]:
        """MESSAGE requests delivered to this agent (taken from the SIP trace:
        baresip 1.0.0's menu module does not print incoming MESSAGEs)."""
        received = []
        for message in self.traced_messages():
            if not message.outgoing and message.start_line.startswith("MESSAGE "):
                content_type = message.header("Content-Type")
                received.append(ReceivedMessage(
                    sender=(message.header("From") or [""])[0],
                    request_uri=message.start_line.split(" ")[1],
                    content_type=content_type[0] if content_type else None,
                    body=message.body, traced=message))
        return received

    def wait_for_message(self, body: str, timeout: float = 10.0) -> ReceivedMessage:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.received_messages():
                if body in message.body:
                    return message
            if time.monotonic() > deadline:
                raise BaresipError(f"no MESSAGE containing {body!r} within {timeout}s:\n"
                                   f"{self.output()[-6000:]}")
            if self._console is not None:
                self._console.wait_changed(0.2)

    # -- commands ----------------------------------------------------------

    def command(self, command: str, params: str | None = None) -> dict:
        """Run a baresip command (as typed after '/') over ctrl_tcp; return its JSON answer."""
        if self._ctrl is None:
            raise BaresipError("baresip is not running")
        return self._ctrl.command(command, params, self.command_timeout)

    def _select_contact(self, uri: str) -> None:
        """Make ``uri`` the current contact: baresip 1.0.0 can only message that one.

        Walks to the start of the list with contact_prev, then forward with
        contact_next (neither wraps around), bounded by the list length.
        """
        if uri not in self.contacts:
            raise ValueError(f"{uri} is not among this agent's contacts {self.contacts}")
        wanted = f"<{uri}>"
        previous = None
        for _ in range(len(self.contacts) + 1):
            current = self.command("contact_prev").get("data", "")
            if wanted in current:
                return
            if current == previous:
                break
            previous = current
        for _ in range(len(self.contacts) + 1):
            current = self.command("contact_next").get("data", "")
            if wanted in current:
                return
        raise BaresipError(f"could not select contact {uri}")

    def send_message(self, to_uri: str, text: str) -> dict:
        """Send a SIP MESSAGE (RFC 3428) with a text/plain body to ``to_uri``.

        ``to_uri`` must be one of the ``contacts`` given at construction.
        Returns the ctrl_tcp answer (``ok`` only means it was sent: look at
        :meth:`sent_requests` / the trace for the final response).
        """
        self._select_contact(to_uri)
        answer = self.command("message", text)
        if not answer.get("ok"):
            raise BaresipError(f"message command failed: {answer}")
        return answer

    def responses_to(self, method: str) -> list[int]:
        """Status codes of responses baresip received for its ``method`` requests."""
        statuses = []
        for message in self.traced_messages():
            if message.outgoing or not message.start_line.startswith("SIP/2.0 "):
                continue
            cseq = message.header("CSeq")
            if cseq and cseq[0].split()[-1] == method:
                statuses.append(int(message.start_line.split(" ")[1]))
        return statuses


# ---------------------------------------------------------------------------
# A scripted UDP registrar, to observe what a client sends
# ---------------------------------------------------------------------------


class RecordingRegistrar:
    """A tiny UDP "registrar" that challenges with fixed WWW-Authenticate values.

    It does NOT check credentials: a REGISTER without Authorization gets a 401
    carrying every value of ``challenges`` (one header each, in order), one
    with Authorization gets a 200 echoing its Contact. Every request is kept
    in ``requests`` so a test can look at exactly what a client answered,
    e.g. which of two challenges (SHA-256 and MD5, RFC 8760 §2.4 / RFC 7616
    §3.7) it picked and which digest ``uri`` it signed.
    """

    def __init__(self, challenges: Sequence[str], *, host: str = "127.0.0.1") -> None:
        self.challenges = list(challenges)
        self.requests: list[str] = []
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((host, 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name="recording-registrar")

    def target(self, domain: str = "example.test") -> Target:
        return Target(self._socket.getsockname()[0], self.port, "udp", domain)

    def __enter__(self) -> RecordingRegistrar:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self._socket.close()

    def authorizations(self) -> list[dict[str, str]]:
        """Parsed Authorization headers of the REGISTERs received, in order."""
        return [digest_params(value) for request in self.requests
                for value in header_values(request, "Authorization")]

    def _serve(self) -> None:
        while self._running:
            try:
                data, peer = self._socket.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            text = data.decode(errors="replace").replace("\r\n", "\n")
            head = text.split("\n\n", 1)[0]
            if not head.startswith("REGISTER ") and not head.split(" ", 1)[0].isupper():
                continue
            if head.startswith("SIP/2.0"):
                continue
            self.requests.append(head)
            # RFC 3261 §8.2.6.2: copy Via, From, To (add a tag), Call-ID, CSeq.
            copied = [line for line in head.split("\n")[1:]
                      if line.split(":", 1)[0].strip().lower()
                      in ("via", "v", "from", "f", "call-id", "i", "cseq")]
            to = next((line for line in head.split("\n")
                       if line.split(":", 1)[0].strip().lower() in ("to", "t")), "To: <sip:x>")
            if ";tag=" not in to:
                to += ";tag=rec1"
            if not head.startswith("REGISTER "):
                status, extra = "200 OK", []
            elif header_values(head, "Authorization"):
                status = "200 OK"
                extra = [f"Contact: {c};expires=60" for c in header_values(head, "Contact")]
            else:
                status = "401 Unauthorized"
                extra = [f"WWW-Authenticate: {c}" for c in self.challenges]
            response = "\r\n".join([f"SIP/2.0 {status}", *copied, to, *extra,
                                    "Content-Length: 0", "", ""])
            self._socket.sendto(response.encode(), peer)

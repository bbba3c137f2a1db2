#!/usr/bin/env python3
"""Capacity benchmark: authenticated REGISTER and MESSAGE, sipim next to Kamailio.

    python bench/run.py register --target kamailio|sipim|both --transport udp|tcp|tls
    python bench/run.py message  --target both --transport udp --duration 10

For each target the script starts the server itself on 127.0.0.1 (Kamailio from
bench/kamailio/kamailio.cfg, sipim from .venv/bin/sipim), provisions users
user0..user{N-1} with passwords pw0..pw{N-1} in realm bench.example, then drives it
with sipp (Debian package sip-tester) at increasing call rates. A step passes when
every call of the step succeeded and sipp kept up with the asked rate; the result is
the highest passing rate with the p50/p99 response time of that step.

One "call" is one whole authenticated exchange (two round trips):
  register: REGISTER -> 401 -> REGISTER + Authorization       -> 200
  message:  MESSAGE  -> 407 -> MESSAGE  + Proxy-Authorization -> 200 (from the recipient)
so N calls/s means 2N requests/s reach the server (message: 2N in, N relayed out).

Only the standard library is used; nothing leaves the loopback interface, and every
run is bounded by --duration per step, a step count and an overall --budget.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SCENARIO_DIR = BENCH_DIR / "scenarios"
KAMAILIO_CFG = BENCH_DIR / "kamailio" / "kamailio.cfg"
CORE_CFG = REPO_DIR / "deploy" / "kamailio" / "kamailio.cfg"
POSTGRES_URL = os.environ.get("SIPIM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KAMAILIO_MAKE_DB = BENCH_DIR / "kamailio" / "make_db.py"
RESULTS_DIR = BENCH_DIR / "results"
SIPIM_BIN = REPO_DIR / ".venv" / "bin" / "sipim"
SIPIM_PYTHON = REPO_DIR / ".venv" / "bin" / "python"

LOOPBACK = "127.0.0.1"
DOMAIN = "bench.example"
DEFAULT_RAMP_START = 1000
MAX_RATE = 64000
# A step passes only if sipp delivered at least this share of the asked rate: a server
# that answers everything but slowly makes sipp hit its -l limit and fall behind.
KEEP_UP_RATIO = 0.95
# Stop bisecting once the pass/fail bracket is narrower than this share of the rate.
BISECT_PRECISION = 0.08


class BenchError(Exception):
    """A set-up problem reported as one line (missing tool, server did not start...)."""


# --------------------------------------------------------------------------- helpers
def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port_pair() -> int:
    """A port P with P and P+1 free on loopback for both UDP and TCP."""
    for _ in range(200):
        port = random.randrange(20000, 40000, 2)
        if all(_port_free(candidate, kind) for candidate in (port, port + 1)
               for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)):
            return port
    raise BenchError("no free loopback port pair found")


def _port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def sip_options_answered(port: int, timeout: float = 0.5) -> bool:
    """Send one OPTIONS over UDP; any SIP response means the server is up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        local_port = sock.getsockname()[1]
        branch = f"z9hG4bK-bench-{random.getrandbits(48):x}"
        request = (
            f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{DOMAIN}>;tag={random.getrandbits(32):x}\r\n"
            f"To: <sip:{DOMAIN}>\r\n"
            f"Call-ID: bench-probe-{random.getrandbits(48):x}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        try:
            sock.sendto(request.encode(), (LOOPBACK, port))
            data, _ = sock.recvfrom(65535)
        except OSError:
            return False
        return data.startswith(b"SIP/2.0 ")


def tcp_port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BenchError(f"{what}: process exited with status {process.returncode}")
        if predicate():
            return
        time.sleep(0.1)
    raise BenchError(f"{what}: not ready after {timeout:.0f}s")


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not end; only the process we started."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def write_users_file(path: Path, rows: list[str]) -> None:
    # sipp injection file: first line is the read order, then one ';'-separated row per call.
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")


def sipp_supports_tls() -> bool:
    """Debian's sip-tester is built without TLS: its -t help lists no l1/ln modes."""
    help_text = subprocess.run(["sipp", "-h"], capture_output=True, text=True).stdout
    return "l1:" in help_text or "- l1" in help_text


# --------------------------------------------------------------------------- TLS bridge
class TlsBridge:
    """socat TCP -> TLS relay on loopback, for a sipp without TLS support.

    sipp talks plain TCP to the bridge; every sipp connection becomes one TLS
    connection to the server (certificate not verified: it is our throw-away one).
    The bridge costs CPU on the same 2 cores; both targets pay it alike.
    """

    def __init__(self, tls_port: int) -> None:
        self.tls_port = tls_port
        self.listen_port = free_port_pair()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if shutil.which("socat") is None:
            raise BenchError("--transport tls needs socat (apt-get install socat): this sipp has no TLS")
        self.process = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{self.listen_port},bind={LOOPBACK},reuseaddr,fork,nodelay",
             f"OPENSSL:{LOOPBACK}:{self.tls_port},verify=0,nodelay"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: tcp_port_open(self.listen_port), 5, "socat TLS bridge", self.process)

    def stop(self) -> None:
        stop_process(self.process)


# --------------------------------------------------------------------------- targets
@dataclass
class Endpoint:
    """Where sipp sends, and how (sipp -t mode)."""

    port: int
    sipp_transport: str  # u1 / t1 / l1
    label: str


class Target:
    name = "?"
    workers = "auto"  # sipim: `sipim serve --workers` (bench/run.py --workers)

    def __init__(self, work_dir: Path, users: int) -> None:
        self.work_dir = work_dir
        self.users = users
        self.port = free_port_pair()  # UDP and TCP on port, TLS on port + 1
        self.process: subprocess.Popen | None = None
        self.bridge: TlsBridge | None = None
        self.log_path = work_dir / f"{self.name}.log"

    def start(self) -> None:
        raise NotImplementedError

    def endpoint(self, transport: str) -> Endpoint:
        if transport == "udp":
            return Endpoint(self.port, "u1", "udp")
        if transport == "tcp":
            return Endpoint(self.port, "t1", "tcp")
        if sipp_supports_tls():
            return Endpoint(self.port + 1, "l1", "tls")
        if self.bridge is None:
            self.bridge = TlsBridge(self.port + 1)
            self.bridge.start()
        return Endpoint(self.bridge.listen_port, "t1", "tls (sipp->socat->server)")

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        stop_process(self.process)

    def _wait_ready(self) -> None:
        wait_until(lambda: sip_options_answered(self.port), 30, f"{self.name} on udp:{self.port}", self.process)
        wait_until(lambda: tcp_port_open(self.port + 1), 10, f"{self.name} on tls:{self.port + 1}", self.process)


class KamailioTarget(Target):
    name = "kamailio"

    def start(self) -> None:
        if shutil.which("kamailio") is None:
            raise BenchError("kamailio is not installed (scripts/install-test-deps.sh installs it)")
        db_path = self.work_dir / "kamailio.db"
        subprocess.run([sys.executable, str(KAMAILIO_MAKE_DB), str(db_path), "--users", str(self.users),
                        "--realm", DOMAIN], check=True)
        cert, key = self._self_signed_certificate()
        tls_cfg = self.work_dir / "tls.cfg"
        tls_cfg.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"private_key = {key}\ncertificate = {cert}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
        )
        run_dir = self.work_dir / "kamailio-run"
        run_dir.mkdir()
        command = [
            "kamailio", "-DD", "-E", "-f", str(KAMAILIO_CFG),
            "-Y", str(run_dir), "-P", str(run_dir / "kamailio.pid"), "-w", str(self.work_dir),
            "-m", "512", "-M", "16",
            # Let the UDP receive buffer grow to 4 MB (default probing stops at 256 KB):
            # bursts while a worker is descheduled must not overflow it.
            "-b", str(4 * 1024 * 1024),
            "-l", f"udp:{LOOPBACK}:{self.port}", "-l", f"tcp:{LOOPBACK}:{self.port}",
            "-l", f"tls:{LOOPBACK}:{self.port + 1}",
            "-A", f'DBURL="sqlite:///{db_path}"', "-A", f'TLSCFG="{tls_cfg}"',
            "-A", f'SIPDOMAIN="{DOMAIN}"', "-A", "WITH_TLS",
        ]
        log(f"   starting kamailio (4 workers) on udp/tcp:{self.port} tls:{self.port + 1}")
        self.process = subprocess.Popen(command, cwd=self.work_dir, stdout=subprocess.DEVNULL,
                                        stderr=open(self.log_path, "wb"))
        self._wait_ready()

    def _self_signed_certificate(self) -> tuple[Path, Path]:
        cert, key = self.work_dir / "kamailio-cert.pem", self.work_dir / "kamailio-key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN},IP:{LOOPBACK}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return cert, key


class SipimTarget(Target):
    name = "sipim"

    def start(self) -> None:
        if not SIPIM_BIN.exists():
            raise BenchError(f"{SIPIM_BIN} not found: run `make run` once (it creates .venv)")
        self.data_dir = self.work_dir / "sipim-data"
        self.data_dir.mkdir()
        self._provision_users()
        # sipp answers MD5 challenges only (and reads the first one), so every listener
        # offers MD5 alone -- the same single challenge Kamailio sends.
        digest = "?digest=MD5"
        command = [
            str(SIPIM_BIN), "serve", "--data-dir", str(self.data_dir), "--domain", DOMAIN,
            "--listen", f"udp:{LOOPBACK}:{self.port}{digest}", "--listen", f"tcp:{LOOPBACK}:{self.port}{digest}",
            "--listen", f"tls:{LOOPBACK}:{self.port + 1}{digest}", "--allow-insecure", "--log-level", "warning",
            "--workers", str(self.workers),
        ]
        log(f"   starting sipim on udp/tcp:{self.port} tls:{self.port + 1} ({self.workers} worker process(es))")
        self.process = subprocess.Popen(command, cwd=self.work_dir, stdout=subprocess.DEVNULL,
                                        stderr=open(self.log_path, "wb"))
        self._wait_ready()

    def _provision_users(self) -> None:
        """user0..userN-1 / pw0..pwN-1.

        The first user goes through the documented CLI (`sipim user add`), which also
        proves the data directory is usable; the rest are written in one process with the
        same helper the CLI uses, because thousands of CLI start-ups would take minutes.
        If that internal API has moved, fall back to the CLI for every user.
        """
        common = ["--data-dir", str(self.data_dir), "--domain", DOMAIN]
        self._cli_add_user(0, common)
        bulk = (
            "import asyncio, sys, time\n"
            "from sipim.cli import make_user\n"
            "from sipim.store import open_store\n"
            "async def main(path, count, domain):\n"
            "    store = await open_store(path)\n"
            "    try:\n"
            "        for index in range(1, count):\n"
            "            await store.add_user(make_user(f'user{index}', domain, f'pw{index}', created_at=time.time()))\n"
            "    finally:\n"
            "        await store.close()\n"
            "asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))\n"
        )
        started = time.monotonic()
        result = subprocess.run(
            [str(SIPIM_PYTHON), "-c", bulk, str(self.data_dir / "sipim.db"), str(self.users), DOMAIN],
            capture_output=True, text=True,
        )
        if result.returncode == 0:
            log(f"   provisioned {self.users} sipim users in {time.monotonic() - started:.1f}s")
            return
        log(f"   bulk provisioning failed ({result.stderr.strip().splitlines()[-1:]}); using the CLI per user")
        for index in range(1, self.users):
            self._cli_add_user(index, common)

    def _cli_add_user(self, index: int, common: list[str]) -> None:
        result = subprocess.run([str(SIPIM_BIN), "user", "add", f"user{index}", "--password", f"pw{index}", *common],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchError(f"sipim user add user{index} failed: {result.stderr.strip()}")


class CoreTarget(Target):
    """Kamailio with deploy/kamailio/kamailio.cfg in front of N sipim nodes in
    external-core mode on one PostgreSQL schema (a fresh one, dropped afterwards).

    Devices (sipp) talk UDP/TCP/TLS to Kamailio; Kamailio authenticates against
    sipim's kamailio_subscriber view, dispatches MESSAGE round robin to the nodes
    over TCP, and relays each delivery back to the recipient's registered socket.
    """

    nodes = 1

    def start(self) -> None:
        if shutil.which("kamailio") is None:
            raise BenchError("kamailio is not installed (scripts/install-test-deps.sh installs it)")
        if not SIPIM_BIN.exists():
            raise BenchError(f"{SIPIM_BIN} not found: run `make run` once (it creates .venv)")
        suffix = f"{random.getrandbits(48):012x}"
        self.schema, self.role = f"bench_{suffix}", f"bench_kam_{suffix}"
        separator = "&" if "?" in POSTGRES_URL else "?"
        self.database = f"{POSTGRES_URL}{separator}schema={self.schema}"
        self._provision_users()
        self._sql(f'CREATE ROLE "{self.role}" LOGIN', f'GRANT USAGE ON SCHEMA "{self.schema}" TO "{self.role}"',
                  f'GRANT SELECT ON "{self.schema}".kamailio_subscriber TO "{self.role}"',
                  f'ALTER ROLE "{self.role}" SET search_path = "{self.schema}"')
        self.internal_port = free_port_pair()
        self.node_processes: list[subprocess.Popen] = []
        node_ports = []
        for index in range(self.nodes):
            port = free_port_pair()
            node_ports.append(port)
            data_dir = self.work_dir / f"node{index}"
            data_dir.mkdir()
            command = [str(SIPIM_BIN), "serve", "--data-dir", str(data_dir), "--database", self.database,
                       "--domain", DOMAIN, "--listen", f"tcp:{LOOPBACK}:{port}", "--external-core",
                       "--trusted-core", LOOPBACK, "--core-uri", f"sip:{LOOPBACK}:{self.internal_port};transport=tcp",
                       "--node-id", f"node{index}", "--log-level", "warning"]
            self.node_processes.append(subprocess.Popen(command, cwd=self.work_dir, stdout=subprocess.DEVNULL,
                                                        stderr=open(self.work_dir / f"node{index}.log", "wb")))
        for index, port in enumerate(node_ports):
            wait_until(lambda: tcp_port_open(port), 60, f"sipim node{index} on tcp:{port}", self.node_processes[index])
        node_list = self.work_dir / "sipim-nodes.list"
        node_list.write_text("".join(f"1 sip:{LOOPBACK}:{port};transport=tcp\n" for port in node_ports))
        cert, key = KamailioTarget._self_signed_certificate(self)
        tls_cfg = self.work_dir / "tls.cfg"
        tls_cfg.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"private_key = {key}\ncertificate = {cert}\n")
        run_dir = self.work_dir / "kamailio-run"
        run_dir.mkdir()
        postgres = POSTGRES_URL.split("://", 1)[1].split("?", 1)[0]
        host_and_db = postgres.split("@", 1)[-1]
        defines = {
            "SIPDOMAIN": f'"{DOMAIN}"', "DBURL": f'"postgres://{self.role}@{host_and_db}"',
            "DISPATCHER_LIST": f'"{node_list}"', "TLS_CONFIG": f'"{tls_cfg}"',
            "LISTEN_UDP": f"udp:{LOOPBACK}:{self.port}", "LISTEN_TCP": f"tcp:{LOOPBACK}:{self.port}",
            "LISTEN_TLS": f"tls:{LOOPBACK}:{self.port + 1}",
            "LISTEN_INTERNAL": f"tcp:{LOOPBACK}:{self.internal_port}",
            "INTERNAL_SOCKET": f'"tcp:{LOOPBACK}:{self.internal_port}"', "INTERNAL_PORT": str(self.internal_port),
        }
        command = ["kamailio", "-DD", "-E", "-f", str(CORE_CFG), "-Y", str(run_dir), "-w", str(self.work_dir),
                   "-m", "512", "-M", "16", "-b", str(4 * 1024 * 1024),
                   "-A", "WITH_UDP", "-A", "WITH_TCP", "-A", "NO_WSS"]
        for name, value in defines.items():
            command += ["-A", f"{name}={value}"]
        log(f"   starting kamailio (deploy/kamailio/kamailio.cfg) on udp/tcp:{self.port} tls:{self.port + 1} "
            f"in front of {self.nodes} sipim node(s) on PostgreSQL")
        self.process = subprocess.Popen(command, cwd=self.work_dir, stdout=subprocess.DEVNULL,
                                        stderr=open(self.log_path, "wb"))
        self._wait_ready()

    def _provision_users(self) -> None:
        """user0 through the CLI (it also creates the schema), the rest in one process."""
        common = ["--data-dir", str(self.work_dir / "cli"), "--database", self.database, "--domain", DOMAIN]
        result = subprocess.run([str(SIPIM_BIN), "user", "add", "user0", "--password", "pw0", *common],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchError(f"sipim user add user0 failed: {result.stderr.strip()}")
        bulk = (
            "import asyncio, sys, time\n"
            "from sipim.cli import make_user\n"
            "from sipim.store import open_store\n"
            "async def main(url, count, domain):\n"
            "    store = await open_store(url)\n"
            "    try:\n"
            "        for index in range(1, count):\n"
            "            await store.add_user(make_user(f'user{index}', domain, f'pw{index}', created_at=time.time()))\n"
            "    finally:\n"
            "        await store.close()\n"
            "asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))\n"
        )
        result = subprocess.run([str(SIPIM_PYTHON), "-c", bulk, self.database, str(self.users), DOMAIN],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchError(f"provisioning users in PostgreSQL failed: {result.stderr.strip()[-300:]}")

    def _sql(self, *statements: str) -> None:
        script = (
            "import asyncio, sys, asyncpg\n"
            "async def main(url, statements):\n"
            "    conn = await asyncpg.connect(url)\n"
            "    try:\n"
            "        for statement in statements:\n"
            "            await conn.execute(statement)\n"
            "    finally:\n"
            "        await conn.close()\n"
            "asyncio.run(main(sys.argv[1], sys.argv[2:]))\n"
        )
        result = subprocess.run([str(SIPIM_PYTHON), "-c", script, POSTGRES_URL, *statements],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchError(f"PostgreSQL: {result.stderr.strip()[-300:]}")

    def stop(self) -> None:
        super().stop()
        for process in getattr(self, "node_processes", []):
            stop_process(process)
        if getattr(self, "schema", None):
            try:
                self._sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE', f'DROP OWNED BY "{self.role}"',
                          f'DROP ROLE IF EXISTS "{self.role}"')
            except BenchError as exc:
                log(f"   cleanup: {exc}")


class CoreTarget1(CoreTarget):
    name = "core1"
    nodes = 1


class CoreTarget2(CoreTarget):
    name = "core2"
    nodes = 2


TARGETS = {"kamailio": KamailioTarget, "sipim": SipimTarget, "core1": CoreTarget1, "core2": CoreTarget2}


# --------------------------------------------------------------------------- sipp runs
@dataclass
class StepResult:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    seconds: float
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    samples: int
    exit_code: int
    passed: bool
    note: str = ""


@dataclass
class TargetResult:
    target: str
    scenario: str
    transport: str
    best: StepResult | None
    steps: list[StepResult] = field(default_factory=list)
    error: str = ""
    load_average: float = 0.0  # 1-minute load average when the target started


class SippRunner:
    def __init__(self, work_dir: Path, endpoint: Endpoint) -> None:
        self.work_dir = work_dir
        self.endpoint = endpoint

    def base_command(self, scenario: str, injection: Path) -> list[str]:
        return [
            "sipp", f"{LOOPBACK}:{self.endpoint.port}",
            "-sf", str(SCENARIO_DIR / scenario), "-inf", str(injection),
            "-t", self.endpoint.sipp_transport, "-i", LOOPBACK, "-bind_local",
            "-key", "domain", DOMAIN, "-key", "expires", "3600",
            "-nostdin", "-buff_size", str(4 * 1024 * 1024),
            # -nd: on a failed call do not send sipp's default BYE/CANCEL (no dialog exists).
            "-nd",
        ]

    def run_step(self, scenario: str, injection: Path, rate: int, duration: float,
                 extra: list[str], step_dir: Path) -> StepResult:
        """Run `rate` calls/s for `duration` s and judge the step."""
        calls = max(1, int(rate * duration))
        step_dir.mkdir(parents=True)
        command = self.base_command(scenario, injection) + [
            "-r", str(rate), "-m", str(calls),
            # Concurrency cap: a healthy server answers within ~1 s; beyond that sipp
            # slows down, which the keep-up check then reports as a failed step.
            "-l", str(max(100, rate)),
            "-recv_timeout", "5000", "-timeout", f"{int(duration * 3 + 20)}s", "-timeout_error",
            "-trace_stat", "-fd", "1", "-trace_rtt", "-rtt_freq", "50",
            "-trace_err",
        ] + extra
        started = time.monotonic()
        result = subprocess.run(command, cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                timeout=duration * 3 + 40)
        seconds = time.monotonic() - started
        stats = _last_stat_row(step_dir)
        successful = int(stats.get("SuccessfulCall(C)", 0))
        failed = int(stats.get("FailedCall(C)", 0))
        retransmissions = int(stats.get("Retransmissions(C)", 0))
        samples = _rtt_samples(step_dir)
        achieved = successful / seconds if seconds > 0 else 0.0
        passed = (result.returncode == 0 and failed == 0 and successful == calls
                  and achieved >= KEEP_UP_RATIO * rate)
        note = ""
        if result.returncode not in (0, 1):
            note = f"sipp exit {result.returncode}: {result.stderr.decode(errors='replace').strip()[-200:]}"
        elif successful == calls and failed == 0 and achieved < KEEP_UP_RATIO * rate:
            note = "did not keep up with the asked rate"
        return StepResult(
            rate=rate, calls=calls, successful=successful, failed=failed, retransmissions=retransmissions,
            seconds=round(seconds, 2), achieved_rate=round(achieved, 1),
            p50_ms=percentile(samples, 0.50), p99_ms=percentile(samples, 0.99), samples=len(samples),
            exit_code=result.returncode, passed=passed, note=note,
        )


def _last_stat_row(step_dir: Path) -> dict[str, str]:
    """The cumulative counters of the last -trace_stat row (';'-separated, header first)."""
    files = sorted(glob.glob(str(step_dir / "*_.csv")))
    if not files:
        return {}
    with open(files[-1], newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def _rtt_samples(step_dir: Path) -> list[float]:
    """Response times of RTD 1 from -trace_rtt, in ms, sorted.

    File format: header `Date_ms;response_time_ms;rtd_no`, then one row per finished
    RTD. sipp measures with its millisecond clock tick, so values are whole
    milliseconds (0 means under 1 ms), and rows still buffered at exit (fewer than
    -rtt_freq) are not written.
    """
    values: list[float] = []
    for path in glob.glob(str(step_dir / "*_rtt.csv")):
        with open(path, newline="") as handle:
            for row in csv.reader(handle, delimiter=";"):
                if len(row) >= 3 and row[2].strip() == "1":
                    try:
                        values.append(float(row[1]))
                    except ValueError:
                        continue
    values.sort()
    return values


# --------------------------------------------------------------------------- scenarios
class Benchmark:
    """One scenario against one started target: set-up, then the rate search."""

    scenario_file = ""

    def __init__(self, target: Target, transport: str, args: argparse.Namespace, run_dir: Path) -> None:
        self.target = target
        self.transport = transport
        self.args = args
        self.run_dir = run_dir
        self.endpoint = target.endpoint(transport)
        self.sipp = SippRunner(run_dir, self.endpoint)
        self.step_counter = 0

    def prepare(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def step(self, rate: int) -> StepResult:
        raise NotImplementedError

    def _step_dir(self, rate: int) -> Path:
        self.step_counter += 1
        return self.run_dir / f"step{self.step_counter:02d}-{rate}"


class RegisterBenchmark(Benchmark):
    scenario_file = "register_auth.xml"

    def prepare(self) -> None:
        self.injection = self.run_dir / "users.csv"
        write_users_file(self.injection, [f"user{i};pw{i}" for i in range(self.args.users)])

    def step(self, rate: int) -> StepResult:
        # -auth_uri: sipp's digest uri defaults to the server's ip:port; make it the
        # Request-URI (sip:bench.example) as RFC 3261 §22.4 expects.
        return self.sipp.run_step(self.scenario_file, self.injection, rate, self.args.duration,
                                  ["-auth_uri", DOMAIN], self._step_dir(rate))


class MessageBenchmark(Benchmark):
    """Senders user0..user{S-1} -> recipients user{S}..user{N-1}, all registered first.

    The recipients are registered by a long-lived sipp (message_auth_uas.xml) whose
    out-of-call scenario answers the relayed MESSAGEs with 200; its calls stay open
    (pause) so its socket -- the registered contact -- lives for the whole run.
    """

    scenario_file = "message_auth_uac.xml"

    def prepare(self) -> None:
        recipients = self.args.recipients
        senders = self.args.users - recipients
        if senders < 1:
            raise BenchError("--users must exceed --recipients")
        self.recipient_names = [f"user{senders + i}" for i in range(recipients)]
        recipients_file = self.run_dir / "recipients.csv"
        write_users_file(recipients_file, [f"{name};pw{name[4:]}" for name in self.recipient_names])
        self.injection = self.run_dir / "messages.csv"
        write_users_file(self.injection, [f"user{i};pw{i};{self.recipient_names[i % recipients]}"
                                          for i in range(senders)])

        # 1. Register the senders once (they are "registered users"; Kamailio does not
        #    need it, an IMS-style core may).  From the local port the sending sipp uses
        #    later, named (-p): the sender's registered device is then the one sending, as
        #    for a real client.  sipp alone takes 5060, or the next free port when another
        #    process holds it; if the two runs got different ports, sipim would copy every
        #    message to the sender's "other device" -- the exited registering sipp -- and
        #    retransmit each copy until Timer F (RFC 3261 §17.1.2.2): ten more datagrams
        #    per message that the Kamailio target never sends (bench/hotpath.py message
        #    ... elsewhere measures that case: +70 % CPU per message).
        self.sender_port = free_port_pair()
        senders_file = self.run_dir / "senders.csv"
        write_users_file(senders_file, [f"user{i};pw{i}" for i in range(senders)])
        warmup = self.sipp.run_step("register_auth.xml", senders_file, min(senders, 500),
                                    senders / min(senders, 500),
                                    ["-auth_uri", DOMAIN, "-p", str(self.sender_port)],
                                    self.run_dir / "register-senders")
        if warmup.failed or warmup.successful != warmup.calls:
            raise BenchError(f"registering the senders failed: {warmup}")

        # 2. Start the receiving sipp and wait until every recipient is registered.
        receiver_dir = self.run_dir / "receiver"
        receiver_dir.mkdir()
        self.receiver_port = free_port_pair()
        command = self.sipp.base_command("message_auth_uas.xml", recipients_file) + [
            "-oocsf", str(SCENARIO_DIR / "message_answer_ooc.xml"),
            "-p", str(self.receiver_port), "-r", str(min(recipients, 200)), "-m", str(recipients),
            "-d", str(3600 * 1000), "-auth_uri", DOMAIN, "-trace_logs",
            "-log_file", str(receiver_dir / "registered.log"),
        ]
        self.receiver = subprocess.Popen(command, cwd=receiver_dir, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        log_file = receiver_dir / "registered.log"

        def all_registered() -> bool:
            return log_file.exists() and log_file.read_text().count("registered ") >= recipients

        wait_until(all_registered, 30, "registering the recipients", self.receiver)

    def step(self, rate: int) -> StepResult:
        extra: list[str] = ["-p", str(self.sender_port)]
        if self.args.recipients == 1:
            # sipp computes the digest uri from -auth_uri (default: server ip:port), not from
            # the Request-URI; with one recipient the two can be made equal (RFC 3261 §22.4).
            extra += ["-auth_uri", f"{self.recipient_names[0]}@{DOMAIN}"]
        return self.sipp.run_step(self.scenario_file, self.injection, rate, self.args.duration,
                                  extra, self._step_dir(rate))

    def finish(self) -> None:
        stop_process(getattr(self, "receiver", None))


BENCHMARKS = {"register": RegisterBenchmark, "message": MessageBenchmark}


# --------------------------------------------------------------------------- rate search
def find_capacity(bench: Benchmark, args: argparse.Namespace, deadline: float) -> list[StepResult]:
    """Highest rate with zero failed calls: explicit --rates in order, else double then bisect."""
    steps: list[StepResult] = []

    def attempt(rate: int) -> StepResult:
        # A failed step is tried again (--retries): on a shared 2-core box a burst of
        # someone else's work can starve sipp or the server for a moment, and UDP
        # retransmissions then snowball; a rate that passes on a retry is sustainable.
        for attempt_number in range(1 + args.retries):
            result = bench.step(rate)
            steps.append(result)
            verdict = "ok  " if result.passed else ("FAIL" if attempt_number == args.retries else "fail")
            log(f"   {verdict} {rate:>6}/s  calls {result.successful}/{result.calls}  failed {result.failed}"
                f"  retrans {result.retransmissions}  achieved {result.achieved_rate:.0f}/s"
                f"  p50 {fmt_ms(result.p50_ms)}  p99 {fmt_ms(result.p99_ms)} ms"
                + (f"  ({result.note})" if result.note else "")
                + ("  -> retrying" if not result.passed and attempt_number < args.retries and time_left() else ""))
            if result.passed or not time_left():
                break
        return result

    def time_left() -> bool:
        return time.monotonic() + args.duration + 5 < deadline

    if args.rates:
        for rate in args.rates:
            if not time_left():
                break
            if not attempt(rate).passed and not args.keep_going:
                break
        return steps

    good, bad = 0, None
    rate = args.start_rate
    while rate <= MAX_RATE and time_left():
        if attempt(rate).passed:
            good = rate
            rate *= 2
        else:
            bad = rate
            break
    while bad is not None and good and (bad - good) > BISECT_PRECISION * good and time_left():
        middle = round((good + bad) / 2 / 100) * 100 or (good + bad) // 2
        if middle in (good, bad):
            break
        if attempt(middle).passed:
            good = middle
        else:
            bad = middle
    return steps


def fmt_ms(value: float) -> str:
    if value != value:  # NaN: no samples
        return "-"
    if value < 1:
        return "<1"
    return f"{value:.0f}"


def run_target(name: str, args: argparse.Namespace, budget: float) -> TargetResult:
    run_dir = Path(tempfile.mkdtemp(prefix=f"sipim-bench-{name}-"))
    log(f"== {args.scenario} / {name} / {args.transport}  (work dir {run_dir})")
    target = TARGETS[name](run_dir, args.users)
    target.workers = args.workers
    bench: Benchmark | None = None
    result = TargetResult(target=name, scenario=args.scenario, transport=args.transport, best=None,
                          load_average=round(os.getloadavg()[0], 2))
    if result.load_average > 0.5:
        log(f"   warning: load average {result.load_average} before the start -- other processes share "
            "the CPU with sipp and the server; figures will be low and noisy")
    deadline = time.monotonic() + budget
    try:
        target.start()
        bench = BENCHMARKS[args.scenario](target, args.transport, args, run_dir)
        result.transport = bench.endpoint.label
        bench.prepare()
        result.steps = find_capacity(bench, args, deadline)
        passing = [step for step in result.steps if step.passed]
        result.best = max(passing, key=lambda step: step.rate) if passing else None
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        result.error = str(exc)
        log(f"   error: {exc}  (logs in {run_dir})")
    finally:
        if bench is not None:
            bench.finish()
        target.stop()
    if not args.keep and not result.error:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def print_summary(results: list[TargetResult]) -> None:
    print()
    header = (f"{'target':<10} {'scenario':<9} {'transport':<26} {'max calls/s':>11} {'requests/s':>11} "
              f"{'p50 ms':>7} {'p99 ms':>7}  note")
    print(header)
    print("-" * len(header))
    for result in results:
        best = result.best
        if best is None:
            note = result.error or "no rate passed"
            print(f"{result.target:<10} {result.scenario:<9} {result.transport:<26} {'-':>11} {'-':>11} "
                  f"{'-':>7} {'-':>7}  {note}")
            continue
        passed_rates = {step.rate for step in result.steps if step.passed}
        ceiling = [step.rate for step in result.steps if not step.passed and step.rate not in passed_rates]
        note = f"fails at {min(ceiling)}/s" if ceiling else "no failure up to the last rate tried"
        note += f"; load avg {result.load_average}"
        print(f"{result.target:<10} {result.scenario:<9} {result.transport:<26} {best.rate:>11} "
              f"{2 * best.rate:>11} {fmt_ms(best.p50_ms):>7} {fmt_ms(best.p99_ms):>7}  {note}")
    print("\n1 call = one full digest exchange: 2 requests (challenged + authenticated) in, 2 final"
          "\nresponses out; for message the server also relays 1 MESSAGE and its 200."
          "\nResponse times are sipp's (1 ms clock): first request sent -> final 200 received.")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(BENCHMARKS))
    parser.add_argument("--target", choices=["kamailio", "sipim", "both", "core1", "core2", "core"], default="both",
                        help="both = kamailio then sipim; core1/core2 = Kamailio (deploy/kamailio) in front of "
                             "1 or 2 sipim nodes on PostgreSQL; core = core1 then core2")
    parser.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    parser.add_argument("--rates", type=lambda text: [int(r) for r in text.split(",") if r],
                        help="comma-separated calls/s to try in order (stops at the first failure); "
                             "default: double from --start-rate, then bisect")
    parser.add_argument("--start-rate", type=int, default=DEFAULT_RAMP_START)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step (default 10)")
    parser.add_argument("--users", type=int, default=1000, help="provisioned users (default 1000)")
    parser.add_argument("--recipients", type=int, default=1,
                        help="message: registered recipients (default 1; with more, sipp's digest uri "
                             "cannot equal the Request-URI)")
    parser.add_argument("--retries", type=int, default=1,
                        help="times a failed step is run again before the rate counts as failed (default 1)")
    parser.add_argument("--budget", type=float, default=170.0,
                        help="seconds for the rate searches, shared by the targets (default 170)")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (sipp csv, logs)")
    parser.add_argument("--keep-going", action="store_true",
                        help="with --rates: run every listed step even after a failed one (a steady "
                             "run, e.g. --rates 6000,6000,6000,6000 --retries 0, or recovery after an "
                             "overloaded step)")
    parser.add_argument("--workers", default="auto", metavar="N|auto",
                        help="sipim target: worker processes (`sipim serve --workers`; default auto, "
                             "one per CPU, as Kamailio runs several worker children)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("sipp") is None:
        log("sipp is not installed: apt-get install sip-tester (or scripts/install-test-deps.sh)")
        return 2
    names = {"both": ["kamailio", "sipim"], "core": ["core1", "core2"]}.get(args.target, [args.target])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    # --budget bounds the whole invocation: the targets share it.
    results = [run_target(name, args, args.budget / len(names)) for name in names]
    print_summary(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"{stamp}-{args.scenario}-{args.transport}.json"
    out.write_text(json.dumps([asdict(result) for result in results], indent=2))
    log(f"\nresults written to {out.relative_to(REPO_DIR)}")
    return 0 if all(result.best is not None for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())

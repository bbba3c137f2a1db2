"""Kamailio (deploy/kamailio/kamailio.cfg, unchanged) in front of sipim nodes on PostgreSQL.

Starts, in a temporary directory and on loopback ports chosen free at run time:
- a fresh PostgreSQL schema for sipim, and a PostgreSQL role for Kamailio that may
  only read the ``kamailio_subscriber`` view (its search_path is that schema), as
  deploy/kamailio/README.md tells an operator to do;
- sipim nodes in external-core mode (``--external-core``), each on one TCP
  listener, trusting 127.0.0.1 and sending deliveries to Kamailio's internal port;
- Kamailio in the foreground with the committed config and ``-A`` defines
  (TLS and plain TCP for devices -- Debian's sipp has no TLS -- the internal
  TCP link, the dispatcher list naming the nodes).

The dispatcher list can be rewritten and reloaded (``kamcmd dispatcher.reload``)
to decide which nodes get traffic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import SipimProcess
from tests.support.sipua import TestUA

from .clients import Target, free_port
from .kamailio_fixture import _tcp_port_open, _write_tls_material, kamailio_binary

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
DOMAIN = "example.test"


async def _sql(base_url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base_url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def postgres_base_url() -> str:
    from tests.conftest import POSTGRES_BASE_URL

    return POSTGRES_BASE_URL


@dataclass
class CoreDeployment:
    workdir: Path
    schema: str
    kamailio_role: str
    tls_port: int
    tcp_port: int
    internal_port: int
    ca_file: Path
    wss_port: int = 0
    nodes: dict[str, SipimProcess] = field(default_factory=dict)
    kamailio: subprocess.Popen | None = None

    # -- set-up -------------------------------------------------------------------
    @property
    def database(self) -> str:
        base = postgres_base_url()
        return f"{base}{'&' if '?' in base else '?'}schema={self.schema}"

    @property
    def core_uri(self) -> str:
        return f"sip:127.0.0.1:{self.internal_port};transport=tcp"

    def start_node(self, name: str, *extra: str) -> SipimProcess:
        node = SipimProcess(
            self.workdir / f"node-{name}", database=self.database, listen=("tcp:127.0.0.1:0",),
            allow_insecure=False,
            extra_args=("--external-core", "--trusted-core", "127.0.0.1", "--core-uri", self.core_uri,
                        "--node-id", name, *extra),
            config_text="change_poll_interval = 0.2\nim_delivery_wait = 2.0\n",
            domain=DOMAIN)
        node.start(timeout=60)  # a busy CI machine starts Python slowly
        self.nodes[name] = node
        return node

    def node_port(self, name: str) -> int:
        return self.nodes[name].ports["tcp"]

    def write_dispatcher_list(self, names: list[str]) -> None:
        lines = [f"1 sip:127.0.0.1:{self.node_port(n)};transport=tcp 0 0 name={n}" for n in names]
        (self.workdir / "sipim-nodes.list").write_text("\n".join(lines) + "\n")

    def reload_dispatcher(self, names: list[str]) -> None:
        self.write_dispatcher_list(names)
        deadline = time.monotonic() + 10
        while True:
            # Kamailio refuses a reload within reload_delta (1 s) of the previous one.
            result = subprocess.run(["kamcmd", "-s", str(self.workdir / "run" / "kamailio_ctl"),
                                     "dispatcher.reload"], capture_output=True, text=True, timeout=10)
            output = result.stdout + result.stderr
            if result.returncode == 0 and "error" not in output.lower():
                return
            assert time.monotonic() < deadline, output
            time.sleep(0.2)

    def start_kamailio(self, timeout: float = 15.0) -> None:
        binary = kamailio_binary()
        assert binary, "kamailio not installed"
        cert, key = self.workdir / "server-cert.pem", self.workdir / "server-key.pem"
        tls_cfg = self.workdir / "tls.cfg"
        tls_cfg.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"private_key = {key}\ncertificate = {cert}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")
        run_dir = self.workdir / "run"
        run_dir.mkdir(exist_ok=True)
        wss_port = self.wss_port = free_port("tcp", avoid={self.tls_port, self.tcp_port, self.internal_port})
        defines = {
            "SIPDOMAIN": f'"{DOMAIN}"',
            "DBURL": f'"postgres://{self.kamailio_role}@127.0.0.1:5432/{postgres_database()}"',
            "AUTH_SECRET": f'"{uuid.uuid4().hex}"',
            "DISPATCHER_LIST": f'"{self.workdir / "sipim-nodes.list"}"',
            "LISTEN_TLS": f"tls:127.0.0.1:{self.tls_port}",
            "LISTEN_WSS": f"tls:127.0.0.1:{wss_port}",
            "WSS_PORT": str(wss_port),
            "LISTEN_TCP": f"tcp:127.0.0.1:{self.tcp_port}",
            "LISTEN_INTERNAL": f"tcp:127.0.0.1:{self.internal_port}",
            "INTERNAL_SOCKET": f'"tcp:127.0.0.1:{self.internal_port}"',
            "INTERNAL_PORT": str(self.internal_port),
            "TLS_CONFIG": f'"{tls_cfg}"',
            "DS_PING_INTERVAL": "1",
        }
        command = [binary, "-DD", "-E", "-f", str(CONFIG), "-Y", str(run_dir), "-w", str(self.workdir),
                   "-m", "64", "-M", "8", "-A", "WITH_TCP"]
        for name, value in defines.items():
            command += ["-A", f"{name}={value}"]
        log = open(self.workdir / "kamailio.log", "wb")
        try:
            self.kamailio = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.workdir, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kamailio.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.kamailio.returncode}:\n{self.kamailio_log()}")
            if _tcp_port_open(self.tls_port) and _tcp_port_open(self.tcp_port) and \
                    (run_dir / "kamailio_ctl").exists():
                return
            time.sleep(0.1)
        raise RuntimeError(f"kamailio did not start:\n{self.kamailio_log()}")

    def kamailio_log(self) -> str:
        try:
            return (self.workdir / "kamailio.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- clients ------------------------------------------------------------------
    def sipp_target(self) -> Target:
        return Target(host="127.0.0.1", port=self.tcp_port, transport="tcp", domain=DOMAIN)

    def ua(self, user: str, password: str, *, instance: str | None = None) -> TestUA:
        return TestUA("tls", "127.0.0.1", self.tls_port, user, password, domain=DOMAIN, ca_file=self.ca_file,
                      instance=instance or str(uuid.uuid4()), timeout=15.0).connect()

    def add_user(self, name: str, password: str) -> None:
        node = next(iter(self.nodes.values()))
        node.add_user(name, password)

    # -- tear-down ----------------------------------------------------------------
    def stop(self) -> None:
        if self.kamailio is not None and self.kamailio.poll() is None:
            try:
                os.killpg(self.kamailio.pid, signal.SIGTERM)
                self.kamailio.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.kamailio.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for node in self.nodes.values():
            node.stop()
        asyncio.run(_sql(postgres_base_url(),
                         f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE',
                         f'DROP OWNED BY "{self.kamailio_role}"',
                         f'DROP ROLE IF EXISTS "{self.kamailio_role}"'))


def postgres_database() -> str:
    from urllib.parse import urlsplit

    return urlsplit(postgres_base_url()).path.lstrip("/") or "postgres"


def prepare_database(deployment: CoreDeployment) -> None:
    """The view exists once sipim migrated the schema (any CLI command does);
    then the read-only role for Kamailio (deploy/kamailio/README.md)."""
    bootstrap = SipimProcess(deployment.workdir / "bootstrap", database=deployment.database, domain=DOMAIN)
    bootstrap.data_dir.mkdir(parents=True, exist_ok=True)
    bootstrap.cli("user", "list")
    role, schema = deployment.kamailio_role, deployment.schema
    asyncio.run(_sql(postgres_base_url(),
                     f'CREATE ROLE "{role}" LOGIN',
                     f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
                     f'GRANT SELECT ON "{schema}".kamailio_subscriber TO "{role}"',
                     f'ALTER ROLE "{role}" SET search_path = "{schema}"'))


def start_deployment(workdir: Path, node_names: list[str]) -> CoreDeployment:
    workdir.mkdir(parents=True, exist_ok=True)
    tls_port = free_port("tcp")
    tcp_port = free_port("tcp", avoid={tls_port})
    internal_port = free_port("tcp", avoid={tls_port, tcp_port})
    ca_file, _, _ = _write_tls_material(workdir, DOMAIN)
    suffix = uuid.uuid4().hex[:12]
    deployment = CoreDeployment(workdir=workdir, schema=f"t_{suffix}", kamailio_role=f"kam_{suffix}",
                                tls_port=tls_port, tcp_port=tcp_port, internal_port=internal_port,
                                ca_file=ca_file)
    try:
        prepare_database(deployment)
        for name in node_names:
            deployment.start_node(name)
        deployment.write_dispatcher_list(node_names)
        deployment.start_kamailio()
    except BaseException:
        deployment.stop()
        raise
    return deployment

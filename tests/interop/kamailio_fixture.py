"""Start a throw-away Kamailio (Debian 5.6) as a registrar with digest auth.

Used only by tests/interop/test_clients_against_kamailio.py to prove that the
third-party client drivers in clients.py really talk SIP to a real server
before they are pointed at sipim.

The config (tests/interop/kamailio/kamailio.cfg.template) needs no database:
passwords are written into the routing script and checked with the auth
module's ``pv_www_authenticate()``. Kamailio runs in the foreground (``-DD``)
in its own process group, from a temporary directory, on loopback ports
chosen free at run time, and is killed as a group on ``stop()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .clients import Target, free_port, sip_options_ping

TEMPLATE = Path(__file__).with_name("kamailio") / "kamailio.cfg.template"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio") else None
    )


def kamailio_has_tls() -> bool:
    """Debian ships tls.so in the separate kamailio-tls-modules package."""
    return (KAMAILIO_MODULES / "tls.so").exists()


def _quote_kamailio_string(value: str) -> str:
    if '"' in value or "\\" in value or "\n" in value:
        raise ValueError(f"unsupported character in {value!r}")
    return f'"{value}"'


@dataclass
class Kamailio:
    """A running Kamailio; build it with :func:`start_kamailio`."""

    workdir: Path
    domain: str
    udp_port: int
    tcp_port: int
    tls_port: int | None
    ca_file: Path | None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default=Path("/dev/null"))

    def target(self, transport: str) -> Target:
        port = {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port}[transport]
        if port is None:
            raise ValueError(f"this Kamailio has no {transport} listener")
        return Target(host="127.0.0.1", port=port, transport=transport,
                      domain=self.domain, ca_file=self.ca_file)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=5)
        self.process = None


def _write_tls_material(workdir: Path, domain: str) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for the domain and 127.0.0.1."""
    import trustme

    authority = trustme.CA()
    server_cert = authority.issue_cert(domain, "127.0.0.1", "localhost")
    ca_file = workdir / "ca.pem"
    cert_file = workdir / "server-cert.pem"
    key_file = workdir / "server-key.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    server_cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


def start_kamailio(workdir: Path, users: dict[str, str], *, domain: str = "example.test",
                   tls: bool = True, startup_timeout: float = 10.0) -> Kamailio:
    """Write the config into ``workdir`` and start Kamailio; wait until it answers OPTIONS.

    ``users`` maps user name -> plain-text password (the digest realm is the
    To-domain, i.e. ``domain``).
    """
    binary = kamailio_binary()
    if binary is None:
        raise FileNotFoundError("kamailio")
    workdir.mkdir(parents=True, exist_ok=True)
    tls = tls and kamailio_has_tls()
    udp_port = free_port("udp")
    tcp_port = free_port("tcp", avoid={udp_port})
    tls_port = free_port("tcp", avoid={udp_port, tcp_port}) if tls else None

    ca_file = None
    tls_listen = tls_loadmodule = tls_modparam = ""
    if tls:
        ca_file, cert_file, key_file = _write_tls_material(workdir, domain)
        tls_cfg = workdir / "tls.cfg"
        tls_cfg.write_text(
            "[server:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
            f"private_key = {key_file}\n"
            f"certificate = {cert_file}\n"
            "\n[client:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
        )
        tls_listen = f"listen=tls:127.0.0.1:{tls_port}"
        tls_loadmodule = 'loadmodule "tls.so"'
        tls_modparam = f'modparam("tls", "config", "{tls_cfg}")'

    password_table = "\n".join(
        f"\tif ($au == {_quote_kamailio_string(user)}) "
        f"{{ $var(password) = {_quote_kamailio_string(password)}; }}"
        for user, password in users.items()
    )
    config = TEMPLATE.read_text()
    for name, value in {
        "DOMAIN": domain,
        "ENABLE_TLS": "yes" if tls else "no",
        "UDP_PORT": str(udp_port),
        "TCP_PORT": str(tcp_port),
        "TLS_LISTEN": tls_listen,
        "TLS_LOADMODULE": tls_loadmodule,
        "TLS_MODPARAM": tls_modparam,
        "PASSWORD_TABLE": password_table,
    }.items():
        config = config.replace(f"$${name}$$", value)
    config_path = workdir / "kamailio.cfg"
    config_path.write_text(config)
    runtime_dir = workdir / "run"
    runtime_dir.mkdir(exist_ok=True)

    log_path = workdir / "kamailio.log"
    log_file = open(log_path, "wb")
    try:
        process = subprocess.Popen(
            [binary, "-DD", "-E", "-f", str(config_path), "-Y", str(runtime_dir),
             "-w", str(workdir), "-m", "64", "-M", "8"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            cwd=workdir, start_new_session=True,
        )
    finally:
        log_file.close()
    server = Kamailio(workdir=workdir, domain=domain, udp_port=udp_port, tcp_port=tcp_port,
                      tls_port=tls_port, ca_file=ca_file, process=process, log_path=log_path)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kamailio exited with {process.returncode}:\n{server.log()}")
        if sip_options_ping("127.0.0.1", udp_port, timeout=0.3):
            if tls and not _tcp_port_open(tls_port):
                continue
            return server
    server.stop()
    raise RuntimeError(f"kamailio did not answer OPTIONS within {startup_timeout}s:\n"
                       f"{server.log()}")


def _tcp_port_open(port: int | None) -> bool:
    if port is None:
        return True
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False

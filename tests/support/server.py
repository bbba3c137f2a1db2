"""Run a real `sipim serve` process for integration tests.

The server binds port 0 everywhere and prints what it really listens on; we
read that from its banner, so tests never race for free ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "example.test"
_LISTEN_LINE = re.compile(r"listening on (\w+):(.+):(\d+)$")


def sipim_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sipim.cli", *args]


def run_cli(data_dir: Path, *args: str, database: str | None = None, check: bool = True,
            domain: str | None = DOMAIN) -> subprocess.CompletedProcess:
    command = sipim_command(*args, "--data-dir", str(data_dir))
    if database:
        command += ["--database", database]
    if domain:
        command += ["--domain", domain]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"sipim {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@dataclass
class SipimProcess:
    data_dir: Path
    database: str | None = None
    listen: tuple[str, ...] = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0", "wss:127.0.0.1:0")
    allow_insecure: bool = True
    extra_args: tuple[str, ...] = ()
    config_text: str | None = None
    domain: str = DOMAIN
    ports: dict[str, int] = field(default_factory=dict)  # first listener of each transport
    listening: list[tuple[str, int]] = field(default_factory=list)  # every listener, in --listen order
    process: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 20.0) -> "SipimProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = ["serve", "--data-dir", str(self.data_dir), "--domain", self.domain, "--log-level", "warning"]
        for spec in self.listen:
            args += ["--listen", spec]
        if self.allow_insecure:
            args.append("--allow-insecure")
        if self.database:
            args += ["--database", self.database]
        if self.config_text is not None:
            config = self.data_dir / "test-config.toml"
            config.write_text(self.config_text)
            args += ["--config", str(config)]
        args += list(self.extra_args)
        log = open(self.data_dir / "server.log", "a")
        self.process = subprocess.Popen(sipim_command(*args), stdout=subprocess.PIPE, stderr=log, text=True,
                                        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        self.ports = {}
        self.listening = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTEN_LINE.search(line.strip())
            if match:
                self.ports.setdefault(match.group(1), int(match.group(3)))
                self.listening.append((match.group(1), int(match.group(3))))
            if line.startswith("  add a user"):
                return self
        self.stop()
        raise AssertionError(f"sipim did not start: {''.join(self.output)}\n{self.log()}")

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def log(self) -> str:
        try:
            return (self.data_dir / "server.log").read_text()
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(self.data_dir, *args, database=self.database, check=check, domain=self.domain)

    def add_user(self, name: str, password: str, *extra: str) -> None:
        self.cli("user", "add", name, "--password", password, *extra)

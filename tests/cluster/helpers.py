"""Looking at a `sipim serve --workers N` process tree from a test."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.sipua import TestUA, registered_device
from tests.support.waiting import wait_for  # noqa: F401 - the cluster tests take it from here


def worker_pids(process) -> list[int]:
    """The supervisor's children (the workers), from /proc."""
    parent = process.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children")
    if children.exists():
        return sorted(int(pid) for pid in children.read_text().split())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return sorted(found)


def worker_pid(process, index: int) -> int | None:
    """The pid of worker ``index`` (workers name themselves "sipim-w<index>")."""
    for pid in worker_pids(process):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == f"sipim-w{index}":
                return pid
        except OSError:
            continue
    return None


def device(server, user, transport="udp", instance=None) -> TestUA:
    return registered_device(server, user, transport, instance)


def registrations(server, user) -> list[dict]:
    return json.loads(server.cli("device", "list", user, "--json").stdout)


def worker_of(binding: dict) -> str:
    """"host-123.w1" -> "w1": which worker took the registration."""
    return binding["node_id"].rsplit(".", 1)[-1]


def messages_with(agent: TestUA, prefix: bytes, timeout: float = 1.0) -> list[bytes]:
    return [r.body for r in agent.drain(timeout=timeout) if r.method == "MESSAGE" and r.body.startswith(prefix)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

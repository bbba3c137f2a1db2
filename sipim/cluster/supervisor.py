"""The supervisor: ``sipim serve --workers N`` runs N worker processes on one machine.

The parent process does, once and before any worker exists, everything that must
happen once: the data directory, secret and certificates, the store's migrations,
binding every listening socket (N per listener, sipim/cluster/sockets.py), the bus
between the workers (sipim/cluster/bus.py) and the shared tables
(sipim/cluster/shared.py).  Then it forks the workers -- before any event loop
exists in it -- and each worker starts its own event loop and ``SipimServer`` on its
sockets.  The parent runs no event loop and serves nothing: it waits for signals.

It keeps every socket, bus end and the shared mapping open, so a worker that dies
is forked again with the very same sockets (datagrams and connections wait in them
meanwhile).  A worker that keeps dying is restarted after a growing pause.
SIGTERM or SIGINT stops every worker cleanly (each flushes its store writer: what
was acknowledged is committed) and then the parent exits.  A worker whose parent
dies gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and stops too.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from sipim.config import Config
from sipim.net import host_port

from .bus import make_mesh
from .shared import SharedMemory
from .sockets import bind_group

log = logging.getLogger("sipim.cluster")

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
# A worker that ran at least this long before dying is restarted at once.
_HEALTHY_RUN = 30.0
_START_TIMEOUT = 120.0


@dataclass
class _Slot:
    index: int
    pid: int = 0
    started_at: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    exits: int = 0


@dataclass
class Banner:
    """What the banner (`announce` of `serve_workers`) reads from a server, for the supervisor."""

    listening_addresses: list[tuple[str, str, int]]
    tls_files: object
    workers: int
    extra: list[str] = field(default_factory=list)

    def listening(self) -> list[tuple[str, str, int]]:
        return self.listening_addresses


class Supervisor:
    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.count = workers
        self.parent_pid = os.getpid()
        self.slots = [_Slot(index) for index in range(workers)]
        self.groups: list[list] = []
        self.mesh: dict = {}
        self.shared: SharedMemory | None = None
        self.worker_table = None
        self.tls_files = None
        self.stopping = False

    # -- once, before forking -----------------------------------------------------------
    def prepare(self) -> None:
        from sipim.app import prepare_data_dir

        config = self.config
        self.tls_files = prepare_data_dir(config)
        # The schema: every worker opens the store, but none has to migrate it.
        asyncio.run(_migrate(config.database_url))
        self.groups = [bind_group(listener.spec, self.count) for listener in config.listeners()]
        self.mesh = make_mesh(self.count, config.cluster_bus_buffer)
        self.shared = SharedMemory(self.count, affinity_slots=config.cluster_affinity_slots,
                                   nonce_slots=config.max_tracked_nonces)
        self.worker_table = self.shared.worker_table()

    def listening(self) -> list[tuple[str, str, int]]:
        return [(listener.spec.transport, *host_port(group[0].getsockname()))
                for listener, group in zip(self.config.listeners(), self.groups)]

    # -- workers ---------------------------------------------------------------------
    def spawn(self, slot: _Slot) -> int:
        """Fork worker ``slot.index``; returns the read end of its "ready" pipe."""
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_read)
            code = 1
            try:
                code = _worker_process(self, slot.index, ready_write, restarted=slot.exits > 0)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_write)
        slot.pid = pid
        slot.started_at = time.monotonic()
        slot.restart_at = None
        self.worker_table.started(slot.index, pid, time.time())
        return ready_read

    def start_all(self) -> bool:
        """Fork every worker and wait until each is serving; False if one could not start."""
        pending = {self.spawn(slot): slot for slot in self.slots}
        deadline = time.monotonic() + _START_TIMEOUT
        ok = True
        while pending and ok:
            readable, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                log.error("workers %s did not start within %.0f s",
                          ", ".join(str(s.index) for s in pending.values()), _START_TIMEOUT)
                ok = False
                break
            for fd in readable:
                slot = pending.pop(fd)
                if os.read(fd, 1) != b"R":
                    log.error("worker %d could not start (see above)", slot.index)
                    ok = False
                os.close(fd)
        for fd in pending:
            os.close(fd)
        return ok

    def run(self) -> int:
        """Until SIGTERM/SIGINT: restart workers that die."""
        while not self.stopping:
            due = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else 60.0
            info = signal.sigtimedwait(_SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("stopping %d workers", self.count)
                self.stopping = True
                break
            self.reap()
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is not None and slot.restart_at <= now:
                    log.info("starting worker %d again", slot.index)
                    os.close(self.spawn(slot))
        self.stop_all()
        return 0

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            slot.exits += 1
            self.worker_table.stopped(slot.index)
            if self.stopping:
                continue
            ran = time.monotonic() - slot.started_at
            slot.backoff = 0.0 if ran >= _HEALTHY_RUN else min(
                self.config.worker_restart_max_backoff, max(1.0, 2 * slot.backoff))
            slot.restart_at = time.monotonic() + slot.backoff
            log.error("worker %d (pid %d) %s after %.0f s; starting it again%s", slot.index, pid,
                      _describe(status), ran, f" in {slot.backoff:.0f} s" if slot.backoff else "")

    def stop_all(self) -> None:
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid:
                try:
                    os.kill(slot.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.config.worker_stop_timeout
        while any(slot.pid for slot in self.slots):
            left = deadline - time.monotonic()
            if left <= 0:
                for slot in self.slots:
                    if slot.pid:
                        log.error("worker %d did not stop in time: killed", slot.index)
                        try:
                            os.kill(slot.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                deadline = time.monotonic() + 5.0
            signal.sigtimedwait({signal.SIGCHLD}, max(0.05, min(left, 1.0)))
            self.reap()


def serve_workers(config: Config, workers: int, announce: Callable[[Banner, Config], None]) -> int:
    """``sipim serve`` with ``workers`` > 1 processes (the parent's part).  ``announce``
    tells the operator what is served once every worker is up (the command's banner)."""
    supervisor = Supervisor(config, workers)
    supervisor.prepare()
    # Signals wait for sigtimedwait (the workers unblock them first thing).
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        if not supervisor.start_all():
            supervisor.stop_all()
            print("sipim: a worker process could not start (its error is above)", file=sys.stderr)
            return 1
        announce(Banner(supervisor.listening(), supervisor.tls_files, workers), config)
        return supervisor.run()
    finally:
        if os.getpid() == supervisor.parent_pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


async def _migrate(database_url: str) -> None:
    from sipim.store import open_store

    store = await open_store(database_url)
    await store.close()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with status {os.WEXITSTATUS(status)}"


# -- in the worker process ------------------------------------------------------------------
def _worker_process(supervisor: Supervisor, index: int, ready_fd: int, *, restarted: bool = False) -> int:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # The kernel sends SIGTERM when the supervisor dies.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # "sipim-w1" in top and /proc/PID/comm: which process is which worker.
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(f"sipim-w{index}".encode()), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor.parent_pid:
        return 0  # the supervisor died before we could ask to be told
    # Keep only this worker's sockets and bus ends.
    listen_sockets = []
    for group in supervisor.groups:
        for position, sock in enumerate(group):
            if position == index:
                listen_sockets.append(sock)
            else:
                sock.close()
    peers = {}
    for (me, peer), sock in supervisor.mesh.items():
        if me == index:
            peers[peer] = sock
        else:
            sock.close()
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None and handler.formatter._fmt:
            handler.setFormatter(logging.Formatter(handler.formatter._fmt.replace(
                "%(name)s", f"[w{index}] %(name)s")))

    from .worker import ClusterWorker

    # The worker's own copy: its node id names it (bindings, delivery claims).
    config = dataclasses.replace(supervisor.config, node_id=f"{supervisor.config.node_id}.w{index}")
    worker = ClusterWorker(index, supervisor.count, listen_sockets=listen_sockets, peers=peers,
                           shared=supervisor.shared, tls_files=supervisor.tls_files, config=config,
                           restarted=restarted)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(_serve(config, worker, ready_fd, supervisor.parent_pid))


async def _serve(config: Config, worker, ready_fd: int, parent_pid: int) -> int:
    from sipim.app import SipimServer
    from sipim.store import StoreError

    server = SipimServer(config, cluster=worker)
    try:
        await server.start()
    except StoreError as exc:
        print(f"sipim: worker {worker.index}: storage error: {exc}", file=sys.stderr)
        await _quietly(server.stop())
        return 1
    except BaseException:
        await _quietly(server.stop())
        raise
    try:
        os.write(ready_fd, b"R")  # the supervisor waits for this at start-up only
    except OSError:
        pass
    os.close(ready_fd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)

    async def watch_parent() -> None:
        # Belt and braces beside PR_SET_PDEATHSIG (not every system has it).
        while os.getppid() == parent_pid:
            await asyncio.sleep(1.0)
        log.error("the supervisor is gone: stopping")
        stop.set()

    watcher = loop.create_task(watch_parent())
    await stop.wait()
    watcher.cancel()
    await server.stop()
    return 0


async def _quietly(work) -> None:
    try:
        await work
    except Exception:
        pass

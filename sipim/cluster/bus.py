"""The bus between worker processes: a full mesh of unnamed Unix datagram socket pairs.

The supervisor makes one ``socketpair(AF_UNIX, SOCK_DGRAM)`` for every two workers
before it forks; worker i keeps its end of each pair.  The pairs are unnamed -- no
path, no abstract name -- so only processes forked from the supervisor hold them and
no other local process can write to them.  That is why the payload may be
``pickle``: what is unpickled was pickled by a sibling worker of the same program.

A datagram socket pair keeps message boundaries and order and never loses a
datagram silently (a full receive buffer makes the sender wait: EAGAIN here).
The supervisor keeps every end open, so what is sent to a worker that is being
restarted waits in its socket and is read by the new process.

Messages are tuples ``(kind, *args)``.  They are batched per event-loop tick: the
first message of a tick schedules one flush, which sends one datagram (a pickled
list) per peer -- one ``send`` per peer per tick however many messages.  A batch
larger than ``max_datagram`` is split.  When a peer does not read (dead, or busy
restarting), datagrams wait in a per-peer backlog, sent when its socket is writable
again; beyond ``max_backlog`` bytes the oldest are dropped, with a warning (a
restarted worker reloads its state from the store).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
import socket
from typing import Any, Callable

log = logging.getLogger("sipim.cluster")

Handler = Callable[..., None]

# Datagrams read per readable event and peer before giving the loop back.
_READ_BURST = 64


def make_mesh(count: int, buffer_size: int) -> dict[tuple[int, int], socket.socket]:
    """Every worker's end of every pair: ``{(me, peer): socket}`` for me != peer."""
    ends: dict[tuple[int, int], socket.socket] = {}
    for a in range(count):
        for b in range(a + 1, count):
            left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for sock in (left, right):
                sock.setblocking(False)
                for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                    force = {socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", None),
                             socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", None)}[option]
                    try:
                        if force is None:
                            raise PermissionError
                        sock.setsockopt(socket.SOL_SOCKET, force, buffer_size)
                    except (PermissionError, OSError):
                        try:
                            sock.setsockopt(socket.SOL_SOCKET, option, buffer_size)
                        except OSError:
                            pass
            ends[(a, b)] = left
            ends[(b, a)] = right
    return ends


class Bus:
    """One worker's side of the mesh."""

    def __init__(self, index: int, peers: dict[int, socket.socket], *, max_datagram: int = 65536,
                 max_backlog: int = 32 << 20) -> None:
        self.index = index
        self._peers = peers
        self._max_datagram = max_datagram
        self._max_backlog = max_backlog
        self._handlers: dict[str, Handler] = {}
        # Messages of this tick per peer, in the order they were sent.
        self._queues: dict[int, list[tuple]] = {peer: [] for peer in peers}
        self._only_broadcast = True
        self._flush_scheduled = False
        self._backlog: dict[int, collections.deque[bytes]] = {peer: collections.deque() for peer in peers}
        self._backlog_bytes: dict[int, int] = dict.fromkeys(peers, 0)
        self._dropped: dict[int, int] = dict.fromkeys(peers, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer_size = max(max_datagram, 1 << 16) * 2
        self.sent_datagrams = 0
        self.received_messages = 0

    @property
    def peers(self) -> list[int]:
        return list(self._peers)

    def on(self, kind: str, handler: Handler) -> None:
        """Call ``handler(peer, *args)`` for every message ``(kind, *args)`` from a peer."""
        self._handlers[kind] = handler

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for peer, sock in self._peers.items():
            self._loop.add_reader(sock.fileno(), self._read, peer, sock)
        if any(self._queues.values()):
            self._schedule()  # what was sent before the loop ran

    def stop(self) -> None:
        """Send what is batched, then stop reading (the sockets stay open: the supervisor
        owns them)."""
        if self._loop is None:
            return
        self.flush()
        for peer, sock in self._peers.items():
            self._loop.remove_reader(sock.fileno())
            if self._backlog[peer]:
                self._loop.remove_writer(sock.fileno())
        self._loop = None

    # -- sending -------------------------------------------------------------------
    def broadcast(self, message: tuple) -> None:
        """To every other worker, in order with everything else sent to them."""
        for queue in self._queues.values():
            queue.append(message)
        if not self._flush_scheduled and self._queues:
            self._schedule()

    def send(self, peer: int, message: tuple) -> None:
        self._queues[peer].append(message)
        self._only_broadcast = False
        if not self._flush_scheduled:
            self._schedule()

    def _schedule(self) -> None:
        if self._loop is None:
            return  # not started (or stopping): flush() sends what was queued
        self._flush_scheduled = True
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        shared = None
        if self._only_broadcast:
            # Every queue holds the same messages: pickle them once.
            first = next(iter(self._queues.values()), None)
            shared = self._pack(first) if first else []
        self._only_broadcast = True
        for peer, sock in self._peers.items():
            queue = self._queues[peer]
            if not queue:
                continue
            self._queues[peer] = []
            for data in (shared if shared is not None else self._pack(queue)):
                self._send(peer, sock, data)

    def _pack(self, messages: list[tuple]) -> list[bytes]:
        data = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= self._max_datagram or len(messages) == 1:
            return [data]
        half = len(messages) // 2
        return self._pack(messages[:half]) + self._pack(messages[half:])

    def _send(self, peer: int, sock: socket.socket, data: bytes) -> None:
        backlog = self._backlog[peer]
        if not backlog:
            try:
                sock.send(data)
                self.sent_datagrams += 1
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:  # ENOBUFS and the like: wait for the socket like a full one
                log.debug("bus to worker %d: %s", peer, exc)
            if self._loop is not None:
                self._loop.add_writer(sock.fileno(), self._drain, peer, sock)
        backlog.append(data)
        self._backlog_bytes[peer] += len(data)
        while self._backlog_bytes[peer] > self._max_backlog and len(backlog) > 1:
            dropped = backlog.popleft()
            self._backlog_bytes[peer] -= len(dropped)
            self._dropped[peer] += 1
            if self._dropped[peer] in (1, 10, 100) or self._dropped[peer] % 1000 == 0:
                log.warning("worker %d does not read the bus: %d batches dropped", peer, self._dropped[peer])

    def _drain(self, peer: int, sock: socket.socket) -> None:
        backlog = self._backlog[peer]
        while backlog:
            try:
                sock.send(backlog[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("bus to worker %d: %s", peer, exc)
                return
            self._backlog_bytes[peer] -= len(backlog.popleft())
            self.sent_datagrams += 1
        if self._loop is not None:
            self._loop.remove_writer(sock.fileno())
        if self._dropped[peer]:
            log.info("worker %d reads the bus again (%d batches were dropped)", peer, self._dropped[peer])
            self._dropped[peer] = 0

    # -- receiving -------------------------------------------------------------------
    def _read(self, peer: int, sock: socket.socket) -> None:
        for _ in range(_READ_BURST):
            try:
                data = sock.recv(self._buffer_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("bus from worker %d: %s", peer, exc)
                return
            try:
                messages = pickle.loads(data)
            except Exception:
                log.exception("bus from worker %d: unreadable batch dropped", peer)
                continue
            self.dispatch(peer, messages)

    def dispatch(self, peer: int, messages: list[tuple]) -> None:
        handlers = self._handlers
        self.received_messages += len(messages)
        for message in messages:
            handler = handlers.get(message[0])
            if handler is None:
                log.warning("bus from worker %d: unknown message %r", peer, message[0])
                continue
            try:
                handler(peer, *message[1:])
            except Exception:  # one bad message must not stop the others
                log.exception("bus message %r from worker %d failed", message[0], peer)

    def pending(self) -> dict[int, Any]:
        """Bytes waiting per peer (for tests and logs)."""
        return {peer: self._backlog_bytes[peer] for peer in self._peers}

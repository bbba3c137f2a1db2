"""One worker process: what a `SipimServer` needs to be one of N on one machine.

`ClusterWorker` is handed to `SipimServer(config, cluster=...)`.  It supplies the
parts that differ from a single process and keeps them in step over the bus:

- **location**: every worker holds the whole location table (lookups stay in
  memory); each put and remove is sent to the others, which apply it without
  sending it on.  Refreshes too (their expiry time changes), batched per tick.  A
  replicated change never undoes a newer one: a put is skipped when the binding
  held is the same registration (Call-ID) at a higher CSeq, a remove applies only
  to the very binding the sender removed.
- **flows**: a connection belongs to the worker that accepted it; its flow id says
  which ("w2.tls-...").  Sending to another worker's flow goes over the bus and that
  worker writes it to the connection, or answers "gone" so the sender's transaction
  fails at once, as with a closed local flow.
- **responses**: branches this worker makes say "w<index>." after the cookie; a
  response whose branch names another worker is passed to it (UDP datagrams reach
  a random worker; a response on a connection reaches the connection's owner).
- **UDP retransmissions**: the shared affinity table says which worker took a
  request (branch + sent-by); a copy landing elsewhere within 64*T1 is passed to
  that worker, whose transaction layer answers it (RFC 3261 §17.2.1, §17.2.2), so a
  REGISTER or MESSAGE is never handled twice.  A CANCEL follows its INVITE the same way.
- **lock-out**: failures and the successes that clear counters are sent to every
  worker, so the limits count each attempt once wherever it landed.
- **digest nonce-counts**: in shared memory (sipim/cluster/shared.py).
- **change feed**: a change this worker publishes (a user, a device's credentials,
  an XCAP document) is told to the others before the request that made it is
  answered, so the client's next request finds it applied at any worker; they would
  read it from the feed later anyway.
- **IM server**: every delivery to a device -- live, or catching up on stored
  messages -- goes out from one worker, the device's home (a hash of AOR + device):
  the message is accepted and committed where it arrived, then handed to the home,
  whose pager keeps its in-flight and catching-up sets as one process does, so each
  device gets each message once and in order with no claim in the store per live
  delivery.  (Store claims, as nodes behind an external core use, cost a database
  write before every send; measured +36 % main-thread and +60 % store-thread CPU per
  MESSAGE.)  The recipients owed stored messages are told to every worker, so a
  device registering anywhere is caught up.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
import socket
import time
from operator import attrgetter

from sipim.core.location import LocationService
from sipim.core.lockout import Lockout
from sipim.im.pager import device_key
from sipim.core.ratelimit import RateLimiter
from sipim.sip.message import Request, Response
from sipim.sip.parser import parse_message
from sipim.sip.transaction import MAGIC_COOKIE
from sipim.store.models import Binding, StoredMessage
from sipim.net import RELIABLE_TRANSPORTS, SECURE_TRANSPORTS, Source
from sipim.transport.base import FlowIds, flow_owner

from .bus import Bus
from .shared import SharedMemory

log = logging.getLogger("sipim.cluster")

# Bus message kinds.
PUT, REMOVE = "L+", "L-"
RESPONSE, REQUEST = "R", "Q"
FLOW_SEND, FLOW_GONE, FLOW_CLOSE = "F", "G", "C"
AUTH_FAILED, AUTH_OK = "X", "S"
CHANGES, MAILBOX, CATCH_UP = "N", "M", "U"
RATE_HIT, DOCUMENT = "H", "D"
DELIVER, DELIVERED = "V", "W"


_BINDING_FIELDS = tuple(field.name for field in dataclasses.fields(Binding))
_binding_row = attrgetter(*_BINDING_FIELDS)
_message_row = attrgetter(*(field.name for field in dataclasses.fields(StoredMessage)))
_GONE_FLOWS_KEPT = 10_000


def branch_owner(branch: str | None) -> int | None:
    """The worker index a branch names (``z9hG4bKw1.<random>`` -> 1), else None."""
    if branch and len(branch) > 9 and branch[7] == "w" and branch.startswith(MAGIC_COOKIE):
        dot = branch.find(".", 8)
        if dot > 8 and branch[8:dot].isdigit():
            return int(branch[8:dot])
    return None


class ReplicatedLocation(LocationService):
    """The location table of one worker; its own changes go to the others."""

    def __init__(self, bus: Bus) -> None:
        super().__init__()
        self._bus = bus
        self._quiet = False
        # Called with (binding, previous, peer) for every put received from another worker.
        self.on_replicated_put = None

    def put(self, binding: Binding) -> Binding | None:
        old = super().put(binding)
        if not self._quiet:
            self._bus.broadcast((PUT, _binding_row(binding)))
        return old

    def remove(self, aor: str, key: str) -> Binding | None:
        old = super().remove(aor, key)
        if old is not None and not self._quiet:
            self._bus.broadcast((REMOVE, aor, key, old.call_id, old.cseq))
        return old

    def forget(self, aor: str, key: str) -> Binding | None:
        """Remove here only: every worker does the same (a change read from the feed)."""
        self._quiet = True
        try:
            return super().remove(aor, key)
        finally:
            self._quiet = False

    def load(self, bindings) -> None:
        self._quiet = True
        try:
            super().load(bindings)
        finally:
            self._quiet = False

    def pop_expired(self, now: float) -> list[Binding]:
        # Every worker expires its own copy at the same time.
        self._quiet = True
        try:
            return super().pop_expired(now)
        finally:
            self._quiet = False

    # -- from other workers ------------------------------------------------------------
    def apply_put(self, row: tuple, peer: int = -1) -> None:
        binding = Binding(*row)
        current = self.get(binding.aor, binding.binding_key)
        if current is not None and current.call_id == binding.call_id and current.cseq > binding.cseq:
            return  # a later REGISTER of the same registration was applied already
        self._quiet = True
        try:
            old = super().put(binding)
        finally:
            self._quiet = False
        if self.on_replicated_put is not None:
            self.on_replicated_put(binding, old, peer)

    def apply_remove(self, aor: str, key: str, call_id: str, cseq: int) -> None:
        current = self.get(aor, key)
        if current is None or current.call_id != call_id or current.cseq > cseq:
            return  # re-registered since (here or elsewhere): keep the newer binding
        self.forget(aor, key)


class ClusterLockout(Lockout):
    """Lock-out counted over all workers: each failure (and each success that clears a
    counter) is applied here and sent to the others, which apply it without sending."""

    def __init__(self, bus: Bus, **settings) -> None:
        super().__init__(**settings)
        self._bus = bus

    def record_failure(self, user, source_ip, now):
        # Sent at once, before the answer to this attempt: the client's next attempt,
        # wherever it lands, then finds this one counted.
        self._bus.broadcast((AUTH_FAILED, user, source_ip, now))
        self._bus.flush()
        return super().record_failure(user, source_ip, now)

    def record_success(self, user, source_ip) -> None:
        # Failures reach every worker, so when none is counted here none is anywhere:
        # the common case (no failures) costs no message.
        if not self._failures:
            return
        if any(subject in self._failures for subject in self._subjects(user, source_ip)):
            self._bus.broadcast((AUTH_OK, user, source_ip))
            super().record_success(user, source_ip)

    def apply_failure(self, user, source_ip, now) -> None:
        super().record_failure(user, source_ip, now)

    def apply_success(self, user, source_ip) -> None:
        super().record_success(user, source_ip)


class RemoteFlow:
    """Stand-in for a connection another worker holds: sends go through that worker."""

    __slots__ = ("_worker", "id", "owner", "transport", "remote", "local")

    reliable = True

    def __init__(self, worker: ClusterWorker, flow_id: str, owner: int, transport: str,
                 remote: tuple[str, int], local: tuple[str, int]) -> None:
        self._worker = worker
        self.id = flow_id
        self.owner = owner
        self.transport = transport
        self.remote = remote
        self.local = local

    @property
    def secure(self) -> bool:
        return self.transport in SECURE_TRANSPORTS

    @property
    def closed(self) -> bool:
        return self.id in self._worker.gone_flows

    def send(self, data: bytes) -> None:
        self._worker.bus.send(self.owner, (FLOW_SEND, self.id, data))

    def close(self) -> None:
        self._worker.bus.send(self.owner, (FLOW_CLOSE, self.id))

    def __repr__(self) -> str:
        return f"<RemoteFlow {self.id} on worker {self.owner}>"


class ReplicatedRateLimiter(RateLimiter):
    """A provisioning rate limit counted over all workers: each hit it allows is told to
    the others, which count it without checking (the limit is per service, not per
    process; a hit racing on two workers at once may let one extra through)."""

    def __init__(self, bus: Bus, name: str, limit: int, window: float) -> None:
        super().__init__(limit, window)
        self._bus = bus
        self.name = name

    def hit(self, key: str, now: float) -> int | None:
        wait = super().hit(key, now)
        if wait is None:
            self._bus.broadcast((RATE_HIT, self.name, key, now))
            self._bus.flush()  # before the answer: the client's next request may land elsewhere
        return wait

    def apply(self, key: str, now: float) -> None:
        self._hits_of(key, now).append(now)


class ReplicatedMailboxes(dict):
    """The pager's recipients owed stored messages (aor -> until when); entries this
    worker adds are told to the others, so a device registering at any worker is
    caught up.  (Deletions of lapsed entries stay local.)  Every stored message moves
    its recipient's entry; a move of less than a second is not told (the entry is
    the lifetime of the newest message, days)."""

    def __init__(self, bus: Bus, initial: dict) -> None:
        super().__init__(initial)
        self._bus = bus
        self._told: dict[str, float] = dict(initial)

    def __setitem__(self, aor: str, until: float) -> None:
        super().__setitem__(aor, until)
        if until > self._told.get(aor, 0.0) + 1.0:
            self._told[aor] = until
            self._bus.broadcast((MAILBOX, aor, until))

    def __delitem__(self, aor: str) -> None:
        super().__delitem__(aor)
        self._told.pop(aor, None)

    def apply(self, aor: str, until: float) -> None:
        if until > self.get(aor, 0.0):
            super().__setitem__(aor, until)


class WorkerHome:
    """Another worker, as the home of a device (the pager's `DeviceHomes`)."""

    __slots__ = ("_worker", "index")

    def __init__(self, worker: ClusterWorker, index: int) -> None:
        self._worker = worker
        self.index = index

    def send(self, message: StoredMessage, binding: Binding, stored: bool, on_result) -> None:
        self._worker.deliver_at(self.index, message, binding, stored, on_result)

    def catch_up(self, binding: Binding) -> None:
        self._worker.bus.send(self.index, (CATCH_UP, _binding_row(binding)))


class ClusterWorker:
    def __init__(self, index: int, count: int, *, listen_sockets: list[socket.socket],
                 peers: dict[int, socket.socket], shared: SharedMemory, tls_files, config,
                 restarted: bool = False) -> None:
        self.index = index
        self.count = count
        self.restarted = restarted  # a new process of a worker that died
        self.listen_sockets = listen_sockets
        self.tls_files = tls_files
        self.shared = shared
        self.bus = Bus(index, peers, max_datagram=config.cluster_bus_max_datagram,
                       max_backlog=config.cluster_bus_backlog)
        self.workers = shared.worker_table()
        self.affinity = shared.affinity(index, 64 * config.t1)
        self.gone_flows: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._config = config
        self._location: ReplicatedLocation | None = None
        self._lockout: ClusterLockout | None = None
        self._limiters: dict[str, ReplicatedRateLimiter] = {}
        self._mailboxes: ReplicatedMailboxes | None = None
        self._homes = [None if peer == index else WorkerHome(self, peer) for peer in range(count)]
        # Deliveries handed to another worker (the device's home): token -> (on_result, timer).
        self._deliveries: dict[int, tuple] = {}
        self._delivery_tokens = itertools.count(1)
        # A home that never answers (it died): the delivery counts as timed out (§17.1.2.2 Timer F).
        self._delivery_timeout = 64 * config.t1 + 5.0
        self._server = None
        self.forwarded_requests = 0
        self.forwarded_responses = 0

    # -- what names this worker in what it makes -----------------------------------------
    @property
    def branch_owner(self) -> str:
        """In the branches of requests this worker sends: responses find their way back."""
        return f"w{self.index}."

    def flow_ids(self) -> FlowIds:
        """Flow ids of this worker's connections: every worker can tell who holds one."""
        return FlowIds(owner=f"w{self.index}.")

    @property
    def runs_once_jobs(self) -> bool:
        """Jobs that run once per data directory, not once per worker (expiry of bindings and
        messages, pruning): the first worker's."""
        return self.index == 0

    def prepare(self, config) -> object:
        """The supervisor has prepared the data directory already."""
        return self.tls_files

    # -- parts for SipimServer.start ------------------------------------------------------
    def location(self) -> ReplicatedLocation:
        self._location = ReplicatedLocation(self.bus)
        return self._location

    def lockout(self, **settings) -> ClusterLockout:
        self._lockout = ClusterLockout(self.bus, **settings)
        return self._lockout

    def rate_limiter(self, name: str, limit: int, window: float) -> ReplicatedRateLimiter:
        limiter = self._limiters[name] = ReplicatedRateLimiter(self.bus, name, limit, window)
        return limiter

    def nonce_counts(self):
        return self.shared.nonce_counts(self._config.nonce_lifetime, self.index, 64 * self._config.t1)

    def mailboxes(self) -> ReplicatedMailboxes:
        """The pager's recipients owed stored messages, told to every worker."""
        self._mailboxes = ReplicatedMailboxes(self.bus, {})
        return self._mailboxes

    def stale_flows(self, flow_ids: set[str]) -> set[str]:
        """Of the flows the loaded bindings name, those whose connections died with an
        earlier process of this worker (or of a process with no worker index, or an index
        beyond the current count: the first worker sees to those)."""
        stale = set()
        for flow_id in flow_ids:
            owner = flow_owner(flow_id)
            if owner == self.index or (self.index == 0 and (owner is None or owner >= self.count)):
                stale.add(flow_id)
        return stale

    def attach(self, server) -> None:
        """Hook into a server whose parts are built (before its transports start)."""
        self._server = server
        bus = self.bus
        location = self._location
        bus.on(PUT, lambda peer, row: location.apply_put(row, peer))
        bus.on(REMOVE, lambda peer, aor, key, call_id, cseq: location.apply_remove(aor, key, call_id, cseq))
        bus.on(RESPONSE, self._on_forwarded_response)
        bus.on(REQUEST, self._on_forwarded_request)
        bus.on(FLOW_SEND, self._on_flow_send)
        bus.on(FLOW_GONE, self._on_flow_gone)
        bus.on(FLOW_CLOSE, self._on_flow_close)
        lockout = self._lockout
        bus.on(AUTH_FAILED, lambda peer, user, ip, now: lockout.apply_failure(user, ip, now))
        bus.on(AUTH_OK, lambda peer, user, ip: lockout.apply_success(user, ip))
        bus.on(CHANGES, lambda peer, kind, key: server.changes.take(kind, key))
        xdm = server.xdm
        xdm.change_listeners.append(
            lambda auid, owner, filename, content: self._tell((DOCUMENT, auid, owner, filename, content)))
        bus.on(DOCUMENT, lambda peer, auid, owner, filename, content:
               xdm.take_change(auid, owner, filename, content))
        limiters = self._limiters
        bus.on(RATE_HIT, lambda peer, name, key, now: limiters[name].apply(key, now) if name in limiters else None)
        pager = server.pager
        mailboxes = self._mailboxes
        bus.on(MAILBOX, lambda peer, aor, until: mailboxes.apply(aor, until))

        # Every delivery to a device, live or catching up, goes out from one worker, the
        # device's home (a hash of the device, so it does not move while the device
        # re-registers elsewhere): its pager sees them all in flight, as one process
        # does, and sends each device its stored messages once and in order (`home_of`).
        bus.on(DELIVER, self._on_deliver)
        bus.on(DELIVERED, self._on_delivered)
        bus.on(CATCH_UP, lambda peer, row: pager.catch_up_device(Binding(*row)))

        def replicated_put(binding: Binding, old: Binding | None, peer: int) -> None:
            # A device registered at another worker while this one may have stored
            # messages for the user that worker has not heard of yet: look too (the
            # catch-up runs at the device's home, once).  This closes the race of a
            # message stored here while the registration happened there.
            if old is None or old.flow_id != binding.flow_id or old.contact != binding.contact:
                pager.on_registered_elsewhere(binding)

        location.on_replicated_put = replicated_put
        # A user, device or XCAP document this worker changed: the others hear of it at
        # once, not only when they next read the change feed.
        server.store.add_change_listener(lambda kind, key: self._tell((CHANGES, kind, key)))

    def _tell(self, message: tuple) -> None:
        # Sent now, before the request that made the change is answered: the client's
        # next request, at whichever worker, finds it applied.
        self.bus.broadcast(message)
        self.bus.flush()

    def start(self) -> None:
        self.bus.start()

    def serving(self) -> None:
        """The server has started (its transports too)."""
        if self.restarted:
            self.catch_up_after_restart()

    def stop(self) -> None:
        self.bus.stop()

    # -- responses and retransmissions -------------------------------------------------
    def response_elsewhere(self, response: Response) -> bool:
        """Pass a response to the worker whose client transaction it answers."""
        via = response.top_via
        owner = branch_owner(via.branch if via is not None else None)
        if owner is None or owner == self.index or owner >= self.count:
            return False
        self.forwarded_responses += 1
        self.bus.send(owner, (RESPONSE, response.to_bytes()))
        return True

    def _on_forwarded_response(self, peer: int, data: bytes) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self._server.transactions.receive_response(message)

    def request_elsewhere(self, request: Request, source: Source) -> bool:
        """A UDP request another worker took within 64*T1 (a retransmission, an ACK or
        CANCEL of its INVITE) goes to that worker; else this worker takes it.

        Requests without credentials are left where they land: the core challenges
        them statelessly (RFC 3261 §8.2.7), so no worker holds a transaction that would
        answer a retransmission, and anything else they get (OPTIONS, refusals) is
        answered the same anywhere.  That is half of all requests, and under overload
        most retransmissions, kept off the table and the bus."""
        headers = request.headers
        if ("Authorization" not in headers and "Proxy-Authorization" not in headers
                and request.method not in ("ACK", "CANCEL")):
            return False
        via = request.top_via
        branch = via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            return False  # RFC 2543 peers: no usable key; handled where it lands
        owner = self.affinity.owner(hash((branch, via.host, via.port)), time.time())
        if owner is None:
            return False
        self.forwarded_requests += 1
        self.bus.send(owner, (REQUEST, request.to_bytes(), source.remote, source.local))
        return True

    def _on_forwarded_request(self, peer: int, data: bytes, remote: tuple, local: tuple) -> None:
        request = parse_message(data)
        if isinstance(request, Request):
            self._server.router.receive_request(request, Source("udp", tuple(remote), tuple(local), None))

    # -- deliveries through the device's home -------------------------------------------------
    def home_of(self, binding: Binding) -> WorkerHome | None:
        """The pager's `DeviceHomes`: the home worker of a device, None when it is this
        one -- or when the home is not running (being started again): devices are not left
        waiting for it (its new process catches up the devices it is home to)."""
        home = self._homes[self._home_index(binding)]
        if home is not None and self.workers.pid(home.index) == 0:
            return None
        return home

    def _home_index(self, binding: Binding) -> int:
        # A hash of the device, so its home does not move while it re-registers elsewhere.
        return hash((binding.aor, device_key(binding))) % self.count

    def catch_up_after_restart(self) -> None:
        """In a worker started again: its devices may have been sent messages while it was
        down (stored, 202): catch up those owed something now, not at their next REGISTER."""
        server = self._server
        now = server.wall.now()
        for aor, until in list(server.pager.mailboxes.items()):
            if until > now:
                for binding in server.location.bindings(aor, now):
                    if self._home_index(binding) == self.index:
                        server.pager.catch_up_device(binding)

    def deliver_at(self, home: int, message: StoredMessage, binding: Binding, stored: bool, on_result) -> None:
        token = next(self._delivery_tokens)
        timer = asyncio.get_running_loop().call_later(self._delivery_timeout, self._delivery_lost, token)
        self._deliveries[token] = (on_result, timer)
        self.bus.send(home, (DELIVER, _message_row(message), _binding_row(binding), stored, token))

    def _on_deliver(self, peer: int, message_row: tuple, binding_row: tuple, stored: bool, token: int) -> None:
        self._server.pager.deliver_to_device(StoredMessage(*message_row), Binding(*binding_row), stored,
                                             lambda status: self.bus.send(peer, (DELIVERED, token, status)))

    def _on_delivered(self, peer: int, token: int, status: int) -> None:
        entry = self._deliveries.pop(token, None)
        if entry is not None:
            on_result, timer = entry
            timer.cancel()
            on_result(status)

    def _delivery_lost(self, token: int) -> None:
        entry = self._deliveries.pop(token, None)
        if entry is not None:
            entry[0](408)

    # -- flows of other workers ------------------------------------------------------------
    def get(self, flow_id: str) -> RemoteFlow | None:
        """`TransportManager.remote_flows`: a stand-in for another worker's flow."""
        owner = flow_owner(flow_id)
        if owner is None or owner == self.index or owner >= self.count or flow_id in self.gone_flows:
            return None
        transport = flow_id[flow_id.index(".") + 1:].split("-", 1)[0]
        if transport not in RELIABLE_TRANSPORTS:
            return None
        remote = ("", 0)
        for binding in self._location.bindings_on_flow(flow_id) if self._location is not None else ():
            host, _, port = binding.source.rpartition(":")
            if port.isdigit():
                remote = (host.strip("[]"), int(port))
            break
        return RemoteFlow(self, flow_id, owner, transport, remote, self._listener(transport))

    def _listener(self, transport: str) -> tuple[str, int]:
        """Our address for a transport (the Via sent-by of requests over another worker's
        connection: every worker listens on the same addresses)."""
        server = self._server
        for name, host, port in server.listening() if server is not None else ():
            if name == transport:
                return (self._config.domain if host in ("0.0.0.0", "::") else host), port
        return self._config.domain, 0

    def _on_flow_send(self, peer: int, flow_id: str, data: bytes) -> None:
        flow = self._server.transports.flows.get(flow_id)
        if flow is None:
            self.bus.send(peer, (FLOW_GONE, flow_id, data))
            return
        flow.send(data)

    def _on_flow_gone(self, peer: int, flow_id: str, data: bytes) -> None:
        self.gone_flows[flow_id] = None
        while len(self.gone_flows) > _GONE_FLOWS_KEPT:
            self.gone_flows.popitem(last=False)
        # The request that could not go out fails now (RFC 3261 §17.1.4), as it does
        # when a local flow is gone.
        try:
            message = parse_message(data)
        except Exception:
            return
        if isinstance(message, Request) and message.top_via is not None:
            transactions = self._server.transactions
            transaction = transactions.client_transaction(message.top_via.branch, message.method)
            if transaction is not None:
                transactions.transport_error(transaction)

    def _on_flow_close(self, peer: int, flow_id: str) -> None:
        flow = self._server.transports.flows.get(flow_id)
        if flow is not None:
            flow.close()

"""Wiring: config -> store -> roles -> transports, and the path of one request.

One request, one pass (DESIGN.md): transport -> parse -> transaction -> core
policy -> role -> send.  The protocol layer never touches the store; the roles
never touch sockets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import time
from pathlib import Path

from sipim.config import Config
from sipim.core.auth import Authenticator, UserCache
from sipim.core.gruu import TempGruuCodec
from sipim.core.location import LocationService
from sipim.core.lockout import Lockout
from sipim.core.proxy import CoreProxy
from sipim.core.registrar import Registrar
from sipim.core.writer import StoreWriter
from sipim.external.gateway import ExternalCoreGateway
from sipim.external.proxy import ExternalCoreProxy
from sipim.external.registrations import CHANGE_BINDING, ThirdPartyRegistrar
from sipim.external.trust import TrustedCores
from sipim.im.devices import CoreGateway
from sipim.im.pager import PagerService
from sipim.web.app import make_web_app
from sipim.web.auth import HttpDigestAuth
from sipim.xdm.service import XdmService
from sipim.sip.digest import DigestServer
from sipim.sip.errors import SIPParseError
from sipim.sip.message import Request, Response, make_response
from sipim.sip.parser import ParserLimits
from sipim.sip.clock import WallClock, WallTime
from sipim.sip.tokens import random_hex
from sipim.sip.transaction import TransactionLayer
from sipim.store import open_store
from sipim.store.models import CHANGE_USER, CHANGE_XCAP
from sipim.store.models import CHANGE_DEVICE
from sipim.provisioning.http import PublicAddress
from sipim.provisioning.service import ProvisioningService
from sipim.provisioning.sms import make_gateway
from sipim.transport.base import Source, Target
from sipim.transport.clock import AsyncioClock
from sipim.transport.manager import TransportManager
from sipim.transport.tls import ensure_certificates, server_ssl_context

log = logging.getLogger("sipim")

# Change-feed kinds published by the CLI for a running server (besides the store's "user").
CHANGE_BINDING_REMOVED = "binding-removed"

ALLOW = "REGISTER, OPTIONS, MESSAGE, ACK, CANCEL"


def load_secret(data_dir: Path) -> bytes:
    """The server secret (nonces, temporary GRUUs): 32 random bytes, mode 0600, made once."""
    path = data_dir / "secret.key"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return data


# (transport, host, port) -> Target: a UDP peer sends many requests, and each server
# transaction keeps its target for Timer J (32 s); one shared, immutable Target each.
_udp_targets: dict[tuple[str, str, int], Target] = {}


def response_target(request: Request, source: Source) -> Target:
    """Where a response goes: RFC 3261 §18.2.2 with RFC 3581 §4 (rport)."""
    if source.reliable and source.flow is not None:
        return Target(source.transport, source.remote[0], source.remote[1], source.flow.id)
    via = request.top_via
    key = (source.transport, via.received or via.host, via.rport or via.port or 5060)
    target = _udp_targets.get(key)
    if target is None:
        if len(_udp_targets) >= 100_000:
            _udp_targets.clear()
        target = _udp_targets[key] = Target(*key)
    return target


def stamp_via(request: Request, source: Source) -> None:
    """RFC 3261 §18.2.1 and RFC 3581 §4: note in the top Via where the request really came from."""
    via = request.top_via
    ip, port = source.remote
    if via.has_rport:
        stamped = via.with_params(received=ip, rport=str(port))
    elif via.host != ip:
        stamped = via.with_params(received=ip)
    else:
        return
    request.headers.replace_first("Via", str(stamped))
    request.headers.remember("top_via", stamped)


def add_to_tag(request: Request, response: Response) -> None:
    """RFC 3261 §8.2.6.2: a final response carries a To tag (the UAS picks it).

    Decided on the request's To, already parsed, rather than parsing the response's.
    """
    if response.status > 100 and request.to.tag is None:
        response.headers.replace_first("To", f"{response.headers.get('To')};tag={random_hex(6)}")


def prepare_data_dir(config: Config):
    """What must exist before serving, made once: the data directory (and the domain the
    administration commands default to), the secret, the private CA and server
    certificate when TLS is served without --tls-cert.  Returns those TLS files (or None)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    (config.data_dir / "domain").write_text(config.domain + "\n")
    load_secret(config.data_dir)
    if config.tls_cert is None and any(l.spec.transport in ("tls", "wss") for l in config.listeners()):
        hosts = {"localhost", "127.0.0.1", "::1"}
        hosts.update(l.spec.host for l in config.listeners())
        hosts -= {"0.0.0.0", "::"}
        return ensure_certificates(config.data_dir, config.domain, sorted(hosts))
    return None


class SipimServer:
    """The embedded core and IM server, in one process -- or in each worker process of
    ``sipim serve --workers N``: then ``cluster`` (sipim/cluster/worker.py) holds this
    worker's sockets, the bus to the other workers and the shared tables, and the
    supervisor has prepared the data directory (``prepare_data_dir``) already."""

    def __init__(self, config: Config, cluster=None) -> None:
        self.config = config
        self.cluster = cluster
        self.store = None
        self.transports: TransportManager | None = None
        self.tls_files = None
        self._tasks: list[asyncio.Task] = []
        self._pending: set[asyncio.Task] = set()
        self._last_change_id = 0
        self._poll_lock = asyncio.Lock()
        self.trusted_cores = None
        # Jobs that must run once per data directory, not once per worker: expiry of
        # bindings and messages (store deletes, reports), pruning.
        self.runs_once_jobs = cluster is None or cluster.index == 0

    # -- start / stop -----------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        cluster = self.cluster
        loop = asyncio.get_running_loop()
        if cluster is None:
            self.tls_files = prepare_data_dir(config)
        else:
            self.tls_files = cluster.tls_files

        self.store = await open_store(config.database_url)
        secret = load_secret(config.data_dir)
        self.clock = AsyncioClock(loop)
        self.wall = WallTime()
        # The roles' clock: wall time (their times are stored), the loop's timers.
        self.wall_clock = WallClock(self.clock)

        ssl_context = None
        if any(l.spec.transport in ("tls", "wss") for l in config.listeners()):
            if config.tls_cert is not None:
                ssl_context = server_ssl_context(config.tls_cert, config.tls_key)
            else:
                ssl_context = server_ssl_context(self.tls_files.server_cert, self.tls_files.server_key)

        # Requests addressed to this server by IP (simple clients do that) mean our domain.
        aliases = set(config.domain_aliases) | {"localhost", "127.0.0.1", "::1", "[::1]"}
        aliases.update(l.spec.host for l in config.listeners())
        aliases -= {"0.0.0.0", "::"}
        config.domain_aliases = tuple(sorted(aliases))

        self.users = UserCache(self.store, config.domain)
        await self.users.preload()
        lockout_settings = dict(threshold=config.lockout_threshold, window=config.lockout_window,
                                duration=config.lockout_duration)
        self.lockout = cluster.lockout(**lockout_settings) if cluster else Lockout(**lockout_settings)
        self.digest = DigestServer(config.domain, secret, self.wall, nonce_lifetime=config.nonce_lifetime,
                                   max_tracked_nonces=config.max_tracked_nonces,
                                   counts=cluster.nonce_counts() if cluster else None)
        # Filled once the transports are bound (port 0 means "any free port").
        challenge_orders: dict[tuple[str, int], tuple[str, ...]] = {}

        def challenge_order(source: Source) -> tuple[str, ...]:
            return challenge_orders.get((source.transport, source.local[1])) or config.auth_algorithms

        self.authenticator = Authenticator(realm=config.domain, digest=self.digest, users=self.users,
                                           lockout=self.lockout, now=self.wall.now,
                                           challenge_order=challenge_order)
        self.location = cluster.location() if cluster else LocationService()
        now = time.time()
        loaded = [b for b in await self.store.list_bindings() if b.expires_at > now]
        self.location.load(loaded)
        self.writer = StoreWriter(self.store, flush_interval=config.store_flush_interval,
                                  max_batch=config.store_max_batch)
        self.writer.start()
        self.temp_gruus = TempGruuCodec(secret, config.domain)
        self.registrar = Registrar(config, location=self.location, writer=self.writer,
                                   authenticator=self.authenticator,
                                   temp_gruus=self.temp_gruus, clock=self.wall_clock)
        self.transactions = TransactionLayer(self.clock, self._send, t1=config.t1, t2=config.t2, t4=config.t4)
        self.proxy = CoreProxy(config, authenticator=self.authenticator)
        self._last_change_id = await self.store.latest_change_id()

        # Bindings that came over connections of the previous process: their flows are
        # gone.  The device reconnects and re-registers; if not, they go after the flow timer.
        # (A worker sees to the flows of its own earlier processes, sipim/cluster/worker.py.)
        stale_flows = {b.flow_id for b in loaded if b.flow_id}
        if cluster is not None:
            stale_flows = cluster.stale_flows(stale_flows)
        if stale_flows:
            self.clock.call_later(config.flow_timer, lambda: self._drop_flows(stale_flows))

        ca_pem = self.tls_files.ca_cert.read_text() if self.tls_files is not None else None
        self.provisioning = ProvisioningService(
            config, store=self.store, users=self.users, lockout=self.lockout, audit=self.writer.audit,
            secret=secret, now=self.wall.now,
            gateway=make_gateway(config), make_limiter=cluster.rate_limiter if cluster else None,
            ca_pem=ca_pem)
        public_address = PublicAddress(
            host=config.provisioning_public_host, https_port=config.provisioning_public_https_port,
            tls_port=lambda: config.provisioning_public_tls_port or next(
                (port for transport, _, port in self.listening() if transport == "tls"), None))
        self.xdm = XdmService(config, store=self.store, get_user=self.users.get, audit=self.writer.audit,
                              now=self.wall.now, make_limiter=cluster.rate_limiter if cluster else None)
        await self.xdm.start()

        limits = ParserLimits(max_message_size=config.max_message_size, max_headers=config.max_headers,
                              max_line_length=config.max_line_length, max_uri_length=config.max_uri_length)
        self.transports = TransportManager(
            [l.spec for l in config.listeners()],
            on_message=self._on_message,
            on_parse_error=self._on_parse_error,
            on_flow_closed=self._on_flow_closed,
            ssl_context=ssl_context,
            parser_limits=limits,
            max_connections_per_ip=config.max_connections_per_ip,
            idle_timeout=config.connection_idle_timeout,
            prebound=cluster.listen_sockets if cluster else None,
            http_app_factory=make_web_app(
                store=self.store, domain=config.domain, xdm=self.xdm,
                auth=HttpDigestAuth(realm=config.domain, domain=config.domain, digest=self.digest,
                                    users=self.users, lockout=self.lockout, now=self.wall.now,
                                    audit=self.writer.audit),
                provisioning=self.provisioning, public_address=public_address,
                web_client_dir=config.web_client_dir, ca_pem=ca_pem),
        )
        if config.external_core:
            self.gateway = ExternalCoreGateway(config, location=self.location, transactions=self.transactions,
                                               transports=self.transports, clock=self.wall_clock, store=self.store)
        else:
            self.gateway = CoreGateway(config, location=self.location, transactions=self.transactions,
                                       transports=self.transports, clock=self.wall_clock)

        async def user_exists(aor: str) -> bool:
            return await self.users.get(aor.split(":", 1)[1].rpartition("@")[0]) is not None

        self.pager = PagerService(config, store=self.store, writer=self.writer, gateway=self.gateway,
                                  temp_gruus=self.temp_gruus, user_exists=user_exists, clock=self.wall_clock,
                                  privacy=self.xdm.privacy, lookup_wait=self.xdm.lookup_wait)
        await self.pager.start()
        self.proxy.role = self.pager
        self.registrar.on_registered.append(self.pager.on_registered)
        self.trusted_cores: TrustedCores | None = None
        if config.external_core:
            # Behind Kamailio: no digest here, identity from P-Asserted-Identity,
            # devices from the core's third-party REGISTERs (sipim/external).
            self.trusted_cores = TrustedCores(config.trusted_cores)
            self.proxy = ExternalCoreProxy(config, role=self.pager)
            self.third_party = ThirdPartyRegistrar(
                config, location=self.location, writer=self.writer, clock=self.wall_clock,
                publish=lambda aor: self._spawn(self.store.publish_change(CHANGE_BINDING, aor)))
            self.third_party.on_registered.append(self.pager.on_registered)
        # Bound first, so everything that needs the real ports is ready before the first
        # request is read (with port 0, or requests already waiting in a worker's sockets).
        for listener, (transport, _, port) in zip(config.listeners(), self.transports.bind()):
            challenge_orders[(transport, port)] = listener.digest_algorithms
        if cluster is not None:
            cluster.attach(self)
            cluster.start()
        await self.transports.start()
        # Tens of thousands of live transactions (UDP keeps each 32 s, RFC 3261 §17.2.2
        # timer J) make every full collection rescan them all.  Freeze what start-up
        # made and collect young objects less often; reference cycles are rare here.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        self._tasks = [
            loop.create_task(self._collect_young(), name="gc"),
            loop.create_task(self._every(config.expiry_sweep_interval, self._expire), name="expiry"),
            loop.create_task(self._every(config.change_poll_interval, self._poll_changes), name="changes"),
            loop.create_task(self._every(config.device_use_flush_interval, self._flush_device_use),
                             name="device-use"),
        ]
        if self.runs_once_jobs:
            self._tasks += [
                loop.create_task(self._every(3600, self._prune), name="prune"),
                loop.create_task(self._every(config.im_expiry_sweep_interval, self._expire_messages),
                                 name="messages"),
            ]
        if cluster is not None:
            cluster.serving()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.transports is not None:
            await self.transports.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
        if getattr(self, "pager", None) is not None:
            await self.pager.stop()
        if getattr(self, "provisioning", None) is not None:
            await self.provisioning.close()
        if getattr(self, "users", None) is not None and self.store is not None:
            try:
                await self._flush_device_use()
            except Exception:
                log.exception("could not record devices' last use")
        if getattr(self, "writer", None) is not None:
            await self.writer.stop()
        if self.store is not None:
            await self.store.close()

    def listening(self) -> list[tuple[str, str, int]]:
        return self.transports.listening() if self.transports else []

    # -- receiving -----------------------------------------------------------------
    def _on_message(self, message, source: Source) -> None:
        try:
            if isinstance(message, Response):
                # A response to a request another worker sent goes to that worker.
                if self.cluster is None or not self.cluster.response_elsewhere(message):
                    self.transactions.receive_response(message)
            elif (self.cluster is None or source.transport != "udp"
                  or not self.cluster.request_elsewhere(message, source)):
                # (A retransmission over UDP goes to the worker holding its transaction.)
                self._on_request(message, source)
        except SIPParseError as error:
            self._on_parse_error(SIPParseError(error.reason, error.status, message), source, b"")

    def receive_forwarded(self, request: Request, source: Source) -> None:
        """A UDP request another worker passed here (this worker holds its transaction)."""
        try:
            self._on_request(request, source)
        except SIPParseError as error:
            self._on_parse_error(SIPParseError(error.reason, error.status, request), source, b"")

    def _on_request(self, request: Request, source: Source) -> None:
        stamp_via(request, source)
        target = response_target(request, source)
        if self.trusted_cores is not None and source.remote[0] not in self.trusted_cores:
            # RFC 3325 §2: only the trust domain (the core) may talk to this node.
            if request.method != "ACK":
                response = make_response(request, 403, "Forbidden: not a trusted core")
                add_to_tag(request, response)
                self._send(response, target)
            return
        transaction = self.transactions.receive_request(request, target)
        if transaction is None or request.method == "ACK":
            return  # a retransmission (answered by the transaction layer) or an ACK
        method = request.method
        if method == "REGISTER":
            registrar = self.third_party if self.trusted_cores is not None else self.registrar
            handler = registrar.handle
        elif method == "OPTIONS":
            self._respond(transaction, self._options(request))
            return
        else:
            # The embedded core answers challenges without a coroutine (CoreProxy.answer).
            handler = getattr(self.proxy, "answer", None) or self.proxy.handle
        try:
            result = handler(request, source)
        except SIPParseError as error:
            # A header parsed lazily (Contact, Expires...) turned out malformed.
            result = make_response(request, error.status, error.reason)
        except Exception:
            log.exception("request handling failed")
            result = make_response(request, 500, "Server Internal Error")
        self._answer_when_ready(transaction, result)

    def _options(self, request: Request) -> Response:
        response = make_response(request, 200, "OK")
        response.headers.add("Allow", ALLOW)
        response.headers.add("Accept", "text/plain, message/cpim, application/sdp")
        response.headers.add("Supported", "path, outbound, gruu")
        return response

    def _answer_when_ready(self, transaction, result) -> None:
        """Answer now, when the future resolves, or when the coroutine returns.

        The registrar answers most requests without a coroutine (a task per
        request is a large share of the cost at thousands of requests a second).
        """
        if isinstance(result, Response):
            self._respond(transaction, result)
        elif isinstance(result, asyncio.Future):
            result.add_done_callback(lambda done: self._answer_future(transaction, done))
        else:
            self._spawn(self._answer(transaction, result))

    def _answer_future(self, transaction, done: asyncio.Future) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error("request handling failed: %s", "cancelled" if done.cancelled() else done.exception())
            self._respond(transaction, make_response(transaction.request, 500, "Server Internal Error"))
        else:
            self._respond(transaction, done.result())

    async def _answer(self, transaction, work) -> None:
        try:
            response = await work
        except SIPParseError as error:
            # A header parsed lazily (Contact, Expires...) turned out malformed.
            response = make_response(transaction.request, error.status, error.reason)
        except Exception:
            log.exception("request handling failed")
            response = make_response(transaction.request, 500, "Server Internal Error")
        self._respond(transaction, response)

    def _respond(self, transaction, response: Response) -> None:
        request = transaction.request
        if request is None:
            return  # the transaction has its final response already (and let the request go)
        add_to_tag(request, response)
        if response.status in (401, 407):
            # A challenge keeps no transaction (RFC 3261 §8.2.7, §26.1.5): half of all
            # requests, each else held 32 s over UDP for nothing but a retransmission.
            self.transactions.respond_statelessly(transaction, response)
        else:
            self.transactions.respond(transaction, response)

    def _on_parse_error(self, error: SIPParseError, source: Source, raw: bytes) -> None:
        partial = error.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            try:
                stamp_via(partial, source)
                response = make_response(partial, error.status, error.reason)
                add_to_tag(partial, response)
                self._send(response, response_target(partial, source))
                return
            except Exception:  # not even enough to answer: drop it
                pass
        log.debug("dropped malformed message from %s: %s", source.remote, error.reason)

    def _on_flow_closed(self, flow) -> None:
        if self.location.bindings_on_flow(flow.id):
            # RFC 5626 §4.4: the device may reconnect and re-register within its flow timer.
            self.clock.call_later(self.config.flow_timer, lambda: self._drop_flows({flow.id}))

    def _drop_flows(self, flow_ids) -> None:
        for flow_id in flow_ids:
            stale = self.location.bindings_on_flow(flow_id)
            self.registrar.remove_bindings(stale, "connection closed and not re-established", time.time())

    # -- sending -------------------------------------------------------------------
    def _send(self, message, target: Target) -> None:
        if self.transports is not None:
            self.transports.send(message if isinstance(message, bytes) else message.to_bytes(), target)

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- housekeeping ---------------------------------------------------------------
    async def _every(self, interval: float, job) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic job %s failed", getattr(job, "__name__", job))

    async def _collect_young(self) -> None:
        """Young (and now and then middle-generation) collections on a clock.

        Under a steady load the objects of expiring transactions are freed about as
        fast as new ones are made, so the collector's allocation count hardly grows:
        its own young collections come seldom and walk everything made since (in a
        bench, pauses of 0.9 s).  On a clock each walks ~0.1 s of work: the same total,
        pauses of ~10 ms (~100 ms for the middle generation)."""
        config = self.config
        middle_every = max(1, round(config.gc_middle_interval / config.gc_young_interval))
        count = 0
        while True:
            await asyncio.sleep(config.gc_young_interval)
            count += 1
            gc.collect(1 if count % middle_every == 0 else 0)

    async def _expire(self) -> None:
        if self.trusted_cores is not None or not self.runs_once_jobs:
            # Bindings learnt from the core are shared by every node: each node forgets
            # its copy; the rows go with delete_expired_bindings (a node must not delete
            # a row another node has just refreshed).  Likewise each worker forgets its
            # copy; the first worker deletes the rows.
            self.location.pop_expired(time.time())
            return
        self.registrar.expire(time.time())

    def take_change(self, kind: str, key: str) -> None:
        """Another worker process published this change (sipim/cluster): what is cached
        follows at once -- before the request that made it is even answered there --
        and the rest of the work goes as when the feed is read (which repeats it
        harmlessly at the next poll)."""
        if kind == CHANGE_USER:
            self.users.invalidate(key.rpartition("@")[0])
        elif kind == CHANGE_DEVICE:
            self.users.invalidate_device(key)
        self._spawn(self._apply_change(kind, key))

    async def _poll_changes(self) -> None:
        async with self._poll_lock:  # one reader at a time, so no change is applied twice
            await self._read_changes()

    def _forget_binding(self, aor: str, key: str):
        """Every process reads the change feed, so each drops its own copy (no replication)."""
        if self.cluster is not None:
            return self.location.forget(aor, key)
        return self.location.remove(aor, key)

    async def _read_changes(self) -> None:
        for change in await self.store.changes_since(self._last_change_id):
            self._last_change_id = max(self._last_change_id, change.id)
            await self._apply_change(change.kind, change.key)

    async def _apply_change(self, kind: str, key: str) -> None:
        if kind == CHANGE_USER:
            username, _, domain = key.rpartition("@")
            self.users.invalidate(username)
            if await self.store.get_user(username, domain) is None:
                # The user was removed: its devices are unregistered at once.
                aor = f"sip:{username}@{domain}"
                for binding in self.location.bindings(aor):
                    self._forget_binding(aor, binding.binding_key)
        elif kind == CHANGE_DEVICE:
            await self._device_changed(key)
        elif kind == CHANGE_BINDING and self.trusted_cores is not None:
            await self._reload_bindings(key)
        elif kind == CHANGE_XCAP:
            await self.xdm.on_change(key)
        elif kind == CHANGE_BINDING_REMOVED:
            aor, _, binding_key = key.partition(" ")
            removed = self._forget_binding(aor, binding_key)
            if removed is not None and removed.flow_id:
                flow = self.transports.get_flow(removed.flow_id) if self.transports else None
                if flow is not None:
                    flow.close()

    async def _device_changed(self, auth_username: str) -> None:
        """A device was re-issued or revoked (here or by another process): its cached
        HA1s and token go; a revoked device's registrations end and its connection
        closes, so it must authenticate again -- and cannot."""
        self.users.invalidate_device(auth_username)
        device = await self.store.device_by_auth_username(auth_username)
        if device is None or not device.revoked:
            return
        aor = f"sip:{device.username}@{device.domain}"
        gone = [b for b in self.location.bindings(aor)
                if b.instance_id and b.instance_id.strip("<>") == device.instance_id]
        if self.runs_once_jobs:
            self.registrar.remove_bindings(gone, f"device {device.device_id} revoked", time.time())
        else:  # the first worker writes the store and the audit trail
            for binding in gone:
                self._forget_binding(binding.aor, binding.binding_key)
        for binding in gone:
            flow = self.transports.get_flow(binding.flow_id) if binding.flow_id and self.transports else None
            if flow is not None:
                flow.close()

    async def _flush_device_use(self) -> None:
        await self.store.touch_devices(self.users.take_device_use())

    async def _reload_bindings(self, aor: str) -> None:
        """Another node (or this one) recorded a third-party REGISTER for ``aor``:
        take the devices from the store, and let the IM role catch up devices it
        stored messages for."""
        now = time.time()
        stored = {b.binding_key: b for b in await self.store.list_bindings(aor) if b.expires_at > now}
        for binding in self.location.bindings(aor):
            if binding.binding_key not in stored:
                self.location.remove(aor, binding.binding_key)
        for binding in stored.values():
            known = self.location.get(aor, binding.binding_key)
            if known != binding:
                self.location.put(binding)
                if binding.node_id != self.config.node_id:
                    self.pager.on_registered_elsewhere(binding)

    async def _expire_messages(self) -> None:
        await self.pager.expire()

    async def _prune(self) -> None:
        cutoff = time.time() - self.config.audit_retention_days * 86400
        await self.store.prune_audit(cutoff)
        await self.store.prune_changes(time.time() - 86400)
        await self.store.prune_codes(time.time())
        if self.trusted_cores is not None:
            await self.store.delete_expired_bindings(time.time())

"""Wiring: config -> store -> roles -> router -> transports.

One request, one pass (docs/internals.md): transport -> parser -> router
(sipim/core/router.py: Via, transaction, identity gate) -> role -> transaction
-> transport.  This package only builds the parts and connects them; no SIP rule
lives here.  The protocol layer never touches the store; the roles never touch
sockets.

- `SipimServer` builds and runs one server process;
- `process` is what differs when that process is one worker of several;
- `changes` applies the change feed, `housekeeping` runs the periodic jobs;
- `data_dir` makes what must exist before serving (secret, certificates).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sipim.config import Config
from sipim.core.auth import Authenticator, UserCache
from sipim.core.gruu import TempGruuCodec
from sipim.core.proxy import CoreProxy
from sipim.core.registrar import Registrar
from sipim.core.router import RequestRouter
from sipim.core.writer import StoreWriter
from sipim.external.gateway import ExternalCoreGateway
from sipim.external.proxy import ExternalCoreProxy
from sipim.external.registrations import ThirdPartyRegistrar
from sipim.external.trust import TrustedCores
from sipim.im.devices import CoreGateway
from sipim.im.pager import PagerService
from sipim.web.provisioning import PublicAddress
from sipim.provisioning.service import ProvisioningService
from sipim.provisioning.sms import make_gateway
from sipim.sip.clock import WallClock, WallTime
from sipim.sip.digest import DigestServer
from sipim.sip.message import Request, Response
from sipim.sip.parser import ParserLimits
from sipim.sip.transaction import TransactionLayer
from sipim.store import open_store
from sipim.store.changes import CHANGE_BINDING
from sipim.net import Flow, Source, Target
from sipim.transport.clock import AsyncioClock
from sipim.transport.manager import TransportManager
from sipim.transport.tls import server_ssl_context
from sipim.web.app import make_web_app
from sipim.web.auth import HttpDigestAuth
from sipim.xdm.service import XdmService

from .changes import ChangeFeed
from .data_dir import load_secret, prepare_data_dir
from .housekeeping import Housekeeping
from .process import ServerProcess, SingleProcess

__all__ = ["SipimServer", "load_secret", "prepare_data_dir"]

log = logging.getLogger("sipim")

# What the IM roles take (OPTIONS Accept, RFC 3261 §11.2) and the registrar offers
# (Supported: RFC 3327 path, RFC 5626 outbound, RFC 5627 gruu).
PAGER_ACCEPTS = ("text/plain", "message/cpim")
REGISTRAR_SUPPORTS = ("path", "outbound", "gruu")


class SipimServer:
    """The embedded core and IM server, in one process -- or in each worker process of
    ``sipim serve --workers N``: then ``process`` is that worker
    (sipim/cluster/worker.py), which holds its sockets, the bus to the other workers
    and the shared tables; the supervisor has prepared the data directory already."""

    def __init__(self, config: Config, cluster: ServerProcess | None = None) -> None:
        self.config = config
        self.process: ServerProcess = cluster if cluster is not None else SingleProcess()
        self.store: Any = None
        self.transports: TransportManager | None = None
        self.tls_files = None
        self.housekeeping = Housekeeping(config)
        self._background: set[asyncio.Task[None]] = set()

    # -- start / stop -----------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        process = self.process
        loop = asyncio.get_running_loop()
        self.tls_files = process.prepare(config)

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

        # -- the SIP/IP core -------------------------------------------------------
        self.users = UserCache(self.store, config.domain)
        await self.users.preload()
        self.lockout = process.lockout(threshold=config.lockout_threshold, window=config.lockout_window,
                                       duration=config.lockout_duration)
        self.digest = DigestServer(config.domain, secret, self.wall, nonce_lifetime=config.nonce_lifetime,
                                   max_tracked_nonces=config.max_tracked_nonces,
                                   counts=process.nonce_counts())
        # Filled once the transports are bound (port 0 means "any free port").
        challenge_orders: dict[tuple[str, int], tuple[str, ...]] = {}

        def challenge_order(source: Source) -> tuple[str, ...]:
            return challenge_orders.get((source.transport, source.local[1])) or config.auth_algorithms

        self.authenticator = Authenticator(realm=config.domain, digest=self.digest, users=self.users,
                                           lockout=self.lockout, now=self.wall.now,
                                           challenge_order=challenge_order)
        self.location = process.location()
        now = self.wall.now()
        loaded = [b for b in await self.store.list_bindings() if b.expires_at > now]
        self.location.load(loaded)
        self.writer = StoreWriter(self.store, flush_interval=config.store_flush_interval,
                                  max_batch=config.store_max_batch)
        self.writer.start()
        self.temp_gruus = TempGruuCodec(secret, config.domain)
        self.registrar = Registrar(config, location=self.location, writer=self.writer,
                                   authenticator=self.authenticator,
                                   temp_gruus=self.temp_gruus, clock=self.wall_clock)
        # Changes made from here on are applied once the server runs (the change feed).
        first_change_id = await self.store.latest_change_id()
        self.transactions = TransactionLayer(self.clock, self._send, t1=config.t1, t2=config.t2, t4=config.t4,
                                             branch_owner=process.branch_owner)

        # Bindings that came over connections of the previous process: their flows are
        # gone.  The device reconnects and re-registers; if not, they go after the flow timer.
        stale_flows = process.stale_flows({b.flow_id for b in loaded if b.flow_id})
        if stale_flows:
            self.clock.call_later(config.flow_timer, lambda: self._drop_flows(stale_flows))

        # -- XDM and provisioning (HTTPS) ---------------------------------------------
        ca_pem = self.tls_files.ca_cert.read_text() if self.tls_files is not None else None
        self.provisioning = ProvisioningService(
            config, store=self.store, users=self.users, lockout=self.lockout, audit=self.writer.audit,
            secret=secret, now=self.wall.now, gateway=make_gateway(config),
            make_limiter=process.rate_limiter, ca_pem=ca_pem)
        public_address = PublicAddress(
            host=config.provisioning_public_host, https_port=config.provisioning_public_https_port,
            tls_port=lambda: config.provisioning_public_tls_port or next(
                (port for transport, _, port in self.listening() if transport == "tls"), None))
        self.xdm = XdmService(config, store=self.store, get_user=self.users.get, audit=self.writer.audit,
                              now=self.wall.now, make_limiter=process.rate_limiter)
        await self.xdm.start()

        # -- the router and the transports ------------------------------------------
        self.trusted_cores: TrustedCores | None = None
        if config.external_core:
            # Behind Kamailio: no digest here, identity from P-Asserted-Identity (RFC 3325),
            # devices from the core's third-party REGISTERs (sipim/external), and only
            # the trust domain may talk to this node.
            self.trusted_cores = TrustedCores(config.trusted_cores)
            gate: CoreProxy | ExternalCoreProxy = ExternalCoreProxy(config)
        else:
            gate = CoreProxy(config, authenticator=self.authenticator)
        self.router = RequestRouter(self.transactions, self._send, gate=gate, ownership=process,
                                    trust_domain=self.trusted_cores)

        limits = ParserLimits(max_message_size=config.max_message_size, max_headers=config.max_headers,
                              max_line_length=config.max_line_length, max_uri_length=config.max_uri_length)
        self.transports = TransportManager(
            [l.spec for l in config.listeners()],
            on_message=self.router.receive,
            on_parse_error=self.router.parse_error,
            on_flow_closed=self._on_flow_closed,
            ssl_context=ssl_context,
            parser_limits=limits,
            max_connections_per_ip=config.max_connections_per_ip,
            idle_timeout=config.connection_idle_timeout,
            prebound=process.listen_sockets,
            remote_flows=process,
            flow_ids=process.flow_ids(),
            http_app_factory=make_web_app(
                store=self.store, domain=config.domain, xdm=self.xdm,
                auth=HttpDigestAuth(realm=config.domain, domain=config.domain, digest=self.digest,
                                    users=self.users, lockout=self.lockout, now=self.wall.now,
                                    audit=self.writer.audit),
                provisioning=self.provisioning, public_address=public_address,
                web_client_dir=config.web_client_dir, ca_pem=ca_pem),
        )

        # -- the IM server -------------------------------------------------------------
        if config.external_core:
            self.gateway: CoreGateway = ExternalCoreGateway(
                config, location=self.location, transactions=self.transactions,
                transports=self.transports, clock=self.wall_clock, store=self.store)
        else:
            self.gateway = CoreGateway(config, location=self.location, transactions=self.transactions,
                                       transports=self.transports, clock=self.wall_clock)

        async def user_exists(aor: str) -> bool:
            return await self.users.get(aor.split(":", 1)[1].rpartition("@")[0]) is not None

        self.pager = PagerService(config, store=self.store, writer=self.writer, gateway=self.gateway,
                                  temp_gruus=self.temp_gruus, user_exists=user_exists, clock=self.wall_clock,
                                  privacy=self.xdm.privacy, lookup_wait=self.xdm.lookup_wait,
                                  mailboxes=process.mailboxes(), homes=process)
        await self.pager.start()

        # -- the roles, on the router ---------------------------------------------------
        if config.external_core:
            self.third_party = ThirdPartyRegistrar(
                config, location=self.location, writer=self.writer, clock=self.wall_clock,
                publish=lambda aor: self._spawn(self.store.publish_change(CHANGE_BINDING, aor)))
            self.third_party.on_registered.append(self.pager.on_registered)
            self.router.add(self.third_party, ("REGISTER",), supported=REGISTRAR_SUPPORTS)
        else:
            self.registrar.on_registered.append(self.pager.on_registered)
            self.router.add(self.registrar, ("REGISTER",), supported=REGISTRAR_SUPPORTS)
        self.router.add(self.pager, ("MESSAGE",), identified=True, accept=PAGER_ACCEPTS)

        self.changes = ChangeFeed(
            store=self.store, users=self.users, location=self.location, registrar=self.registrar,
            pager=self.pager, xdm=self.xdm, get_flow=self.transports.get_flow, wall=self.wall,
            node_id=config.node_id, writes_store=process.runs_once_jobs,
            bindings_in_store=config.external_core)
        self.changes.start(first_change_id)

        # Bound first, so everything that needs the real ports is ready before the first
        # request is read (with port 0, or requests already waiting in a worker's sockets).
        for listener, (transport, _, port) in zip(config.listeners(), self.transports.bind()):
            challenge_orders[(transport, port)] = listener.digest_algorithms
        process.attach(self)
        process.start()
        await self.transports.start()

        jobs = self.housekeeping
        jobs.every("expiry", config.expiry_sweep_interval, self._expire)
        jobs.every("changes", config.change_poll_interval, self.changes.poll)
        jobs.every("device-use", config.device_use_flush_interval, self._flush_device_use)
        if process.runs_once_jobs:
            jobs.every("prune", 3600, self._prune)
            jobs.every("messages", config.im_expiry_sweep_interval, self.pager.expire)
        jobs.tune_collector()
        jobs.start()
        process.serving()

    async def stop(self) -> None:
        self.housekeeping.stop()
        if self.transports is not None:
            await self.transports.stop()
        self.process.stop()
        if getattr(self, "router", None) is not None:
            await self.router.drain(timeout=2)
        if getattr(self, "changes", None) is not None:
            await self.changes.drain()
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

    # -- connections ---------------------------------------------------------------
    def _on_flow_closed(self, flow: Flow) -> None:
        if self.location.bindings_on_flow(flow.id):
            # RFC 5626 §4.4: the device may reconnect and re-register within its flow timer.
            self.clock.call_later(self.config.flow_timer, lambda: self._drop_flows({flow.id}))

    def _drop_flows(self, flow_ids: set[str]) -> None:
        for flow_id in flow_ids:
            stale = self.location.bindings_on_flow(flow_id)
            self.registrar.remove_bindings(stale, "connection closed and not re-established", self.wall.now())

    def _send(self, message: Request | Response | bytes, target: Target) -> None:
        if self.transports is not None:
            self.transports.send(message if isinstance(message, bytes) else message.to_bytes(), target)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- periodic jobs ---------------------------------------------------------------
    async def _expire(self) -> None:
        now = self.wall.now()
        if self.trusted_cores is not None or not self.process.runs_once_jobs:
            # Bindings learnt from the core are shared by every node: each node forgets
            # its copy; the rows go with delete_expired_bindings (a node must not delete
            # a row another node has just refreshed).  Likewise each worker forgets its
            # copy; the first worker deletes the rows.
            self.location.pop_expired(now)
            return
        self.registrar.expire(now)

    async def _flush_device_use(self) -> None:
        await self.store.touch_devices(self.users.take_device_use())

    async def _prune(self) -> None:
        now = self.wall.now()
        await self.store.prune_audit(now - self.config.audit_retention_days * 86400)
        await self.store.prune_changes(now - 86400)
        await self.store.prune_codes(now)
        if self.trusted_cores is not None:
            await self.store.delete_expired_bindings(now)

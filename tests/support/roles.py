"""The server's roles (registrar, pager) built directly, without sockets, on a FakeClock.

What the roles talk to is real where it is an interface of its own -- the SQLite
store on a temporary file, the StoreWriter (flushing at once), the location service,
the digest Authenticator with users in the store -- and fake where it would be the
network: ``RecordingGateway`` keeps each MESSAGE the pager would send to a device and
lets the test answer it (200, 480, ...) or leave it unanswered.  Requests are built as
a device sends them and parsed from their bytes, as the transport would.

Time moves only with ``clock.advance()``; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sipim.config import Config
from sipim.core.auth import Authenticator, UserCache
from sipim.core.gruu import TempGruuCodec
from sipim.core.location import LocationService
from sipim.core.lockout import Lockout
from sipim.core.identity import AssertedIdentity
from sipim.core.registrar import Registrar
from sipim.core.writer import StoreWriter
from sipim.im.pager import PagerService
from sipim.sip.clock import FakeClock
from sipim.sip.digest import DigestServer, build_authorization, ha1, parse_challenge
from sipim.sip.message import Request, Response
from sipim.sip.parser import parse_message
from sipim.sip.uri import URI, parse_name_addr
from sipim.store import Store, open_store
from sipim.store.models import Binding, User
from sipim.net import Source
from sipim.transport.base import Flow, FlowIds

DOMAIN = "example.test"
SECRET = b"k" * 32
# Wall-clock-like: digest nonces, Date headers and stored times are seconds since the epoch.
START = 1_700_000_000.0
SERVER = ("192.0.2.1", 5061)

# A real network call finishing (the store's thread) takes well under this; a test
# waiting longer has found a bug, and fails instead of hanging.
GUARD = 10.0


def make_config(**values) -> Config:
    config = Config(domain=DOMAIN, listen=("tls:127.0.0.1:0",))
    config.node_id = "node-1"
    config.store_flush_interval = 0.0  # the writer commits at the next turn of the loop
    for name, value in values.items():
        setattr(config, name, value)
    return config


def make_user(username: str, password: str) -> User:
    return User(username=username, domain=DOMAIN, ha1_md5=ha1(username, DOMAIN, password, "MD5"),
                ha1_sha256=ha1(username, DOMAIN, password, "SHA-256"))


_FLOW_IDS = FlowIds()


class FakeFlow(Flow):
    """A connection that is never opened: the registrar only reads its id."""

    def __init__(self, transport: str, remote: tuple[str, int]) -> None:
        super().__init__(transport, remote, SERVER, _FLOW_IDS.new(transport))
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        raise AssertionError("a role must not write to a connection itself")

    def close(self) -> None:
        self._closed = True


_next_port = iter(range(40000, 60000))


@dataclass
class Device:
    """One SIP device of a user: its own address, connection and instance id."""

    user: str
    password: str
    transport: str = "tls"
    instance: str | None = field(default_factory=lambda: str(uuid.uuid4()))
    reg_id: int | None = 1
    host: str = "192.0.2.10"
    port: int = field(default_factory=lambda: next(_next_port))
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex + "@device")
    cseq: int = 0
    flow: Flow | None = None

    def __post_init__(self) -> None:
        if self.flow is None and self.transport != "udp":
            self.flow = FakeFlow(self.transport, (self.host, self.port))

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{DOMAIN}"

    @property
    def instance_urn(self) -> str:
        return f"<urn:uuid:{self.instance}>"

    @property
    def source(self) -> Source:
        return Source(self.transport, (self.host, self.port), SERVER, self.flow)

    @property
    def identity(self) -> AssertedIdentity:
        """Who the core asserted the sender is, once it authenticated them."""
        return AssertedIdentity(self.user, self.aor, None)

    def contact(self, *, expires: int | None = None, reg_id: int | None = -1) -> str:
        reg_id = self.reg_id if reg_id == -1 else reg_id
        value = f"<sip:{self.user}@{self.host}:{self.port};transport={self.transport}>"
        if self.instance:
            value += f';+sip.instance="{self.instance_urn}"'
            if reg_id is not None:
                value += f";reg-id={reg_id}"
        if expires is not None:
            value += f";expires={expires}"
        return value

    def request(self, method: str, *, uri: str | None = None, to: str | None = None,
                headers: list[tuple[str, str]] | tuple = (), body: bytes = b"") -> Request:
        """The request as it arrives: serialised and parsed again (headers parsed lazily)."""
        self.cseq += 1
        via = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}[self.transport]
        request = Request(method, uri or f"sip:{DOMAIN}", [
            ("Via", f"SIP/2.0/{via} {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={uuid.uuid4().hex[:8]}"),
            ("To", to or f"<{self.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} {method}"),
            ("User-Agent", "unit-test-device"),
            *headers,
        ], body)
        parsed = parse_message(request.to_bytes())
        assert isinstance(parsed, Request)
        return parsed

    def register_request(self, *, expires: int | None = 600, contact: str | None = None,
                         headers: list[tuple[str, str]] | tuple = (),
                         authorization: str | None = None) -> Request:
        extra = [("Contact", contact or self.contact())] if contact != "" else []
        if expires is not None:
            extra.append(("Expires", str(expires)))
        extra += [("Supported", "path, outbound, gruu"), *headers]
        if authorization is not None:
            extra.append(("Authorization", authorization))
        return self.request("REGISTER", headers=extra)

    def answer_challenge(self, challenged: Response, method: str = "REGISTER", uri: str | None = None,
                         *, password: str | None = None, algorithm: str | None = None) -> str:
        """An Authorization value answering the 401 (RFC 3261 §22.2, RFC 8760)."""
        challenges = [parse_challenge(v) for v in challenged.headers.get_all("WWW-Authenticate")]
        if algorithm is not None:
            challenges = [c for c in challenges if c.algorithm == algorithm]
        challenge = challenges[0]
        return build_authorization(challenge, method, uri or f"sip:{DOMAIN}", self.user,
                                   ha1(self.user, challenge.realm, password or self.password, challenge.algorithm))

    async def register(self, registrar: Registrar, **kwargs) -> Response:
        """REGISTER, answer the challenge, and return the registrar's final answer."""
        password = kwargs.pop("password", None)
        challenged = await settle(registrar.handle(self.register_request(**kwargs), self.source))
        if challenged.status != 401:
            return challenged
        authorization = self.answer_challenge(challenged, password=password)
        return await settle(registrar.handle(self.register_request(authorization=authorization, **kwargs),
                                             self.source))


async def settle(result: Response | Awaitable[Response]) -> Response:
    """A role's answer: given at once, or once its awaitable resolves."""
    if isinstance(result, Response):
        return result
    return await asyncio.wait_for(result, GUARD)


@dataclass
class Delivery:
    """One request the pager had the gateway send to a device, awaiting its answer."""

    binding: Binding
    request: Request
    _on_result: Callable[[int], None]
    status: int | None = None

    def answer(self, status: int) -> None:
        assert self.status is None, "a delivery is answered once"
        self.status = status
        self._on_result(status)


class RecordingGateway:
    """The pager's DeviceGateway: devices from the location service, on the clock;
    every send recorded instead of going out."""

    def __init__(self, location: LocationService, clock: FakeClock) -> None:
        self._location = location
        self._clock = clock
        self.deliveries: list[Delivery] = []
        self._arrived = asyncio.Event()

    def devices(self, aor: str) -> list[Binding]:
        return self._location.bindings(aor, self._clock.now())

    def request_uri(self, binding: Binding) -> URI:
        return parse_name_addr(binding.contact).uri

    def send(self, binding: Binding, request: Request, on_result: Callable[[int], None]) -> None:
        self.deliveries.append(Delivery(binding, request, on_result))
        self._arrived.set()

    def to(self, device: Device) -> list[Delivery]:
        """What went to ``device`` (its instance), oldest first."""
        return [d for d in self.deliveries if d.binding.instance_id == device.instance_urn]

    def unanswered(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status is None]

    async def wait_for(self, count: int, *, unless_done: asyncio.Future | None = None) -> list[Delivery]:
        """Until ``count`` deliveries were sent in all; fails if ``unless_done`` (the task
        that should send them) finishes first -- it will not send any more."""
        async with asyncio.timeout(GUARD):
            while len(self.deliveries) < count:
                if unless_done is not None and unless_done.done():
                    unless_done.result()  # its exception, if it raised
                    raise AssertionError(f"finished after {len(self.deliveries)} of {count} deliveries")
                self._arrived.clear()
                waiter = asyncio.ensure_future(self._arrived.wait())
                waiting = {waiter} if unless_done is None else {waiter, unless_done}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        return self.deliveries[:count]


@dataclass
class Roles:
    config: Config
    clock: FakeClock
    store: Store
    writer: StoreWriter
    location: LocationService
    registrar: Registrar
    gateway: RecordingGateway
    pager: PagerService
    temp_gruus: TempGruuCodec

    async def add_user(self, username: str, password: str | None = None) -> None:
        await self.store.add_user(make_user(username, password or f"{username}-secret"))

    async def committed(self) -> None:
        """Until everything the roles handed the writer is in the store."""
        await asyncio.wait_for(self.writer.committed(), GUARD)

    async def quiet(self) -> None:
        """Until the pager's deliveries under way (catching up, notifications) ended;
        its stop() waits for just those and stops nothing else."""
        await asyncio.wait_for(self.pager.stop(), GUARD)


@contextlib.asynccontextmanager
async def make_roles(database: str, **config_values) -> AsyncIterator[Roles]:
    """Registrar and pager wired as `sipim serve` wires them (registrations tell the
    pager), on a FakeClock, the SQLite store at ``database`` and a RecordingGateway."""
    config = make_config(**config_values)
    clock = FakeClock(START)
    store = await open_store(database)
    writer = StoreWriter(store, flush_interval=config.store_flush_interval, max_batch=config.store_max_batch)
    writer.start()
    try:
        users = UserCache(store, DOMAIN)
        authenticator = Authenticator(
            realm=DOMAIN, digest=DigestServer(DOMAIN, SECRET, clock, nonce_lifetime=config.nonce_lifetime),
            users=users, lockout=Lockout(threshold=config.lockout_threshold, window=config.lockout_window,
                                         duration=config.lockout_duration),
            now=clock.now)
        location = LocationService()
        temp_gruus = TempGruuCodec(SECRET, DOMAIN)
        registrar = Registrar(config, location=location, writer=writer, authenticator=authenticator,
                              temp_gruus=temp_gruus, clock=clock)
        gateway = RecordingGateway(location, clock)

        async def user_exists(aor: str) -> bool:
            return await users.get(aor.split(":", 1)[1].rpartition("@")[0]) is not None

        pager = PagerService(config, store=store, writer=writer, gateway=gateway, temp_gruus=temp_gruus,
                             user_exists=user_exists, clock=clock)
        await pager.start()
        registrar.on_registered.append(pager.on_registered)
        yield Roles(config, clock, store, writer, location, registrar, gateway, pager, temp_gruus)
        # What a test left unanswered times out, as a real gateway's transaction does
        # (one final status each), so stop() finds the deliveries under way ending.
        for delivery in gateway.unanswered():
            delivery.answer(408)
        await asyncio.wait_for(pager.stop(), GUARD)
    finally:
        await writer.stop()
        await store.close()

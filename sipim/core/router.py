"""The request router: what RFC 3261 says every server answers, and who answers the rest.

Every SIP message the transports parse comes here (`receive`).  The router applies
the rules that hold whatever the request is -- the Via a response must follow
(§18.2.1, RFC 3581), the response target (§18.2.2), the To tag (§8.2.6.2), the
server transaction (§17.2), OPTIONS (§11.2), 405 with an Allow header (§8.2.1),
CANCEL matching nothing (§9.2) -- and hands each other request to the one role
registered for its method (and, where roles share a method, its Request-URI).

A role is any object with

    handle(request, source, identity) -> Response | Awaitable[Response]

registered with `RequestRouter.add(role, methods, ...)`.  A route that needs to
know who the sender is (`identified=True`) passes an identity gate first: the
embedded core authenticates (sipim/core/proxy.py), an external core's assertion
is checked (sipim/external/proxy.py); the role then gets the asserted identity.
A route without it (REGISTER: the registrar authenticates, RFC 3261 §10.3) gets
``identity=None``.  Roles never see sockets, transactions or To tags.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol, Union

from sipim.sip.errors import SIPParseError
from sipim.sip.message import Request, Response, make_error_response, make_response, readable_top_via
from sipim.sip.tokens import random_hex
from sipim.sip.transaction import ServerTransaction, TransactionLayer
from sipim.net import Source, Target

from .identity import Admission, AssertedIdentity

__all__ = [
    "Answer",
    "IdentityGate",
    "MessageOwnership",
    "RequestRouter",
    "Role",
    "ThisProcessOnly",
    "TrustDomain",
]

log = logging.getLogger("sipim")

Answer = Union[Response, Awaitable[Response]]

# Answered by the router itself whatever the roles are (RFC 3261 §8.2.1: a server
# that knows OPTIONS, ACK and CANCEL lists them in Allow).
_ROUTER_METHODS = ("OPTIONS", "ACK", "CANCEL")


class Role(Protocol):
    """The one contract of a role (registrar, pager, and the roles to come).

    Return the final response itself when it is known at once (cheaper: no task),
    else an awaitable of it.  A `SIPParseError` raised while reading a header
    lazily becomes that error's status; any other exception a 500.
    """

    def handle(self, request: Request, source: Source, identity: AssertedIdentity | None) -> Answer: ...


class IdentityGate(Protocol):
    """Says who sent a request before an identified route sees it.

    Returns an `Admission`, or the response that refuses the request (a challenge,
    403), or an awaitable of either when the answer needs the store.
    """

    def admit(self, request: Request, source: Source) -> (
            Admission | Response | Awaitable[Admission | Response]): ...


class MessageOwnership(Protocol):
    """Whether another process of this server should take a message
    (sipim/cluster: several worker processes share the listening sockets)."""

    def response_elsewhere(self, response: Response) -> bool: ...

    def request_elsewhere(self, request: Request, source: Source) -> bool: ...


class ThisProcessOnly:
    """`MessageOwnership` of a server that is one process: every message is its own."""

    def response_elsewhere(self, response: Response) -> bool:
        return False

    def request_elsewhere(self, request: Request, source: Source) -> bool:
        return False


class TrustDomain(Protocol):
    """The peers allowed to talk to this node at all (RFC 3325 §2), behind an external core."""

    def __contains__(self, ip: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class Route:
    role: Role
    identified: bool
    # None: every Request-URI; else the role serves the requests this accepts.
    accepts: Callable[[Request], bool] | None


def stamp_via(request: Request, source: Source) -> None:
    """RFC 3261 §18.2.1 and RFC 3581 §4: note in the top Via where the request really came from."""
    via = request.top_via
    if via is None:
        return  # nothing to stamp; on a connection the response still finds its way
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


class RequestRouter:
    """Receives every parsed message of a node and sees each request answered once."""

    # A UDP peer sends many requests and each server transaction keeps its target for
    # Timer J (32 s, §17.2.2): one shared, immutable Target per peer address.
    MAX_CACHED_TARGETS = 100_000

    def __init__(
        self,
        transactions: TransactionLayer,
        send: Callable[[bytes, Target], object],
        *,
        gate: IdentityGate | None = None,
        ownership: MessageOwnership | None = None,
        trust_domain: TrustDomain | None = None,
    ) -> None:
        self._transactions = transactions
        self._send = send
        self._gate = gate
        self._ownership: MessageOwnership = ownership or ThisProcessOnly()
        self._trust_domain = trust_domain
        self._routes: dict[str, list[Route]] = {}
        self._accept: list[str] = []
        self._supported: list[str] = []
        self._allow = ""
        self._udp_targets: dict[tuple[str, str, int], Target] = {}
        self._pending: set[asyncio.Task[None]] = set()

    # -- registration -------------------------------------------------------------
    def add(self, role: Role, methods: Iterable[str], *, identified: bool = False,
            accepts: Callable[[Request], bool] | None = None,
            accept: Collection[str] = (), supported: Collection[str] = ()) -> None:
        """Register `role` for `methods`.

        `identified`: the role needs the sender's asserted identity (the gate runs
        first).  `accepts`: the Request-URIs the role serves when roles share a
        method; routes with it are tried before the one without, in the order added.
        `accept` (body types) and `supported` (option tags) go into the answer to
        OPTIONS (RFC 3261 §11.2).
        """
        if identified and self._gate is None:
            raise ValueError("an identified route needs the router's identity gate")
        route = Route(role, identified, accepts)
        for method in methods:
            method = method.upper()
            if method in ("ACK", "CANCEL"):
                raise ValueError(f"{method} is answered by the transaction layer and the router")
            routes = self._routes.setdefault(method, [])
            if accepts is None and any(r.accepts is None for r in routes):
                raise ValueError(f"{method} has a role for every Request-URI already")
            routes.append(route)
            routes.sort(key=lambda r: r.accepts is None)  # stable: specific ones first
        self._accept += [a for a in accept if a not in self._accept]
        self._supported += [s for s in supported if s not in self._supported]
        methods_known = list(self._routes) + [m for m in _ROUTER_METHODS if m not in self._routes]
        self._allow = ", ".join(methods_known)

    @property
    def allow(self) -> str:
        """The Allow header value: the registered methods and the router's own."""
        return self._allow

    # -- receiving (the transports' callbacks) -------------------------------------------
    def receive(self, message: Request | Response, source: Source) -> None:
        try:
            if isinstance(message, Response):
                if not self._ownership.response_elsewhere(message):
                    self._transactions.receive_response(message)
            elif source.transport != "udp" or not self._ownership.request_elsewhere(message, source):
                # (A retransmission over UDP goes to the process holding its transaction.)
                self.receive_request(message, source)
        except SIPParseError as error:
            partial = message if isinstance(message, Request) else None
            self.parse_error(SIPParseError(error.reason, error.status, partial), source, b"")

    def receive_request(self, request: Request, source: Source) -> None:
        """One request, this process's own: answered once, whatever the role does."""
        try:
            self._receive_request(request, source)
        except SIPParseError as error:
            self.parse_error(SIPParseError(error.reason, error.status, request), source, b"")

    def _receive_request(self, request: Request, source: Source) -> None:
        stamp_via(request, source)
        target = self.response_target(request, source)
        if self._trust_domain is not None and source.remote[0] not in self._trust_domain:
            # RFC 3325 §2: only the trust domain (the core) may talk to this node.
            if request.method != "ACK":
                response = make_response(request, 403, "Forbidden: not a trusted core")
                add_to_tag(request, response)
                self._send(response.to_bytes(), target)
            return
        transaction = self._transactions.receive_request(request, target)
        if transaction is None or request.method == "ACK":
            return  # a retransmission (answered by the transaction layer) or an ACK
        try:
            answer = self._dispatch(request, source)
        except SIPParseError as error:
            # A header parsed lazily (Contact, Expires...) turned out malformed.
            answer = make_response(request, error.status, error.reason)
        except Exception:
            log.exception("request handling failed")
            answer = make_response(request, 500, "Server Internal Error")
        self._answer_when_ready(transaction, answer)

    def _dispatch(self, request: Request, source: Source) -> Answer:
        routes = self._routes.get(request.method)
        route = None
        if routes is not None:
            for candidate in routes:
                if candidate.accepts is None or candidate.accepts(request):
                    route = candidate
                    break
        if route is None:
            return self._answer_unrouted(request)
        if not route.identified:
            return route.role.handle(request, source, None)
        assert self._gate is not None
        admission = self._gate.admit(request, source)
        if isinstance(admission, Admission):
            return route.role.handle(request, admission.source, admission.identity)
        if isinstance(admission, Response):
            return admission
        return self._handle_once_admitted(route.role, request, admission)

    @staticmethod
    async def _handle_once_admitted(role: Role, request: Request,
                                    pending: Awaitable[Admission | Response]) -> Response:
        admission = await pending
        if isinstance(admission, Response):
            return admission
        answer = role.handle(request, admission.source, admission.identity)
        return answer if isinstance(answer, Response) else await answer

    def _answer_unrouted(self, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            # RFC 3261 §11.2: what this server can do.
            response = make_response(request, 200, "OK")
            response.headers.add("Allow", self._allow)
            if self._accept:
                response.headers.add("Accept", ", ".join(self._accept))
            if self._supported:
                response.headers.add("Supported", ", ".join(self._supported))
            return response
        if method == "CANCEL":
            # RFC 3261 §9.2: a CANCEL matching no transaction of ours.
            return make_response(request, 481, "Call/Transaction Does Not Exist")
        # RFC 3261 §8.2.1: a method no role serves here.
        response = make_response(request, 405, "Method Not Allowed")
        response.headers.add("Allow", self._allow)
        return response

    # -- answering ------------------------------------------------------------------
    def response_target(self, request: Request, source: Source) -> Target:
        """Where a response goes: RFC 3261 §18.2.2 with RFC 3581 §4 (rport)."""
        if source.reliable and source.flow is not None:
            return Target(source.transport, source.remote[0], source.remote[1], source.flow.id)
        via = request.top_via
        if via is None:  # RFC 3261 §18.2.2: nowhere to send a response over UDP
            raise SIPParseError("Missing Via", 400, request)
        key = (source.transport, via.received or via.host, via.rport or via.port or 5060)
        target = self._udp_targets.get(key)
        if target is None:
            if len(self._udp_targets) >= self.MAX_CACHED_TARGETS:
                self._udp_targets.clear()
            target = self._udp_targets[key] = Target(*key)
        return target

    def _answer_when_ready(self, transaction: ServerTransaction, answer: Answer) -> None:
        """Answer now, when the future resolves, or when the coroutine returns.

        The registrar answers most requests without a coroutine (a task per
        request is a large share of the cost at thousands of requests a second).
        """
        if isinstance(answer, Response):
            self._respond(transaction, answer)
        elif isinstance(answer, asyncio.Future):
            answer.add_done_callback(lambda done: self._answer_future(transaction, done))
        else:
            self._spawn(self._answer_awaited(transaction, answer))

    def _answer_future(self, transaction: ServerTransaction, done: asyncio.Future[Response]) -> None:
        if done.cancelled() or done.exception() is not None:
            log.error("request handling failed: %s", "cancelled" if done.cancelled() else done.exception())
            self._fail(transaction, 500, "Server Internal Error")
        else:
            self._respond(transaction, done.result())

    async def _answer_awaited(self, transaction: ServerTransaction, work: Awaitable[Response]) -> None:
        try:
            response = await work
        except SIPParseError as error:
            # A header parsed lazily (Contact, Expires...) turned out malformed.
            self._fail(transaction, error.status, error.reason)
        except Exception:
            log.exception("request handling failed")
            self._fail(transaction, 500, "Server Internal Error")
        else:
            self._respond(transaction, response)

    def _fail(self, transaction: ServerTransaction, status: int, reason: str) -> None:
        if transaction.request is not None:
            self._respond(transaction, make_response(transaction.request, status, reason))

    def _respond(self, transaction: ServerTransaction, response: Response) -> None:
        request = transaction.request
        if request is None:
            return  # the transaction has its final response already (and let the request go)
        add_to_tag(request, response)
        if response.status in (401, 407):
            # A challenge keeps no transaction (RFC 3261 §8.2.7, §26.1.5): half of all
            # requests, each else held 32 s over UDP for nothing but a retransmission.
            self._transactions.respond_statelessly(transaction, response)
        else:
            self._transactions.respond(transaction, response)

    def parse_error(self, error: SIPParseError, source: Source, raw: bytes) -> None:
        """The transports' `on_parse_error`.  RFC 3261 §8.2, §16.3, §21.4.1: a request
        that was read, whatever it lacks, gets the error's 400/505/513 naming the
        problem; an ACK is never answered (§17)."""
        partial = error.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            try:
                # §18.2.2: over a connection the answer goes back on it, Via or not;
                # over UDP it is routed by the top Via, so without one it cannot go.
                via = readable_top_via(partial)
                if via is not None or (source.reliable and source.flow is not None):
                    if via is not None:
                        stamp_via(partial, source)
                    response = make_error_response(partial, error.status, error.reason, to_tag=random_hex(6))
                    self._send(response.to_bytes(), self.response_target(partial, source))
                    return
            except Exception:  # a bug: log it, and the transport carries on
                log.exception("could not answer a malformed message from %s", source.remote)
        log.debug("dropped malformed message from %s: %s", source.remote, error.reason)

    # -- tasks ----------------------------------------------------------------------
    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self, timeout: float) -> None:
        """Let requests being answered finish (on stop)."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=timeout)

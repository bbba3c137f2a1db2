"""The RFC 3261 §17 transaction layer: four state machines and the tables that hold them.

Sans-IO: messages go out through `send(message, target)`, time comes from an injected
`Clock`, and the transport reports incoming messages and send failures by calling
`receive_request`, `receive_response` and `transport_error`.

Shape (h11 style): one `State` enum; each machine declares its transitions as a table
`(state, event) -> next state`; the side effects of each transition (send, start or stop
timers, tell the TU) are spelled out next to the table.  An event with no entry in the
table is absorbed silently, which is what §17 asks for everywhere it does not say
otherwise (e.g. a 1xx after the final response, a TU response after Completed).

Choices the RFC leaves open, and how this module takes them:

* INVITE server transactions send 100 Trying after `invite_trying_delay` (200 ms, §17.2.1)
  unless the TU has answered by then; a retransmitted INVITE gets a 100 at once.
  `invite_trying_delay=0` sends it immediately without a timer.
* An ACK that matches no INVITE server transaction (the ACK for a 2xx, §13.3.1.4 and
  §17.2.3: it is a separate transaction-less request) goes to the `on_ack(request,
  source)` hook; `receive_request` returns None for it.  An ACK for a non-2xx final
  response is absorbed by its transaction (§17.2.1) and also returns None.
* RFC 6026 is not implemented: a 2xx terminates the INVITE server transaction at once,
  and retransmissions of 2xx / of the INVITE after it are the TU's business.
* RFC 2543 branches (no "z9hG4bK" cookie, §17.2.3) are matched by a simplified key:
  Call-ID, From tag, CSeq number, top Via sent-by and method.
* An INVITE client transaction in Proceeding has no RFC 3261 timeout (Timer B only runs in
  Calling).  So that a silent far end cannot pin it in memory, Proceeding arms a guard of
  `invite_proceeding_timeout` seconds (default 185 s, the "more than 3 minutes" of Timer C,
  §16.6 step 11), re-armed by every provisional response; on expiry the TU is told
  through `on_timeout` (it should CANCEL, §16.8).  `None` disables the guard.
* On reliable transports timers A, E, G are never started and the zero-length timers
  D, I, J, K are not scheduled at all: the transaction terminates on the spot.
* Timers of one duration share one clock timer (`TimerQueues`): a UDP server keeps
  every transaction for Timer J (32 s), tens of thousands at a few thousand requests
  a second, and one event-loop timer each is a large share of the cost of a request.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Callable, Protocol

from .clock import Clock, TimerHandle
from .headers import Headers
from .message import Request, Response, make_response
from .tokens import random_hex

__all__ = [
    "MAGIC_COOKIE",
    "ClientTransaction",
    "ServerTransaction",
    "State",
    "TransactionLayer",
    "new_branch",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


def new_branch(owner: str = "") -> str:
    """A fresh RFC 3261 branch (§8.1.1.7: cookie + a value unique in space and time).

    ``owner`` goes after the cookie: a worker of sipim/cluster names itself there
    ("w1."), so a response reaching another worker finds its way back."""
    return MAGIC_COOKIE + owner + random_hex(12)


class Target(Protocol):
    """Where a message goes; opaque here except for this flag."""

    reliable: bool


# A message, or its wire bytes where the layer keeps only those (a non-INVITE server
# transaction in Completed over UDP re-sends its final response as bytes).
Send = Callable[[Request | Response | bytes, Any], None]


class State(enum.Enum):
    CALLING = "Calling"          # INVITE client
    TRYING = "Trying"            # non-INVITE client and server
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"      # INVITE server
    TERMINATED = "Terminated"


CALLING, TRYING, PROCEEDING, COMPLETED, CONFIRMED, TERMINATED = (
    State.CALLING, State.TRYING, State.PROCEEDING, State.COMPLETED, State.CONFIRMED,
    State.TERMINATED)


class Event(enum.Enum):
    PROVISIONAL = "1xx"          # a 1xx response (received, or passed down by the TU)
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST_RETRANSMISSION = "request"
    ACK = "ACK"


PROVISIONAL, SUCCESS, FAILURE = Event.PROVISIONAL, Event.SUCCESS, Event.FAILURE
REQUEST_RETRANSMISSION, ACK = Event.REQUEST_RETRANSMISSION, Event.ACK


def _response_event(status: int) -> Event:
    if status < 200:
        return PROVISIONAL
    return SUCCESS if status < 300 else FAILURE


# ---------------------------------------------------------------------------
# Transition tables.  Missing (state, event) pairs are absorbed without effect.

# §17.1.1.2, Figure 5: responses received by an INVITE client transaction.
INVITE_CLIENT = {
    (CALLING, PROVISIONAL): PROCEEDING,
    (CALLING, SUCCESS): TERMINATED,
    (CALLING, FAILURE): COMPLETED,
    (PROCEEDING, PROVISIONAL): PROCEEDING,
    (PROCEEDING, SUCCESS): TERMINATED,
    (PROCEEDING, FAILURE): COMPLETED,
    (COMPLETED, FAILURE): COMPLETED,    # retransmitted final response: ACK again
}

# §17.1.2.2, Figure 6: responses received by a non-INVITE client transaction.
NON_INVITE_CLIENT = {
    (TRYING, PROVISIONAL): PROCEEDING,
    (TRYING, SUCCESS): COMPLETED,
    (TRYING, FAILURE): COMPLETED,
    (PROCEEDING, PROVISIONAL): PROCEEDING,
    (PROCEEDING, SUCCESS): COMPLETED,
    (PROCEEDING, FAILURE): COMPLETED,
}

# §17.2.1, Figure 7: TU responses, retransmitted INVITEs and ACKs at an INVITE server.
INVITE_SERVER = {
    (PROCEEDING, PROVISIONAL): PROCEEDING,
    (PROCEEDING, SUCCESS): TERMINATED,
    (PROCEEDING, FAILURE): COMPLETED,
    (PROCEEDING, REQUEST_RETRANSMISSION): PROCEEDING,   # re-send last provisional
    (COMPLETED, REQUEST_RETRANSMISSION): COMPLETED,     # re-send final response
    (COMPLETED, ACK): CONFIRMED,
}

# §17.2.2, Figure 8: TU responses and retransmitted requests at a non-INVITE server.
NON_INVITE_SERVER = {
    (TRYING, PROVISIONAL): PROCEEDING,
    (TRYING, SUCCESS): COMPLETED,
    (TRYING, FAILURE): COMPLETED,
    (PROCEEDING, PROVISIONAL): PROCEEDING,
    (PROCEEDING, SUCCESS): COMPLETED,
    (PROCEEDING, FAILURE): COMPLETED,
    (PROCEEDING, REQUEST_RETRANSMISSION): PROCEEDING,   # re-send last provisional
    (COMPLETED, REQUEST_RETRANSMISSION): COMPLETED,     # re-send final response
    # (TRYING, REQUEST_RETRANSMISSION) is absent: "any further request retransmissions
    # are discarded" while the TU has said nothing.
}


# ---------------------------------------------------------------------------
# Timers


class _QueuedTimer:
    """One timer of a `_TimerQueue`; `cancel()` like a clock's handle."""

    __slots__ = ("deadline", "callback", "queue")

    def __init__(self, deadline: float, callback: Callable[[], None], queue: _TimerQueue) -> None:
        self.deadline = deadline
        self.callback: Callable[[], None] | None = callback
        self.queue = queue

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self.queue._cancelled()


class _Firing:
    """Stands for the clock handle while a queue runs its due timers."""

    __slots__ = ()

    def cancel(self) -> None:
        pass


_FIRING = _Firing()


class _TimerQueue:
    """Timers that all run `delay` seconds after they start.  They fall due in the
    order they started, so a FIFO holds them and one clock timer, for the earliest,
    serves them all; a cancelled one stays in the FIFO, inert, until its turn."""

    __slots__ = ("clock", "delay", "entries", "live", "handle")

    def __init__(self, clock: Clock, delay: float) -> None:
        self.clock = clock
        self.delay = delay
        self.entries: deque[_QueuedTimer] = deque()
        self.live = 0
        self.handle: TimerHandle | None = None

    def start(self, callback: Callable[[], None]) -> _QueuedTimer:
        entry = _QueuedTimer(self.clock.now() + self.delay, callback, self)
        self.entries.append(entry)
        self.live += 1
        if self.handle is None:
            self.handle = self.clock.call_later(self.delay, self._fire)
        return entry

    def _cancelled(self) -> None:
        self.live -= 1
        if self.live == 0:
            # Nothing left to run: no clock timer either (an idle layer holds none).
            self.entries.clear()
            handle = self.handle
            if handle is not None and handle is not _FIRING:
                handle.cancel()
                self.handle = None

    def _fire(self) -> None:
        self.handle = _FIRING
        entries = self.entries
        error: Exception | None = None
        try:
            now = self.clock.now()
            while entries and entries[0].deadline <= now:
                entry = entries.popleft()
                callback = entry.callback
                if callback is None:
                    continue
                entry.callback = None
                self.live -= 1
                try:
                    callback()
                except Exception as exc:  # the others still run; the first error is re-raised
                    error = error or exc
        finally:
            self.handle = None
            if entries:
                self.handle = self.clock.call_later(max(0.0, entries[0].deadline - self.clock.now()), self._fire)
        if error is not None:
            raise error


class TimerQueues:
    """`start(delay, callback)` -> a handle with `cancel()`, as `Clock.call_later`.

    The §17 timers take a handful of durations (T1 doublings, T2, T4, 64*T1), so
    each duration gets a `_TimerQueue`; an unusual one goes to the clock directly.
    """

    __slots__ = ("clock", "_queues")

    MAX_QUEUES = 32

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._queues: dict[float, _TimerQueue] = {}

    def start(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        queue = self._queues.get(delay)
        if queue is None:
            if len(self._queues) >= self.MAX_QUEUES or delay <= 0:
                return self.clock.call_later(delay, callback)
            queue = self._queues[delay] = _TimerQueue(self.clock, delay)
        return queue.start(callback)


# ---------------------------------------------------------------------------
# Transactions


class _Transaction:
    __slots__ = ("layer", "key", "request", "target", "state",
                 "_retransmit_timer", "_timeout_timer", "_interval")

    def __init__(self, layer: TransactionLayer, key: tuple[Any, ...], request: Request, target: Any,
                 state: State) -> None:
        self.layer = layer
        self.key = key
        # None once a non-INVITE transaction lingers in Completed (nothing is sent any more)
        self.request: Request | None = request
        self.target = target
        self.state = state
        self._retransmit_timer: TimerHandle | None = None   # A, E, G
        self._timeout_timer: TimerHandle | None = None      # B, F, H, or D, K, I, J
        self._interval = 0.0                                # current A/E/G interval

    @property
    def reliable(self) -> bool:
        return bool(self.target.reliable)

    def _stop_timers(self) -> None:
        if self._retransmit_timer is not None:
            self._retransmit_timer.cancel()
            self._retransmit_timer = None
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()
            self._timeout_timer = None

    def _terminate(self) -> None:
        """§17.1.1.2 / §17.2.1: destroyed the instant it enters Terminated."""
        self.state = TERMINATED
        self._stop_timers()
        self.layer._forget(self)

    def _linger(self, seconds: float) -> None:
        """Stay in Completed/Confirmed for D, K, I or J; zero means terminate now."""
        if seconds <= 0:
            self._terminate()
        else:
            self._timeout_timer = self.layer.timers.start(seconds, self._terminate)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key[-1]} {self.state.value} {self.key[0]}>"


class ClientTransaction(_Transaction):
    """Base of the two client machines; created by `TransactionLayer.send_request`."""

    __slots__ = ("on_response", "on_timeout")

    def __init__(self, layer: TransactionLayer, key: tuple[Any, ...], request: Request, target: Any,
                 state: State, on_response: Callable[[Response], None],
                 on_timeout: Callable[[], None]) -> None:
        super().__init__(layer, key, request, target, state)
        self.on_response = on_response
        self.on_timeout = on_timeout

    def _fail(self) -> None:
        """Timer B/F (or the Proceeding guard) fired, or the transport failed (§17.1.4)."""
        if self.state is TERMINATED:
            return
        on_timeout = self.on_timeout
        self._terminate()
        self._release_tu()
        on_timeout()

    def _release_tu(self) -> None:
        """The TU has had its final answer: nothing more goes to it, so the transaction
        stops holding its callbacks (and what they hold) while it lingers in Completed
        for Timer K or D -- at a few thousand requests a second, objects kept alive
        are what the garbage collector spends its time walking."""
        self.on_response = _ignore_response
        self.on_timeout = _ignore_timeout

    def _receive(self, response: Response) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _ignore_response(response: Response) -> None:
    pass


def _ignore_timeout() -> None:
    pass


class InviteClientTransaction(ClientTransaction):
    """§17.1.1: Calling -> Proceeding -> Completed -> Terminated."""

    __slots__ = ("_ack",)

    request: Request  # kept to the end: only non-INVITE transactions let it go

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._ack: Request | None = None

    def _start(self) -> None:
        layer = self.layer
        layer.send(self.request, self.target)
        if not self.reliable:
            self._interval = layer.t1                         # Timer A = T1
            self._retransmit_timer = layer.timers.start(self._interval, self._timer_a)
        self._timeout_timer = layer.timers.start(64 * layer.t1, self._fail)  # Timer B

    def _timer_a(self) -> None:
        # §17.1.1.2: retransmit and double the interval, only while Calling.
        if self.state is not CALLING:
            return
        self.layer.send(self.request, self.target)
        self._interval *= 2
        self._retransmit_timer = self.layer.timers.start(self._interval, self._timer_a)

    def _receive(self, response: Response) -> None:
        event = _response_event(response.status)
        new_state = INVITE_CLIENT.get((self.state, event))
        if new_state is None:
            return  # e.g. 1xx/2xx in Completed: absorbed
        previous, self.state = self.state, new_state
        layer = self.layer
        if new_state is PROCEEDING:
            if previous is CALLING:
                self._stop_timers()  # no more retransmissions; Timer B only runs in Calling
            guard = layer.invite_proceeding_timeout
            if guard is not None:
                if self._timeout_timer is not None:
                    self._timeout_timer.cancel()
                self._timeout_timer = layer.timers.start(guard, self._fail)
            self.on_response(response)
        elif new_state is TERMINATED:
            # 2xx: the TU (UAC core or proxy core) handles ACK / forwarding (§17.1.1.2).
            on_response = self.on_response
            self._terminate()
            self._release_tu()
            on_response(response)
        elif previous is COMPLETED:
            # Retransmitted final response: ACK again, do not bother the TU.
            assert self._ack is not None  # built on entering Completed
            layer.send(self._ack, self.target)
        else:
            # §17.1.1.2: 300-699 -> build and send ACK even on reliable transports, Timer D.
            self._stop_timers()
            self._ack = build_ack(self.request, response)
            layer.send(self._ack, self.target)
            self._linger(0.0 if self.reliable else max(32.0, 64 * layer.t1))
            on_response = self.on_response
            self._release_tu()
            on_response(response)


class NonInviteClientTransaction(ClientTransaction):
    """§17.1.2: Trying -> Proceeding -> Completed -> Terminated."""

    __slots__ = ()

    def _start(self) -> None:
        layer = self.layer
        assert self.request is not None  # let go only in Completed
        layer.send(self.request, self.target)
        if not self.reliable:
            self._interval = layer.t1                         # Timer E = T1
            self._retransmit_timer = layer.timers.start(self._interval, self._timer_e)
        self._timeout_timer = layer.timers.start(64 * layer.t1, self._fail)  # Timer F

    def _timer_e(self) -> None:
        # §17.1.2.2: MIN(2*interval, T2) while Trying; T2 once Proceeding.
        if self.state is TRYING:
            self._interval = min(2 * self._interval, self.layer.t2)
        elif self.state is PROCEEDING:
            self._interval = self.layer.t2
        else:
            return
        assert self.request is not None  # let go only in Completed
        self.layer.send(self.request, self.target)
        self._retransmit_timer = self.layer.timers.start(self._interval, self._timer_e)

    def _receive(self, response: Response) -> None:
        new_state = NON_INVITE_CLIENT.get((self.state, _response_event(response.status)))
        if new_state is None:
            return  # retransmissions in Completed are absorbed (§17.1.2.2)
        self.state = new_state
        on_response = self.on_response
        if new_state is COMPLETED:
            self._stop_timers()
            if self.reliable:
                self._terminate()                                    # Timer K = 0
            else:
                self._linger(self.layer.t4)                          # Timer K
                self.request = None  # nothing is retransmitted any more
            self._release_tu()
        on_response(response)


class ServerTransaction(_Transaction):
    """Base of the two server machines; created by `TransactionLayer.receive_request`.

    `request` is the request that created it; pass responses with
    `TransactionLayer.respond(transaction, response)`.  A non-INVITE transaction
    lingering in Completed over UDP for Timer J holds neither the request (None) nor
    the parsed response: `last_response` is then the response's wire bytes.
    """

    __slots__ = ("last_response",)

    def __init__(self, layer: TransactionLayer, key: tuple[Any, ...], request: Request, target: Any,
                 state: State) -> None:
        super().__init__(layer, key, request, target, state)
        self.last_response: Response | bytes | None = None

    def _fail(self) -> None:
        """Timer H fired (no ACK) or the transport failed (§17.2.1, §17.2.4)."""
        if self.state is TERMINATED:
            return
        self._terminate()
        hook = self.layer.on_server_failure
        if hook is not None:
            hook(self)

    def _respond(self, response: Response) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _receive_again(self, event: Event) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """§17.2.1: Proceeding -> Completed -> Confirmed -> Terminated (2xx: -> Terminated)."""

    __slots__ = ()

    request: Request  # kept to the end: only non-INVITE transactions let it go

    def _start(self) -> None:
        delay = self.layer.invite_trying_delay
        if delay <= 0:
            self._send_trying()
        else:
            # Reuses the retransmit slot: G cannot run before a final response.
            self._retransmit_timer = self.layer.timers.start(delay, self._trying_due)

    def _trying_due(self) -> None:
        self._retransmit_timer = None
        if self.state is PROCEEDING and self.last_response is None:
            self._send_trying()

    def _send_trying(self) -> None:
        # §17.2.1 / §8.2.6.1: 100 Trying without a To tag; copy Timestamp.
        timestamp = self.request.headers.get("Timestamp")
        extra = [("Timestamp", timestamp)] if timestamp is not None else ()
        self.last_response = make_response(self.request, 100, "Trying", headers=extra)
        self.layer.send(self.last_response, self.target)

    def _respond(self, response: Response) -> bool:
        new_state = INVITE_SERVER.get((self.state, _response_event(response.status)))
        if new_state is None:
            return False
        self.state = new_state
        self._stop_timers()   # cancels a pending 100 Trying
        self.last_response = response
        layer = self.layer
        layer.send(response, self.target)
        if new_state is TERMINATED:
            self._terminate()   # 2xx: retransmissions are the TU's job (§17.2.1)
        elif new_state is COMPLETED:
            if not self.reliable:
                self._interval = layer.t1                     # Timer G = T1
                self._retransmit_timer = layer.timers.start(self._interval, self._timer_g)
            self._timeout_timer = layer.timers.start(64 * layer.t1, self._fail)  # Timer H
        return True

    def _timer_g(self) -> None:
        if self.state is not COMPLETED:
            return
        assert self.last_response is not None  # Completed: the final response was sent
        self.layer.send(self.last_response, self.target)
        self._interval = min(2 * self._interval, self.layer.t2)
        self._retransmit_timer = self.layer.timers.start(self._interval, self._timer_g)

    def _receive_again(self, event: Event) -> None:
        new_state = INVITE_SERVER.get((self.state, event))
        if new_state is None:
            return  # ACK in Proceeding/Confirmed, INVITE in Confirmed: absorbed
        if new_state is CONFIRMED:
            # §17.2.1: ACK stops G and H; Timer I absorbs further ACKs.
            self.state = CONFIRMED
            self._stop_timers()
            self._linger(0.0 if self.reliable else self.layer.t4)
        elif self.last_response is None:
            # Retransmitted INVITE before anything was sent: quench it now.
            if self._retransmit_timer is not None:
                self._retransmit_timer.cancel()
                self._retransmit_timer = None
            self._send_trying()
        else:
            self.layer.send(self.last_response, self.target)


class NonInviteServerTransaction(ServerTransaction):
    """§17.2.2: Trying -> Proceeding -> Completed -> Terminated."""

    __slots__ = ()

    def _start(self) -> None:
        pass  # nothing is sent and no timer runs until the TU answers

    def _respond(self, response: Response) -> bool:
        new_state = NON_INVITE_SERVER.get((self.state, _response_event(response.status)))
        if new_state is None:
            return False  # §17.2.2: further final responses are discarded in Completed
        self.state = new_state
        if new_state is COMPLETED and not self.reliable:
            # Completed lasts Timer J (32 s over UDP) only to answer retransmissions,
            # which need the response's bytes and nothing else: the request and the
            # parsed response (a dozen objects with its headers) are let go.  At a few
            # thousand requests a second, what lingering transactions keep alive is
            # what the garbage collector spends its time walking.
            wire = response.to_bytes()
            self.last_response = wire
            self.request = None
            self.layer.send(wire, self.target)
            self._linger(64 * self.layer.t1)                            # Timer J
            return True
        self.last_response = response
        self.layer.send(response, self.target)
        if new_state is COMPLETED:
            self._terminate()                                           # Timer J = 0
        return True

    def _receive_again(self, event: Event) -> None:
        if NON_INVITE_SERVER.get((self.state, event)) is not None:
            assert self.last_response is not None  # only Proceeding and Completed re-send
            self.layer.send(self.last_response, self.target)


# ---------------------------------------------------------------------------
# ACK for non-2xx (§17.1.1.3)


def build_ack(original: Request, response: Response) -> Request:
    """The ACK an INVITE client transaction sends for a 300-699 response (§17.1.1.3).

    Request-URI, Call-ID, From: from the original request; To: from the response (with
    its tag); one Via: the top Via of the original; CSeq: same number, method ACK; the
    original's Route set; Max-Forwards copied (the §17.1.1.3 example keeps it).
    """
    source = original.headers
    via, from_, call_id = source.get("Via"), source.get("From"), source.get("Call-ID")
    to = response.headers.get("To")
    # the INVITE went out with them, and the response matched it by its Via and CSeq
    assert via is not None and from_ is not None and to is not None and call_id is not None
    headers = Headers()
    headers.add("Via", via)
    for route in source.raw_values("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", source.get("Max-Forwards") or "70")
    headers.add("From", from_)
    headers.add("To", to)
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{original.cseq.seq} ACK")
    return Request("ACK", original.uri, headers)


# ---------------------------------------------------------------------------
# The layer


class TransactionLayer:
    """Creates, matches and forgets transactions.

    `send(message, target)` hands a message to the transport; it should not raise (a
    failure is reported back with `transport_error`).  `target` is opaque except for
    `target.reliable`.
    """

    __slots__ = ("clock", "timers", "send", "branch_owner", "t1", "t2", "t4", "invite_trying_delay",
                 "invite_proceeding_timeout", "on_ack", "on_server_failure",
                 "_servers", "_clients")

    def __init__(
        self,
        clock: Clock,
        send: Send,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        invite_trying_delay: float = 0.2,
        invite_proceeding_timeout: float | None = 185.0,
        on_ack: Callable[[Request, Any], None] | None = None,
        on_server_failure: Callable[[ServerTransaction], None] | None = None,
        branch_owner: str = "",
    ) -> None:
        self.clock = clock
        # Named in every branch this layer makes (`new_branch`).
        self.branch_owner = branch_owner
        self.timers = TimerQueues(clock)
        self.send = send
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.invite_trying_delay = invite_trying_delay
        self.invite_proceeding_timeout = invite_proceeding_timeout
        self.on_ack = on_ack
        self.on_server_failure = on_server_failure
        self._servers: dict[tuple[Any, ...], ServerTransaction] = {}
        self._clients: dict[tuple[Any, ...], ClientTransaction] = {}

    def new_branch(self) -> str:
        """A branch for a request this node sends (RFC 3261 §8.1.1.7), naming its owner."""
        return new_branch(self.branch_owner)

    # -- server side --------------------------------------------------------

    @staticmethod
    def _server_key(request: Request, method: str) -> tuple[Any, ...]:
        """§17.2.3: branch + sent-by + method (ACK and CANCEL callers pass the method
        of the transaction they look for)."""
        via = request.top_via
        assert via is not None  # the parser lets no request without a Via through
        branch = via.branch
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            return (branch, via.host.lower(), via.port, method)
        # RFC 2543 peer: no usable branch.  Simplified §17.2.3 fallback.
        return ("", request.call_id, request.from_.tag, request.cseq.seq,
                via.host.lower(), via.port, method)

    def receive_request(self, request: Request, source: Any) -> ServerTransaction | None:
        """A new server transaction for `request`, or None.

        None means: a retransmission (the last response was re-sent as §17.2.1/§17.2.2
        say), an ACK absorbed by its INVITE transaction, or an ACK matching no
        transaction, which is handed to `on_ack(request, source)` (ACK for 2xx).
        `source` is where responses are sent (it must have `.reliable`).
        """
        method = request.method
        if method == "ACK":
            transaction = self._servers.get(self._server_key(request, "INVITE"))
            if transaction is not None:
                transaction._receive_again(ACK)
            elif self.on_ack is not None:
                self.on_ack(request, source)
            return None
        key = self._server_key(request, method)
        transaction = self._servers.get(key)
        if transaction is not None:
            transaction._receive_again(REQUEST_RETRANSMISSION)
            return None
        if method == "INVITE":
            transaction = InviteServerTransaction(self, key, request, source, PROCEEDING)
        else:
            transaction = NonInviteServerTransaction(self, key, request, source, TRYING)
        self._servers[key] = transaction
        transaction._start()
        return transaction

    def respond(self, transaction: ServerTransaction, response: Response) -> bool:
        """Pass a TU response to its transaction.  False when the state machine
        discarded it (a response after the final one, or after termination)."""
        if transaction.state is TERMINATED:
            return False
        return transaction._respond(response)

    def respond_statelessly(self, transaction: ServerTransaction, response: Response) -> bool:
        """Send a final response and keep no state for the request (§8.2.7 stateless UAS).

        For challenges (401/407): §8.2.7 and §26.1.5 want unauthenticated requests
        answered without transaction state, so that a flood of them cannot pile up
        transactions -- each would otherwise live 64*T1 over UDP.  A retransmission of
        the request then is a new request and gets a new challenge.  False when the
        transaction had already ended."""
        if transaction.state is TERMINATED:
            return False
        if response.status < 200:
            raise ValueError("a stateless answer is a final response")
        transaction.last_response = response
        self.send(response, transaction.target)
        transaction._terminate()
        return True

    def find_server_transaction_for_cancel(self, cancel: Request) -> ServerTransaction | None:
        """§9.2: the transaction a CANCEL targets (same branch and sent-by, method not
        CANCEL).  Only INVITE transactions are looked for: a CANCEL has no effect on
        any other method (§9.2), so the TU answers 481 or 200 alike."""
        return self._servers.get(self._server_key(cancel, "INVITE"))

    # -- client side --------------------------------------------------------

    def send_request(
        self,
        request: Request,
        target: Any,
        on_response: Callable[[Response], None],
        on_timeout: Callable[[], None],
    ) -> ClientTransaction:
        """Start a client transaction: send `request` to `target` and retransmit it
        over unreliable transports until answered.  The top Via must carry a branch
        with the magic cookie (`new_branch()`).  ACK for 2xx is not a transaction:
        send it through the transport directly.  `on_timeout` also reports transport
        errors (§17.1.4)."""
        method = request.method
        if method == "ACK":
            raise ValueError("ACK is not sent in a client transaction (§17.1.1.3, §13.2.2.4)")
        via = request.top_via
        branch = via.branch if via is not None else None
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise ValueError("request needs a top Via with an RFC 3261 branch")
        key = (branch, method)
        if key in self._clients:
            raise ValueError(f"a {method} client transaction with branch {branch} exists")
        cls = InviteClientTransaction if method == "INVITE" else NonInviteClientTransaction
        transaction = cls(self, key, request, target,
                          CALLING if method == "INVITE" else TRYING, on_response, on_timeout)
        self._clients[key] = transaction
        transaction._start()
        return transaction

    def receive_response(self, response: Response) -> bool:
        """§17.1.3: match by top Via branch and CSeq method.  False means no
        transaction matched; the caller (core) handles it, as it must for 2xx
        retransmissions to INVITE (§17.1.1.2)."""
        via = response.top_via
        if via is None or via.branch is None:
            return False
        transaction = self._clients.get((via.branch, response.cseq.method))
        if transaction is None:
            return False
        transaction._receive(response)
        return True

    def client_transaction(self, branch: str, method: str) -> ClientTransaction | None:
        """The live client transaction of this branch and method, if any."""
        return self._clients.get((branch, method))

    # -- both ---------------------------------------------------------------

    def transport_error(self, transaction: ClientTransaction | ServerTransaction) -> None:
        """The transport failed to send for this transaction (§17.1.4, §17.2.4):
        terminate it and tell the TU (`on_timeout` / `on_server_failure`)."""
        transaction._fail()

    def _forget(self, transaction: _Transaction) -> None:
        table = self._clients if isinstance(transaction, ClientTransaction) else self._servers
        if table.get(transaction.key) is transaction:
            del table[transaction.key]

    @property
    def server_transaction_count(self) -> int:
        return len(self._servers)

    @property
    def client_transaction_count(self) -> int:
        return len(self._clients)

"""The asyncio user agent: a device's SIP side over one TLS flow.

    async with UserAgent(device) as agent:
        await agent.register()
        result = await agent.send_message("bob", "hello")
        async for event in agent.events():
            ...   # IncomingMessage / DispositionReport

Protocol decisions live in the sans-IO modules (``signalling``, ``messaging``,
``challenges``); this module only moves their requests and responses over a
``SipFlow`` and keeps time: registration refreshes, and, when the flow fails,
a new flow and registration after the RFC 5626 §4.5 back-off.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sipim.client.config import ClientConfig
from sipim.sip.message import Request, Response
from sipim.imdn import DELIVERY, DISPLAY

from .challenges import AuthenticationFailed, Credentials, answer_challenge
from .errors import ClientError, FlowFailed, RequestFailed
from .flow import SipFlow
from .messaging import (
    DispositionReport,
    Event,
    IncomingMessage,
    OutgoingMessage,
    compose,
    disposition,
    handle_request,
    message_target,
)
from .profile import DeviceConfig
from .signalling import (
    Registered,
    RegistrationFailed,
    Registration,
    RequestFactory,
    Resend,
    Unregistered,
    new_call_id,
    new_tag,
    recovery_delay,
)

log = logging.getLogger(__name__)


def ssl_context_for(device: DeviceConfig) -> ssl.SSLContext:
    """Verify the server with the CA the configuration names (the system store without one)."""
    context = ssl.create_default_context(cadata=device.ca_pem) if device.ca_pem else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class SendResult:
    status: int               # 200 delivered to a device, 202 stored for later (RFC 3428 §7)
    reason: str
    message_id: str | None    # the IMDN Message-ID reports will name
    uri: str

    @property
    def stored(self) -> bool:
        return self.status == 202


class UserAgent:
    def __init__(self, device: DeviceConfig, *, config: ClientConfig | None = None,
                 context: ssl.SSLContext | None = None, auto_delivered: bool = True,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.device = device
        self.config = config or ClientConfig()
        self._context = context or ssl_context_for(device)
        self.auto_delivered = auto_delivered
        self._now = now
        self._credentials = Credentials(device.auth_username, device.password, device.realm)
        self._factory = RequestFactory(device.user_id, display_name=device.display_name)
        self._registration = Registration(
            self._factory, registrar=device.registrar or f"sip:{device.domain}", instance_id=device.instance_id,
            credentials=self._credentials, expires=self.config.client_register_expires,
            refresh_margin=self.config.client_refresh_margin)
        self._flow: SipFlow | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._keeper: asyncio.Task | None = None
        self.registered: Registered | None = None
        self._closing = False
        # Called with every flow failure the agent recovers from (for the CLI to show).
        self.on_flow_lost: Callable[[str, float], None] | None = None
        # Called when a new flow is registered after such a failure.
        self.on_flow_recovered: Callable[[], None] | None = None

    @property
    def aor(self) -> str:
        return self.device.user_id

    @property
    def flow(self) -> SipFlow | None:
        """The current connection to the outbound proxy (a new one after recovery)."""
        return self._flow

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> "UserAgent":
        if self._flow is not None and self._flow.is_open:
            return self
        host, port = self.device.sip_server()
        flow = SipFlow(host, port, self._context, config=self.config, on_request=self._on_request)
        await flow.connect()
        self._flow = flow
        self._factory.local = flow.local
        return self

    async def close(self) -> None:
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            try:
                await self._keeper
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.registered is not None and self._flow is not None and self._flow.is_open:
            try:
                await asyncio.wait_for(self.unregister(), 5)
            except (ClientError, asyncio.TimeoutError):
                pass
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._flow is not None:
            await self._flow.close()

    async def __aenter__(self) -> "UserAgent":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_flow(self) -> SipFlow:
        if self._flow is None or not self._flow.is_open:
            raise FlowFailed("not connected to the server")
        return self._flow

    # -- registration (RFC 3261 §10.2, RFC 5626 §4.2) --------------------------------------
    async def register(self, *, keep: bool = True) -> Registered:
        """Register this device over the flow; with ``keep``, refresh the
        registration and recover the flow until ``close()``."""
        await self.connect()
        result = await self._register_once(None)
        if keep and self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_registered(), name="sipim-client-registration")
        return result

    async def _register_once(self, expires: int | None) -> Registered | Unregistered:
        flow = self._require_flow()
        request = self._registration.request(expires)
        while True:
            response = await flow.request(request)
            action = self._registration.handle_response(response)
            if isinstance(action, Resend):
                request = action.request
                continue
            if isinstance(action, RegistrationFailed):
                raise RequestFailed(action.status, action.reason, _register_error(action), retry_after=action.retry_after)
            if isinstance(action, Registered):
                self.registered = action
                flow.keepalive.use_flow_timer(action.flow_timer)
            return action

    async def unregister(self) -> None:
        """RFC 3261 §10.2.2: the same Contact with expires 0."""
        if self._keeper is not None and asyncio.current_task() is not self._keeper:
            self._keeper.cancel()
            self._keeper = None
        await self._register_once(0)
        self.registered = None

    async def _keep_registered(self) -> None:
        failures = 0
        wait = self.registered.refresh_in if self.registered else 0.0
        while not self._closing:
            flow = self._flow
            if flow is not None and flow.is_open:
                closed = asyncio.ensure_future(flow.closed.wait())
                try:
                    await asyncio.wait({closed}, timeout=wait)
                finally:
                    closed.cancel()
                if self._closing:
                    return
                if flow.is_open:
                    try:
                        registered = await self._register_once(None)
                        failures = 0
                        wait = registered.refresh_in
                        continue
                    except RequestFailed as error:
                        log.warning("registration refresh refused: %s", error)
                        if error.status in (401, 403, 404):
                            await self._events.put(_Stopped(str(error)))
                            return
                        if error.status >= 500 and flow.is_open:
                            # RFC 5626 §4.2.2: a recoverable error (503 + Retry-After...) does
                            # not tear the flow down; try again on it after the wait.
                            wait = error.retry_after if error.retry_after is not None else recovery_delay(
                                failures, base_all_failed=self.config.client_recovery_base_all_failed,
                                base_ok=self.config.client_recovery_base_ok, max_time=self.config.client_recovery_max)
                            failures += 1
                            continue
                    except ClientError as error:
                        log.info("registration refresh failed: %s", error)
                reason = flow.failure or "registration lost"
                await flow.close()
            else:
                reason = "not connected"
            # RFC 5626 §4.5: a new flow, after a randomised, growing wait.
            delay = recovery_delay(failures, base_all_failed=self.config.client_recovery_base_all_failed,
                                   base_ok=self.config.client_recovery_base_ok,
                                   max_time=self.config.client_recovery_max)
            failures += 1
            self.registered = None
            if self.on_flow_lost is not None:
                self.on_flow_lost(reason, delay)
            await asyncio.sleep(delay)
            try:
                self._flow = None
                await self.connect()
                registered = await self._register_once(None)
                wait = registered.refresh_in
                failures = 0  # RFC 5626 §4.5: the new flow registered; the count starts again
                if self.on_flow_recovered is not None:
                    self.on_flow_recovered()
            except RequestFailed as error:
                if error.status in (401, 403, 404):
                    await self._events.put(_Stopped(str(error)))
                    return
                wait = 0.0  # the new flow is up: register on it again (recoverable errors wait there)
            except ClientError as error:
                log.info("flow recovery failed: %s", error)
                wait = 0.0

    # -- requests with digest (RFC 3261 §22.2) ---------------------------------------------
    async def _transact(self, method: str, uri: str, *, to: str, headers: list[tuple[str, str]],
                        body: bytes) -> Response:
        await self.connect()
        flow = self._require_flow()
        call_id = new_call_id(self._factory.local[0])
        from_tag = new_tag()
        cseq = 1
        extra: list[tuple[str, str]] = []
        answered = False
        while True:
            request = self._factory.build(method, uri, to=to, call_id=call_id, cseq=cseq, from_tag=from_tag,
                                          headers=[*headers, *extra], body=body)
            response = await flow.request(request)
            if response.status not in (401, 407):
                return response
            name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            header, value = answer_challenge(response.status, response.headers.get_all(name), method, uri,
                                             self._credentials, already_answered=answered)
            answered = True
            extra = [(header, value)]
            cseq += 1  # RFC 3261 §22.2: the retry is a new request in the same call leg

    # -- messages (RFC 3428) ----------------------------------------------------------------
    async def send_message(self, target: str, text: str, *, cpim: bool = True,
                           notifications: tuple[str, ...] | None = None) -> SendResult:
        """Send ``text`` to a user name, ``+E164`` number or URI; raises
        ``RequestFailed`` on an error status (404 unknown, 485 ambiguous number...)."""
        uri = message_target(target, self.device.domain)
        kwargs = {} if notifications is None else {"notifications": notifications}
        outgoing = compose(self.aor, uri, text, now=self._now(), cpim=cpim,
                           display_name=self.device.display_name, **kwargs)
        response = await self._send(outgoing)
        if response.status >= 300:
            raise RequestFailed(response.status, response.reason, _send_error(target, response))
        return SendResult(response.status, response.reason, outgoing.message_id, uri)

    async def _send(self, outgoing: OutgoingMessage) -> Response:
        return await self._transact("MESSAGE", outgoing.uri, to=f"<{outgoing.uri}>",
                                    headers=[("Content-Type", outgoing.content_type)], body=outgoing.body)

    async def send_displayed(self, message: IncomingMessage) -> bool:
        """Tell the sender ``message`` was shown to the user (RFC 5438 §7.2.1.2),
        if they asked; True when a notification was sent and accepted."""
        return await self._notify(message, DISPLAY)

    async def _notify(self, message: IncomingMessage, kind: str) -> bool:
        outgoing = disposition(message, self.aor, kind, now=self._now())
        if outgoing is None:
            return False
        try:
            response = await self._send(outgoing)
        except ClientError as error:
            log.info("%s notification for %s not sent: %s", kind, message.message_id, error)
            return False
        return 200 <= response.status < 300

    # -- incoming requests -----------------------------------------------------------------
    def _on_request(self, request: Request) -> Response | None:
        handled = handle_request(request, self.aor, max_size=self.config.client_max_message_size)
        event = handled.event
        if event is not None:
            self._events.put_nowait(event)
            if (isinstance(event, IncomingMessage) and self.auto_delivered and event.message_id
                    and not event.outgoing_copy):
                # RFC 5438 §7.2.1.1: the recipient's UA sends "delivered" once it has the message.
                self._spawn(self._notify(event, DELIVERY))
        return handled.response

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next incoming message or report (``asyncio.TimeoutError`` after ``timeout``)."""
        event = await asyncio.wait_for(self._events.get(), timeout)
        if isinstance(event, _Stopped):
            raise RequestFailed(403, "Forbidden", f"the server no longer accepts this device: {event.reason}")
        return event

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self.next_event()


@dataclass(frozen=True)
class _Stopped:
    """Queued when the server refuses a re-registration for good."""

    reason: str


def _register_error(failure: RegistrationFailed) -> str:
    if failure.status in (401, 403, 407):
        return f"registration refused ({failure.status} {failure.reason}): wrong or revoked credentials"
    if failure.status == 404:
        return "registration refused (404): the server does not know this user"
    return f"registration refused: {failure.status} {failure.reason}"


def _send_error(target: str, response: Response) -> str:
    status = response.status
    if status == 404:
        return f"{target}: no such user (404 {response.reason})"
    if status == 485:
        return f"{target}: the number belongs to several users (485 {response.reason}); send to a user name"
    if status == 403 and "authenticat" in response.reason.lower():
        return (f"the server refused this device's credentials (403 {response.reason}): "
                "revoked or changed? run `sipim client setup` again")
    if status == 403:
        return f"{target}: not allowed (403 {response.reason})"
    return f"{target}: {status} {response.reason}"


__all__ = ["DispositionReport", "IncomingMessage", "SendResult", "UserAgent", "ssl_context_for",
           "AuthenticationFailed"]

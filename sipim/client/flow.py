"""One TLS connection to the outbound proxy, the thin I/O layer of the client.

RFC 5626 calls it a flow: the device opens it, registers over it, and the
server sends the device's incoming requests down the same connection (§5.3), so
the client never listens on a port.  Bytes go through sipim's own stream
framer; requests and responses through the RFC 3261 §17 transaction layer
(reliable transport: no retransmissions, Timer F still ends a request nobody
answers); CRLF keep-alives (§4.4.1) prove the flow is alive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable

from sipim.client.config import ClientConfig
from sipim.sip.errors import SIPParseError
from sipim.sip.message import Request, Response
from sipim.sip.parser import KeepAlive as PingFromServer
from sipim.sip.parser import ParserLimits, StreamFramer
from sipim.sip.transaction import TransactionLayer
from sipim.transport.clock import AsyncioClock

from .errors import CertificateUntrusted, FlowFailed, RequestTimeout, ServerUnreachable
from .signalling import PING, KeepAlive

log = logging.getLogger(__name__)

PONG = b"\r\n"
READ_SIZE = 65536


class _Peer:
    """The transaction layer's view of where messages go: always this flow."""

    reliable = True


RequestHandler = Callable[[Request], Response | None]


async def open_tls(host: str, port: int, context: ssl.SSLContext, *, timeout: float
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A verified TLS connection, or a readable ``ClientError``."""
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout)
    except ssl.SSLCertVerificationError as error:
        raise CertificateUntrusted(
            f"the certificate of {host}:{port} is not trusted ({error.verify_message}); "
            "the profile's CA does not match this server") from None
    except ssl.SSLError as error:
        raise ServerUnreachable(f"TLS with {host}:{port} failed: {error.reason or error}") from None
    except asyncio.TimeoutError:
        raise ServerUnreachable(f"cannot reach {host}:{port}: no answer within {timeout:g} s") from None
    except OSError as error:
        raise ServerUnreachable(f"cannot reach {host}:{port}: {describe_os_error(error)}") from None


def describe_os_error(error: OSError) -> str:
    """"Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 1)"."""
    if error.errno:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


class SipFlow:
    def __init__(self, host: str, port: int, context: ssl.SSLContext, *, config: ClientConfig,
                 on_request: RequestHandler) -> None:
        self.host = host
        self.port = port
        self._context = context
        self._config = config
        self._on_request = on_request
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._framer = StreamFramer(ParserLimits(max_message_size=config.client_max_message_size + 16384))
        self._transactions: TransactionLayer | None = None
        self._peer = _Peer()
        self.keepalive = KeepAlive(config.client_keepalive_interval, config.client_keepalive_timeout)
        self._tasks: list[asyncio.Task] = []
        self._data_seen = asyncio.Event()
        # Set at every answered keep-alive (for whoever wants to watch the flow's health).
        self.pong_received = asyncio.Event()
        self.closed = asyncio.Event()
        self.failure: str | None = None
        self.local: tuple[str, int] = ("invalid", 9)

    async def connect(self) -> "SipFlow":
        self._reader, self._writer = await open_tls(self.host, self.port, self._context,
                                                    timeout=self._config.client_connect_timeout)
        self.local = self._writer.get_extra_info("sockname")[:2]
        self._transactions = TransactionLayer(AsyncioClock(), self._send, t1=self._config.client_t1)
        self._tasks = [asyncio.create_task(self._read_loop(), name="sip-flow-reader"),
                       asyncio.create_task(self._keepalive_loop(), name="sip-flow-keepalive")]
        return self

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self.closed.is_set()

    # -- sending ----------------------------------------------------------------------
    def _send(self, message: Request | Response | bytes, _target: object) -> None:
        self._write(message if isinstance(message, bytes) else message.to_bytes())

    def _write(self, data: bytes) -> None:
        if not self.is_open:
            raise FlowFailed(f"the connection to {self.host}:{self.port} is closed")
        self._writer.write(data)

    async def request(self, request: Request) -> Response:
        """Send ``request`` and wait for its final response (1xx are skipped)."""
        if not self.is_open or self._transactions is None:
            raise FlowFailed(f"the connection to {self.host}:{self.port} is closed")
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def on_response(response: Response) -> None:
            if response.status >= 200 and not answer.done():
                answer.set_result(response)

        def on_timeout() -> None:
            if not answer.done():
                answer.set_exception(RequestTimeout(
                    f"{self.host}:{self.port} did not answer the {request.method} in time"))

        self._transactions.send_request(request, self._peer, on_response, on_timeout)
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({answer, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not answer.done():
            answer.cancel()
            raise FlowFailed(f"the connection to {self.host}:{self.port} broke: {self.failure or 'closed'}")
        return answer.result()

    # -- receiving ----------------------------------------------------------------------
    async def _read_loop(self) -> None:
        assert self._reader is not None and self._transactions is not None
        try:
            while True:
                data = await self._reader.read(READ_SIZE)
                if not data:
                    self._fail("the server closed the connection")
                    return
                self.keepalive.data_received()
                self._data_seen.set()
                try:
                    items = self._framer.feed(data)
                except SIPParseError as error:
                    if error.recoverable:
                        continue
                    self._fail(f"unreadable data from the server ({error.reason})")
                    return
                for item in items:
                    self._dispatch(item)
        except (ConnectionError, ssl.SSLError, OSError) as error:
            self._fail(f"connection lost ({error})")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a bug must end the flow visibly, not hang it
            log.exception("reading from %s:%s failed", self.host, self.port)
            self._fail(f"internal error while reading ({type(error).__name__})")

    def _dispatch(self, item: Request | Response | PingFromServer) -> None:
        assert self._transactions is not None
        if isinstance(item, PingFromServer):
            self._write(PONG)  # RFC 5626 §4.4.1: the pong is one CRLF
            return
        if isinstance(item, Response):
            self._transactions.receive_response(item)
            return
        transaction = self._transactions.receive_request(item, self._peer)
        if transaction is None:
            return  # a retransmission (answered again by the layer) or an ACK
        try:
            response = self._on_request(item)
        except Exception:  # noqa: BLE001 - the application's bug must not kill the flow
            log.exception("handling an incoming %s failed", item.method)
            from sipim.sip.message import make_response

            response = make_response(item, 500, "Server Internal Error")
        if response is not None:
            self._transactions.respond(transaction, response)

    # -- keep-alive (RFC 5626 §4.4.1) ---------------------------------------------------------
    async def _keepalive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self.is_open:
            await asyncio.sleep(self.keepalive.next_delay())
            if not self.is_open:
                return
            self._data_seen.clear()
            try:
                self._write(PING)
            except FlowFailed:
                return
            self.keepalive.ping_sent(loop.time())
            try:
                await asyncio.wait_for(self._data_seen.wait(), self.keepalive.timeout)
            except asyncio.TimeoutError:
                if self.keepalive.failed(loop.time()):
                    self._fail(f"no keep-alive answer within {self.keepalive.timeout:g} s")
                    return
            else:
                self.pong_received.set()

    # -- closing ------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.failure = reason
        self.closed.set()
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        if not self.closed.is_set():
            self.failure = "closed by the client"
            self.closed.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 2)
            except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
                pass

"""A small blocking SIP user agent for tests: crafts exactly the request a test needs.

Third-party clients (sipp, sipsak, baresip) prove interoperability; this one lets a
test set every header (instance ids, reg-id, expires, Path...) and read the answer.
It speaks UDP, TCP and TLS with real sockets and uses sipim's own parser and
digest client helpers.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sipim.sip.digest import build_authorization, ha1, parse_challenge
from sipim.sip.message import Request, Response
from sipim.sip.parser import StreamFramer, parse_message


def new_branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex[:16]


@dataclass
class TestUA:
    __test__ = False  # a helper, not a test class

    transport: str
    host: str
    port: int
    user: str
    password: str
    domain: str = "example.test"
    ca_file: Path | None = None
    instance: str | None = None
    timeout: float = 5.0
    # A device's own digest username (device credentials); None: the user name.
    auth_user: str | None = None
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex + "@test")
    cseq: int = 0
    sock: socket.socket | None = None
    _framer: StreamFramer | None = None
    # Status a request arriving at this UA is answered with (0: not answered).
    auto_answer: int = 200
    _responses: queue.Queue = field(default_factory=queue.Queue)
    _requests: queue.Queue = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None
    _io_lock: threading.Lock = field(default_factory=threading.Lock)
    # Responses that matched no request waiting for one (see transact).
    stray_responses: list = field(default_factory=list)

    # -- connection ---------------------------------------------------------------
    def connect(self) -> "TestUA":
        if self.sock is not None:
            return self
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.connect((self.host, self.port))
        else:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.transport == "tls":
                context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
                context.check_hostname = False if self.ca_file is None else True
                if self.ca_file is None:
                    context.verify_mode = ssl.CERT_NONE
                raw = context.wrap_socket(raw, server_hostname=self.host)
            self.sock = raw
            self._framer = StreamFramer()
        self.sock.settimeout(0.2)
        self._reader = threading.Thread(target=self._read_loop, args=(self.sock,), daemon=True)
        self._reader.start()
        return self

    def _read_loop(self, sock) -> None:
        """Everything the server sends: responses to the waiting caller, requests
        answered at once (as a real device does) and queued for the test.

        An SSL socket must not be read and written by two threads at once, so reads
        happen under ``_io_lock`` (as do writes), and only once select() or the SSL
        buffer says data is there."""
        while self.sock is sock:
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                try:
                    readable, _, _ = select.select([sock], [], [], 0.2)
                except (OSError, ValueError):
                    break
                if not readable:
                    continue
            with self._io_lock:
                try:
                    data = sock.recv(65535)
                except (TimeoutError, socket.timeout, ssl.SSLWantReadError):
                    continue
                except (OSError, ValueError) as error:
                    if self.sock is sock:
                        self._responses.put(ConnectionError(f"reading from the server failed: {error!r}"))
                    break
            if not data:
                self._responses.put(ConnectionError("server closed the connection"))
                break
            try:
                messages = [parse_message(data)] if self.transport == "udp" else \
                    [m for m in self._framer.feed(data) if isinstance(m, (Request, Response))]
            except Exception as error:  # noqa: BLE001 - hand it to the test
                self._responses.put(error)
                continue
            for message in messages:
                if isinstance(message, Response):
                    self._responses.put(message)
                else:
                    if self.auto_answer and message.method != "ACK":
                        self.answer(message, self.auto_answer, "OK" if self.auto_answer == 200 else "Error")
                    self._requests.put(message)

    def close(self) -> None:
        if self.sock is not None:
            sock, self.sock = self.sock, None
            if self._reader is not None:
                self._reader.join(timeout=1)
            sock.close()

    @property
    def local(self) -> tuple[str, int]:
        self.connect()
        return self.sock.getsockname()[:2]

    @property
    def via_transport(self) -> str:
        return {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}[self.transport]

    def send_raw(self, data: bytes) -> None:
        self.connect()
        with self._io_lock:
            self.sock.send(data) if self.transport == "udp" else self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> Response:
        """The next response from the server."""
        self.connect()
        try:
            item = self._responses.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise TimeoutError("no response from the server") from None
        if isinstance(item, Exception):
            raise item
        return item

    # -- requests ----------------------------------------------------------------------
    def build(self, method: str, *, uri: str | None = None, headers: list[tuple[str, str]] = (),
              body: bytes = b"", to: str | None = None, from_: str | None = None) -> Request:
        self.cseq += 1
        host, port = self.local
        aor = f"sip:{self.user}@{self.domain}"
        request = Request(method, uri or f"sip:{self.domain}", [
            ("Via", f"SIP/2.0/{self.via_transport} {host}:{port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", from_ or f"<{aor}>;tag={uuid.uuid4().hex[:8]}"),
            ("To", to or f"<{aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} {method}"),
            ("User-Agent", "sipim-test-ua"),
            *headers,
        ], body)
        return request

    def transact(self, request: Request) -> Response:
        """Send, and return the final response (skipping 1xx, and responses to earlier
        requests that arrive late -- a proxy that failed over may answer twice)."""
        self.send_raw(request.to_bytes())
        while True:
            message = self.receive()
            if message.call_id != request.call_id or message.cseq.seq != request.cseq.seq:
                self.stray_responses.append(message)
                continue
            if message.status >= 200:
                return message

    def answer(self, request: Request, status: int = 200, reason: str = "OK") -> None:
        from sipim.sip.message import make_response

        self.send_raw(make_response(request, status, reason, to_tag=uuid.uuid4().hex[:8]).to_bytes())

    def wait_request(self, method: str = "MESSAGE", *, timeout: float = 5.0, body: bytes | None = None) -> Request:
        """The next incoming request of ``method`` (already answered with ``auto_answer``);
        with ``body``, the next one carrying that body (others are skipped: a shared
        test server may owe this user messages of earlier tests)."""
        self.connect()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} arrived")
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(f"no {method} arrived") from None
            if request.method == method and (body is None or request.body == body):
                return request

    def drain(self, timeout: float = 1.0) -> list[Request]:
        """Every request that arrives within ``timeout``."""
        arrived = []
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                arrived.append(self._requests.get(timeout=remaining))
            except queue.Empty:
                break
        return arrived

    def no_request(self, timeout: float = 1.0) -> bool:
        """True when no request arrives within ``timeout``."""
        try:
            request = self._requests.get(timeout=timeout)
        except queue.Empty:
            return True
        self._requests.put(request)
        return False

    def message(self, to_user: str, text: str | bytes, *, uri: str | None = None,
                content_type: str = "text/plain", extra_headers: list[tuple[str, str]] = ()) -> Response:
        """Send an authenticated MESSAGE (answering the 407) and return the final response."""
        body = text.encode() if isinstance(text, str) else text
        target = uri or f"sip:{to_user}@{self.domain}"
        headers = [("Content-Type", content_type), *extra_headers]
        first, second = self.request_with_auth("MESSAGE", uri=target, to=f"<sip:{to_user}@{self.domain}>",
                                               headers=headers, body=body)
        return second if second is not None else first

    def request_with_auth(self, method: str, *, password: str | None = None, algorithm: str | None = None,
                          **kwargs) -> tuple[Response, Response | None]:
        """Send; on 401/407 answer the challenge once. Returns (first, second or None)."""
        first = self.transact(self.build(method, **kwargs))
        if first.status not in (401, 407):
            return first, None
        header = "WWW-Authenticate" if first.status == 401 else "Proxy-Authenticate"
        challenges = [parse_challenge(v) for v in first.headers.get_all(header)]
        if algorithm:
            challenges = [c for c in challenges if c.algorithm == algorithm]
        challenge = challenges[0]
        uri = str(kwargs.get("uri") or f"sip:{self.domain}")
        auth_user = self.auth_user or self.user
        authorization = build_authorization(
            challenge, method, uri, auth_user,
            ha1(auth_user, challenge.realm, password or self.password, challenge.algorithm))
        name = "Authorization" if first.status == 401 else "Proxy-Authorization"
        headers = [*kwargs.pop("headers", ()), (name, authorization)]
        second = self.transact(self.build(method, headers=headers, **kwargs))
        return first, second

    def contact(self, *, expires: int | None = None, reg_id: int | None = 1, extra: str = "") -> str:
        host, port = self.local
        value = f"<sip:{self.user}@{host}:{port};transport={self.transport}>"
        if self.instance:
            value += f';+sip.instance="<urn:uuid:{self.instance}>"'
            if reg_id is not None:
                value += f";reg-id={reg_id}"
        if expires is not None:
            value += f";expires={expires}"
        return value + extra

    def register(self, *, expires: int = 600, password: str | None = None, contact: str | None = None,
                 supported: str = "path, outbound, gruu", extra_headers: list[tuple[str, str]] = (),
                 algorithm: str | None = None) -> Response:
        headers = [("Contact", contact or self.contact()), ("Expires", str(expires)),
                   ("Supported", supported), *extra_headers]
        first, second = self.request_with_auth("REGISTER", password=password, headers=headers,
                                               algorithm=algorithm)
        return second if second is not None else first

    def __enter__(self) -> "TestUA":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()


def registered_device(server, user: str, transport: str, instance: str | None = None) -> TestUA:
    """A device of a provisioned user (password "<user>-secret") of a running `sipim
    serve`, connected over ``transport`` and registered with a fresh instance id."""
    agent = TestUA(transport, "127.0.0.1", server.ports[transport], user, f"{user}-secret",
                   ca_file=server.ca_file, instance=instance or str(uuid.uuid4())).connect()
    response = agent.register()
    assert response.status == 200, response
    return agent


@contextlib.contextmanager
def device_pool(server, default_transport: str):
    """``open_device(user, transport=..., instance=...)`` for a test; every device it
    opened is unregistered and closed at the end."""
    opened: list[TestUA] = []

    def open_device(user: str, transport: str = default_transport, **kwargs) -> TestUA:
        agent = registered_device(server, user, transport, **kwargs)
        opened.append(agent)
        return agent

    try:
        yield open_device
    finally:
        for agent in opened:
            try:
                agent.register(expires=0)
            except Exception:
                pass
            agent.close()

"""Requests the server cannot accept are answered on every transport, from a real
`sipim serve`: 505 for another SIP version (RFC 3261 §21.5.7, RFC 4475 "badvers")
and 400 naming the missing mandatory headers (RFC 3261 §8.1.1, §21.4.1).
On a connection the stream goes on when the bad message was framed by its
Content-Length, and is closed after the answer when framing is lost (§18.3)."""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.server import SipimProcess

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[SipimProcess]:
    """One server (SQLite) listening on UDP, TCP, TLS and WSS: storage plays no part here."""
    process = SipimProcess(tmp_path_factory.mktemp("sipim")).start()
    try:
        yield process
    finally:
        process.stop()


def request(transport: str, *, method: str = "OPTIONS", version: str = "SIP/2.0", drop: tuple[str, ...] = (),
            content_length: bool = True) -> bytes:
    """A request as a UA would send it, with the header lines named in ``drop`` left out."""
    tag = uuid.uuid4().hex[:8]
    lines = [
        f"{method} sip:example.test {version}",
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:5999;branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <sip:probe@example.test>;tag={tag}",
        "To: <sip:example.test>",
        f"Call-ID: {uuid.uuid4().hex}@127.0.0.1",
        f"CSeq: 1 {method}",
    ]
    if content_length:
        lines.append("Content-Length: 0")
    kept = [line for line in lines if line.split(":", 1)[0] not in drop]
    return ("\r\n".join(kept) + "\r\n\r\n").encode()


def status_line(response: bytes) -> bytes:
    return response.split(b"\r\n", 1)[0]


def header_lines(response: bytes) -> list[tuple[bytes, bytes]]:
    head = response.split(b"\r\n\r\n", 1)[0]
    return [(name, value.strip()) for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])]


def header_names(response: bytes) -> list[bytes]:
    return [name for name, _ in header_lines(response)]


def header(response: bytes, name: bytes) -> bytes | None:
    return next((value for key, value in header_lines(response) if key == name), None)


# -- UDP -------------------------------------------------------------------------------


def udp_exchange(server: SipimProcess, data: bytes, wait: float = TIMEOUT) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(wait)
        sock.sendto(data, ("127.0.0.1", server.ports["udp"]))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


# -- TCP and TLS -----------------------------------------------------------------------


class Connection:
    """A raw SIP connection that reads one response at a time (framed by Content-Length)."""

    def __init__(self, server: SipimProcess, transport: str) -> None:
        self.transport = transport
        sock = socket.create_connection(("127.0.0.1", server.ports[transport]), timeout=TIMEOUT)
        if transport == "tls":
            context = ssl.create_default_context(cafile=str(server.ca_file))
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65535)
        except (ConnectionError, ssl.SSLError):
            return False
        self.buffer += data
        return bool(data)

    def response(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before a response; got {self.buffer!r}"
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value)
        while len(rest) < length:
            assert self._fill(), "connection closed inside a response body"
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def closed_by_server(self) -> bool:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                if not self._fill():
                    return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["tcp", "tls"])
def connection(request, server) -> Iterator[Connection]:
    conn = Connection(server, request.param)
    yield conn
    conn.close()


def assert_still_serving(conn: Connection) -> None:
    conn.send(request(conn.transport))
    assert status_line(conn.response()) == b"SIP/2.0 200 OK"


# -- RFC 4475 badvers: 505 ---------------------------------------------------------------


def test_rfc4475_badvers_over_udp_gets_505(server):
    reply = udp_exchange(server, request("udp", version="SIP/7.0"))
    assert reply is not None and status_line(reply) == b"SIP/2.0 505 Version Not Supported"


def test_rfc4475_badvers_over_a_connection_gets_505_and_the_stream_goes_on(server, connection):
    connection.send(request(connection.transport, version="SIP/7.0"))
    reply = connection.response()
    assert status_line(reply) == b"SIP/2.0 505 Version Not Supported"
    assert header(reply, b"CSeq") == b"1 OPTIONS"
    assert header(reply, b"To").startswith(b"<sip:example.test>;tag=")  # §8.2.6.2
    assert_still_serving(connection)  # framed by its Content-Length: still in sync


def test_rfc4475_badvers_without_content_length_gets_505_then_the_connection_closes(server, connection):
    connection.send(request(connection.transport, version="SIP/7.0", content_length=False))
    assert status_line(connection.response()) == b"SIP/2.0 505 Version Not Supported"
    assert connection.closed_by_server()  # §18.3: framing is lost


# -- RFC 3261 §8.1.1 mandatory headers: 400 naming them --------------------------------


def test_rfc3261_8_1_1_missing_headers_over_udp_get_400_naming_them(server):
    reply = udp_exchange(server, request("udp", drop=("Call-ID", "CSeq")))
    assert reply is not None and status_line(reply) == b"SIP/2.0 400 Missing Call-ID, CSeq"
    assert header_names(reply)[:3] == [b"Via", b"From", b"To"]


def test_rfc3261_8_1_1_missing_headers_over_a_connection_get_400_and_the_stream_goes_on(server, connection):
    connection.send(request(connection.transport, drop=("From", "To")))
    reply = connection.response()
    assert status_line(reply) == b"SIP/2.0 400 Missing From, To"
    assert b"To" not in header_names(reply)
    assert_still_serving(connection)


def test_rfc3261_18_2_2_missing_via_over_a_connection_is_answered_on_it(server, connection):
    connection.send(request(connection.transport, drop=("Via", "Call-ID")))
    reply = connection.response()
    assert status_line(reply) == b"SIP/2.0 400 Missing Via, Call-ID"
    assert b"Via" not in header_names(reply)
    assert_still_serving(connection)


def test_rfc3261_18_2_2_missing_via_over_udp_cannot_be_answered(server):
    assert udp_exchange(server, request("udp", drop=("Via",)), wait=1.0) is None
    assert udp_exchange(server, request("udp")) is not None  # and the server carries on


def test_rfc3261_17_ack_missing_headers_is_never_answered(server, connection):
    connection.send(request(connection.transport, method="ACK", drop=("Call-ID",)))
    connection.send(request(connection.transport))
    # The first answer on the connection is the OPTIONS' 200: nothing came for the ACK.
    assert status_line(connection.response()) == b"SIP/2.0 200 OK"


def test_rfc3261_18_3_missing_headers_and_content_length_get_400_then_the_connection_closes(server, connection):
    connection.send(request(connection.transport, drop=("CSeq",), content_length=False))
    assert status_line(connection.response()) == b"SIP/2.0 400 Missing Content-Length"
    assert connection.closed_by_server()


# -- RFC 7118: the same over secure WebSocket -----------------------------------------


async def test_rfc7118_badvers_and_missing_headers_over_wss_are_answered(server):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    url = f"wss://127.0.0.1:{server.ports['wss']}/"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("sip",), ssl=context) as ws:
            await ws.send_str(request("wss", version="SIP/7.0").decode())
            reply = (await ws.receive(timeout=TIMEOUT)).data.encode()
            assert status_line(reply) == b"SIP/2.0 505 Version Not Supported"
            await ws.send_str(request("wss", drop=("Via", "To")).decode())
            reply = (await ws.receive(timeout=TIMEOUT)).data.encode()
            assert status_line(reply) == b"SIP/2.0 400 Missing Via, To"
            await ws.send_str(request("wss").decode())
            assert status_line((await ws.receive(timeout=TIMEOUT)).data.encode()) == b"SIP/2.0 200 OK"


def test_no_answer_path_failed_in_the_server(server):
    # Run last in this module: every malformed request above was handled without a bug.
    assert "could not answer a malformed message" not in server.log()
    assert server.alive()

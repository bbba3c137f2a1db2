"""SIP over TCP and TLS: framing (RFC 3261 §18.3), keep-alives (RFC 5626 §4.4.1),
connection reuse (RFC 5923, RFC 5626 §5.3), limits, TLS with the bootstrap CA."""

from __future__ import annotations

import asyncio
import ssl
import warnings

import pytest

from sipim.net import Target
from sipim.transport.manager import TransportManager
from sipim.transport.tls import client_ssl_context, server_ssl_context

from transport_helpers import next_item, ok_response, options_request


async def started(recorder, *listens, **options) -> TransportManager:
    manager = TransportManager(list(listens), **recorder.callbacks(), **options)
    await manager.start()
    return manager


@pytest.fixture
async def tcp_manager(recorder):
    manager = await started(recorder, "tcp:127.0.0.1:0")
    yield manager
    await manager.stop()


async def connect(manager: TransportManager, ssl_context=None, index: int = 0):
    _, host, port = manager.listening()[index]
    return await asyncio.open_connection(host, port, ssl=ssl_context)


async def test_rfc3261_18_3_message_split_into_one_byte_pieces_is_framed(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    for byte in options_request(body=b"hello"):
        writer.write(bytes([byte]))
        await writer.drain()
    message, source = await next_item(recorder.messages)
    assert message.method == "OPTIONS" and message.body == b"hello"
    assert source.remote == writer.get_extra_info("sockname")
    assert (source.transport, source.reliable, source.secure) == ("tcp", True, False)
    assert source.flow is not None and source.flow.transport == "tcp"
    writer.close()


async def test_rfc3261_18_3_two_messages_in_one_segment_arrive_in_order(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    writer.write(options_request(call_id="one") + options_request(call_id="two"))
    first, source_one = await next_item(recorder.messages)
    second, source_two = await next_item(recorder.messages)
    assert (first.call_id, second.call_id) == ("one", "two")
    assert source_one.flow is source_two.flow
    writer.close()


async def test_rfc5626_4_4_1_double_crlf_ping_gets_a_crlf_pong(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"
    assert recorder.messages.empty() and recorder.errors.empty()
    writer.close()


async def test_rfc5626_5_3_reply_by_flow_id_reaches_the_same_connection(tcp_manager, recorder):
    _, writer_other = await connect(tcp_manager)
    writer_other.write(options_request(call_id="other"))
    await next_item(recorder.messages)
    reader, writer = await connect(tcp_manager)
    writer.write(options_request())
    _, source = await next_item(recorder.messages)
    assert tcp_manager.get_flow(source.flow.id) is source.flow
    # The target's host/port are deliberately wrong: the flow id wins.
    assert tcp_manager.send(ok_response(), Target("tcp", "192.0.2.99", 5060, flow_id=source.flow.id))
    assert await asyncio.wait_for(reader.readexactly(len(ok_response())), 3) == ok_response()
    writer.close()
    writer_other.close()


async def test_rfc3261_18_2_2_response_to_the_source_address_reuses_the_connection(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    writer.write(options_request())
    _, source = await next_item(recorder.messages)
    assert tcp_manager.send(ok_response(), Target("tcp", *source.remote))
    assert await asyncio.wait_for(reader.readexactly(len(ok_response())), 3) == ok_response()
    writer.close()


async def test_closed_connection_is_reported_once_and_leaves_the_flow_table(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    writer.write(options_request())
    _, source = await next_item(recorder.messages)
    writer.close()
    closed = await next_item(recorder.closed)
    assert closed is source.flow and closed.closed
    assert tcp_manager.get_flow(source.flow.id) is None
    assert len(tcp_manager.flows) == 0


async def test_rfc3261_18_3_bad_content_length_reports_error_and_closes(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    writer.write(options_request().replace(b"Content-Length: 0", b"Content-Length: x"))
    error, source, raw = await next_item(recorder.errors)
    assert not error.recoverable and error.partial is not None and error.partial.method == "OPTIONS"
    assert raw.startswith(b"OPTIONS sip:")
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
    assert await next_item(recorder.closed) is source.flow


async def test_message_with_bad_header_but_sound_framing_keeps_the_connection(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    bad = options_request().replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    writer.write(bad + options_request(call_id="after"))
    error, _, _ = await next_item(recorder.errors)
    assert error.recoverable
    message, _ = await next_item(recorder.messages)
    assert message.call_id == "after"
    writer.close()


async def test_rfc4475_badvers_is_reported_and_the_connection_goes_on(tcp_manager, recorder):
    reader, writer = await connect(tcp_manager)
    writer.write(options_request().replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1) + options_request(call_id="after"))
    error, _, _ = await next_item(recorder.errors)
    assert (error.status, error.recoverable) == (505, True) and error.partial.call_id == "call-1@client"
    message, _ = await next_item(recorder.messages)
    assert message.call_id == "after"
    writer.close()


async def test_rfc3261_18_3_answer_to_a_fatal_error_is_flushed_before_the_close(recorder):
    # The core answers from inside on_parse_error (as SipimServer does); the close
    # that follows a loss of framing must not drop that answer.
    def answer(error, source, raw):
        source.flow.send(b"SIP/2.0 400 " + error.reason.encode() + b"\r\nContent-Length: 0\r\n\r\n")

    manager = TransportManager(["tcp:127.0.0.1:0"], on_message=recorder.on_message, on_parse_error=answer)
    await manager.start()
    try:
        reader, writer = await connect(manager)
        writer.write(options_request().replace(b"Content-Length: 0\r\n", b""))
        data = await asyncio.wait_for(reader.read(), 3)  # everything until the server closes
        assert data == b"SIP/2.0 400 Missing Content-Length\r\nContent-Length: 0\r\n\r\n"
        writer.close()
    finally:
        await manager.stop()


async def test_handler_exception_does_not_close_the_connection(recorder):
    calls = []

    def broken(message, source):
        calls.append(message)
        if len(calls) == 1:
            raise RuntimeError("core bug")
        recorder.messages.put_nowait((message, source))

    manager = TransportManager(["tcp:127.0.0.1:0"], on_message=broken)
    await manager.start()
    try:
        reader, writer = await connect(manager)
        writer.write(options_request(call_id="first"))
        writer.write(options_request(call_id="second"))
        message, _ = await next_item(recorder.messages)
        assert message.call_id == "second"
        writer.close()
    finally:
        await manager.stop()


async def test_connections_per_source_ip_are_capped(recorder):
    manager = await started(recorder, "tcp:127.0.0.1:0", max_connections_per_ip=2)
    try:
        connections = [await connect(manager) for _ in range(3)]
        for index, (_, writer) in enumerate(connections):
            writer.write(options_request(call_id=f"c{index}"))
        received = {(await next_item(recorder.messages))[0].call_id for _ in range(2)}
        assert received == {"c0", "c1"}
        refused_reader = connections[2][0]
        assert await asyncio.wait_for(refused_reader.read(), 3) == b""
        assert recorder.messages.empty()
        assert manager.flows.inbound_count("127.0.0.1") == 2
        for _, writer in connections:
            writer.close()
    finally:
        await manager.stop()


async def test_connection_that_never_sends_a_valid_message_is_closed_after_the_idle_timeout(recorder):
    manager = await started(recorder, "tcp:127.0.0.1:0", idle_timeout=0.05)
    try:
        silent_reader, silent_writer = await connect(manager)
        talking_reader, talking_writer = await connect(manager)
        talking_writer.write(options_request())
        await next_item(recorder.messages)
        assert await asyncio.wait_for(silent_reader.read(), 3) == b""
        await next_item(recorder.closed)
        assert len(manager.flows) == 1  # the one that spoke SIP stays
        silent_writer.close()
        talking_writer.close()
    finally:
        await manager.stop()


async def test_rfc5923_outbound_tcp_connection_is_opened_once_and_reused(tcp_manager, recorder):
    accepted: asyncio.Queue = asyncio.Queue()

    async def peer(reader, writer):
        accepted.put_nowait((reader, writer))

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        assert tcp_manager.send(options_request(call_id="a"), Target("tcp", host, port))
        assert tcp_manager.send(options_request(call_id="b"), Target("tcp", host, port))
        reader, writer = await next_item(accepted)
        expected = options_request(call_id="a") + options_request(call_id="b")
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 3) == expected
        assert accepted.empty()
        # The peer's answer on that connection reaches the core as from a tcp flow.
        writer.write(ok_response())
        message, source = await next_item(recorder.messages)
        assert message.status == 200 and source.remote == (host, port)
        assert tcp_manager.send(options_request(call_id="c"), Target("tcp", host, port))
        assert await asyncio.wait_for(reader.readexactly(len(options_request(call_id="c"))), 3)
        assert accepted.empty()
        writer.close()
    finally:
        server.close()


async def test_send_to_an_unreachable_tcp_peer_does_not_raise(tcp_manager, recorder):
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    assert tcp_manager.send(options_request(), Target("tcp", "127.0.0.1", port))
    for _ in range(20):
        await asyncio.sleep(0.01)
        if not tcp_manager._connecting:
            break
    assert not tcp_manager._connecting and len(tcp_manager.flows) == 0


# -- TLS ---------------------------------------------------------------------

@pytest.fixture
async def tls_manager(recorder, tls_files):
    manager = await started(recorder, "tls:127.0.0.1:0",
                            ssl_context=server_ssl_context(tls_files.server_cert, tls_files.server_key),
                            client_ssl_context=client_ssl_context(tls_files.ca_cert))
    yield manager
    await manager.stop()


async def test_tls_handshake_verifies_against_the_bootstrap_ca(tls_manager, tls_files, recorder):
    reader, writer = await connect(tls_manager, client_ssl_context(tls_files.ca_cert))
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    writer.write(options_request())
    message, source = await next_item(recorder.messages)
    assert (source.transport, source.secure, source.reliable) == ("tls", True, True)
    assert source.remote == writer.get_extra_info("sockname")
    tls_manager.send(ok_response(), Target("tls", *source.remote, flow_id=source.flow.id))
    assert await asyncio.wait_for(reader.readexactly(len(ok_response())), 3) == ok_response()
    writer.close()


async def test_tls_client_without_the_ca_rejects_the_server(tls_manager):
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(tls_manager, ssl.create_default_context())


def tls_1_1_client(cafile) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


async def test_tls_1_1_is_refused(tls_manager, tls_files):
    # Control: this client does get TLS 1.1 from a server that still allows it...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        permissive.load_cert_chain(tls_files.server_cert, tls_files.server_key)
        permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    control = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0, ssl=permissive)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", control.sockets[0].getsockname()[1], ssl=tls_1_1_client(tls_files.ca_cert))
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
    writer.close()
    control.close()
    # ...but not from ours (TLS 1.2 minimum).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await connect(tls_manager, tls_1_1_client(tls_files.ca_cert))


async def test_outbound_tls_connection_verifies_the_peer_and_is_reused(tls_manager, tls_files, recorder):
    accepted: asyncio.Queue = asyncio.Queue()
    server = await asyncio.start_server(
        lambda reader, writer: accepted.put_nowait((reader, writer)), "127.0.0.1", 0,
        ssl=server_ssl_context(tls_files.server_cert, tls_files.server_key))
    host, port = server.sockets[0].getsockname()[:2]
    try:
        assert tls_manager.send(options_request(call_id="a"), Target("tls", host, port))
        reader, writer = await next_item(accepted)
        assert await asyncio.wait_for(reader.readexactly(len(options_request(call_id="a"))), 3)
        assert tls_manager.send(options_request(call_id="b"), Target("tls", host, port))
        assert await asyncio.wait_for(reader.readexactly(len(options_request(call_id="b"))), 3)
        assert accepted.empty()
        writer.close()
    finally:
        server.close()


async def test_peer_that_does_not_read_is_dropped_at_the_send_buffer_cap(recorder):
    manager = await started(recorder, "tcp:127.0.0.1:0", max_send_buffer=256 * 1024)
    try:
        reader, writer = await connect(manager)
        writer.write(options_request())
        _, source = await next_item(recorder.messages)
        chunk = b"x" * 65536
        for _ in range(400):  # 25 MB: more than the kernel buffers can hide
            source.flow.send(chunk)
            if source.flow.closed:
                break
        assert source.flow.closed
        assert await next_item(recorder.closed) is source.flow
        writer.close()
    finally:
        await manager.stop()


async def test_stop_closes_every_flow_and_reports_it(recorder):
    manager = await started(recorder, "tcp:127.0.0.1:0", "udp:127.0.0.1:0")
    reader, writer = await connect(manager)
    writer.write(options_request())
    _, source = await next_item(recorder.messages)
    await asyncio.wait_for(manager.stop(), 3)
    assert await next_item(recorder.closed) is source.flow
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert manager.listening() == []
    writer.close()


async def test_coroutine_callbacks_run_as_tasks(recorder):
    async def on_message(message, source):
        await asyncio.sleep(0)
        recorder.messages.put_nowait((message, source))

    manager = TransportManager(["tcp:127.0.0.1:0"], on_message=on_message)
    await manager.start()
    try:
        _, writer = await connect(manager)
        writer.write(options_request())
        message, _ = await next_item(recorder.messages)
        assert message.method == "OPTIONS"
        writer.close()
    finally:
        await manager.stop()

"""SIP over WebSocket (RFC 7118) on the aiohttp server, plain and secure."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from sipim.net import Target
from sipim.transport.manager import TransportManager
from sipim.transport.tls import client_ssl_context, server_ssl_context

from transport_helpers import next_item, ok_response, options_request


def http_app() -> web.Application:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the web role")

    app.router.add_get("/hello", hello)
    return app


@pytest.fixture
async def ws_manager(recorder):
    manager = TransportManager(["ws:127.0.0.1:0"], **recorder.callbacks(), http_app_factory=http_app)
    await manager.start()
    yield manager
    await manager.stop()


def url(manager: TransportManager, scheme: str = "ws", path: str = "/") -> str:
    _, host, port = manager.listening()[0]
    return f"{scheme}://{host}:{port}{path}"


async def test_rfc7118_4_1_upgrade_offering_sip_is_accepted_and_answers_with_sip(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(ws_manager), protocols=("sip",)) as ws:
            assert ws.protocol == "sip"
            await ws.send_str(options_request().decode())
            message, source = await next_item(recorder.messages)
            assert message.method == "OPTIONS"
            assert (source.transport, source.reliable, source.secure) == ("ws", True, False)
            assert source.remote == ws.get_extra_info("sockname")[:2]
            assert source.flow is not None and ws_manager.get_flow(source.flow.id) is source.flow
            # RFC 7118 §5: one SIP message per WebSocket message, sent as text.
            assert ws_manager.send(ok_response(), Target("ws", "192.0.2.1", 1, flow_id=source.flow.id))
            reply = await asyncio.wait_for(ws.receive(), 3)
            assert reply.type == aiohttp.WSMsgType.TEXT and reply.data == ok_response().decode()


async def test_rfc7118_4_2_binary_frames_are_accepted_and_non_utf8_goes_out_binary(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(ws_manager, path="/any/path"), protocols=("sip",)) as ws:
            await ws.send_bytes(options_request(body=b"\xff\xfe"))
            message, source = await next_item(recorder.messages)
            assert message.body == b"\xff\xfe"
            source.flow.send(b"SIP/2.0 200 OK\r\nX: \xff\r\n\r\n")
            reply = await asyncio.wait_for(ws.receive(), 3)
            assert reply.type == aiohttp.WSMsgType.BINARY


async def test_rfc7118_5_garbage_message_is_reported_and_the_connection_stays(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(ws_manager), protocols=("sip",)) as ws:
            await ws.send_str("not sip at all")
            _, source, raw = await next_item(recorder.errors)
            assert raw == b"not sip at all" and source.transport == "ws"
            await ws.send_str(options_request().decode())
            await next_item(recorder.messages)


async def test_rfc7118_6_crlf_keepalive_gets_a_crlf_pong(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(ws_manager), protocols=("sip",)) as ws:
            await ws.send_str("\r\n\r\n")
            reply = await asyncio.wait_for(ws.receive(), 3)
            assert reply.data == "\r\n"


async def test_rfc7118_4_1_upgrade_without_sip_subprotocol_is_refused_with_400(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as excinfo:
            await session.ws_connect(url(ws_manager))
        assert excinfo.value.status == 400
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url(ws_manager), protocols=("xmpp",))
        # The same check in plain HTTP, to read the explanation.
        async with session.get(url(ws_manager, "http"), headers={
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as response:
            assert response.status == 400
            assert "sip" in await response.text()
    assert len(ws_manager.flows) == 0


async def test_the_websocket_port_still_serves_the_http_application(ws_manager):
    async with aiohttp.ClientSession() as session:
        async with session.get(url(ws_manager, "http", "/hello")) as response:
            assert response.status == 200
            assert await response.text() == "hello from the web role"


async def test_closing_the_websocket_reports_the_flow_closed(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(ws_manager), protocols=("sip",)) as ws:
            await ws.send_str(options_request().decode())
            _, source = await next_item(recorder.messages)
        assert await next_item(recorder.closed) is source.flow
    assert ws_manager.get_flow(source.flow.id) is None
    # A WebSocket server cannot open a connection to a browser (RFC 7118).
    assert not ws_manager.send(ok_response(), Target("ws", *source.remote))


async def test_server_closes_a_websocket_flow(ws_manager, recorder):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(ws_manager), protocols=("sip",)) as ws:
            await ws.send_str(options_request().decode())
            _, source = await next_item(recorder.messages)
            source.flow.close()
            reply = await asyncio.wait_for(ws.receive(), 3)
            assert reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert await next_item(recorder.closed) is source.flow


async def test_websocket_connections_per_source_ip_are_capped(recorder):
    manager = TransportManager(["ws:127.0.0.1:0"], **recorder.callbacks(), max_connections_per_ip=1)
    await manager.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url(manager), protocols=("sip",)):
                with pytest.raises(aiohttp.WSServerHandshakeError) as excinfo:
                    await session.ws_connect(url(manager), protocols=("sip",))
                assert excinfo.value.status == 503
    finally:
        await manager.stop()


async def test_wss_with_the_bootstrap_ca(recorder, tls_files):
    manager = TransportManager(["wss:127.0.0.1:0"], **recorder.callbacks(),
                               ssl_context=server_ssl_context(tls_files.server_cert, tls_files.server_key))
    await manager.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url(manager, "wss"), protocols=("sip",),
                                          ssl=client_ssl_context(tls_files.ca_cert)) as ws:
                assert ws.protocol == "sip"
                await ws.send_str(options_request().decode())
                _, source = await next_item(recorder.messages)
                assert (source.transport, source.secure) == ("wss", True)
                manager.send(ok_response(), Target("wss", *source.remote, flow_id=source.flow.id))
                reply = await asyncio.wait_for(ws.receive(), 3)
                assert reply.data == ok_response().decode()
    finally:
        await manager.stop()


def test_tls_listener_without_a_certificate_is_a_clear_error(recorder):
    with pytest.raises(ValueError, match="wss:127.0.0.1:0: a TLS listener needs a server certificate"):
        TransportManager(["wss:127.0.0.1:0"], **recorder.callbacks())


async def test_stop_closes_open_websockets_promptly(recorder):
    manager = TransportManager(["ws:127.0.0.1:0"], **recorder.callbacks())
    await manager.start()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url(manager), protocols=("sip",)) as ws:
            await ws.send_str(options_request().decode())
            _, source = await next_item(recorder.messages)
            await asyncio.wait_for(manager.stop(), 3)
            assert await next_item(recorder.closed) is source.flow
            reply = await asyncio.wait_for(ws.receive(), 3)
            assert reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

"""REGISTER over secure WebSocket (RFC 7118), as a browser client does it."""

from __future__ import annotations

import ssl
import uuid

import aiohttp

from sipim.sip.digest import build_authorization, ha1, parse_challenge
from sipim.sip.message import Request, Response
from sipim.sip.parser import parse_message
from sipim.sip.uri import parse_name_addr


def register(cseq: int, call_id: str, instance: str, auth: str | None = None) -> bytes:
    headers = [
        ("Via", f"SIP/2.0/WSS {uuid.uuid4().hex[:8]}.invalid;branch=z9hG4bK{uuid.uuid4().hex[:12]}"),
        ("Max-Forwards", "69"),
        ("To", "<sip:alice@example.test>"),
        ("From", f"<sip:alice@example.test>;tag={uuid.uuid4().hex[:6]}"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        # JsSIP style: random *.invalid host, reg-id + instance, outbound
        ("Contact", f'<sip:x7k2@{uuid.uuid4().hex[:8]}.invalid;transport=ws>;+sip.ice;reg-id=1;'
                    f'+sip.instance="<urn:uuid:{instance}>";expires=600'),
        ("Expires", "600"),
        ("Supported", "path, gruu, outbound"),
        ("User-Agent", "JsSIP-like test"),
    ]
    if auth:
        headers.append(("Authorization", auth))
    return Request("REGISTER", "sip:example.test", headers).to_bytes()


async def test_rfc7118_register_over_wss_offers_md5_first_and_succeeds(server):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    url = f"wss://127.0.0.1:{server.ports['wss']}/"
    call_id, instance = uuid.uuid4().hex, str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("sip",), ssl=context) as ws:
            assert ws.protocol == "sip"  # RFC 7118 §4.1: Chromium insists on it
            await ws.send_str(register(1, call_id, instance).decode())
            first = parse_message((await ws.receive(timeout=5)).data.encode())
            assert isinstance(first, Response) and first.status == 401
            challenges = [parse_challenge(v) for v in first.headers.get_all("WWW-Authenticate")]
            # JsSIP reads only the first challenge and knows only MD5.
            assert challenges[0].algorithm == "MD5"
            auth = build_authorization(challenges[0], "REGISTER", "sip:example.test", "alice",
                                       ha1("alice", "example.test", "alice-secret", "MD5"))
            await ws.send_str(register(2, call_id, instance, auth).decode())
            ok = parse_message((await ws.receive(timeout=5)).data.encode())
            assert ok.status == 200, ok
            mine = [parse_name_addr(c) for c in ok.headers.get_all("Contact")
                    if instance in c]
            assert len(mine) == 1 and "pub-gruu" in mine[0].params


async def test_rfc7118_websocket_without_sip_subprotocol_is_refused(server):
    context = ssl.create_default_context(cafile=str(server.ca_file))
    url = f"wss://127.0.0.1:{server.ports['wss']}/"
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, ssl=context) as ws:
                message = await ws.receive(timeout=5)
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        except aiohttp.WSServerHandshakeError as error:
            assert error.status == 400


async def test_rfc7118_request_uri_is_the_registered_contact_of_a_websocket_device(server):
    """JsSIP's Contact has a random user and a `*.invalid` host: the request must go
    down the device's own WebSocket (RFC 5626 §5.3) with the Contact as Request-URI
    (RFC 3261 §16.6 step 6 via the location service), or JsSIP answers 404."""
    import asyncio

    from tests.support.sipua import TestUA

    context = ssl.create_default_context(cafile=str(server.ca_file))
    url = f"wss://127.0.0.1:{server.ports['wss']}/"
    call_id, instance = uuid.uuid4().hex, str(uuid.uuid4())
    contact_user = f"js{uuid.uuid4().hex[:6]}"
    contact_uri = f"sip:{contact_user}@{uuid.uuid4().hex[:10]}.invalid;transport=ws"

    def register_carol(cseq: int, auth: str | None = None) -> str:
        headers = [
            ("Via", f"SIP/2.0/WSS {uuid.uuid4().hex[:8]}.invalid;branch=z9hG4bK{uuid.uuid4().hex[:12]}"),
            ("Max-Forwards", "69"), ("To", "<sip:carol@example.test>"),
            ("From", f"<sip:carol@example.test>;tag={uuid.uuid4().hex[:6]}"),
            ("Call-ID", call_id), ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f'<{contact_uri}>;+sip.ice;reg-id=1;+sip.instance="<urn:uuid:{instance}>";expires=600'),
            ("Expires", "600"), ("Supported", "path, gruu, outbound"),
        ]
        if auth:
            headers.append(("Authorization", auth))
        return Request("REGISTER", "sip:example.test", headers).to_bytes().decode()

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("sip",), ssl=context) as ws:
            await ws.send_str(register_carol(1))
            challenge = parse_message((await ws.receive(timeout=5)).data.encode())
            md5 = parse_challenge(challenge.headers.get_all("WWW-Authenticate")[0])
            auth = build_authorization(md5, "REGISTER", "sip:example.test", "carol",
                                       ha1("carol", "example.test", "carol-secret", "MD5"))
            await ws.send_str(register_carol(2, auth))
            assert parse_message((await ws.receive(timeout=5)).data.encode()).status == 200

            text = f"to the browser {uuid.uuid4().hex[:6]}"
            with TestUA("tls", "127.0.0.1", server.ports["tls"], "bob", "bob-secret",
                        ca_file=server.ca_file) as bob:
                sending = asyncio.get_running_loop().run_in_executor(None, bob.message, "carol", text)
                while True:
                    delivered = parse_message((await ws.receive(timeout=10)).data.encode())
                    if isinstance(delivered, Request) and delivered.body == text.encode():
                        break
                assert str(delivered.uri) == contact_uri
                assert delivered.uri.user == contact_user
                reply = Response(200, "OK", [(n, v) for n, v in delivered.headers
                                             if n in ("Via", "From", "To", "Call-ID", "CSeq")])
                await ws.send_str(reply.to_bytes().decode())
                assert (await sending).status == 200


async def test_websocket_listeners_offer_only_md5_by_default(server):
    """Browser stacks keep one challenge (SIP.js the first, JsSIP 3.13 the last) and
    know only MD5: every challenge on a wss listener is MD5 unless configured."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    url = f"wss://127.0.0.1:{server.ports['wss']}/"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("sip",), ssl=context) as ws:
            await ws.send_str(register(1, uuid.uuid4().hex, str(uuid.uuid4())).decode())
            first = parse_message((await ws.receive(timeout=5)).data.encode())
            algorithms = [parse_challenge(v).algorithm for v in first.headers.get_all("WWW-Authenticate")]
            assert algorithms == ["MD5"]

"""SIP over UDP (RFC 3261 §18) with real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest

from sipim.net import Target
from sipim.transport.manager import TransportManager

from transport_helpers import next_item, ok_response, options_request


class DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr) -> None:
        self.received.put_nowait((data, addr))


@pytest.fixture
async def udp_manager(recorder):
    manager = TransportManager(["udp:127.0.0.1:0"], **recorder.callbacks())
    await manager.start()
    yield manager
    await manager.stop()


@pytest.fixture
async def client(udp_manager):
    _, host, port = udp_manager.listening()[0]
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        DatagramClient, remote_addr=(host, port))
    yield transport, protocol
    transport.close()


async def test_port_zero_binds_a_real_port(udp_manager):
    [(transport, host, port)] = udp_manager.listening()
    assert (transport, host) == ("udp", "127.0.0.1") and port > 0


async def test_rfc3261_18_2_1_datagram_reaches_core_with_exact_source_and_reply_goes_back(
        udp_manager, client, recorder):
    transport, protocol = client
    transport.sendto(options_request())
    message, source = await next_item(recorder.messages)
    assert message.method == "OPTIONS" and message.call_id == "call-1@client"
    # Via received/rport (RFC 3581 §4) need the exact source address of the packet.
    assert source.remote == transport.get_extra_info("sockname")
    assert source.local == udp_manager.listening()[0][1:]
    assert (source.transport, source.flow, source.reliable, source.secure) == ("udp", None, False, False)

    assert udp_manager.send(ok_response(), Target("udp", *source.remote))
    data, addr = await next_item(protocol.received)
    assert data == ok_response()
    assert addr == source.local


async def test_rfc3261_18_3_garbage_datagram_goes_to_on_parse_error_with_the_raw_bytes(client, recorder):
    transport, _ = client
    transport.sendto(b"this is not SIP\r\n\r\n")
    error, source, raw = await next_item(recorder.errors)
    assert raw == b"this is not SIP\r\n\r\n"
    assert source.remote == transport.get_extra_info("sockname")
    assert recorder.messages.empty()


async def test_rfc5626_4_4_1_crlf_datagrams_are_ignored_on_udp(client, recorder):
    transport, protocol = client
    transport.sendto(b"\r\n\r\n")
    transport.sendto(options_request())
    await next_item(recorder.messages)  # datagrams on loopback arrive in order
    assert recorder.messages.empty() and recorder.errors.empty()
    assert protocol.received.empty()  # no pong on UDP


async def test_rfc5626_4_4_2_stun_binding_request_is_answered_with_the_mapped_address(client, recorder):
    transport, protocol = client
    transaction_id = bytes(range(12))
    transport.sendto(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction_id)
    data, _ = await next_item(protocol.received)
    kind, length, cookie = struct.unpack_from("!HHI", data)
    assert (kind, cookie, data[8:20]) == (0x0101, 0x2112A442, transaction_id)
    attribute, attribute_length, _, family, xport = struct.unpack_from("!HHBBH", data, 20)
    assert (attribute, family) == (0x0020, 0x01)
    xaddress = data[28:32]
    address = bytes(a ^ b for a, b in zip(xaddress, struct.pack("!I", 0x2112A442)))
    host, port = transport.get_extra_info("sockname")
    assert (str(ipaddress.ip_address(address)), xport ^ 0x2112) == (host, port)
    assert recorder.messages.empty() and recorder.errors.empty()


async def test_handler_exception_does_not_stop_the_udp_listener(recorder):
    received = []

    def broken(message, source):
        received.append(message)
        if len(received) == 1:
            raise RuntimeError("core bug")
        recorder.messages.put_nowait((message, source))

    manager = TransportManager(["udp:127.0.0.1:0"], on_message=broken)
    await manager.start()
    try:
        _, host, port = manager.listening()[0]
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            DatagramClient, remote_addr=(host, port))
        transport.sendto(options_request(call_id="first"))
        transport.sendto(options_request(call_id="second"))
        message, _ = await next_item(recorder.messages)
        assert message.call_id == "second"
        transport.close()
    finally:
        await manager.stop()


async def test_send_to_an_address_family_without_udp_listener_fails(udp_manager):
    assert not udp_manager.send(ok_response(), Target("udp", "::1", 5060))




def _ipv6_loopback_available() -> bool:
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback on this host")
async def test_ipv6_listener_reports_two_tuple_addresses_and_replies_over_ipv6(recorder):
    manager = TransportManager(["udp:127.0.0.1:0", "udp:[::1]:0"], **recorder.callbacks())
    await manager.start()
    try:
        _, host, port = manager.listening()[1]
        assert host == "::1"
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            DatagramClient, remote_addr=(host, port))
        transport.sendto(options_request())
        _, source = await next_item(recorder.messages)
        assert source.remote == transport.get_extra_info("sockname")[:2] and source.remote[0] == "::1"
        assert source.local == ("::1", port)
        # The IPv6 socket is chosen for an IPv6 destination.
        assert manager.send(ok_response(), Target("udp", "[::1]", source.remote[1]))
        data, addr = await next_item(protocol.received)
        assert data == ok_response() and addr[:2] == ("::1", port)
        transport.close()
    finally:
        await manager.stop()

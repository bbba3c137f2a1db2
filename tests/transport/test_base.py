"""Network values (sipim/net.py: listen addresses, Source/Target) and the asyncio clock."""

from __future__ import annotations

import asyncio

import pytest

from sipim.net import ListenSpec, Source, Target
from sipim.transport.clock import AsyncioClock


@pytest.mark.parametrize("text, expected", [
    ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
    ("TLS:0.0.0.0:5061", ListenSpec("tls", "0.0.0.0", 5061)),
    ("tcp:[::1]:5060", ListenSpec("tcp", "::1", 5060)),
    ("wss:sip.example.test:443", ListenSpec("wss", "sip.example.test", 443)),
    ("ws:127.0.0.1:0", ListenSpec("ws", "127.0.0.1", 0)),
])
def test_listen_spec_parses_proto_host_port(text, expected):
    assert ListenSpec.parse(text) == expected


def test_listen_spec_round_trips_through_str():
    for text in ("udp:127.0.0.1:5060", "tcp:[::1]:5060"):
        assert str(ListenSpec.parse(text)) == text


@pytest.mark.parametrize("text, complaint", [
    ("sctp:127.0.0.1:5060", "unknown transport 'sctp'"),
    ("udp:127.0.0.1:70000", "port '70000'"),
    ("udp:127.0.0.1:http", "port 'http'"),
    ("udp:127.0.0.1", "expected PROTO:HOST:PORT"),
    ("tcp:::1:5060", "brackets"),
    ("tcp:[::1]5060", "[addr]:port"),
    ("tcp:[nothost]:5060", "not an IPv6 address"),
    ("127.0.0.1:5060", "unknown transport '127.0.0.1'"),
])
def test_listen_spec_rejects_bad_input_with_a_clear_message(text, complaint):
    with pytest.raises(ValueError, match="listen address") as excinfo:
        ListenSpec.parse(text)
    assert complaint in str(excinfo.value)


def test_rfc3261_18_only_udp_is_unreliable_and_tls_wss_are_secure():
    for transport in ("udp", "tcp", "tls", "ws", "wss"):
        source = Source(transport, ("192.0.2.1", 5060), ("192.0.2.2", 5060))
        target = Target(transport, "192.0.2.1", 5060)
        assert source.reliable == target.reliable == (transport != "udp")
        assert source.secure == target.secure == (transport in ("tls", "wss"))


async def test_asyncio_clock_runs_timers_and_cancels_them():
    clock = AsyncioClock(asyncio.get_running_loop())
    fired: list[str] = []
    done = asyncio.Event()
    start = clock.now()
    clock.call_later(0.01, lambda: fired.append("first"))
    cancelled = clock.call_later(0.005, lambda: fired.append("cancelled"))
    cancelled.cancel()
    clock.call_later(0.02, done.set)
    await asyncio.wait_for(done.wait(), 2)
    assert fired == ["first"]
    assert clock.now() - start >= 0.019  # uvloop keeps millisecond time


async def test_asyncio_clock_survives_a_failing_timer_callback():
    clock = AsyncioClock()
    done = asyncio.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    clock.call_later(0, broken)
    clock.call_later(0.001, done.set)
    await asyncio.wait_for(done.wait(), 2)

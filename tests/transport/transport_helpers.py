"""Helpers shared by the transport tests: a recorder of core callbacks and sample SIP messages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sipim.net import Source
from sipim.transport.base import Flow


@dataclass
class Recorder:
    """Collects what the transports hand to the core, with queues to await on."""

    messages: asyncio.Queue = field(default_factory=asyncio.Queue)
    errors: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: asyncio.Queue = field(default_factory=asyncio.Queue)

    def on_message(self, message: Any, source: Source) -> None:
        self.messages.put_nowait((message, source))

    def on_parse_error(self, error: Exception, source: Source, raw: bytes) -> None:
        self.errors.put_nowait((error, source, raw))

    def on_flow_closed(self, flow: Flow) -> None:
        self.closed.put_nowait(flow)

    def callbacks(self) -> dict[str, Any]:
        return dict(on_message=self.on_message, on_parse_error=self.on_parse_error,
                    on_flow_closed=self.on_flow_closed)


async def next_item(queue: asyncio.Queue, timeout: float = 3.0) -> Any:
    return await asyncio.wait_for(queue.get(), timeout)


def options_request(branch: str = "z9hG4bK-1", call_id: str = "call-1@client", body: bytes = b"") -> bytes:
    head = (
        "OPTIONS sip:example.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.test>;tag=a1\r\n"
        "To: <sip:example.test>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def ok_response(branch: str = "z9hG4bK-1", call_id: str = "call-1@client") -> bytes:
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        "From: <sip:alice@example.test>;tag=a1\r\n"
        "To: <sip:example.test>;tag=s1\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()

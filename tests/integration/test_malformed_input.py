"""Garbage, truncated and malformed messages: precise 400s, and the server keeps answering."""

from __future__ import annotations

import os
import random

from tests.interop.clients import send_garbage_tcp, send_garbage_udp, sip_options_ping

VALID = (
    b"OPTIONS sip:example.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKgarbage1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:x@example.test>;tag=1\r\n"
    b"To: <sip:example.test>\r\n"
    b"Call-ID: garbage-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def garbage_payloads(seed: int = 3261, count: int = 300) -> list[bytes]:
    rng = random.Random(seed)
    payloads = [b"", b"\x00" * 50, b"\r\n\r\n", b"SIP/2.0 200\r\n\r\n", b"INVITE\r\n\r\n",
                b"OPTIONS sip:x SIP/2.0\r\nVia: broken\r\n\r\n", VALID[:-20], VALID.replace(b"CSeq: 1", b"CSeq: x"),
                VALID.replace(b"Content-Length: 0", b"Content-Length: 99999"), b"A" * 70000]
    for _ in range(count):
        kind = rng.randrange(3)
        if kind == 0:
            payloads.append(os.urandom(rng.randrange(1, 1500)))
        elif kind == 1:
            payloads.append(VALID[: rng.randrange(1, len(VALID))])
        else:
            data = bytearray(VALID)
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            payloads.append(bytes(data))
    return payloads


def test_udp_garbage_burst_leaves_server_answering_options(server):
    send_garbage_udp("127.0.0.1", server.ports["udp"], [p[:65000] for p in garbage_payloads()])
    assert sip_options_ping("127.0.0.1", server.ports["udp"], timeout=3) == 200
    assert server.alive()


def test_tcp_garbage_burst_leaves_server_answering_options(server):
    for chunk in range(0, 300, 50):
        send_garbage_tcp("127.0.0.1", server.ports["tcp"], garbage_payloads(seed=chunk)[chunk:chunk + 50],
                         read_timeout=0.3)
    assert sip_options_ping("127.0.0.1", server.ports["tcp"], transport="tcp", timeout=3) == 200
    assert server.alive()


def test_rfc3261_malformed_request_gets_400_naming_the_problem(server):
    bad = VALID.replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    [reply] = send_garbage_udp("127.0.0.1", server.ports["udp"], [bad], wait_for_reply=2)
    assert reply is not None
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"SIP/2.0 400 ")
    assert b"CSeq" in status_line


def test_cseq_method_mismatch_gets_400(server):
    bad = VALID.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 REGISTER")
    [reply] = send_garbage_udp("127.0.0.1", server.ports["udp"], [bad], wait_for_reply=2)
    assert reply is not None and reply.startswith(b"SIP/2.0 400 ")


def test_rfc3261_8_1_1_missing_call_id_gets_400_naming_it(server):
    # Every transport: tests/integration/test_rfc3261_error_answers.py
    bad = VALID.replace(b"Call-ID: garbage-1\r\n", b"")
    [reply] = send_garbage_udp("127.0.0.1", server.ports["udp"], [bad], wait_for_reply=2)
    assert reply is not None and reply.startswith(b"SIP/2.0 400 Missing Call-ID\r\n")
    assert sip_options_ping("127.0.0.1", server.ports["udp"], timeout=3) == 200

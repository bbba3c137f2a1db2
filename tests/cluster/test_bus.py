"""The bus between worker processes (sipim/cluster/bus.py): framing, batching, back-pressure."""

from __future__ import annotations

import asyncio
import pickle

from sipim.cluster.bus import Bus, make_mesh


def mesh_buses(count=2, **kwargs):
    ends = make_mesh(count, 1 << 20)
    return [Bus(i, {peer: sock for (me, peer), sock in ends.items() if me == i}, **kwargs) for i in range(count)], ends


async def settle():
    for _ in range(5):
        await asyncio.sleep(0.01)


async def test_messages_arrive_in_order_with_the_sender_index():
    (a, b), _ = mesh_buses()
    received = []
    b.on("x", lambda peer, *args: received.append((peer, *args)))
    a.start(), b.start()
    for n in range(100):
        a.broadcast(("x", n, f"text {n}"))
    a.send(1, ("x", "direct"))
    await settle()
    assert received == [(0, n, f"text {n}") for n in range(100)] + [(0, "direct")]
    a.stop(), b.stop()


async def test_one_datagram_per_peer_per_tick():
    (a, b, c), _ = mesh_buses(3)
    seen = {1: [], 2: []}
    b.on("x", lambda peer, n: seen[1].append(n))
    c.on("x", lambda peer, n: seen[2].append(n))
    for bus in (a, b, c):
        bus.start()
    for n in range(50):
        a.broadcast(("x", n))
    await settle()
    assert a.sent_datagrams == 2  # one to each peer for the 50 messages of that tick
    assert seen == {1: list(range(50)), 2: list(range(50))}
    for bus in (a, b, c):
        bus.stop()


async def test_a_batch_larger_than_a_datagram_is_split():
    (a, b), _ = mesh_buses(max_datagram=4096)
    received = []
    b.on("x", lambda peer, blob: received.append(blob))
    a.start(), b.start()
    blobs = [bytes([n]) * 1000 for n in range(40)]
    for blob in blobs:
        a.send(1, ("x", blob))
    await settle()
    assert received == blobs
    assert a.sent_datagrams > 5
    a.stop(), b.stop()


async def test_a_peer_that_does_not_read_gets_its_messages_later():
    (a, b), ends = mesh_buses(max_datagram=65536)
    received = []
    b.on("x", lambda peer, blob: received.append(blob))
    a.start()  # b does not read yet: its socket fills, a keeps the rest
    blobs = [bytes([n % 256]) * 60000 for n in range(200)]
    for blob in blobs:
        a.send(1, ("x", blob))
        await asyncio.sleep(0)
    assert a.pending()[1] > 0
    b.start()
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len(received) == len(blobs):
            break
    assert received == blobs
    assert a.pending()[1] == 0
    a.stop(), b.stop()


async def test_the_backlog_is_bounded():
    (a, b), ends = mesh_buses(max_datagram=65536, max_backlog=1 << 20)
    a.start()
    for n in range(400):
        a.send(1, ("x", b"y" * 60000))
        await asyncio.sleep(0)
    assert a.pending()[1] <= (1 << 20) + 65536
    a.stop()


async def test_a_bad_message_does_not_stop_the_others():
    (a, b), ends = mesh_buses()
    received = []

    def handler(peer, n):
        if n == 1:
            raise RuntimeError("boom")
        received.append(n)

    b.on("x", handler)
    a.start(), b.start()
    ends[(0, 1)].send(b"not a pickle")
    for n in range(3):
        a.broadcast(("x", n))
    a.broadcast(("unknown kind",))
    await settle()
    assert received == [0, 2]
    a.stop(), b.stop()


def test_payload_is_a_pickled_list_of_tuples():
    ends = make_mesh(2, 1 << 16)
    bus = Bus(0, {1: ends[(0, 1)]})
    bus.broadcast(("x", 1))
    bus.flush()
    assert pickle.loads(ends[(1, 0)].recv(65536)) == [("x", 1)]

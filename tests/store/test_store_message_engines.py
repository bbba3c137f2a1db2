"""Pager messages on real engines: several stores (processes, nodes) on one database,
persistence, crash durability."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
from store_samples import ALICE, BOB, T0, sample_history_pair, sample_message

from sipim.store import MESSAGE_DELIVERED, MESSAGE_PENDING, Store, WriteBatch, open_store

DEVICES = ("phone", "laptop", "<sip:bob@192.0.2.5>")


@pytest.fixture
async def two_nodes(database_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, like two sipim nodes (or a server and the CLI)."""
    first = await open_store(database_url)
    second = await open_store(database_url)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


async def test_concurrent_claims_from_two_nodes_have_exactly_one_winner(two_nodes):
    node_a, node_b = two_nodes
    messages = [sample_message(n) for n in range(1, 11)]
    await node_a.write_batch(WriteBatch(messages=messages))
    pairs = [(m.id, device) for m in messages for device in DEVICES]
    now = T0 + 1
    for round_number in range(8):
        # Every (message, device) claimed twice by each node, all at once.
        attempts = [(pair, node, name) for pair in pairs for node, name in ((node_a, "a"), (node_b, "b")) * 2]
        results = await asyncio.gather(
            *(node.claim_delivery(message_id, device, name, now) for (message_id, device), node, name in attempts)
        )
        wins = collections.Counter(pair for (pair, _, _), won in zip(attempts, results) if won)
        assert wins == collections.Counter(pairs), f"round {round_number}"
        # Every attempt failed: release all claims concurrently, then race again.
        await asyncio.gather(
            *(node.finish_delivery(message_id, device, False, now)
              for (message_id, device), node in zip(pairs, [node_a, node_b] * len(pairs)))
        )  # fmt: skip
    # Final round: both nodes race to claim, winners deliver at once: per message,
    # exactly one finish_delivery reports "first delivery".
    results = await asyncio.gather(
        *(node.claim_delivery(message_id, device, "x", now) for message_id, device in pairs for node in two_nodes)
    )
    assert sum(results) == len(pairs)
    first_deliveries = await asyncio.gather(
        *(node.finish_delivery(message_id, device, True, now)
          for (message_id, device), node in zip(pairs, [node_a, node_b] * len(pairs)))
    )  # fmt: skip
    firsts = collections.Counter(message_id for (message_id, _), first in zip(pairs, first_deliveries) if first)
    assert firsts == collections.Counter(m.id for m in messages)
    assert all(m.state == MESSAGE_DELIVERED for m in await node_b.undelivered_for_device(BOB, "tablet", None, now))


async def test_concurrent_expiry_sweeps_report_each_message_once(two_nodes):
    node_a, node_b = two_nodes
    messages = [sample_message(n, lifetime=float(n)) for n in range(1, 41)]
    await node_a.write_batch(WriteBatch(messages=messages))
    reported = []
    for now in (T0 + 10, T0 + 20, T0 + 20, T0 + 100):
        sweeps = await asyncio.gather(*(node.expire_messages(now) for node in two_nodes for _ in range(2)))
        reported += [m.id for sweep in sweeps for m in sweep]
    assert sorted(reported) == sorted(m.id for m in messages)


async def test_same_message_accepted_by_two_nodes_at_once_is_stored_once(two_nodes):
    node_a, node_b = two_nodes
    # The same 20 requests reach both nodes (e.g. resent by the client to another
    # node); each node gives them its own ids.
    for_a = [sample_message(n) for n in range(1, 21)]
    for_b = [sample_message(n, id=f"b{n:031x}") for n in range(1, 21)]
    result_a, result_b = await asyncio.gather(
        node_a.write_batch(WriteBatch(messages=for_a, history=[e for m in for_a for e in sample_history_pair(m)])),
        node_b.write_batch(WriteBatch(messages=for_b, history=[e for m in for_b for e in sample_history_pair(m)])),
    )
    stored = await node_a.messages_pending()
    assert len(stored) == 20
    skipped = result_a.duplicate_message_ids | result_b.duplicate_message_ids
    assert skipped.isdisjoint(m.id for m in stored)
    assert len(skipped) == 20
    assert sorted(e.message_id for e in await node_b.query_history(BOB)) == sorted(m.id for m in stored)


async def test_messages_deliveries_and_history_survive_close_and_reopen(database_url: str):
    delivered, pending = sample_message(1), sample_message(2, created_at=T0 + 1)
    store = await open_store(database_url)
    await store.write_batch(WriteBatch(messages=[delivered, pending], history=sample_history_pair(delivered)))
    assert await store.claim_delivery(delivered.id, "phone", "node-a", T0 + 2)
    await store.finish_delivery(delivered.id, "phone", True, T0 + 2)
    assert await store.claim_delivery(pending.id, "phone", "node-a", T0 + 2)
    await store.update_history_status(delivered.id, "delivered")
    await store.close()

    store = await open_store(database_url)
    try:
        assert (await store.get_message(delivered.id)).state == MESSAGE_DELIVERED
        assert await store.messages_pending() == [pending]
        # the phone's claim on `pending` is still held; the laptop gets both
        assert await store.undelivered_for_device(BOB, "phone", None, T0 + 3) == []
        assert [m.id for m in await store.undelivered_for_device(BOB, "laptop", None, T0 + 3)] == [
            delivered.id, pending.id,
        ]  # fmt: skip
        assert await store.claim_delivery(pending.id, "phone", "node-b", T0 + 3) is False
        assert [(e.message_id, e.status) for e in await store.query_history(ALICE)] == [(delivered.id, "delivered")]
        assert await store.find_duplicate(ALICE, "imdn-2", "", 0) == pending
    finally:
        await store.close()


async def test_rfc3428_7_message_answered_after_commit_survives_process_kill_9(database_url: str):
    # The IM server answers 202 once write_batch returned; a crash right after must
    # not lose the message (SQLite: WAL + synchronous=NORMAL).
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from store_samples import sample_history_pair, sample_message
        from sipim.store import WriteBatch, open_store

        async def main():
            store = await open_store({database_url!r})
            message = sample_message(7)
            await store.write_batch(WriteBatch(messages=[message], history=sample_history_pair(message)))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", child)
    assert await process.wait() == -9
    store = await open_store(database_url)
    try:
        assert await store.messages_pending() == [sample_message(7)]
        assert (await store.get_message(sample_message(7).id)).state == MESSAGE_PENDING
        assert await store.query_history(BOB) == sample_history_pair(sample_message(7))[1:]
    finally:
        await store.close()

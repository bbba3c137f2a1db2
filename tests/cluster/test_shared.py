"""Tables in memory shared by the workers (sipim/cluster/shared.py).

The "workers" here are the same process holding two views of one mapping, which is
what forked processes see; the lock is a POSIX record lock, tested across a real
fork in test_nonce_count_lock_holds_across_processes.
"""

from __future__ import annotations

import os


from sipim.cluster.shared import SharedMemory
from sipim.sip.clock import FakeClock
from sipim.sip.digest import DigestResult, DigestServer, build_authorization, ha1, parse_challenge, parse_credentials

SECRET = b"k" * 32
REALM = "example.test"


def memory(workers=2, **kwargs):
    settings = dict(affinity_slots=1024, nonce_slots=64)
    settings.update(kwargs)
    return SharedMemory(workers, **settings)


def credentials(server, nc=1, cnonce="c1", nonce=None):
    challenge = parse_challenge(server.challenges(["MD5"])[0])
    if nonce is not None:
        challenge = type(challenge)(realm=challenge.realm, nonce=nonce, algorithm="MD5", qop_options=("auth",))
    value = build_authorization(challenge, "REGISTER", "sip:example.test", "alice",
                                ha1("alice", REALM, "pw", "MD5"), nc=nc, cnonce=cnonce)
    return parse_credentials(value)


def two_servers(shared, clock):
    """Workers 0 and 1, each with its view of the shared table."""
    return [DigestServer(REALM, SECRET, clock, nonce_lifetime=300,
                         counts=shared.nonce_counts(300, index, window=32.0))
            for index in range(2)]


def test_rfc7616_nonce_count_replay_is_refused_by_another_worker():
    clock = FakeClock(1_000_000.0)
    a, b = two_servers(memory(), clock)
    first = credentials(a)
    assert a.verify(first, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.OK
    # The same request again at the same worker: a replay (its transaction would have
    # absorbed a retransmission).
    assert a.verify(first, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.REPLAY
    # At the other worker, within 64*T1: most likely a UDP retransmission whose
    # transaction worker 0 holds -- refused all the same, with a re-challenge.
    assert b.verify(first, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.STALE
    # The next count is fine wherever it lands; going back is not.
    second = credentials(a, nc=2, nonce=first.nonce)
    assert b.verify(second, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.OK
    assert b.verify(second, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.REPLAY
    assert a.verify(first, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.REPLAY
    # Later than 64*T1 a replay is a replay at any worker.
    clock.advance(33)
    assert a.verify(second, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.REPLAY


def test_a_nonce_issued_by_one_worker_is_accepted_by_another():
    clock = FakeClock(1_000_000.0)
    a, b = two_servers(memory(), clock)
    assert b.verify(credentials(a), "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.OK


def test_an_evicted_nonce_is_stale_never_replayable():
    clock = FakeClock(1_000_000.0)
    ways = SharedMemory.NONCE_WAYS
    shared = memory(nonce_slots=ways)  # one bucket
    a, b = two_servers(shared, clock)
    first = credentials(a)
    assert a.verify(first, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.OK
    for n in range(ways):
        clock.advance(0.01)
        assert b.verify(credentials(b, cnonce=f"x{n}"), "REGISTER",
                        ha1("alice", REALM, "pw")) is DigestResult.OK
    # `first` was evicted: replaying it must not find an empty table.
    assert a.verify(first, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.STALE
    assert b.verify(credentials(a, nc=2, nonce=first.nonce), "REGISTER",
                    ha1("alice", REALM, "pw")) is DigestResult.STALE


def test_expired_slots_are_reused_without_raising_the_watermark():
    clock = FakeClock(1_000_000.0)
    ways = SharedMemory.NONCE_WAYS
    shared = memory(nonce_slots=ways)  # one bucket
    (a, _) = two_servers(shared, clock)
    for n in range(ways):
        assert a.verify(credentials(a, cnonce=f"x{n}"), "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.OK
    clock.advance(301)
    old_but_unseen = credentials(a)  # issued now, so genuine and fresh
    clock.advance(1)
    assert a.verify(old_but_unseen, "REGISTER", ha1("alice", REALM, "pw")) is DigestResult.OK


def test_nonce_count_lock_holds_across_processes():
    """Two processes race to accept the same count: exactly one wins."""
    shared = memory(nonce_slots=4096)  # room for every nonce: no eviction in this test
    counts = shared.nonce_counts(300, 0)
    results = []
    for attempt in range(20):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            outcome = counts.advance(f"nonce-{attempt}", 1000.0, 1, 1001.0)
            os.write(write, outcome.value.encode())
            os._exit(0)
        os.close(write)
        mine = counts.advance(f"nonce-{attempt}", 1000.0, 1, 1001.0)
        os.waitpid(pid, 0)
        theirs = DigestResult(os.read(read, 100).decode())
        os.close(read)
        results.append(sorted([mine.value, theirs.value]))
    assert all(pair == ["ok", "replay"] for pair in results), results


def test_affinity_a_retransmission_goes_to_the_worker_that_took_it():
    shared = memory(workers=3)
    table = shared.worker_table()
    for index in range(3):
        table.started(index, 100 + index, 1000.0)
    zero, one = shared.affinity(0, 32.0), shared.affinity(1, 32.0)
    key = hash(("z9hG4bKabc", "192.0.2.1", 5060))
    assert zero.owner(key, 1010.0) is None          # worker 0 takes it
    assert zero.owner(key, 1010.5) is None          # its own retransmission: stays
    assert one.owner(key, 1011.0) == 0              # landed on worker 1: goes to 0
    assert one.owner(key, 1010.0 + 33) is None      # after 64*T1 it is a new request
    assert zero.owner(key, 1010.0 + 34) == 1


def test_affinity_ignores_a_worker_that_died_or_restarted():
    shared = memory(workers=2)
    table = shared.worker_table()
    table.started(0, 100, 1000.0)
    table.started(1, 101, 1000.0)
    zero, one = shared.affinity(0, 32.0), shared.affinity(1, 32.0)
    key = hash(("z9hG4bKdef", "192.0.2.1", 5060))
    assert zero.owner(key, 1010.0) is None
    table.stopped(0)
    assert one.owner(key, 1011.0) is None  # worker 0 is not running: take it here
    other = hash(("z9hG4bKghi", "192.0.2.1", 5060))
    table.started(0, 100, 1000.0)
    assert zero.owner(other, 1012.0) is None
    table.started(0, 200, 1013.0)  # worker 0's process was replaced: its transactions are gone
    assert one.owner(other, 1014.0) is None


def test_affinity_keeps_entries_while_the_table_is_not_full():
    shared = memory(workers=2, affinity_slots=4096)
    table = shared.worker_table()
    table.started(0, 1, 0.0)
    table.started(1, 2, 0.0)
    zero, one = shared.affinity(0, 32.0), shared.affinity(1, 32.0)
    keys = [hash((f"z9hG4bK{n}", "192.0.2.1", 5060)) for n in range(1024)]  # a quarter full
    for key in keys:
        assert zero.owner(key, 10.0) is None
    # (Hashing fills a few buckets past four: their oldest entries go first.)
    assert sum(1 for key in keys if one.peek(key, 11.0) == 0) >= 0.99 * len(keys)


def test_affinity_a_full_bucket_gives_up_its_oldest_entry():
    shared = memory(workers=2, affinity_slots=4)  # one bucket of four
    table = shared.worker_table()
    table.started(0, 1, 0.0)
    table.started(1, 2, 0.0)
    zero, one = shared.affinity(0, 32.0), shared.affinity(1, 32.0)
    keys = [hash((f"z9hG4bK{n}", "192.0.2.1", 5060)) for n in range(5)]
    for n, key in enumerate(keys):
        assert zero.owner(key, 10.0 + n) is None
    assert [one.owner(key, 15.0) for key in keys[1:]] == [0, 0, 0, 0]
    assert one.owner(keys[0], 15.0) is None  # the oldest went: now worker 1 takes it

"""Tables in memory shared by the worker processes: one anonymous MAP_SHARED mapping.

The supervisor maps it before forking (``mmap.mmap(-1, size)`` is MAP_SHARED and
anonymous), so every worker -- and a worker started again after a crash -- sees the
same bytes.  Python has no atomic compare-and-swap, so each table says how it copes
with two processes touching it at once:

- ``WorkerTable``: per worker, when its current process started and its pid.  Only
  the supervisor writes it.
- ``AffinityTable`` (UDP transaction affinity, RFC 3261 §17.2.3): a slot per hash
  of branch + sent-by says which worker took that request and when; one 64-bit word
  per slot, written and read whole, no lock.  A race (two workers taking the first
  copy and a retransmission at the same instant, or a slot overwritten by another
  transaction) only means a retransmission is handled where it landed: a MESSAGE is
  then refused as a duplicate by the store (unique sender + Call-ID + CSeq), and a
  REGISTER fails its nonce-count check -- what a single process would do with a
  retransmission arriving after its transaction ended.
- ``SharedNonceCounts`` (digest nonce-counts, RFC 7616 §3.3): set-associative slots
  read and changed under a POSIX record lock per bucket (``fcntl.lockf`` on a memfd),
  so a replayed count is refused even when two workers get the replay at the same
  instant.  The kernel drops the lock of a process that dies holding it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import tempfile

from sipim.sip.digest import DigestResult

WORD = 8
_MASK24 = 0xFFFFFF
# Affinity times are kept in 1/16 s, 24 bits: they wrap every ~12 days, far beyond 64*T1.
_TICKS = 16


def _lock_file() -> int:
    """A file descriptor to take record locks on, inherited by the forked workers."""
    try:
        return os.memfd_create("sipim-cluster-locks")
    except (AttributeError, OSError):
        handle = tempfile.TemporaryFile()
        fd = os.dup(handle.fileno())
        handle.close()
        return fd


class SharedMemory:
    """The mapping and the tables carved out of it (made once, in the supervisor)."""

    # A bucket's oldest of four is evicted: with the table full (it is, at a few thousand
    # requests a second) that is a nonce issued about max_tracked_nonces / rate seconds
    # ago, so only a nonce answered later than that is re-challenged (as with one process).
    NONCE_WAYS = 4

    def __init__(self, workers: int, *, affinity_slots: int, nonce_slots: int) -> None:
        self.workers = workers
        self.affinity_slots = affinity_slots
        self.nonce_buckets = max(1, -(-nonce_slots // self.NONCE_WAYS))
        bucket_words = 1 + SharedNonceCounts.SLOT_WORDS * self.NONCE_WAYS
        self._worker_words = 2 * workers
        total = self._worker_words + affinity_slots + self.nonce_buckets * bucket_words
        self.mmap = mmap.mmap(-1, total * WORD)
        self.lock_fd = _lock_file()
        words = memoryview(self.mmap)
        offset = 0
        self.worker_words = words[offset: offset + self._worker_words * WORD].cast("q")
        offset += self._worker_words * WORD
        self.affinity_words = words[offset: offset + affinity_slots * WORD].cast("Q")
        offset += affinity_slots * WORD
        self.nonce_words = words[offset: offset + self.nonce_buckets * bucket_words * WORD].cast("q")

    def worker_table(self) -> WorkerTable:
        return WorkerTable(self.worker_words, self.workers)

    def affinity(self, index: int, window: float) -> AffinityTable:
        return AffinityTable(self.affinity_words, self.worker_table(), index, window)

    def nonce_counts(self, nonce_lifetime: float, index: int = 0, window: float = 32.0) -> SharedNonceCounts:
        return SharedNonceCounts(self.nonce_words, self.nonce_buckets, self.NONCE_WAYS, self.lock_fd,
                                 nonce_lifetime, index=index, window=window)


class WorkerTable:
    """Per worker: [start time of its current process in ms, its pid (0: not running)]."""

    def __init__(self, words: memoryview, workers: int) -> None:
        self._words = words
        self.workers = workers

    def started(self, index: int, pid: int, now: float) -> None:
        self._words[2 * index] = int(now * 1000)
        self._words[2 * index + 1] = pid

    def stopped(self, index: int) -> None:
        self._words[2 * index + 1] = 0

    def pid(self, index: int) -> int:
        return self._words[2 * index + 1]

    def running_since(self, index: int) -> float | None:
        """When the worker's current process started; None when it is not running."""
        if not 0 <= index < self.workers or not self._words[2 * index + 1]:
            return None
        return self._words[2 * index] / 1000.0


class AffinityTable:
    """Which worker holds the server transaction of a UDP request (RFC 3261 §17.2.3).

    A slot is one 64-bit word: tag (32 bits of the key's hash) | time (24 bits, 1/16 s)
    | worker index (8 bits).  Keys are ``hash()`` of (branch, sent-by host, port): the
    workers are forked from one process, so they share its hash seed.  Slots come in
    buckets of ``WAYS``; a new entry takes an empty slot or the oldest of its bucket,
    so an entry younger than the window is lost only when the table holds more than
    its size of requests per window (``cluster_affinity_slots`` / 64*T1 per second).
    A lost entry means a retransmission is handled where it lands: a MESSAGE is then
    refused by the store as a duplicate, a REGISTER fails its nonce-count check.
    """

    WAYS = 4

    def __init__(self, words: memoryview, workers: WorkerTable, index: int, window: float) -> None:
        self._words = words
        self._buckets = max(1, len(words) // self.WAYS)
        self._workers = workers
        self.index = index
        # RFC 3261 §17.2.2 Timer J / §17.2.1 Timer H: 64*T1 is how long a server
        # transaction answers retransmissions.
        self._window_ticks = int(window * _TICKS) + 1

    def owner(self, key: int, now: float) -> int | None:
        """None: this worker takes the request (the table now says so).  Otherwise the
        index of the worker that took it within the window and is still running."""
        slots, tag, now_ticks = self._bucket(key, now)
        words = self._words
        for slot in slots:
            value = words[slot]
            if value >> 32 == tag and value:
                age = (now_ticks - ((value >> 8) & _MASK24)) & _MASK24
                if age <= self._window_ticks:
                    owner = value & 0xFF
                    if owner == self.index:
                        return None  # ours: the transaction layer absorbs it
                    since = self._workers.running_since(owner)
                    # Taken by the worker's current process (not one that died since)?
                    if since is not None and now - age / _TICKS >= since - 1.0 / _TICKS:
                        return owner
                words[slot] = (tag << 32) | (now_ticks << 8) | self.index  # take its place
                return None
        # Not there: take an empty slot, else the oldest of the bucket.
        victim = slots[0]
        victim_age = -1
        for slot in slots:
            value = words[slot]
            if not value:
                victim = slot
                break
            age = (now_ticks - ((value >> 8) & _MASK24)) & _MASK24
            if age > victim_age:
                victim, victim_age = slot, age
        words[victim] = (tag << 32) | (now_ticks << 8) | self.index
        return None

    def _bucket(self, key: int, now: float) -> tuple[range, int, int]:
        """The slots of ``key``'s bucket, its tag, and ``now`` in slot ticks."""
        base = (key % self._buckets) * self.WAYS
        return range(base, base + self.WAYS), (key >> 24) & 0xFFFFFFFF, int(now * _TICKS) & _MASK24

    def peek(self, key: int, now: float) -> int | None:
        """The worker recorded for ``key`` within the window, without taking it (tests, logs)."""
        slots, tag, now_ticks = self._bucket(key, now)
        for slot in slots:
            value = self._words[slot]
            if value and value >> 32 == tag:
                if (now_ticks - ((value >> 8) & _MASK24)) & _MASK24 <= self._window_ticks:
                    return value & 0xFF
        return None


class SharedNonceCounts:
    """``sipim.sip.digest.NonceCounts`` shared by the workers: the same rules as the
    one-process table (REPLAY for a count not above the highest accepted, STALE for
    a nonce whose count may have been evicted), in fixed memory.

    Buckets of ``ways`` slots; a nonce's bucket comes from its hash.  Bucket layout in
    64-bit words: [watermark ms, then per slot: tag, issued ms, highest nc, when and by
    which worker that count was accepted (ms << 8 | worker)].  When every slot of a
    bucket holds a live nonce, the one issued first is evicted and its issue time
    raises the bucket's watermark; a nonce not in its bucket and issued at or before
    the watermark is STALE.  Watermarks are per bucket, changed under the bucket's
    lock like the slots, so no update is ever lost between processes.

    One difference from a single process: the highest count itself, presented again at
    another worker within 64*T1 of being accepted, is answered STALE (a re-challenge),
    not REPLAY.  That is a UDP retransmission whose transaction the other worker holds
    and the affinity table lost track of (a single process would answer it from its
    transaction); a REPLAY would refuse it with 403 and count it towards lock-out.
    A replay by an attacker gains nothing from it: a fresh nonce is needed either way.
    """

    SLOT_WORDS = 4

    def __init__(self, words: memoryview, buckets: int, ways: int, lock_fd: int, nonce_lifetime: float,
                 *, index: int = 0, window: float = 32.0) -> None:
        self._words = words
        self._buckets = buckets
        self._ways = ways
        self._bucket_words = 1 + self.SLOT_WORDS * ways
        self._fd = lock_fd
        self._lifetime_ms = int(nonce_lifetime * 1000)
        self._index = index
        self._window_ms = int(window * 1000)

    def known(self, nonce: str) -> float | None:
        # Read without the lock a slot may be half written: the caller checks the
        # nonce's signature instead (an HMAC, about a microsecond).
        return None

    def advance(self, nonce: str, issued_at: float, nc: int, now: float) -> DigestResult:
        key = hash(nonce) or 1
        bucket = key % self._buckets
        fd = self._fd
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, bucket)
        try:
            return self._advance(bucket, key, int(issued_at * 1000), nc, int(now * 1000))
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, bucket)

    def _advance(self, bucket: int, key: int, issued_ms: int, nc: int, now_ms: int) -> DigestResult:
        words = self._words
        base = bucket * self._bucket_words
        lifetime = self._lifetime_ms
        free = oldest = -1
        oldest_issued = 0
        accepted = (now_ms << 8) | self._index
        for slot in range(base + 1, base + self._bucket_words, self.SLOT_WORDS):
            tag = words[slot]
            if tag == key:
                highest = words[slot + 2]
                if nc > highest:
                    words[slot + 2] = nc
                    words[slot + 3] = accepted
                    return DigestResult.OK
                by = words[slot + 3]
                if nc == highest and by & 0xFF != self._index and now_ms - (by >> 8) <= self._window_ms:
                    return DigestResult.STALE  # a retransmission another worker took (see above)
                return DigestResult.REPLAY
            if tag == 0 or now_ms - words[slot + 1] > lifetime:
                if free < 0:
                    free = slot  # empty, or an expired nonce (answered STALE anyway)
            elif oldest < 0 or words[slot + 1] < oldest_issued:
                oldest, oldest_issued = slot, words[slot + 1]
        if issued_ms <= words[base]:
            # Its count may have been evicted: a fresh nonce instead of risking a replay.
            return DigestResult.STALE
        if free < 0:
            free = oldest
            if oldest_issued > words[base]:
                words[base] = oldest_issued
        # Forget the old occupant before writing the new one: a process killed in
        # between leaves an empty slot (the old nonce is covered by the watermark or
        # expired), never the old nonce with the new count.
        words[free] = 0
        words[free + 1] = issued_ms
        words[free + 2] = nc
        words[free + 3] = accepted
        words[free] = key
        return DigestResult.OK

    def __len__(self) -> int:
        # Live entries cannot be told from expired ones without the time; count all.
        words = self._words
        return sum(1 for bucket in range(self._buckets)
                   for slot in range(bucket * self._bucket_words + 1, (bucket + 1) * self._bucket_words,
                                     self.SLOT_WORDS)
                   if words[slot])

"""Sliding-window rate limits (sans-IO: the caller passes the time).

Each key (a phone number, a source address) may be hit ``limit`` times within
``window`` seconds; a refused hit is not counted and learns how long to wait
(the HTTP ``Retry-After``, RFC 9110 §10.2.3).  Memory is bounded: with too many
keys, the ones whose hits have all left the window go first, then the oldest.
"""

from __future__ import annotations

import math
from collections import deque


class RateLimiter:
    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float) -> int | None:
        """Count a hit; None when allowed, else the whole seconds to wait."""
        hits = self._hits_of(key, now)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now))
        hits.append(now)
        return None

    def _hits_of(self, key: str, now: float) -> deque[float]:
        """The hits of ``key`` (a new, empty record when it has none; room is made first)."""
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._max_keys:
                self._forget(now)
            hits = self._hits[key] = deque()
        return hits

    def _forget(self, now: float) -> None:
        stale = [key for key, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]
        if not stale:
            stale = sorted(self._hits, key=lambda key: self._hits[key][-1])[: max(1, len(self._hits) // 10)]
        for key in stale:
            del self._hits[key]


def local_limiter(name: str, limit: int, window: float) -> RateLimiter:
    """The ``make_limiter`` of one process: ``name`` only matters to worker processes,
    which count a limit together (sipim/cluster ReplicatedRateLimiter)."""
    return RateLimiter(limit, window)

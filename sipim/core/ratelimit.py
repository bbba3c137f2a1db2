"""Sliding-window counters (sans-IO: the caller passes the time).

One implementation for every limit that counts events per key over the last
``window`` seconds: the rate limits of the provisioning and XDM services
(`RateLimiter`, below) and the authentication lock-out (sipim/core/lockout.py).
Memory is bounded: with too many keys, the ones whose events have all left the
window go first, then the oldest tenth.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindow:
    """The times of the events of each key within the last ``window`` seconds."""

    def __init__(self, window: float, *, max_keys: int = 100_000) -> None:
        self.window = window
        self._max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def events(self, key: str, now: float) -> deque[float]:
        """The events of ``key`` still in the window, oldest first; the caller appends
        the ones it counts.  A key without events gets a new record (room made first)."""
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self._max_keys:
                self._make_room(now)
            events = self._events[key] = deque()
        else:
            while events and events[0] <= now - self.window:
                events.popleft()
        return events

    def forget(self, key: str) -> None:
        self._events.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._events

    def __len__(self) -> int:
        return len(self._events)

    def _make_room(self, now: float) -> None:
        stale = [key for key, events in self._events.items() if not events or events[-1] <= now - self.window]
        if not stale:
            stale = sorted(self._events, key=lambda key: self._events[key][-1])[: max(1, len(self._events) // 10)]
        for key in stale:
            del self._events[key]


class RateLimiter:
    """Each key (a phone number, a source address) may be hit ``limit`` times within
    ``window`` seconds; a refused hit is not counted and learns how long to wait (the
    HTTP ``Retry-After``, RFC 9110 §10.2.3)."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self._hits = SlidingWindow(window, max_keys=max_keys)

    def hit(self, key: str, now: float) -> int | None:
        """Count a hit; None when allowed, else the whole seconds to wait."""
        hits = self._hits.events(key, now)
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now))
        hits.append(now)
        return None

    def _hits_of(self, key: str, now: float) -> deque[float]:
        """The hits of ``key`` in the window, for a subclass that counts hits made
        elsewhere (sipim/cluster ReplicatedRateLimiter)."""
        return self._hits.events(key, now)


def local_limiter(name: str, limit: int, window: float) -> RateLimiter:
    """The ``make_limiter`` of one process: ``name`` only matters to worker processes,
    which count a limit together (sipim/cluster ReplicatedRateLimiter)."""
    return RateLimiter(limit, window)

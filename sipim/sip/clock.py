"""Time as the sans-IO SIP layer sees it.

The protocol code (transactions, digest nonces) never reads the system clock or
sleeps: it is handed a `Clock`.  Production code passes an adapter over the asyncio
loop (written in sipim/transport/; `loop.call_later` already returns a handle with
`.cancel()`), tests pass `FakeClock` and move time by hand, so every timer of
RFC 3261 §17 can be checked without sleeping.
"""

from __future__ import annotations

import heapq
import time
from typing import Callable, Protocol

__all__ = ["TimerHandle", "TimeSource", "Clock", "FakeClock", "WallTime", "WallClock"]


class TimerHandle(Protocol):
    """What `Clock.call_later` returns; `asyncio.TimerHandle` fits."""

    def cancel(self) -> None: ...


class TimeSource(Protocol):
    """Anything that tells the time in seconds (only what digest nonces need)."""

    def now(self) -> float: ...


class Clock(TimeSource, Protocol):
    """A time source that can also run a callback later."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class WallTime:
    """`now()` = seconds since the epoch.

    Digest nonces carry their issue time.  A monotonic loop clock restarts at an
    arbitrary value with the process and differs between nodes, so nonces that must
    survive a restart or be checked by another node sharing the secret need wall time.
    """

    __slots__ = ()

    def now(self) -> float:
        return time.time()


class WallClock:
    """A `Clock` telling wall time, whose timers another clock runs.

    The roles (registrar, pager) write their times to the store and to other nodes:
    binding expiry, message lifetimes, `Date` headers, audit records -- so `now()` is
    seconds since the epoch, as with `WallTime`.  A timer is a delay from now, which
    any clock measures alike; the one given (the event loop's) runs them, unaffected
    by the wall clock being set.
    """

    __slots__ = ("_timers",)

    def __init__(self, timers: Clock) -> None:
        self._timers = timers

    def now(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self._timers.call_later(delay, callback)


class _FakeTimer:
    __slots__ = ("callback", "active", "_clock")

    def __init__(self, clock: FakeClock, callback: Callable[[], None]) -> None:
        self._clock = clock
        self.callback = callback
        self.active = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._clock._active_count -= 1


class FakeClock:
    """A clock for tests, in the manner of Twisted's `task.Clock`.

    Time only moves when `advance()` is called; due timers then fire in deadline
    order, each seeing `now()` equal to its own deadline.  Timers scheduled by a
    callback fire within the same `advance()` if they fall due before its end.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (deadline, sequence, timer): tuples compare in C; equal deadlines fire in
        # scheduling order thanks to the sequence number.
        self._heap: list[tuple[float, int, _FakeTimer]] = []
        self._sequence = 0
        self._active_count = 0

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        # asyncio treats a negative delay as "as soon as possible"; so do we.
        timer = _FakeTimer(self, callback)
        heapq.heappush(self._heap, (self._now + max(delay, 0.0), self._sequence, timer))
        self._sequence += 1
        self._active_count += 1
        return timer

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        end = self._now + seconds
        heap = self._heap
        while heap and heap[0][0] <= end:
            deadline, _, timer = heapq.heappop(heap)
            if not timer.active:
                continue
            timer.active = False
            self._active_count -= 1
            self._now = deadline
            timer.callback()
        self._now = end

    def pending(self) -> int:
        """Number of timers scheduled and neither fired nor cancelled."""
        return self._active_count

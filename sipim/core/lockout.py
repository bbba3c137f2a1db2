"""Brute-force protection: repeated authentication failures lock a user or a source out.

Counted separately per user and per source address, so an attacker spraying
many user names from one address is stopped, and so is a distributed attack
on one account.  A success clears the counters of that user and that source.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lock:
    subject: str  # "user alice@example.com" or "source 192.0.2.1"
    until: float


class Lockout:
    def __init__(self, *, threshold: int, window: float, duration: float, max_tracked: int = 100_000) -> None:
        self._threshold = threshold
        self._window = window
        self._duration = duration
        self._max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def check(self, user: str | None, source_ip: str, now: float) -> Lock | None:
        if not self._locked_until:
            return None  # the usual case: nobody is locked out
        for subject in self._subjects(user, source_ip):
            until = self._locked_until.get(subject)
            if until is not None:
                if until > now:
                    return Lock(subject, until)
                del self._locked_until[subject]
        return None

    def record_failure(self, user: str | None, source_ip: str, now: float) -> Lock | None:
        """Count a failure; return the lock it caused, if any."""
        caused = None
        for subject in self._subjects(user, source_ip):
            times = self._failures.get(subject)
            if times is None:
                if len(self._failures) >= self._max_tracked:
                    self._forget_oldest(now)
                times = self._failures[subject] = deque()
            times.append(now)
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) >= self._threshold:
                until = now + self._duration
                self._locked_until[subject] = until
                del self._failures[subject]
                caused = caused or Lock(subject, until)
        return caused

    def record_success(self, user: str | None, source_ip: str) -> None:
        if not self._failures:
            return
        for subject in self._subjects(user, source_ip):
            self._failures.pop(subject, None)

    def unlock(self, subject: str) -> bool:
        return self._locked_until.pop(subject, None) is not None

    @staticmethod
    def _subjects(user: str | None, source_ip: str) -> tuple[str, ...]:
        return (f"user {user}", f"source {source_ip}") if user else (f"source {source_ip}",)

    def _forget_oldest(self, now: float) -> None:
        # Bounded memory under a spray of made-up user names: drop counters
        # whose failures have all left the window, else the oldest tenth.
        stale = [s for s, t in self._failures.items() if not t or t[-1] <= now - self._window]
        if not stale:
            stale = sorted(self._failures, key=lambda s: self._failures[s][-1])[: max(1, len(self._failures) // 10)]
        for subject in stale:
            del self._failures[subject]

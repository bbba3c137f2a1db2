"""Brute-force protection: repeated authentication failures lock a user or a source out.

Counted separately per user and per source address, so an attacker spraying
many user names from one address is stopped, and so is a distributed attack
on one account.  A success clears the counters of that user and that source.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipim.core.ratelimit import SlidingWindow


@dataclass(frozen=True, slots=True)
class Lock:
    subject: str  # "user alice@example.com" or "source 192.0.2.1"
    until: float


class Lockout:
    """``threshold`` failures within ``window`` seconds lock the user, or the source,
    out for ``duration`` seconds.  Memory stays bounded under a spray of made-up user
    names: at most ``max_tracked`` counters (sipim/core/ratelimit.py SlidingWindow)."""

    def __init__(self, *, threshold: int, window: float, duration: float, max_tracked: int = 100_000) -> None:
        self._threshold = threshold
        self._duration = duration
        self._failures = SlidingWindow(window, max_keys=max_tracked)
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
            failures = self._failures.events(subject, now)
            failures.append(now)
            if len(failures) >= self._threshold:
                until = now + self._duration
                self._locked_until[subject] = until
                self._failures.forget(subject)
                caused = caused or Lock(subject, until)
        return caused

    def record_success(self, user: str | None, source_ip: str) -> None:
        if not self._failures:
            return
        for subject in self._subjects(user, source_ip):
            self._failures.forget(subject)

    def unlock(self, subject: str) -> bool:
        return self._locked_until.pop(subject, None) is not None

    @staticmethod
    def _subjects(user: str | None, source_ip: str) -> tuple[str, ...]:
        return (f"user {user}", f"source {source_ip}") if user else (f"source {source_ip}",)

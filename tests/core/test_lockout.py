"""Brute-force lock-out: N failures in a window lock the user and the source."""

from sipim.core.lockout import Lockout
from sipim.core.ratelimit import SlidingWindow


def make(threshold=3, window=300, duration=900):
    return Lockout(threshold=threshold, window=window, duration=duration)


def test_failures_below_threshold_do_not_lock():
    lockout = make()
    lockout.record_failure("alice", "192.0.2.1", 0)
    lockout.record_failure("alice", "192.0.2.1", 1)
    assert lockout.check("alice", "192.0.2.1", 2) is None


def test_threshold_locks_user_and_source_until_duration_passes():
    lockout = make()
    for t in range(3):
        caused = lockout.record_failure("alice", "192.0.2.1", t)
    assert caused is not None and caused.until == 2 + 900
    assert lockout.check("alice", "198.51.100.7", 10).subject == "user alice"  # other source, same user
    assert lockout.check("bob", "192.0.2.1", 10).subject == "source 192.0.2.1"  # same source, other user
    assert lockout.check("carol", "203.0.113.5", 10) is None
    assert lockout.check("alice", "192.0.2.1", 2 + 900) is None


def test_failures_outside_the_window_do_not_count():
    lockout = make(window=60)
    lockout.record_failure("alice", "192.0.2.1", 0)
    lockout.record_failure("alice", "192.0.2.1", 30)
    assert lockout.record_failure("alice", "192.0.2.1", 100) is None
    assert lockout.check("alice", "192.0.2.1", 100) is None


def test_success_resets_the_count():
    lockout = make()
    lockout.record_failure("alice", "192.0.2.1", 0)
    lockout.record_failure("alice", "192.0.2.1", 1)
    lockout.record_success("alice", "192.0.2.1")
    assert lockout.record_failure("alice", "192.0.2.1", 2) is None


def test_tracking_is_bounded_under_a_spray_of_names():
    lockout = Lockout(threshold=10, window=300, duration=900, max_tracked=100)
    for i in range(1000):
        lockout.record_failure(f"user{i}", f"10.0.{i // 256}.{i % 256}", i * 0.001)
    assert len(lockout._failures) <= 101


def test_lockout_and_rate_limits_count_in_one_sliding_window():
    """core/ratelimit.py SlidingWindow: events leave the window as time passes, and a
    full table first drops every key whose events have all left the window."""
    windows = SlidingWindow(60, max_keys=3)
    for key, now in (("a", 0.0), ("b", 10.0), ("c", 50.0)):
        windows.events(key, now).append(now)
    assert list(windows.events("b", 60.0)) == [10.0]
    assert list(windows.events("b", 70.0)) == []  # 10.0 left the window at 70
    windows.events("d", 100.0).append(100.0)  # full: a and b are stale, c is not
    assert [key for key in "abcd" if key in windows] == ["c", "d"]

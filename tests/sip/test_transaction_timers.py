"""The timer queues behind the §17 timers (sipim.sip.transaction.TimerQueues):
timers of one duration share one clock timer and must still fire exactly when
each one is due, in order, never when cancelled, and leave no clock timer behind."""

from __future__ import annotations

import pytest

from sipim.sip.clock import FakeClock
from sipim.sip.transaction import TimerQueues


def test_timers_of_one_duration_fire_each_at_its_own_deadline_on_one_clock_timer():
    clock = FakeClock()
    timers = TimerQueues(clock)
    fired = []
    timers.start(32.0, lambda: fired.append(("a", clock.now())))
    clock.advance(1.5)
    timers.start(32.0, lambda: fired.append(("b", clock.now())))
    clock.advance(0.25)
    timers.start(32.0, lambda: fired.append(("c", clock.now())))
    assert clock.pending() == 1                    # one clock timer for the three
    clock.advance(30.0)
    assert fired == []                             # t = 31.75
    clock.advance(0.25)
    assert fired == [("a", 32.0)]
    clock.advance(10)
    assert fired == [("a", 32.0), ("b", 33.5), ("c", 33.75)]
    assert clock.pending() == 0


def test_cancelled_timers_never_fire_and_the_last_cancel_stops_the_clock_timer():
    clock = FakeClock()
    timers = TimerQueues(clock)
    fired = []
    first = timers.start(5.0, lambda: fired.append(1))
    second = timers.start(5.0, lambda: fired.append(2))
    third = timers.start(5.0, lambda: fired.append(3))
    second.cancel()
    second.cancel()                                # twice is harmless
    clock.advance(5)
    assert fired == [1, 3]
    first.cancel()                                 # after firing: nothing happens
    third.cancel()
    handle = timers.start(5.0, lambda: fired.append(4))
    handle.cancel()
    assert clock.pending() == 0
    clock.advance(100)
    assert fired == [1, 3]


def test_durations_keep_their_relative_order():
    clock = FakeClock()
    timers = TimerQueues(clock)
    fired = []
    timers.start(4.0, lambda: fired.append("T2"))
    timers.start(0.5, lambda: fired.append("T1"))
    timers.start(32.0, lambda: fired.append("64*T1"))
    timers.start(2.0, lambda: fired.append("4*T1"))
    clock.advance(40)
    assert fired == ["T1", "4*T1", "T2", "64*T1"]


def test_a_timer_started_by_a_firing_timer_does_not_delay_those_already_queued():
    clock = FakeClock()
    timers = TimerQueues(clock)
    fired = []

    def again():
        fired.append(("first", clock.now()))
        timers.start(1.0, lambda: fired.append(("restarted", clock.now())))

    timers.start(1.0, again)
    clock.advance(0.5)
    timers.start(1.0, lambda: fired.append(("second", clock.now())))
    clock.advance(5)
    assert fired == [("first", 1.0), ("second", 1.5), ("restarted", 2.0)]
    assert clock.pending() == 0


def test_a_failing_callback_does_not_stop_the_others():
    clock = FakeClock()
    timers = TimerQueues(clock)
    fired = []

    def boom():
        raise RuntimeError("boom")

    timers.start(1.0, boom)
    timers.start(1.0, lambda: fired.append(clock.now()))
    with pytest.raises(RuntimeError):
        clock.advance(1.0)                         # the clock's owner logs it (AsyncioClock)
    assert fired == [1.0]
    assert clock.pending() == 0


def test_zero_and_unusual_durations_go_to_the_clock():
    clock = FakeClock()
    timers = TimerQueues(clock)
    fired = []
    timers.start(0, lambda: fired.append("now"))
    for index in range(TimerQueues.MAX_QUEUES + 5):
        timers.start(1.0 + index / 1000, lambda index=index: fired.append(index))
    clock.advance(2)
    assert fired == ["now", *range(TimerQueues.MAX_QUEUES + 5)]
    assert clock.pending() == 0

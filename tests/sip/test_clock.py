import pytest

from sipim.sip.clock import FakeClock, WallTime


def test_fake_clock_fires_due_timers_in_deadline_order_at_their_deadline():
    clock = FakeClock(start=100.0)
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.now())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.now())))
    clock.call_later(5.0, lambda: fired.append(("c", clock.now())))

    clock.advance(3.0)

    assert fired == [("a", 101.0), ("b", 102.0)]
    assert clock.now() == 103.0
    assert clock.pending() == 1


def test_fake_clock_equal_deadlines_fire_in_scheduling_order():
    clock = FakeClock()
    fired: list[int] = []
    for index in range(5):
        clock.call_later(1.0, lambda index=index: fired.append(index))
    clock.advance(1.0)
    assert fired == [0, 1, 2, 3, 4]


def test_fake_clock_timer_scheduled_by_a_callback_fires_in_same_advance_if_due():
    clock = FakeClock()
    fired: list[float] = []

    def first() -> None:
        fired.append(clock.now())
        clock.call_later(1.0, lambda: fired.append(clock.now()))
        clock.call_later(10.0, lambda: fired.append(clock.now()))

    clock.call_later(1.0, first)
    clock.advance(2.5)

    assert fired == [1.0, 2.0]
    assert clock.pending() == 1


def test_fake_clock_cancelled_timer_never_fires_and_is_not_pending():
    clock = FakeClock()
    fired: list[str] = []
    handle = clock.call_later(1.0, lambda: fired.append("x"))
    assert clock.pending() == 1
    handle.cancel()
    handle.cancel()  # idempotent, like asyncio.TimerHandle
    assert clock.pending() == 0
    clock.advance(10)
    assert fired == []


def test_fake_clock_cancel_after_firing_does_not_corrupt_pending_count():
    clock = FakeClock()
    handle = clock.call_later(1.0, lambda: None)
    clock.advance(1.0)
    handle.cancel()
    assert clock.pending() == 0


def test_fake_clock_zero_delay_fires_on_advance_zero():
    clock = FakeClock()
    fired: list[int] = []
    clock.call_later(0, lambda: fired.append(1))
    clock.call_later(-3, lambda: fired.append(2))
    assert fired == []
    clock.advance(0)
    assert fired == [1, 2]


def test_fake_clock_refuses_to_go_backwards():
    with pytest.raises(ValueError):
        FakeClock().advance(-1)


def test_wall_time_is_epoch_seconds():
    assert WallTime().now() > 1_600_000_000

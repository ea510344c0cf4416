"""The open-loop schedule: intended times without drift, the ramp, rate changes."""

import math

import pytest

from workers.load import Schedule, split


def test_constant_rate_has_no_drift() -> None:
    s = Schedule(rate=3.0, start=100.0)
    times = [s.take() for _ in range(300_001)]
    assert times[0] == 100.0
    assert times[-1] == pytest.approx(100.0 + 100_000.0, abs=1e-6)  # computed, not summed
    assert times[3] - times[2] == pytest.approx(1 / 3)


def test_ramp_reaches_the_rate_linearly() -> None:
    s = Schedule(rate=100.0, start=0.0, ramp=10.0)
    due = [s.take() for _ in range(2000)]
    # n(t) = rate * t^2 / (2 * ramp): 5 requests in the first second, 500 during the ramp
    assert sum(1 for t in due if t < 1.0) == math.ceil(100 * 1 / 20)
    assert sum(1 for t in due if t < 10.0) == 500
    after = [t for t in due if t >= 10.0]
    assert after[1] - after[0] == pytest.approx(0.01)  # full rate afterwards


def test_change_rate_forgives_nothing_and_owes_nothing() -> None:
    s = Schedule(rate=10.0, start=0.0)
    for _ in range(5):
        s.take()
    s.change_rate(100.0, now=0.45)
    assert s.next_at() == pytest.approx(0.5)  # the next slot already planned is kept
    s.take()
    assert s.next_at() == pytest.approx(0.51)
    s.change_rate(1.0, now=10.0)  # far behind: the backlog is not replayed
    assert s.next_at() == 10.0


def test_invalid_rates() -> None:
    with pytest.raises(ValueError, match="rate"):
        Schedule(0.0, 0.0)
    with pytest.raises(ValueError, match="rate"):
        Schedule(1.0, 0.0).change_rate(-1.0, 0.0)


def test_split() -> None:
    assert split(10, 4) == [3, 3, 2, 2]
    assert sum(split(7, 7)) == 7

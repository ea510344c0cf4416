"""The open-loop schedule: intended times without drift, the ramp, rate changes."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from workers.loop.loadshape import EXACT_WAITS, Schedule, split, wrr_period
from workers.shared import histogram


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


# Cursors per target, and counting without walking: the backlog is a number ------------


def test_wrr_period_is_nginx_smooth_round_robin() -> None:
    assert wrr_period([1]) == [0]
    assert wrr_period([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    assert sorted(wrr_period([3, 2])) == [0, 0, 0, 1, 1]


@given(
    rate=hs.sampled_from([0.7, 3.0, 100.0, 12_345.6]),
    ramp=hs.sampled_from([0.0, 2.5]),
    stride=hs.integers(1, 4),
    data=hs.data(),
)
def test_count_by_is_the_count_of_due_times(
    rate: float, ramp: float, stride: int, data: hs.DataObject
) -> None:
    phase = data.draw(hs.integers(0, stride - 1))
    weights = data.draw(hs.lists(hs.integers(1, 3), min_size=1, max_size=3))
    s = Schedule(rate, 10.0, ramp, stride, phase, wrr_period(weights))
    due = [s.due(k) for k in range(400)]
    when = data.draw(hs.sampled_from(due) | hs.floats(9.0, due[-1]))
    before = data.draw(hs.sampled_from([0.0, *due[::37]]))
    for t in range(len(weights)):
        mine = [
            d
            for k, d in enumerate(due)
            if s.picks[k % s.period] == t and d <= when and (not before or d < before)
        ]
        assert s.count_by(t, when, before) == len(mine)


def test_each_target_walks_its_own_requests_and_skips_in_one_step() -> None:
    s = Schedule(10.0, 0.0, picks=wrr_period([2, 1]))  # targets 0, 1, 0, 0, 1, 0, ...
    assert [s.take_of(1) for _ in range(2)] == pytest.approx([0.1, 0.4])
    assert s.next_at() == 0.0  # target 0 has not taken any
    assert s.backlog(0, 0.55) == 4  # 0.0, 0.2, 0.3, 0.5
    counts, total, top = s.waits(0, 3, 0.55)  # waited 550, 350 and 250 ms
    assert (sum(counts.values()), total, top) == (3, 1_150_000, 550_000)
    s.skip(0, 3)
    assert s.backlog(0, 0.55) == 1 and s.due_of(0) == pytest.approx(0.5)
    assert s.backlog(0, 0.55, before=0.5) == 0  # due at the end: not part of the run
    s.restart(1.0, 0.0)
    assert s.k == [0, 0] and s.next_at() == 1.0


@pytest.mark.parametrize("ramp", [0.0, 3.0])
@pytest.mark.parametrize("weights", [[1], [2, 1]])
def test_waits_of_many_count_what_each_wait_would(ramp: float, weights: list[int]) -> None:
    """Past EXACT_WAITS the histogram comes from the schedule's inverse: bucket for bucket
    the counts of each request's own wait, the longest exact, the sum within a bucket."""
    s = Schedule(20_000.0, 0.0, ramp, picks=wrr_period(weights))
    now, n = 9.0, 60_000
    s.take_of(0)  # a cursor not at zero
    k0 = s.k[0]
    waited = [int((now - s.due(s.index(0, i))) * 1e6) for i in range(k0, k0 + n)]
    exact: dict[int, int] = {}
    for us in waited:
        exact[histogram.bucket_of(us)] = exact.get(histogram.bucket_of(us), 0) + 1
    assert n > EXACT_WAITS
    counts, total, top = s.waits(0, n, now)
    assert top == max(waited) and sum(counts.values()) == n
    moved = [abs(counts.get(b, 0) - exact.get(b, 0)) for b in exact.keys() | counts.keys()]
    assert max(moved) <= 1  # a float's edge may move one request across a boundary
    assert total == pytest.approx(sum(waited), rel=1 / 64)


def test_waits_of_a_backlog_of_billions_take_one_step() -> None:
    """A loop stalled for a minute at 10^8 requests a second owes six billion: timing
    them out is counted from the schedule, never a list of them (which would never end)."""
    s = Schedule(1e8, 0.0)
    n = s.backlog(0, 60.0)
    counts, total, top = s.waits(0, n, 60.5)
    assert sum(counts.values()) == n == 6_000_000_001
    assert top == 60_500_000 and 500_000 * n <= total <= 60_500_000 * n

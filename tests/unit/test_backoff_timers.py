"""Backoff pacing and lazy deadlines, with an injected rng and explicit times."""

import random

import pytest

from workers.loop.timers import Deadlines
from workers.pool.backoff import Backoff


def test_full_jitter_grows_exponentially_then_caps() -> None:
    b = Backoff(0.05, 1.0, random.Random(7))
    ceilings = []
    now = 100.0
    for _ in range(8):
        ceilings.append(b.ceiling())
        now = b.failure(now)  # the next attempt is made when allowed, and fails again
    assert ceilings == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


class Top(random.Random):
    """Always the top of the jitter range: delays become exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_failures_inside_the_window_do_not_escalate() -> None:
    b = Backoff(0.05, 1.0, Top())
    assert b.failure(10.0) == pytest.approx(10.05)
    for t in (10.0, 10.01, 10.049):  # connects that were in flight with the first one
        assert b.failure(t) == pytest.approx(10.05)
    assert b.attempt == 1
    assert b.failure(10.05) == pytest.approx(10.15)  # the next round: one step up
    assert b.attempt == 2


def test_delay_is_within_zero_and_ceiling() -> None:
    for seed in range(50):
        b = Backoff(0.1, 5.0, random.Random(seed))
        b.attempt = 3
        until = b.failure(10.0)  # not_before was 0: this failure opens a window
        assert 10.0 <= until <= 10.0 + 0.8


def test_success_resets() -> None:
    b = Backoff(0.1, 5.0, random.Random(1))
    b.failure(0.0)
    b.failure(1.0)
    b.success()
    assert (b.attempt, b.not_before, b.ceiling()) == (0, 0.0, 0.1)


def test_same_seed_same_delays() -> None:
    a, b = Backoff(0.1, 5.0, random.Random(42)), Backoff(0.1, 5.0, random.Random(42))
    assert [a.failure(t) for t in range(5)] == [b.failure(t) for t in range(5)]


def test_invalid_backoff() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(0.0, 1.0, random.Random())


class Obj:
    def __init__(self, name: str) -> None:
        self.name = name
        self.deadline = 0.0
        self.heap_when = 0.0


def test_deadlines_fire_in_order_and_only_once() -> None:
    d = Deadlines()
    a, b = Obj("a"), Obj("b")
    d.arm(a, 2.0)
    d.arm(b, 1.0)
    assert d.pop_expired(0.5) == []
    assert d.pop_expired(1.5) == [b]
    assert d.pop_expired(3.0) == [a]
    assert d.pop_expired(10.0) == []


def test_later_rearm_costs_no_push_and_fires_at_new_time() -> None:
    d = Deadlines()
    a = Obj("a")
    d.arm(a, 1.0)
    for t in range(2, 100):
        d.arm(a, float(t))  # like a read deadline per request on a keep-alive socket
    assert len(d) == 1
    assert d.pop_expired(50.0) == []  # the stale entry re-pushes itself
    assert d.pop_expired(99.0) == [a]


def test_earlier_rearm_and_disarm() -> None:
    d = Deadlines()
    a, b = Obj("a"), Obj("b")
    d.arm(a, 5.0)
    d.arm(a, 1.0)
    assert d.pop_expired(1.0) == [a]
    assert d.pop_expired(6.0) == []  # the superseded 5.0 entry is ignored
    d.arm(b, 2.0)
    Deadlines.disarm(b)
    assert d.pop_expired(3.0) == []


def test_adaptive_backoff_scales_its_base_with_the_recent_failure_rate() -> None:
    from workers.pool.backoff import GAIN, WINDOW

    b = Backoff(0.05, 5.0, random.Random(3), adaptive=True)
    assert b.ceiling(0.0) == 0.05  # no connects yet: the configured base
    for i in range(10):
        b.connected(float(i) / 10)
    assert b.failure_rate(1.0) == 0.0
    for _ in range(10):
        b.failure(1.0)  # one round, failing together: one step
    assert b.failure_rate(1.1) == pytest.approx(0.5)
    assert b.attempt == 1
    assert b.ceiling(1.1) == pytest.approx(min(5.0, 0.05 * (1 + GAIN * 0.5) * 2))
    assert b.failure_rate(1.0 + WINDOW + 1) == 0.0  # the window moved on: the rate decays
    b.success()
    assert b.attempt == 0 and b.not_before == 0.0
    plain = Backoff(0.05, 5.0, random.Random(3))
    plain.failure(0.0)
    assert plain.ceiling(0.0) == 0.1  # not adaptive: the rate is not even kept


def test_the_documented_table_is_the_rule() -> None:
    from pathlib import Path

    from workers.pool.backoff import delays

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    for label, row in zip(("0 %", "50 %", "100 %"), delays(), strict=True):
        line = f"| {label} | " + " | ".join(f"{v:g} s" for v in row) + " |"
        assert line in doc, line

"""Adaptive pool sizing: every cell of the table, the timers, the bounds (injected time)."""

from __future__ import annotations

import pytest

from workers.pool import sizing
from workers.pool.sizing import (
    COOLDOWN,
    COOLING,
    GROW_AFTER,
    IDLE_WINDOW,
    SLACK,
    STATES,
    STEADY,
    TABLE,
    WANTING,
    Sizing,
    decide,
)

OBSERVED = {sizing.WAITING: (3, 0), sizing.IDLE: (0, 2), sizing.BUSY: (0, 0)}


def test_the_table_has_a_cell_for_every_state_and_observation() -> None:
    assert set(TABLE) == {(s, o) for s in STATES for o in OBSERVED}


@pytest.mark.parametrize(("state", "seen"), sorted(TABLE))
def test_each_cell_goes_where_the_table_says(state: str, seen: str) -> None:
    waiters, idle = OBSERVED[seen]
    s = Sizing(limit=5, state=state, since=100.0, floor=1)
    after = decide(s, 100.0, waiters, idle, low=1, high=10)  # no time passed: no timer fires
    assert after.state == TABLE[(state, seen)]
    assert after.limit == 5  # entering or staying, nothing resized at once


def walk(
    steps: list[tuple[float, int, int]], start: Sizing, low: int = 2, high: int = 20
) -> list[Sizing]:
    out, s = [], start
    for now, waiters, idle in steps:
        s = decide(s, now, waiters, idle, low, high)
        out.append(s)
    return out


def test_waiting_grows_only_after_it_lasts_then_cools() -> None:
    start = Sizing(4)
    ticks = [(t / 10, 5, 0) for t in range(0, 12)]  # five waiting, every 100 ms
    states = walk(ticks, start)
    grown = next(i for i, s in enumerate(states) if s.limit > 4)
    assert ticks[grown][0] >= GROW_AFTER  # not on a blip
    assert states[grown].limit == 9 and states[grown].state == COOLING  # by the waiters
    during = [
        s for (t, _, _), s in zip(ticks, states, strict=True) if 0 < t - ticks[grown][0] < COOLDOWN
    ]
    assert all(s.limit == 9 for s in during)  # no second growth while cooling


def test_a_blip_of_waiting_grows_nothing() -> None:
    states = walk([(0.0, 3, 0), (0.1, 0, 0), (0.2, 3, 0), (0.3, 0, 1)], Sizing(4))
    assert all(s.limit == 4 for s in states)


def test_idleness_shrinks_by_what_was_never_used_after_a_whole_window() -> None:
    ticks = [(t / 10, 0, 6 if t % 3 else 4) for t in range(0, int(IDLE_WINDOW * 10) + 2)]
    states = walk(ticks, Sizing(10))
    shrunk = next(i for i, s in enumerate(states) if s.limit < 10)
    assert ticks[shrunk][0] >= IDLE_WINDOW
    assert states[shrunk].limit == 6  # 10 less the fewest idle seen (4)
    assert states[shrunk].state == SLACK and states[shrunk].since == ticks[shrunk][0]


def test_any_waiting_or_full_use_restarts_the_idle_window() -> None:
    ticks = [(t / 10, 0, 3) for t in range(40)] + [(4.0, 0, 0)]
    ticks += [(4.1 + t / 10, 0, 3) for t in range(40)]  # 8 s of idleness, but not in a row
    assert all(s.limit == 10 for s in walk(ticks, Sizing(10)))


def test_the_limit_stays_within_the_bounds() -> None:
    grow = walk([(t / 10, 50, 0) for t in range(100)], Sizing(4), low=2, high=12)
    assert max(s.limit for s in grow) == 12
    shrink = walk([(t, 0, 50) for t in range(0, 60, 1)], Sizing(12), low=2, high=12)
    assert min(s.limit for s in shrink) == 2
    assert decide(Sizing(30), 0.0, 0, 0, low=2, high=12).limit == 12  # a lowered maximum
    assert decide(Sizing(1), 0.0, 0, 0, low=2, high=12).limit == 2


def test_cooling_ends_into_a_fresh_judgement() -> None:
    s = Sizing(8, COOLING, since=10.0)
    assert decide(s, 10.0 + COOLDOWN, 2, 0, 1, 20).state == WANTING
    assert decide(s, 10.0 + COOLDOWN, 0, 0, 1, 20).state == STEADY
    assert repr(s).startswith("<Sizing COOLING limit=8")

"""The breaker, transition by transition, with explicit times (no sleeping)."""

import random

import pytest

from workers.pool import breaker as b

S = b.BreakerSettings(
    window=10.0,
    min_calls=10,
    failure_rate=0.5,
    consecutive=5,
    open_base=1.0,
    open_max=8.0,
    trials=2,
    trial_lease=3.0,
    jitter=0.0,
)


def make(settings: b.BreakerSettings = S) -> b.Breaker:
    return b.Breaker(settings, random.Random(1), now=0.0)


def test_table_is_complete_and_only_named_states() -> None:
    assert set(b.TRANSITIONS) == set(b.STATES)
    for row in b.TRANSITIONS.values():
        assert set(row.values()) <= set(b.STATES)


def test_consecutive_failures_trip() -> None:
    br = make()
    br.observe(1.0, ok=0, failed=4, consecutive=4)
    assert br.state == b.CLOSED
    br.observe(1.1, ok=0, failed=1, consecutive=5)
    assert (br.state, br.open_until, br.generation) == (b.OPEN, 2.1, 2)
    assert "5 consecutive" in br.reason


def test_failure_rate_needs_min_calls() -> None:
    br = make()
    br.observe(1.0, ok=4, failed=5, consecutive=0)  # 9 calls < min_calls
    assert br.state == b.CLOSED
    br.observe(1.5, ok=0, failed=1, consecutive=0)  # 10 calls, 6 failed
    assert br.state == b.OPEN and "failure rate 6/10" in br.reason


def test_rate_below_threshold_stays_closed_and_window_slides() -> None:
    br = make()
    br.observe(1.0, ok=0, failed=9, consecutive=0)
    br.observe(12.0, ok=10, failed=0, consecutive=0)  # the failures left the window
    assert br.window_counts() == (10, 0)
    assert br.state == b.CLOSED


def test_open_cools_to_half_open_and_issues_permits() -> None:
    br = make()
    br.observe(0.0, 0, 5, 5)
    assert br.tick(0.5, 0, 0) == 0 and br.state == b.OPEN
    assert br.tick(1.0, 0, 0) == 2  # trials=2 permits
    assert br.state == b.HALF_OPEN and br.generation == 3


def test_half_open_closes_after_enough_trials() -> None:
    br = make()
    br.observe(0.0, 0, 5, 5)
    br.tick(1.0, 0, 0)
    assert br.tick(1.2, trial_ok=1, trial_fail=0) == 0 and br.state == b.HALF_OPEN
    br.tick(1.3, trial_ok=2, trial_fail=0)
    assert br.state == b.CLOSED and br.trips == 0
    assert br.window_counts() == (0, 0)  # a fresh window after closing


def test_failed_trial_reopens_for_longer_capped() -> None:
    br = make()
    durations = []
    now = 0.0
    br.observe(now, 0, 5, 5)
    for _ in range(6):
        durations.append(round(br.open_until - now, 6))
        now = br.open_until
        br.tick(now, 0, 0)  # -> HALF_OPEN
        br.tick(now, trial_ok=0, trial_fail=1)  # -> OPEN again
    assert durations == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_stays_within_bounds() -> None:
    settings = b.BreakerSettings(open_base=10.0, open_max=100.0, jitter=0.2)
    for seed in range(30):
        br = b.Breaker(settings, random.Random(seed), now=0.0)
        br.observe(0.0, 0, 5, 5)
        assert 8.0 <= br.open_until <= 12.0


def test_trial_that_never_reports_is_reissued_after_the_lease() -> None:
    br = make()
    br.observe(0.0, 0, 5, 5)
    br.tick(1.0, 0, 0)  # HALF_OPEN at 1.0, lease until 4.0
    assert br.tick(3.9, trial_ok=1, trial_fail=0) == 0
    assert br.tick(4.0, trial_ok=1, trial_fail=0) == 1  # one permit outstanding: re-issued
    assert br.state == b.HALF_OPEN
    assert br.tick(6.9, 1, 0) == 0 and br.tick(7.0, 1, 0) == 1  # and again a lease later


def test_observe_ignored_unless_closed() -> None:
    br = make()
    br.observe(0.0, 0, 5, 5)
    br.observe(0.1, 0, 100, 100)
    assert br.state == b.OPEN and br.total_trips == 1


def test_force_closed_never_trips_until_reset() -> None:
    br = make()
    br.force_closed(0.0)
    br.observe(1.0, 0, 100, 100)
    assert br.state == b.CLOSED and br.forced
    br.reset(2.0)
    br.observe(3.0, 0, 5, 5)
    assert br.state == b.OPEN


def test_force_open_and_reset() -> None:
    br = make()
    br.force_open(0.0)
    assert br.state == b.OPEN
    assert br.tick(1e9, 0, 0) == 0 and br.state == b.OPEN  # forced: never cools
    br.reset(5.0)
    assert br.state == b.CLOSED and not br.forced


def test_invalid_event_raises() -> None:
    br = make()
    with pytest.raises(b.InvalidTransition):
        br._fire("cooled", 0.0, "")
    assert br.state == b.CLOSED


@pytest.mark.parametrize(
    "kw", [{"window": 0}, {"failure_rate": 0}, {"open_base": 5, "open_max": 1}, {"trials": 0}]
)
def test_invalid_settings(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="breaker"):
        b.BreakerSettings(**kw)  # type: ignore[arg-type]


def test_repr() -> None:
    br = make()
    br.observe(0.0, 0, 5, 5)
    assert repr(br) == "<Breaker OPEN until t+1.0s gen=2 window=5/5>"


def test_architecture_doc_breaker_table_matches_the_code() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    section = doc.split("## Circuit breaker", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    documented = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0] in b.STATES:
            documented[cells[0]] = {
                e: to for e, to in zip(header[1:], cells[1:], strict=True) if to
            }
    assert documented == b.TRANSITIONS

"""The open loop's backlog, driven with explicit times: a real pool, no socket.

``issue`` is recorded instead of sent; the pool is filled by hand, so each test
says exactly when it is saturated.
"""

from __future__ import annotations

import random

import pytest

from workers.exchange.backlog import Backlog
from workers.loop.loadshape import Bounds, Schedule
from workers.loop.runstate import RunState
from workers.pool.backoff import Backoff
from workers.pool.client import Client
from workers.pool.shard import Pool, PoolSettings
from workers.pool.target import Target, TargetSpec
from workers.shared import slotstats as st
from workers.shared.admission import SharedView
from workers.shared.meter import Meter


class Rig:
    """One target, a pool of ``size`` that the test fills, the schedule at ``rate``."""

    def __init__(self, rate: float = 1000.0, size: int = 2, **bounds: object) -> None:
        self.now = 0.0
        b = Bounds(concurrency=1, duration=10.0, rate=rate, **bounds)  # type: ignore[arg-type]
        self.run = RunState(b, 1, 0, clock=lambda: self.now)
        self.run.end_at = 10.0
        self.run.schedule = Schedule(rate, 0.0)
        settings = PoolSettings(max_size=size, wait_timeout=0.5)
        pool: Pool = Pool(settings, Backoff(0.1, 1.0, random.Random(1)))
        self.target = Target(0, TargetSpec("127.0.0.1", 80), pool)
        self.shared = SharedView.private(1)
        self.issued: list[float] = []
        meter = Meter(self.shared.slot, self.shared.words, self.shared.targets)
        self.backlog = Backlog(self.run, [self.target], meter, self.issue)

    def issue(self, client: Client, start: float, target: int) -> None:
        assert target == 0
        self.issued.append(start)
        self.run.issued += 1
        self.target.pool.connecting += 1  # it takes a connection: the pool fills up

    def counter(self, name: str) -> int:
        return int(self.shared.slot[st.INDEX[name]])

    def fire(self, now: float) -> None:
        self.now = self.run.now = now
        self.backlog.fire_due(now)


def test_due_requests_go_while_the_pool_has_room_then_wait_in_the_schedule() -> None:
    rig = Rig(size=2)
    rig.fire(0.0035)  # due: 0, 1, 2, 3 ms
    assert rig.issued == pytest.approx([0.0, 0.001])  # two connections, then saturated
    assert rig.run.schedule is not None and rig.run.schedule.backlog(0, 0.0035) == 2
    assert len(rig.run.clients) == 1 + 2  # the closed loop's one, and one per request sent
    # the next look: when the oldest waiting would time out
    assert rig.run.next_due == pytest.approx(0.002 + 0.5)


def test_not_due_yet_sets_the_next_wakeup() -> None:
    rig = Rig()
    rig.fire(-0.1)
    assert rig.issued == [] and rig.run.next_due == 0.0


def test_waiting_past_the_pool_timeout_fails_in_one_step_timed_from_due() -> None:
    rig = Rig(size=1)
    rig.fire(0.0)
    assert rig.issued == [0.0]
    rig.fire(0.7005)  # due 1..700 ms; those due by 200 ms waited over 0.5 s
    assert rig.counter("unsent.pool_timeout") == 200
    assert rig.counter("requests.unsent") == 200 == rig.counter("errors.phase.pool")
    assert rig.run.issued == 201
    assert rig.counter("failure_time.max_us") == 699_500  # the one due at 1 ms
    assert rig.run.schedule is not None and rig.run.schedule.backlog(0, 0.7005) == 500


def test_over_max_backlog_the_oldest_are_dropped_not_issued() -> None:
    rig = Rig(size=1, max_backlog=10)
    rig.fire(0.0)
    rig.fire(0.1)  # 100 more due, none can go
    assert rig.counter("requests.dropped") == 90
    assert rig.run.issued == 1  # dropped requests are never issued
    sched = rig.run.schedule
    assert sched is not None and sched.backlog(0, 0.1) == 10
    assert sched.due_of(0) == pytest.approx(0.091)  # the newest ten wait


def test_cancel_counts_what_waited_and_nothing_due_after_the_end() -> None:
    rig = Rig(size=1)
    rig.run.end_at = 0.05
    rig.fire(0.0)
    rig.now = rig.run.now = 0.2
    assert rig.backlog.cancel(0.2) == 49  # due at 1..49 ms; 50 ms is the end's
    assert rig.counter("unsent.cancelled") == 49 == rig.counter("requests.unsent")
    assert rig.run.issued == 50


def test_a_request_bound_caps_what_is_cancelled_or_timed_out() -> None:
    rig = Rig(size=1, requests=5)
    rig.run.issue_cap = 5
    rig.fire(0.0)
    rig.fire(0.9)
    assert rig.counter("unsent.pool_timeout") == 4 and rig.run.issued == 5
    assert rig.backlog.cancel(1.0) == 0


def test_forgive_drops_the_backlog_before_the_schedule_changes() -> None:
    rig = Rig(size=1)
    rig.fire(0.0)
    rig.now = 0.0105
    assert rig.backlog.forgive(0.0105) == 10
    assert rig.counter("requests.dropped") == 10 and rig.run.next_due == 0.0105


def test_a_stalled_loop_at_a_huge_rate_settles_its_backlog_in_one_step() -> None:
    """At 10^8/s, a loop back after 60 s owes six billion due requests: the oldest time
    out, the rest over max_backlog are dropped, counted exactly, in one step (the steps
    were a list of every due time: this never returned)."""
    rig = Rig(rate=1e8, size=1, max_backlog=1000)
    rig.run.end_at = 0.0  # unbounded in time
    rig.backlog.max_backlog = 1000
    rig.fire(0.0)
    rig.fire(60.0)
    due = 6_000_000_001 - 1  # due by 60 s, less the one sent at 0
    timed_out = rig.counter("unsent.pool_timeout")
    assert timed_out + rig.counter("requests.dropped") + 1000 == due
    assert timed_out == 59_500_000_000 // 10  # due by 59.5 s: waited over the 0.5 s
    assert rig.counter("failure_time.max_us") == 59_999_999  # the one due at 10 ns

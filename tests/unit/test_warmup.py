"""The warm-up's phase table, and its counts set apart in the shared region: the slot
split by subtraction, the seal, the fold of a worker that died in either part."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest

from poolsvc.arbiter import readings
from poolsvc.arbiter.breakerdesk import BreakerDesk
from poolsvc.config import keys, plan
from poolsvc.config import loader as config
from poolsvc.metrics import ledger
from poolsvc.report import render as report
from tests.unit.lifecycle import documented
from workers.exchange import warmup
from workers.loop.eventloop import Loop
from workers.loop.loadshape import Bounds, Schedule
from workers.loop.runstate import RunState
from workers.loop.timers import Deadlines
from workers.pool import client as cl
from workers.pool.breaker import BreakerSettings
from workers.pool.connection import BUSY, Connection
from workers.shared import shm
from workers.shared import slotstats as stats
from workers.shared import statetable as table
from workers.shared.meter import Meter

G = stats.GAUGE_INDEX
SENT, OK, FAILED = (stats.INDEX[f"requests.{k}"] for k in ("sent", "ok", "failed"))


@pytest.mark.parametrize("state", warmup.STATES)
@pytest.mark.parametrize("event", table.events(warmup.TRANSITIONS))
def test_every_cell_of_the_phase_table(state: str, event: str) -> None:
    phase: Any = SimpleNamespace()
    expected = {("RAMPING", "over"): "SETTLING", ("SETTLING", "settled"): "SEALED"}
    if (state, event) in expected:
        assert table.fire(warmup.TRANSITIONS, state, event, phase) == expected[state, event]
    else:
        with pytest.raises(table.InvalidTransition):
            table.fire(warmup.TRANSITIONS, state, event, phase)


def test_the_architecture_doc_shows_the_phase_table() -> None:
    assert documented("## Warm-up", warmup.STATES) == warmup.TRANSITIONS


def _work(region: shm.Region, worker: int, sent: int, failed: int, max_us: int) -> None:
    """What a worker's requests leave in its slot (and its target block)."""
    slot = region.slot(worker)
    slot[SENT] += sent
    slot[OK] += sent - failed
    slot[FAILED] += failed
    slot[stats.HIST_BASE + 5] += sent
    slot[stats.LAT_MAX] = max(slot[stats.LAT_MAX], max_us)
    region.target_words(worker, 0)[shm.T_RESP_OK] += sent - failed


def _warmed_up(region: shm.Region, worker: int) -> None:
    region.slot(worker)[G["time.warmup_us"]] = 1_000_000


def _seal(region: shm.Region, worker: int) -> None:
    shm.seal_warmup(region.words, region.layout, worker)
    region.slot(worker)[G["time.started_us"]] = 2_000_000  # published after the seal


def _counts(snap: stats.Snapshot) -> tuple[int, int, int, int]:
    c = snap.counters
    return c["requests.sent"], c["requests.ok"], c["requests.failed"], c["latency.max_us"]


def test_a_slot_is_all_warm_up_until_sealed_then_measured_by_subtraction() -> None:
    region = shm.Region(shm.Layout(2, 1), pid=1)
    slots: Any = [SimpleNamespace(index=0), SimpleNamespace(index=1)]
    _warmed_up(region, 0)
    _work(region, 0, sent=10, failed=1, max_us=900)
    assert _counts(readings.totals(region, slots)) == (0, 0, 0, 0)  # warming: nothing measured
    assert _counts(readings.warmup(region, slots)) == (10, 9, 1, 900)
    _seal(region, 0)
    assert region.slot(0)[stats.LAT_MAX] == 0  # a maximum cannot be subtracted: zeroed
    _work(region, 0, sent=5, failed=0, max_us=200)
    _work(region, 1, sent=3, failed=0, max_us=300)  # a worker without a warm-up
    total = readings.totals(region, slots)
    assert _counts(total) == (8, 8, 0, 300)
    assert sum(total.hist) == 8 and total.hist[5] == 8
    assert _counts(readings.warmup(region, slots)) == (10, 9, 1, 900)
    assert region.measured_target(0, 0)[shm.T_RESP_OK] == 5
    assert isinstance(region.measured(1), memoryview)  # no warm-up: the slot itself


def test_fold_puts_each_part_where_it_belongs() -> None:
    region = shm.Region(shm.Layout(2, 1), pid=1)
    slots: Any = [SimpleNamespace(index=0), SimpleNamespace(index=1)]
    _warmed_up(region, 0)
    _work(region, 0, sent=10, failed=1, max_us=900)
    _seal(region, 0)
    _work(region, 0, sent=5, failed=0, max_us=200)
    generation = region.slot(0)[stats.GENERATION] = 3
    before = (_counts(readings.totals(region, slots)), _counts(readings.warmup(region, slots)))
    region.fold(0)
    assert not any(region.words[region.layout.warmup(0) :][: region.layout.slot_words])
    assert region.slot(0)[stats.GENERATION] == generation
    after = (_counts(readings.totals(region, slots)), _counts(readings.warmup(region, slots)))
    assert after == before == ((5, 5, 0, 200), (10, 9, 1, 900))  # nothing moved across
    assert region.retired_target_words(0)[shm.T_RESP_OK] == 5


def test_a_worker_dead_in_its_warm_up_is_all_warm_up_and_its_in_flight_lost_there() -> None:
    region = shm.Region(shm.Layout(2, 1), pid=1)
    slots: Any = [SimpleNamespace(index=0)]
    _warmed_up(region, 0)
    _work(region, 0, sent=10, failed=1, max_us=900)
    region.slot(0)[SENT] += 2  # two in flight when it died, one of them inside its send
    region.slot(0)[stats.SENDING_FLAG] = 1
    dead = ledger.fold_dead(region, 0)
    assert dead.ready and dead.lost == 2  # it had begun: not a boot failure
    assert dead.snapshot.counters["requests.total"] == 0  # no measured outcome
    warmed = readings.warmup(region, slots)
    warm = warmed.counters
    assert (warm["requests.sent"], warm["requests.lost"], warm["requests.in_doubt"]) == (12, 2, 1)
    assert ledger.unbalanced(warm) == ""
    shown = report.warmup_metrics(warmed, 1.0)  # what the report says of it
    assert (shown["warmup.requests.lost"], shown["warmup.requests.in_doubt"]) == (2, 1)
    assert readings.totals(region, slots).counters["requests.sent"] == 0


def test_a_sealed_block_needs_its_worker_to_have_published_the_start() -> None:
    """Readers trust the WARMUP block only once ``time.started_us`` is set (the worker
    writes it after the copy): a slot that has warmed up but not published is read
    as all warm-up, never as measured minus a half-written block."""
    lay = shm.Layout(1, 1)
    slot = [0] * lay.slot_words
    slot[G["time.warmup_us"]], slot[SENT] = 1, 7
    measured, warm = shm.split(lay, slot, [0] * lay.slot_words)
    assert (measured[SENT], warm[SENT]) == (0, 7)
    slot[G["time.started_us"]] = 2
    block = slot[:]
    slot[SENT] = 9
    measured, warm = shm.split(lay, slot, block)
    assert (measured[SENT], warm[SENT]) == (2, 7)


def test_schedule_restart_keeps_the_rate_and_share() -> None:
    sched = Schedule(100.0, start=10.0, ramp=2.0, stride=2, phase=1)
    for _ in range(50):
        sched.take()
    sched.change_rate(200.0, now=12.0, stride=4, phase=3)
    sched.restart(20.0, ramp=0.0)
    assert (sched.rate, sched.stride, sched.phase, sched.k) == (200.0, 4, 3, [0])
    assert sched.next_at() == pytest.approx(20.0 + 3 / 200.0)


def test_warmup_is_a_duration_key() -> None:
    assert keys.flag_type("warmup_s")("1500ms") == pytest.approx(1.5)
    assert keys.flag_type("warmup_s")("2m") == pytest.approx(120.0)


def test_settle_orphans_an_opening_connection_and_closes_one_mid_request() -> None:
    """At the settle deadline a client still waiting for its own connection to open
    is cancelled: the connection must not stay its (it would be handed to a finished
    client, or fail it a second time, in the measured period); it becomes a refill.
    A connection left mid-request is closed, counted as a shutdown."""
    run = RunState(Bounds(2, duration=1.0), 1, 0)
    waiting, reading = run.clients
    run.in_flight = 2
    for client, state in ((waiting, cl.CONNECTING), (reading, cl.SENDING)):
        client.state = state
    socks = [socket.socket(), socket.socket()]
    opening, busy = (Connection(s, 0) for s in socks)
    opening.owner, busy.owner = waiting, reading
    busy.state = BUSY

    def at_deadline() -> None:  # what Drain.at_deadline does to these two
        for c in run.clients:
            c.state, c.conn = cl.DONE, None
        run.in_flight = 0

    closed: list[Connection] = []
    slot = memoryview(bytearray(stats.SLOT_WORDS * 8)).cast("Q")
    phase = warmup.Warmup(
        run, SimpleNamespace(deadlines=Deadlines()), SimpleNamespace(at_deadline=at_deadline),  # type: ignore[arg-type]
        {opening.fd: opening, busy.fd: busy}, Meter(slot, None, ()), 1.0,
        SimpleNamespace(close=lambda c, _r: closed.append(c)),  # type: ignore[arg-type]
        lambda: None, lambda: None,
    )  # fmt: skip
    try:
        phase._settle()
        assert opening.owner is None and closed == [busy]
        assert slot[stats.SHUTDOWN] == 1 and run.in_flight == 0
    finally:
        for s in socks:
            s.close()


def test_the_breaker_desk_keeps_a_folded_warm_up_in_its_input() -> None:
    """A worker that warmed up and died is folded: its warm-up's ok and failed move to
    WARMUP_RETIRED. The desk must still count them, or its next window goes negative
    and a run of failures no longer trips the breaker."""
    region = shm.Region(shm.Layout(2, 1), pid=1)
    settings = BreakerSettings(window=10.0, min_calls=20, failure_rate=0.5, consecutive=0)
    desk = BreakerDesk(region, settings, ["t"], 1, lambda _m: None, 0.0)
    block = region.target_words(0, 0)
    _warmed_up(region, 0)
    block[shm.T_OK] = 1000
    desk.tick(1.0, [0], [0])
    _seal(region, 0)
    region.fold(0)  # died after its warm-up
    block = region.target_words(0, 0)
    block[shm.T_FAILED] = 500
    desk.tick(30.0, [0], [0])  # the warm-up ok have left the window
    assert desk.breakers[0].state == "OPEN"


def test_every_worker_anchors_the_measured_schedule_at_start_plus_warm_up() -> None:
    """--start-at with --warmup: a worker forked after the measured period began does
    not warm up, yet it anchors its share of the schedule where the others do."""
    cfg = config.build(
        {"rate": 100, "duration_s": 2, "warmup_s": 3, "start_at": "2030-01-01T00:00:00Z"}, {}
    )
    run = plan.resolve(cfg, [("127.0.0.1", 8001)], seed=1, n=2)
    first, late = run.spec(run.shards[0]).bounds, run.spec(run.shards[1], warm=False).bounds
    assert (first.warmup, late.warmup) == (3.0, 0.0)
    assert first.measure_wall == late.measure_wall == first.start_wall + 3.0


def test_a_worker_dead_between_its_seal_and_its_start_keeps_its_warm_up_maxima() -> None:
    region = shm.Region(shm.Layout(1, 1), pid=1)
    _warmed_up(region, 0)
    _work(region, 0, sent=4, failed=0, max_us=900)
    shm.seal_warmup(region.words, region.layout, 0)  # killed before it published the start
    assert readings.warmup(region, [SimpleNamespace(index=0)]).counters["latency.max_us"] == 900  # type: ignore[list-item]
    region.fold(0)
    assert region.warmup_retired()[stats.LAT_MAX] == 900


def test_the_loop_asks_whether_it_is_finished_by_the_time_it_was_given() -> None:
    """A warm-up ends at its time even when every wakeup's work is done without a
    return to the loop (the accelerated path): the poll's timeout ends by ``by``."""
    now = [100.0]
    run = RunState(Bounds(2, duration=1.0), 1, 0, clock=lambda: now[0])
    loop = Loop(run)
    try:
        assert loop._timeout(100.1) == pytest.approx(0.1)  # the next tick
        assert loop._timeout(100.1, by=100.03) == pytest.approx(0.03)
        assert loop._timeout(100.1, by=100.5) == pytest.approx(0.1)
        assert loop._timeout(100.1, by=99.0) == 0.0  # already past: at once
    finally:
        loop.close()

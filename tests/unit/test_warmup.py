"""The warm-up's phase table, and its counts set apart in the shared region: the slot
split by subtraction, the seal, the fold of a worker that died in either part."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from poolsvc import keys, ledger, readings
from tests.unit.lifecycle import documented
from workers import shm, stats, table, warmup
from workers.load import Schedule

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
    region.slot(0)[SENT] += 2  # two in flight when it died
    dead = ledger.fold_dead(region, 0)
    assert dead.ready and dead.lost == 2  # it had begun: not a boot failure
    assert dead.snapshot.counters["requests.total"] == 0  # no measured outcome
    warm = readings.warmup(region, slots).counters
    assert (warm["requests.sent"], warm["requests.lost"]) == (12, 2)
    assert ledger.unbalanced(warm) == ""
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
    assert (sched.rate, sched.stride, sched.phase, sched.k) == (200.0, 4, 3, 0)
    assert sched.next_at() == pytest.approx(20.0 + 3 / 200.0)


def test_warmup_is_a_duration_key() -> None:
    assert keys.flag_type("warmup_s")("1500ms") == pytest.approx(1.5)
    assert keys.flag_type("warmup_s")("2m") == pytest.approx(120.0)

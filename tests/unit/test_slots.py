"""Worker slots: the lifecycle table cell by cell, and the supervisor's pure decisions
(restart, crash loop, scaling) with explicit times, no process, no sleeping."""

from __future__ import annotations

import pytest

from poolsvc.arbiter import slots as sl
from poolsvc.config.plan import Shard
from tests.unit.lifecycle import check_cell, documented
from workers.shared import statetable as table

EVENTS = table.events(sl.TRANSITIONS)

EXPECTED = {
    (sl.STARTING, "spawn"): sl.RUNNING,
    (sl.STARTING, "stop"): sl.DONE,
    (sl.STARTING, "retire"): sl.RETIRED,  # scaled down before it was ever forked
    (sl.RESTARTING, "spawn"): sl.RUNNING,
    (sl.RESTARTING, "stop"): sl.DONE,
    (sl.RESTARTING, "retire"): sl.RETIRED,
    (sl.RUNNING, "exit"): sl.DONE,  # finished, or died while the service stops
    (sl.RUNNING, "crash"): sl.RESTARTING,
    (sl.RUNNING, "give_up"): sl.DONE,
    (sl.RUNNING, "retire"): sl.RETIRING,
    (sl.RETIRING, "exit"): sl.RETIRED,
    (sl.RETIRING, "revive"): sl.REVIVING,
    (sl.REVIVING, "exit"): sl.RESTARTING,  # its replacement is forked at once
    (sl.REVIVING, "retire"): sl.RETIRING,
    (sl.REVIVING, "stop"): sl.RETIRING,
    (sl.RETIRED, "revive"): sl.RESTARTING,
}


def slot() -> sl.Slot:
    return sl.Slot(Shard(0, ((4, 4),), 4, 0, 1, 0.0, 1))


@pytest.mark.parametrize("state", sl.STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_cell(state: str, event: str) -> None:
    check_cell(slot(), state, event, EXPECTED.get((state, event)))


def test_the_table_names_every_state_and_done_is_terminal() -> None:
    assert set(sl.TRANSITIONS) == set(sl.STATES)
    assert sl.TRANSITIONS[sl.DONE] == {}
    assert all(sl.TRANSITIONS[s].get("spawn") == sl.RUNNING for s in sl.WAITING_TO_FORK)
    assert {s for s in sl.STATES if "exit" in sl.TRANSITIONS[s]} == sl.HAS_PROCESS


def test_can_and_repr() -> None:
    s = slot()
    assert s.can("spawn") and not s.can("exit")
    s.fire("spawn")
    s.pids.append(4242)
    assert repr(s) == "<Slot 0 RUNNING pid=4242 restarts=0>"


def test_architecture_doc_table_matches_the_code() -> None:
    assert documented("## Worker slot state table", sl.STATES) == sl.TRANSITIONS


# after_exit ----------------------------------------------------------------------------

CRASH = {
    "code": -9,
    "state": sl.RUNNING,
    "stopping": False,
    "ready": True,
    "ran_for": 30.0,
    "boot_failures": 0,
    "shard_done": False,
}


@pytest.mark.parametrize(
    "change",
    [{"code": 0}, {"stopping": True}, {"state": sl.RETIRING}, {"state": sl.REVIVING}],
)
def test_a_clean_exit_a_stop_or_a_retirement_is_not_restarted(change: dict[str, object]) -> None:
    assert sl.after_exit(**{**CRASH, **change}) == sl.Exited()


def test_a_crash_after_the_load_began_restarts_at_once_and_resets_the_streak() -> None:
    got = sl.after_exit(**{**CRASH, "boot_failures": 3})
    assert got == sl.Restart(after=sl.RESTART_BASE, boot_failures=0)


def test_boot_failures_back_off_exponentially_then_give_up() -> None:
    failures, delays = 0, []
    while True:
        facts = {**CRASH, "ready": False, "ran_for": 0.2, "boot_failures": failures}
        got = sl.after_exit(**facts)
        if isinstance(got, sl.GiveUp):
            break
        assert isinstance(got, sl.Restart)
        delays.append(got.after)
        failures = got.boot_failures
    assert delays == [0.2, 0.4, 0.8, 1.6]  # 0.1 s doubling, one per failure in a row
    assert got == sl.GiveUp(boot=True, boot_failures=sl.MAX_BOOT_FAILURES)


def test_a_death_before_the_load_but_after_the_boot_window_is_no_boot_failure() -> None:
    facts = {**CRASH, "ready": False, "ran_for": sl.BOOT_WINDOW, "boot_failures": 4}
    assert sl.after_exit(**facts) == sl.Restart(after=0.1, boot_failures=0)


def test_a_crash_when_the_shard_is_done_is_not_replaced() -> None:
    got = sl.after_exit(**{**CRASH, "shard_done": True})
    assert got == sl.GiveUp(boot=False, boot_failures=0)


def test_the_restart_delay_is_capped() -> None:
    assert [sl.restart_delay(n) for n in (0, 1, 5, 6, 40)] == [0.1, 0.2, 3.2, 5.0, 5.0]


# scale_moves ---------------------------------------------------------------------------


def test_scaling_down_retires_the_highest_slots_whatever_their_state() -> None:
    states = [sl.RUNNING, sl.RUNNING, sl.RESTARTING, sl.STARTING, sl.REVIVING, sl.DONE]
    moves = sl.scale_moves(states, 2)
    assert moves == [sl.Update(0), sl.Update(1), sl.Retire(2), sl.Retire(3), sl.Retire(4)]


def test_scaling_up_revives_retired_and_retiring_slots_then_adds() -> None:
    states = [sl.RUNNING, sl.RETIRED, sl.RETIRING, sl.STARTING]
    moves = sl.scale_moves(states, 6)
    assert moves == [sl.Update(0), sl.Revive(1), sl.Revive(2), sl.Add(4), sl.Add(5)]


def test_a_slot_added_by_a_scale_up_retires_on_the_next_scale_down() -> None:
    """The defect this table fixed: an added slot was marked retiring from birth, so a
    later scale-down never signalled its worker."""
    s = [slot() for _ in range(3)]
    for one in s:
        one.fire("spawn")
    assert sl.scale_moves([x.state for x in s], 2) == [sl.Update(0), sl.Update(1), sl.Retire(2)]
    assert s[2].fire("retire") == sl.RETIRING

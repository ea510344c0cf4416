"""The client lifecycle table: every cell walked, every missing cell refused."""

from __future__ import annotations

import pytest

from tests.unit.lifecycle import check_cell, check_column, documented
from workers.pool import client as cl
from workers.shared import statetable as table

EVENTS = table.events(cl.TRANSITIONS)
IN_FLIGHT = (cl.ACQUIRING, cl.WAITING, cl.BACKOFF, cl.CONNECTING, cl.SENDING, cl.DELAYED)

# The table written out once more, by hand, as the lifecycle is meant to be.
EXPECTED = {
    (cl.READY, "issue"): cl.ACQUIRING,
    (cl.READY, "park"): cl.PAUSED,  # the load is paused, or ramps up
    (cl.READY, "retire"): cl.DONE,
    (cl.ACQUIRING, "attach"): cl.SENDING,
    (cl.ACQUIRING, "connect"): cl.CONNECTING,
    (cl.ACQUIRING, "wait"): cl.WAITING,
    (cl.ACQUIRING, "backoff"): cl.BACKOFF,
    (cl.ACQUIRING, "fail"): cl.READY,  # pool exhausted, or refused and going on
    (cl.ACQUIRING, "park"): cl.PAUSED,  # refused by an open breaker
    (cl.WAITING, "attach"): cl.SENDING,  # handed a checked-in connection
    (cl.WAITING, "connect"): cl.CONNECTING,  # a freed slot: a connect for it
    (cl.WAITING, "fail"): cl.READY,  # pool_timeout
    (cl.WAITING, "cancel"): cl.DONE,
    (cl.BACKOFF, "retry"): cl.ACQUIRING,
    (cl.BACKOFF, "cancel"): cl.DONE,
    (cl.CONNECTING, "attach"): cl.SENDING,
    (cl.CONNECTING, "fail"): cl.READY,
    (cl.CONNECTING, "cancel"): cl.DONE,
    (cl.SENDING, "delay"): cl.DELAYED,
    (cl.SENDING, "done"): cl.READY,
    (cl.SENDING, "fail"): cl.READY,
    (cl.SENDING, "connect"): cl.CONNECTING,  # re-sent on a fresh connection
    (cl.SENDING, "retry"): cl.ACQUIRING,  # re-sent, the pool full: asks the pool
    (cl.SENDING, "cancel"): cl.DONE,
    (cl.SENDING, "abandon"): cl.DONE,
    (cl.DELAYED, "send"): cl.SENDING,
    (cl.DELAYED, "retry"): cl.ACQUIRING,  # its reserved connection closed meanwhile
    (cl.DELAYED, "cancel"): cl.DONE,
    (cl.PAUSED, "wake"): cl.READY,
    (cl.PAUSED, "retire"): cl.DONE,
}


@pytest.mark.parametrize("state", cl.STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_cell(state: str, event: str) -> None:
    check_cell(cl.Client(0), state, event, EXPECTED.get((state, event)))


@pytest.mark.parametrize("state", cl.STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_request_path_moves_are_the_same_table(state: str, event: str) -> None:
    check_column(cl.ON, state, event, EXPECTED.get((state, event)))


def test_every_state_is_in_the_table_and_done_is_terminal() -> None:
    assert set(cl.TRANSITIONS) == set(cl.STATES)
    assert cl.TRANSITIONS[cl.DONE] == {}
    assert frozenset(IN_FLIGHT) == cl.IN_FLIGHT
    # every state but DONE can be left, and every one is reached from READY
    reached, frontier = {cl.READY}, [cl.READY]
    while frontier:
        for nxt in cl.TRANSITIONS[frontier.pop()].values():
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(cl.STATES)


def test_every_request_in_flight_can_end_at_a_drain() -> None:
    for state in IN_FLIGHT:
        if state is not cl.ACQUIRING:  # transient: never seen by the drain
            assert cl.TRANSITIONS[state].get("cancel") == cl.DONE


def test_repr_shows_state() -> None:
    client = cl.Client(3)
    client.fire("issue")
    assert repr(client) == "<Client 3 ACQUIRING target=0 trial=0>"


def test_architecture_doc_table_matches_the_code() -> None:
    assert documented("## Client state table", cl.STATES) == cl.TRANSITIONS

"""The worker's decisions, every branch, without a socket (workers/exchange/decide.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from workers.exchange import decide as d

# after_response -------------------------------------------------------------------


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=7)))
def test_after_response_every_combination(flags: tuple[bool, ...]) -> None:
    draining, evicted, keep_alive, keeping, retiring, more, closed = flags
    evict = "unsolicited" if evicted else ""
    got = d.after_response(draining, evict, keep_alive, keeping, retiring, more, closed)
    if draining or evicted:
        assert got is d.CLOSE
    elif keeping and keep_alive and not retiring and more and closed:
        assert got is d.RENEW
    else:
        assert got is d.CHECK_IN


def test_after_response_names_the_three_outcomes() -> None:
    assert d.after_response(False, "unsolicited", True, True, False, True, True) is d.Next.CLOSE
    assert d.after_response(False, "", True, True, False, True, True) is d.Next.RENEW
    # an open breaker: the connection goes back to the pool, the next request is judged
    assert d.after_response(False, "", True, True, False, True, False) is d.Next.CHECK_IN


# after_failure ---------------------------------------------------------------------

STALE: dict[str, Any] = {
    "phase": "read",
    "name": "ECONNRESET",
    "has_request": True,
    "checking": False,
    "injected": False,
    "written": True,
    "reused": True,
    "answered": False,
    "retry_stale": True,
    "idempotent": True,
    "retried": False,
}


def test_a_stale_reused_socket_is_resent_once_and_the_try_taken_back() -> None:
    assert d.after_failure(**STALE) == d.Resend(take_back=True)
    # a write that failed was never counted sent: nothing to take back
    assert d.after_failure(**{**STALE, "phase": "write"}) == d.Resend(take_back=False)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"retried": True}, "re-sent once already"),
        ({"reused": False}, "a fresh socket is not stale"),
        ({"answered": True}, "a byte of the answer came"),
        ({"name": "read_timeout"}, "a slow target is not a dead socket"),
        ({"name": "protocol_error"}, "garbage is not a dead socket"),
        ({"idempotent": False}, "a POST may not be sent twice"),
        ({"injected": True}, "an injected failure is never re-sent"),
        ({"retry_stale": False}, "the setting is off"),
    ],
)
def test_no_resend_unless_provably_safe(change: dict[str, Any], why: str) -> None:
    assert d.after_failure(**{**STALE, **change}) == d.Fail(sent=True), why


@pytest.mark.parametrize(
    ("phase", "written", "sent"),
    [
        ("read", True, True),
        ("read", False, False),
        ("write", True, False),
        ("connect", True, False),
    ],
)
def test_a_failure_is_sent_only_when_every_byte_was_written_before_a_read_failed(
    phase: str, written: bool, sent: bool
) -> None:
    facts = {**STALE, "phase": phase, "written": written, "retried": True}
    assert d.after_failure(**facts) == d.Fail(sent=sent)


def test_no_request_drops_the_connection_and_a_failed_check_rechecks() -> None:
    assert d.after_failure(**{**STALE, "has_request": False}) == d.Drop()
    assert d.after_failure(**{**STALE, "has_request": False, "checking": True}) == d.Drop()
    assert d.after_failure(**{**STALE, "checking": True}) == d.Recheck()


# on_refusal ------------------------------------------------------------------------


def test_open_loop_or_another_target_up_goes_on_at_once() -> None:
    assert d.on_refusal(open_loop=True, another_up=False, open_for=3.0) == d.Recycle()
    assert d.on_refusal(open_loop=False, another_up=True, open_for=3.0) == d.Recycle()


@pytest.mark.parametrize(
    ("open_for", "park"),
    [(-1.0, d.PARK_MIN), (0.0, d.PARK_MIN), (0.02, 0.02), (0.1, d.PARK_MAX), (30.0, d.PARK_MAX)],
)
def test_closed_loop_parks_until_the_breaker_may_admit_within_bounds(
    open_for: float, park: float
) -> None:
    assert d.on_refusal(open_loop=False, another_up=False, open_for=open_for) == d.Park(park)


# at_drain_deadline -----------------------------------------------------------------


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=3)))
def test_only_a_whole_request_awaiting_its_answer_is_abandoned(flags: tuple[bool, ...]) -> None:
    on_connection, written, reading = flags
    got = d.at_drain_deadline(on_connection, written, reading)
    want = d.Ending.ABANDONED if all(flags) else d.Ending.CANCELLED
    assert got is want

"""What a hostile or broken target may send is survived, bounded and named.

Each test runs a real worker against :class:`tests.hostile.Hostile`, a loopback
server that misbehaves on command, and checks the worker's counts against what
the server really received.
"""

from __future__ import annotations

import resource
import time

import pytest

from tests.conftest import run
from tests.hostile import Hostile
from workers.shared import slotstats as stats

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("both_paths")]


def accounted(snap: stats.Snapshot) -> None:
    """Every sent request has exactly one outcome (no worker died, no drain deadline)."""
    c = snap.counters
    assert c["requests.sent"] == c["requests.ok"] + c["requests.failed"], snap


def test_101_switching_protocols_is_a_named_failure_not_a_crash() -> None:
    for mode in ("upgrade", "upgrade_bare"):
        with Hostile(mode) as server:
            snap = run(server.host, server.port, pool_size=1, requests=5, read_timeout_ms=2000)
            assert snap.failures() == {"unexpected_upgrade": 5}, (mode, snap.errors())
            assert snap.counters["connections.evicted.error"] == 5  # never reused
            assert server.count == snap.counters["requests.sent"] == 5
            accounted(snap)


def test_interim_responses_are_skipped_never_counted_as_the_response() -> None:
    with Hostile("interim") as server:
        snap = run(server.host, server.port, pool_size=2, requests=40)
    c = snap.counters
    assert c["requests.ok"] == 40 == server.count
    assert snap.statuses == {200: 40}  # every request got its own final response
    assert c["responses.interim"] == 80  # a 100 and a 103 before each
    assert c["connections.created"] == 2  # the connections stayed in step: kept alive
    accounted(snap)


def test_a_header_that_never_ends_fails_fast_with_memory_bounded() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Hostile("endless_header") as server:
        start = time.monotonic()
        snap = run(server.host, server.port, pool_size=1, requests=3, read_timeout_ms=10_000)
        took = time.monotonic() - start
    assert snap.failures() == {"header_too_large": 3}
    assert took < 5  # at the limit, not at the read timeout
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 32 * 1024  # the header block was capped, not buffered
    accounted(snap)


@pytest.mark.parametrize("mode", ["big_header", "interim_flood"])
def test_header_blocks_over_the_limit_are_named(mode: str) -> None:
    with Hostile(mode) as server:
        snap = run(server.host, server.port, pool_size=1, requests=2, read_timeout_ms=10_000)
    assert snap.failures() == {"header_too_large": 2}
    assert server.count == 2
    accounted(snap)


def test_a_complete_header_block_in_one_read_is_measured_too() -> None:
    # 100 KiB of headers arrives, but the limit is checked on the header block alone:
    # with a limit above it the response is fine, with one below it is refused.
    with Hostile("big_header") as server:
        fine = run(server.host, server.port, pool_size=1, requests=2, max_header_bytes=200_000)
        small = run(server.host, server.port, pool_size=1, requests=2, max_header_bytes=4096)
    assert fine.counters["requests.ok"] == 2
    assert small.failures() == {"header_too_large": 2}


@pytest.mark.parametrize("mode", ["extra", "extra_partial"])
def test_bytes_after_a_response_evict_the_connection_and_are_never_counted(mode: str) -> None:
    with Hostile(mode) as server:
        snap = run(server.host, server.port, pool_size=1, requests=20)
    c = snap.counters
    assert c["requests.ok"] == 20 == server.count == c["requests.sent"]
    assert snap.statuses == {200: 20}  # the extra 299 never counted
    assert c["connections.evicted.unsolicited"] == 20  # each connection once
    accounted(snap)


def test_a_late_response_on_an_idle_connection_evicts_it() -> None:
    # Open loop at 5/s: the connection is idle when the late 299 arrives (50 ms after
    # its response; the next request is 200 ms later, the run's end 200 ms after the last).
    with Hostile("late_extra") as server:
        snap = run(server.host, server.port, pool_size=1, rate=5, duration_s=2.0)
    c = snap.counters
    assert c["requests.ok"] == 10 == server.count
    assert snap.statuses == {200: 10}
    assert c["connections.evicted.unsolicited"] == 10
    accounted(snap)


def test_a_target_that_talks_first_never_gets_its_greeting_counted_twice() -> None:
    # Two warm connections, one client: the connection it does not use is idle when its
    # greeting arrives, so at least that greeting is met idle.
    with Hostile("greet") as server:
        snap = run(
            server.host, server.port, pool_size=2, concurrency=1, requests=300, validate_after_ms=0
        )
        # A greeting may answer our last request before the server's thread has read
        # it: give the thread the time to read what was sent before the server stops.
        deadline = time.monotonic() + 5
        while server.count < snap.counters["requests.sent"] and time.monotonic() < deadline:
            time.sleep(0.01)
    c = snap.counters
    # Every greeting that arrived on an idle connection evicted it unread; one that
    # raced our first request on a fresh connection could only take that request's
    # place, and the answer it displaced is then the one nobody asked for.
    assert c["connections.evicted.unsolicited"] >= 1
    assert c["requests.sent"] == server.count == c["requests.ok"] + c["requests.failed"]
    assert sum(snap.statuses.values()) == c["requests.sent"]  # one response each, no more
    accounted(snap)


def test_a_status_outside_100_599_is_a_protocol_error() -> None:
    with Hostile("status_999") as server:
        snap = run(server.host, server.port, pool_size=1, requests=3)
    assert snap.failures() == {"protocol_error": 3}
    assert snap.statuses == {}


def test_4xx_and_5xx_are_failed_requests_unless_configured_as_success() -> None:
    with Hostile("status", status=503) as server:
        failed = run(server.host, server.port, pool_size=1, requests=10)
        ok = run(server.host, server.port, pool_size=1, requests=10, success_statuses="2xx,503")
    assert failed.counters["requests.failed"] == 10 and failed.counters["requests.ok"] == 0
    assert failed.failures() == {"status_5xx": 10} and failed.statuses == {503: 10}
    assert ok.counters["requests.ok"] == 10 and ok.counters["requests.failed"] == 0
    with Hostile("status", status=404) as server:
        missing = run(server.host, server.port, pool_size=1, requests=4)
    assert missing.failures() == {"status_4xx": 4}


def test_the_request_on_the_wire_is_exactly_the_configured_one() -> None:
    with Hostile("ok") as server:
        snap = run(
            server.host,
            server.port,
            pool_size=1,
            requests=2,
            method="POST",
            path="/a%20b?x=1",
            headers={"Host": "example.com", "X-Trace": "a\tb"},
            body="hello",
        )
    assert snap.counters["requests.ok"] == 2
    expected = (
        b"POST /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: poolsvc/0.1.0\r\n"
        b"X-Trace: a\tb\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert server.requests == [expected, expected]

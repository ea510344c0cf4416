"""The accelerated path counts what the Python path counts: the same seeded, bounded
run through each, every counter compared but the times.

Against nginx, nearly every response is the lane's; against the mixed hostile
server, a known share is handed back (chunked, split, interim, 404, close), so
the hand-over itself is held to the reference too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.conftest import make, snapshot
from tests.hostile import Hostile, mixed
from tools.nginx import Nginx
from workers.lane import fastpath as lane
from workers.shared import slotstats as stats

pytestmark = pytest.mark.integration

# What depends on timing, not on what was sent and received: sums and maxima of times.
TIMED = ("sum_us", "max_us")


def through(
    path: str, monkeypatch: pytest.MonkeyPatch, host: str, port: int, **values: Any
) -> tuple[stats.Snapshot, int]:
    """One run through ``path``: its totals and how many responses the lane handled."""
    if path == "pure":
        monkeypatch.setenv("POOLSVC_NO_EXTENSIONS", "1")
    else:
        monkeypatch.delenv("POOLSVC_NO_EXTENSIONS", raising=False)
    worker = make(host, port, seed=11, **values)
    fast = worker.loop.lane
    assert (fast is not None) == (path == "accelerated"), worker.path
    worker.run()
    sched = worker.run_state.schedule
    if sched is not None:  # open loop: the schedule gave out exactly the requests issued
        assert sum(sched.k) == worker.run_state.issued
    return snapshot(worker), fast.handled if fast is not None else 0


def counted(snap: stats.Snapshot) -> dict[str, Any]:
    """Everything a run counted, but the times."""
    figures: dict[str, Any] = {k: v for k, v in snap.counters.items() if not k.endswith(TIMED)}
    figures["statuses"] = dict(snap.statuses)
    figures["latencies"] = sum(snap.hist)  # one per response, whatever its bucket
    return figures


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}


@pytest.fixture
def accelerated() -> None:
    if not lane.ACCELERATED:
        pytest.fail(f"the accelerated path is not available: {lane.path()}")


@pytest.mark.nginx
@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_run_against_nginx(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"requests": 20_000, "concurrency": 20, "pool_size": 20, "duration_s": 60.0}
    before = nginx.requests_served()
    fast, handled = through("accelerated", monkeypatch, nginx.host, nginx.port, **values)
    middle = nginx.requests_served()
    pure, none = through("pure", monkeypatch, nginx.host, nginx.port, **values)
    after = nginx.requests_served()
    assert differences(counted(fast), counted(pure)) == {}
    # (each reading of nginx's count is a request of its own)
    assert fast.counters["requests.ok"] == 20_000 == middle - before - 1 == after - middle - 1
    assert fast.counters["connections.created"] == 20  # kept alive all along
    # The lane took all but the first response of each connection, and the last ones
    # (each client's last response is the bound's, which the Python path settles).
    assert handled >= 20_000 - 2 * 20, handled
    assert none == 0


def on_mixed(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]
) -> tuple[tuple[stats.Snapshot, int], tuple[stats.Snapshot, int]]:
    """The same run of 3000 requests through each path, each against a fresh mixed server."""
    runs = {}
    for path in ("accelerated", "pure"):
        with Hostile("mixed") as server:
            runs[path] = through(path, monkeypatch, server.host, server.port, **values)
            assert server.count == 3000
    return runs["accelerated"], runs["pure"]


@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_mixed_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"requests": 3000, "concurrency": 6, "pool_size": 6, "duration_s": 60.0}
    (fast, handled), (pure, _) = on_mixed(monkeypatch, values)
    assert differences(counted(fast), counted(pure)) == {}
    kinds = Counter(mixed(n) for n in range(1, 3001))
    c = fast.counters
    assert fast.statuses == {200: 3000 - kinds["404"], 404: kinds["404"]}
    assert c["requests.failed"] == kinds["404"]
    assert c["responses.interim"] == kinds["interim"]
    assert c["connections.created"] == 6 + kinds["close"]  # each close reconnected once
    # The plain ones were the lane's, but where the Python path had the one before;
    # everything else went back whole.
    assert kinds["ok"] // 2 < handled <= kinds["ok"], (handled, kinds)


# The open loop: asked far more than either path can send, so that every response finds
# a request due (the backlog) and the lane renews it; bounded by a request count, so
# that both paths send the same requests however fast each one is.
OPEN = {
    "requests": 20_000,
    "rate": 5_000_000.0,
    "max_backlog": 10_000_000,  # nothing dropped, whatever the speed
    "pool_wait_timeout_ms": 60_000,  # nothing times out waiting, whatever the speed
    "duration_s": 60.0,
}
# ... and what depends on how late each request went out, not on what was sent
LATE = ("requests.late",)


def open_counted(snap: stats.Snapshot, timed: tuple[str, ...] = ()) -> dict[str, Any]:
    figures = {k: v for k, v in counted(snap).items() if k not in LATE + timed}
    figures["uncorrected"] = sum(snap.hist2)  # one per response, from its actual send
    return figures


@pytest.mark.nginx
@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_open_loop_against_nginx(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {**OPEN, "concurrency": 20, "pool_size": 20}
    fast, handled = through("accelerated", monkeypatch, nginx.host, nginx.port, **values)
    pure, none = through("pure", monkeypatch, nginx.host, nginx.port, **values)
    assert differences(open_counted(fast), open_counted(pure)) == {}
    c = fast.counters
    assert c["requests.ok"] == 20_000 == sum(fast.hist2)
    assert c["requests.dropped"] == c["requests.unsent"] == 0
    assert c["connections.created"] == 20
    # behind its schedule from the first request (all 20,000 were due within 4 ms): most
    # went out late, and each response renewed its connection
    assert min(c["requests.late"], pure.counters["requests.late"]) > 20_000 * 0.9
    assert handled >= 20_000 - 3 * 20, handled
    assert none == 0


@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_open_loop_of_mixed_responses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {**OPEN, "requests": 3000, "concurrency": 6, "pool_size": 6}
    (fast, handled), (pure, _) = on_mixed(monkeypatch, values)
    assert differences(open_counted(fast), open_counted(pure)) == {}
    kinds = Counter(mixed(n) for n in range(1, 3001))
    assert fast.statuses == {200: 3000 - kinds["404"], 404: kinds["404"]}
    assert fast.counters["connections.created"] == 6 + kinds["close"]
    assert kinds["ok"] // 2 < handled <= kinds["ok"], (handled, kinds)


@pytest.mark.nginx
@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_open_loop_below_capacity(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below capacity a response rarely finds a request due: the lane parks its
    connection (the response counted, the connection idle) and sends the next request
    on it when it falls due; the Python path checks it in and out of the pool."""
    values = {**OPEN, "rate": 10_000.0, "requests": 10_000, "concurrency": 20, "pool_size": 20}
    fast, handled = through("accelerated", monkeypatch, nginx.host, nginx.port, **values)
    pure, _ = through("pure", monkeypatch, nginx.host, nginx.port, **values)
    # (how many of the pool's connections ever carry a request depends on timing: an
    # idle pool lends the last one back first)
    reused = ("connections.reused",)
    assert differences(open_counted(fast, reused), open_counted(pure, reused)) == {}
    c = fast.counters
    assert c["requests.ok"] == 10_000 and c["connections.created"] == 20
    assert c["connections.reused"] >= 10_000 - 20  # each connection's first, at most, fresh
    assert handled >= 10_000 * 0.9, handled  # parked and fired by the lane, nearly all

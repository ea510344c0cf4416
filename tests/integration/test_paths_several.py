"""The accelerated path over several targets: the open loop's lane holds each member's
target (its request, its breaker, its share of the schedule, its own figures), and
counts what the Python path counts, run for run, target for target.

The closed loop with several targets has no steady state to hold (each request picks
its target, so no response renews its connection): it runs the Python path, and the
report says so (tests/unit/test_lane.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from poolsvc.config import loader as config
from poolsvc.config import plan
from tests.conftest import snapshot
from tests.hostile import Hostile, mixed
from tests.integration.test_paths import OPEN, differences, open_counted
from tools.nginx import Nginx
from workers.lane import fastpath as lane
from workers.shared import shm
from workers.shared import slotstats as stats
from workers.shared.admission import SharedView
from workers.shared.errors import ERROR_NAMES
from workers.shared.histogram import BUCKETS
from workers.worker import Worker, build_worker

pytestmark = pytest.mark.integration

Hosts = list[tuple[str, int, dict[str, Any]]]


def make_several(hosts: Hosts, **values: Any) -> Worker:
    """An in-process worker of several targets: ``hosts`` as (host, port, its keys)."""
    targets = [
        {"host": h, "port": p, "name": f"t{i}", **keys} for i, (h, p, keys) in enumerate(hosts)
    ]
    cfg = config.build({"targets": targets, "workers": 1, **values}, {})
    run = plan.resolve(cfg, [(h, p) for h, p, _ in hosts], values.get("seed", 11), n=1)
    return build_worker(run.spec(run.shards[0]), SharedView.private(len(hosts)))


def own(worker: Worker) -> list[dict[str, Any]]:
    """Each target's own figures (its block of the region), but the latencies' values."""
    w = worker.shared.words
    figures = []
    for t in worker.targets:
        assert t.own
        figures.append(
            {
                "ok": w[t.block + shm.T_RESP_OK],
                "failed": w[t.block + shm.T_RESP_FAILED],
                "unsent": w[t.block + shm.T_UNSENT],
                "breaker_ok": w[t.ok_word],
                "errors": list(w[t.errors : t.errors + len(ERROR_NAMES)]),
                "latencies": sum(w[t.hist : t.hist + BUCKETS]),
            }
        )
    return figures


def through(
    path: str, monkeypatch: pytest.MonkeyPatch, hosts: Hosts, **values: Any
) -> tuple[stats.Snapshot, list[dict[str, Any]], int]:
    """One run through ``path``: its totals, each target's, and the lane's responses."""
    if path == "pure":
        monkeypatch.setenv("POOLSVC_NO_EXTENSIONS", "1")
    else:
        monkeypatch.delenv("POOLSVC_NO_EXTENSIONS", raising=False)
    worker = make_several(hosts, **values)
    fast = worker.loop.lane
    assert (fast is not None) == (path == "accelerated"), worker.path
    worker.run()
    sched = worker.run_state.schedule
    assert sched is not None and sum(sched.k) == worker.run_state.issued
    return snapshot(worker), own(worker), fast.handled if fast is not None else 0


@pytest.fixture
def accelerated() -> None:
    if not lane.ACCELERATED:
        pytest.fail(f"the accelerated path is not available: {lane.path()}")


# Below both targets' capacity, so that every request due in the run is sent and the
# schedule's picks split them exactly (3:1) whichever path sends them.
BELOW = {**OPEN, "rate": 8_000.0, "requests": 0, "duration_s": 1.0}
# How many connections carry a request depends on timing (an idle pool lends the last
# one back first), and so does how many were in flight when the run ended: a drain
# closes those when their response comes, the rest are closed at shutdown.
TIMING = ("connections.reused", "connections.shutdown")


@pytest.mark.nginx
@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_open_loop_over_two_targets(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts: Hosts = [
        (nginx.host, nginx.port, {"weight": 3, "pool_size": 12}),
        (nginx.host, nginx.port, {"weight": 1, "pool_size": 4, "path": "/health"}),
    ]
    fast, fast_own, handled = through("accelerated", monkeypatch, hosts, **BELOW)
    pure, pure_own, none = through("pure", monkeypatch, hosts, **BELOW)
    assert differences(open_counted(fast, TIMING), open_counted(pure, TIMING)) == {}
    assert fast_own == pure_own
    assert [t["ok"] for t in fast_own] == [6000, 2000]  # 8,000 due, by the picks
    c = fast.counters
    assert c["requests.ok"] == 8000 and c["connections.created"] == 16
    assert 0 < c["connections.shutdown"] <= 16
    assert handled >= 8000 * 0.9, handled  # parked and fired by the lane, nearly all
    assert none == 0


@pytest.mark.nginx
@pytest.mark.usefixtures("accelerated")
def test_an_overloaded_open_loop_over_two_targets_renews_in_the_lane(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked far more than either path sends, bounded by a request count: which target
    the last requests went to depends on speed, so the totals are compared, and each
    target's figures add up to them."""
    hosts: Hosts = [
        (nginx.host, nginx.port, {"pool_size": 10}),
        (nginx.host, nginx.port, {"pool_size": 10}),  # (the same bytes: the split is speed)
    ]
    values = {**OPEN, "concurrency": 20}
    fast, fast_own, handled = through("accelerated", monkeypatch, hosts, **values)
    pure, pure_own, _ = through("pure", monkeypatch, hosts, **values)
    assert differences(open_counted(fast), open_counted(pure)) == {}
    for figures, snap in ((fast_own, fast), (pure_own, pure)):
        assert sum(t["ok"] for t in figures) == snap.counters["requests.ok"] == 20_000
        assert sum(t["latencies"] for t in figures) == 20_000
        assert all(t["ok"] > 5_000 for t in figures)  # both served, round-robin
    assert handled >= 20_000 - 3 * 20, handled


@pytest.mark.nginx
@pytest.mark.usefixtures("accelerated")
def test_both_paths_count_the_same_open_loop_over_nginx_and_mixed_responses(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One target answers plainly, the other a known mix (chunked, split, interim, 404,
    close): the lane hands the second's back and keeps the first's."""
    values = {**BELOW, "rate": 1_200.0, "duration_s": 1.0}  # (the mixed server is slow)
    runs = {}
    for path in ("accelerated", "pure"):
        with Hostile("mixed") as server:
            hosts: Hosts = [
                (nginx.host, nginx.port, {"pool_size": 6}),
                (server.host, server.port, {"pool_size": 6}),
            ]
            runs[path] = through(path, monkeypatch, hosts, **values)
            assert server.count == 600
    (fast, fast_own, handled), (pure, pure_own, _) = runs["accelerated"], runs["pure"]
    assert differences(open_counted(fast, TIMING), open_counted(pure, TIMING)) == {}
    assert fast_own == pure_own
    kinds = Counter(mixed(n) for n in range(1, 601))
    assert fast.statuses == {200: 1200 - kinds["404"], 404: kinds["404"]}
    assert fast_own[1]["failed"] == kinds["404"] and fast_own[0]["failed"] == 0
    # nginx's were the lane's, nearly all; of the mixed, at most the plain ones
    assert 600 * 0.9 < handled <= 600 + kinds["ok"], (handled, kinds)

"""``poolctl pool``: a target's pool resized while open-loop load runs against nginx,
up and down, with no request failed or lost and nginx's count equal to ours."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Service
from tools.nginx import Nginx

pytestmark = pytest.mark.integration


def until(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def pool(svc: Service) -> dict[str, Any]:
    (target,) = svc.call("status")["targets"]
    return dict(target["pool"])


def test_a_pool_resized_under_load_follows_and_loses_nothing(nginx: Nginx, tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    before = nginx.requests_served()
    svc = Service(
        nginx, tmp_path / "svc", "--rate", "400", "--workers", "2", "--size", "4",
        "--min-size", "2",
    )  # fmt: skip
    try:
        assert pool(svc)["max"] == 4
        grown = svc.poolctl("pool", "--size", "20", "--min", "12")
        assert grown.returncode == 0, grown.stderr
        (row,) = json.loads(grown.stdout)
        assert (row["max"], row["min"]) == (20, 12)

        def opened() -> bool:
            p = pool(svc)
            return p["active"] + p["idle"] + p["connecting"] >= 12

        assert until(opened), pool(svc)  # within a tick per worker, plus the connects
        shrunk = svc.poolctl("pool", "--size", "4", "--min", "2")
        assert shrunk.returncode == 0, shrunk.stderr

        def closed() -> bool:
            p = pool(svc)
            return p["active"] + p["idle"] + p["connecting"] <= 4

        assert until(closed), pool(svc)
        bad = svc.poolctl("pool", "--size", "1")  # fewer than the workers
        assert bad.returncode == 3 and "between the workers" in bad.stderr
        nope = svc.poolctl("pool", "--size", "8", "--target", "nope")
        assert nope.returncode == 3 and "unknown target" in nope.stderr
        time.sleep(0.5)
        svc.call("drain")
        code, out = svc.wait_exit(30)
    finally:
        svc.close()
    assert code == 0, out
    figures = dict(
        line.split("=", 1) for line in out.splitlines() if "=" in line and " " not in line
    )
    sent = int(figures["requests.sent"])
    assert int(figures["requests.failed"]) == int(figures["requests.lost"]) == 0
    assert int(figures["requests.unsent"]) == 0
    assert nginx.requests_served() - before - 1 == sent  # minus this status request


def test_an_adaptive_pool_follows_a_load_step_up_and_back(target: Any, tmp_path: Path) -> None:
    """10 -> 200 concurrent requests against a 20 ms target: the pool grows toward its
    maximum; back to 10, it shrinks once its connections sat idle a whole window."""
    target.set(delay_ms=20)
    (tmp_path / "svc").mkdir()
    svc = Service(
        target, tmp_path / "svc", "--pool-adaptive", "--size", "64", "--min-size", "2",
        "--concurrency", "10", "--workers", "1",
    )  # fmt: skip
    try:
        assert until(lambda: pool(svc)["limit"] <= 12), pool(svc)  # sized to 10 in flight
        assert svc.poolctl("load", "--concurrency", "200").returncode == 0
        assert until(lambda: pool(svc)["limit"] >= 60, 10), pool(svc)
        assert pool(svc)["limit"] <= 64
        assert svc.poolctl("load", "--concurrency", "10").returncode == 0
        time.sleep(2.0)
        assert pool(svc)["limit"] >= 60  # not before the idle window: no oscillation
        assert until(lambda: pool(svc)["limit"] <= 16, 12), pool(svc)
        totals = svc.call("status")["totals"]
    finally:
        svc.close()
    assert totals["requests.failed"] == 0 and totals["requests.unsent"] == 0


@pytest.mark.parametrize("refused", [0.0, 0.5, 1.0])
def test_adaptive_backoff_waits_longer_the_more_connects_are_refused(
    target: Any, refused: float
) -> None:
    """Connects really refused (the injected fault connects to a closed port) at 0 %,
    50 % and 100 %: the reconnect delays measured grow with the refusal rate."""
    from tests.conftest import make
    from workers.pool.backoff import Backoff
    from workers.shared import shm
    from workers.shared.injection import CONNECT_MODES, Fault

    worker = make(
        target.host, target.port, pool_size=4, concurrency=2, duration_s=1.5,
        max_requests_per_conn=1, backoff_base_ms=20, backoff_cap_ms=2000,
        backoff_adaptive=True, breaker=False,
    )  # fmt: skip
    if refused:
        fault = Fault("connect_fail", refused, seed=9, param=CONNECT_MODES.index("refused"))
        shm.write_faults(worker.shared.words, worker.shared.layout, [fault])
    measured: list[float] = []

    class Measured(Backoff):
        """The worker's backoff, recording each new delay it decides."""

        __slots__ = ()

        def failure(self, now: float) -> float:
            before = self.not_before
            until = super().failure(now)
            if until != before:  # a new delay, not a failure inside the current one
                measured.append(until - now)
            return until

    worker.targets[0].pool.backoff = Measured(0.02, 2.0, random.Random(1), adaptive=True)
    worker.run()
    ceilings = {0.0: 0.0, 0.5: 0.02 * (1 + 9 * 0.5), 1.0: 0.02 * 10}
    if not refused:
        assert measured == []
        return
    assert measured, "no connect failed"
    first = measured[0]
    assert 0 <= first <= 2.0
    mean = sum(measured) / len(measured)
    # full jitter over a base scaled by the rate: the mean sits near half the ceiling
    # of the scaled base (and above the plain base's), doubling with each failed round
    assert mean >= ceilings[refused] / 4, (mean, measured[:10])
    if refused == 0.5:  # many first-round delays (each good response resets the doubling):
        # uniform over the scaled base, so the mean is half of it; a plain backoff's
        # would be half of 20 ms
        assert len(measured) > 100
        assert 0.35 * ceilings[0.5] <= mean <= 0.65 * ceilings[0.5], mean

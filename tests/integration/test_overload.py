"""An open loop asked for more than it can send degrades gracefully.

It sends at its capacity, ends within the duration and the read timeout (the drain
never grows with the backlog), says which side was the limit, and accounts for
every request that fell due: sent, timed out, cancelled or dropped, never lost.
The capacity is measured first, by the closed loop of the same path on the same
machine, so "3x" holds on a slow machine and a fast one alike.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.conftest import address, run_json
from tools.nginx import Nginx
from workers.lane import fastpath as lane

pytestmark = [pytest.mark.integration, pytest.mark.nginx, pytest.mark.timing]  # who is the limit

DURATION = 2.0
READ_TIMEOUT = 1.0


def on_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "pure":
        monkeypatch.setenv("POOLSVC_NO_EXTENSIONS", "1")
    else:
        if not lane.ACCELERATED:
            pytest.fail(f"the accelerated path is not available: {lane.path()}")
        monkeypatch.delenv("POOLSVC_NO_EXTENSIONS", raising=False)


def capacity(nginx: Nginx) -> float:
    """The closed loop's req/s with the pool the open loop gets."""
    m = run_json(*address(nginx), "--workers", "1", "--size", "50", "--duration", "1s")
    rps: float = m["metrics"]["run.rps"]
    assert rps > 0
    return rps


def overloaded(nginx: Nginx, rate: float, *extra: str) -> dict[str, Any]:
    doc = run_json(
        *address(nginx), "--workers", "1", "--size", "50", "--rate", f"{rate:.0f}",
        "--duration", f"{DURATION}s", "--read-timeout-ms", str(int(READ_TIMEOUT * 1000)), *extra,
    )  # fmt: skip
    metrics: dict[str, Any] = doc["metrics"]
    return metrics


def accounted(m: dict[str, Any], rate: float) -> None:
    """Every request due in the load period has exactly one outcome or was dropped."""
    due = math.ceil(round(rate) * DURATION)
    assert m["requests.total"] + m["requests.dropped"] == due
    assert m["requests.sent"] == m["requests.ok"] + m["requests.failed"]
    assert m["requests.lost"] == m["requests.abandoned"] == 0


@pytest.mark.parametrize("path", ["pure", "accelerated"])
def test_three_times_capacity_ends_on_time_and_names_the_limit(
    path: str, nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path(path, monkeypatch)
    rate = 3 * capacity(nginx)
    m = overloaded(nginx, rate)
    wanted = "accelerated" if path == "accelerated" else "pure (POOLSVC_NO_EXTENSIONS)"
    assert m["run.path"] == wanted
    # the drain is bounded by the read timeout, whatever the backlog was
    assert m["run.load_s"] + m["run.drain_s"] <= DURATION + READ_TIMEOUT + 1.0, m
    assert m["run.sent_share"] < 0.99 and m["requests.late"] > 0
    assert m["send_lag.max_ms"] > 1.0
    accounted(m, rate)
    if path == "pure":  # the Python path is far slower than nginx: it is the limit
        assert (m["run.limit"], m["run.busy"] >= 0.85) == ("generator", True), m
    else:  # the lane may keep up with nginx's one worker: whichever was, it is named
        assert m["run.limit"] in ("generator", "target"), m


def pure_at_three_times(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[dict[str, Any], float]:
    on_path("pure", monkeypatch)
    rate = 3 * capacity(nginx)
    return overloaded(nginx, rate, *extra), rate


def test_the_backlog_is_bounded_and_the_excess_dropped_by_name(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, rate = pure_at_three_times(nginx, monkeypatch, "--max-backlog", "500")
    assert m["requests.dropped"] > rate * DURATION / 3  # most of the excess
    accounted(m, rate)
    # a backlog of 500 at the rate asked is under 10 ms of waiting: no pool timeout,
    # and the latency from the intended times stays near it
    assert m.get("unsent.pool_timeout", 0) == 0
    assert m["latency.p50_ms"] < 1000 * 500 / (rate / 3) + 50, m


def test_waiting_past_the_pool_timeout_fails_by_name_in_one_step(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    m, rate = pure_at_three_times(nginx, monkeypatch, "--pool-wait-ms", "200")
    assert m["unsent.pool_timeout"] > 0
    assert m["requests.dropped"] == 0
    accounted(m, rate)
    # what waited longer than 200 ms failed: nothing sent waited much longer
    assert m["latency.max_ms"] < 200 + 100, m

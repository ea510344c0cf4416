"""Every request accounted for: sent = ok + failed + lost + abandoned, equal to what the
target itself counted, after kills, drains, restarts and exact bounds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from poolsvc.arbiter.slots import RUNNING
from poolsvc.metrics import ledger
from poolsvc.target import TargetServer
from tests.conftest import (
    POOLSVC,
    Background,
    address,
    in_background,
    make,
    run_json,
    snapshot,
    supervisor,
    until,
)
from workers.shared import slotstats as stats

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("both_paths")]


def balanced(c: dict[str, int]) -> None:
    assert ledger.unbalanced(c) == "", c


def wait_until_ready(sup: object, index: int, pid: int, timeout: float = 5.0) -> None:
    """Until the worker ``pid`` in slot ``index`` has started its load."""
    deadline = time.monotonic() + timeout
    slot = sup.region.slot(index)  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        if slot[1] == pid and slot[stats.GAUGE_INDEX["time.started_us"]]:
            return
        time.sleep(0.01)
    raise AssertionError("the worker never became ready")


def test_sigkilled_workers_in_flight_requests_are_counted_lost(target: TargetServer) -> None:
    # A slow target keeps many requests in flight: each kill loses some of them.
    target.set(delay_ms=20)
    sup, _ = supervisor(target.host, target.port, 2, duration_s=3.0, pool_size=16, concurrency=16)
    kills: list[int] = []

    def chaos() -> None:
        for _ in range(4):
            time.sleep(0.5)
            h = sup.slots[0]
            if h.state == RUNNING and h.pids:
                wait_until_ready(sup, 0, h.pids[-1])
                os.kill(h.pids[-1], signal.SIGKILL)
                kills.append(h.pids[-1])

    thread = in_background(chaos)
    assert sup.run() == 0  # killed after they were ready: never "failed at boot"
    thread.join()
    c = sup.snapshot().counters
    balanced(c)
    assert len(kills) == 4 and c["requests.lost"] > 0
    assert c["requests.in_doubt"] <= len(kills)
    served = target.stats()["requests"]
    assert c["requests.sent"] - c["requests.in_doubt"] <= served <= c["requests.sent"]
    info = sup.run_info()
    # the run's wall time, measured by the supervisor across the replacements
    assert 2.9 < info.elapsed_s < 4.5 and 2.9 < info.load_s < 3.3, info


def test_repeated_kills_of_running_workers_are_not_boot_failures(target: TargetServer) -> None:
    sup, events = supervisor(target.host, target.port, 1, duration_s=30.0)

    def kill_six_times() -> None:
        while not sup.slots[0].pids:
            time.sleep(0.01)
        for _ in range(6):
            pid = sup.slots[0].pids[-1]
            wait_until_ready(sup, 0, pid)
            os.kill(pid, signal.SIGKILL)
            while sup.slots[0].pids[-1] == pid:
                time.sleep(0.01)
        sup.drain()

    thread = in_background(kill_six_times)
    assert sup.run() == 0, events
    thread.join()
    assert len(sup.slots[0].exits) == 6
    assert not any("failed at boot" in e for e in events)
    balanced(sup.snapshot().counters)


def test_a_drain_that_times_out_counts_what_was_abandoned(target: TargetServer) -> None:
    target.set(hang=True)
    sup, _ = supervisor(
        target.host,
        target.port,
        2,
        duration_s=0.5,
        pool_size=4,
        concurrency=4,
        drain_timeout_ms=300,
        read_timeout_ms=20_000,
    )
    assert sup.run() == 0
    c = sup.snapshot().counters
    assert c["requests.abandoned"] == 4 == c["requests.sent"] == target.stats()["requests"]
    assert c["requests.ok"] == c["requests.failed"] == c["requests.lost"] == 0
    balanced(c)
    info = sup.run_info()
    assert 0.25 < info.drain_s < 1.5 and 0.45 < info.load_s < 0.7, info


def test_in_process_drain_deadline_splits_sent_from_never_sent(target: TargetServer) -> None:
    # Two requests hang at the target; the other two wait for a connection that the
    # full pool never frees: at the deadline those were never sent.
    target.set(hang=True)
    worker = make(
        target.host,
        target.port,
        pool_size=2,
        concurrency=4,
        duration_s=5,
        drain_timeout_ms=200,
        read_timeout_ms=20_000,
        pool_wait_timeout_ms=20_000,
    )
    bg = Background(worker)

    def stuck() -> bool:  # two requests sent and hanging, two waiting for a connection
        snap = snapshot(worker)
        return snap.counters["requests.sent"] >= 2 and snap.gauges["pool.waiting"] >= 2

    until(stuck)
    worker.stop()
    c = bg.join().counters
    assert c["requests.abandoned"] == 2 == c["requests.sent"]
    assert c["requests.unsent"] == c["unsent.cancelled"] == 2
    assert worker.in_flight == 0
    balanced(c)


@pytest.mark.parametrize(("workers", "requests"), [(2, 1), (3, 7)])
def test_request_bounds_are_exact_however_they_split(
    target: TargetServer, workers: int, requests: int
) -> None:
    wanted = min(workers, requests)
    doc = run_json(
        *address(target),
        "--size",
        "6",
        "--requests",
        str(requests),
    )
    m = doc["metrics"]
    assert m["requests.sent"] == m["requests.ok"] == requests == target.stats()["requests"]
    assert doc["workers"] <= wanted


def test_open_loop_sends_exactly_rate_times_duration(target: TargetServer) -> None:
    doc = run_json(
        *address(target),
        "--workers",
        "3",
        "--size",
        "6",
        "--rate",
        "200",
        "--duration",
        "1",
    )
    m = doc["metrics"]
    assert m["requests.sent"] == 200 == target.stats()["requests"]
    assert m["run.model"] == "open" and m["run.rate_target"] == 200


def test_instant_local_refusals_are_not_requests_per_second(target: TargetServer) -> None:
    doc = run_json(
        *address(target),
        "--workers",
        "1",
        "--size",
        "2",
        "--concurrency",
        "8",
        "--exhaustion",
        "fail",
        "--duration",
        "1",
    )
    m = doc["metrics"]
    assert m["unsent.pool_exhausted"] > 0 and m["requests.unsent"] == m["unsent.pool_exhausted"]
    assert m["requests.sent"] == target.stats()["requests"]
    assert m["run.rps"] == pytest.approx(m["requests.sent"] / m["run.load_s"], rel=0.01)
    balanced(m)


def test_requests_per_second_are_over_the_load_not_the_drain(target: TargetServer) -> None:
    target.set(delay_ms=400)
    doc = run_json(
        *address(target),
        "--workers",
        "1",
        "--size",
        "4",
        "--duration",
        "1",
    )
    m = doc["metrics"]
    assert 0.95 < m["run.load_s"] < 1.2 and 0.1 < m["run.drain_s"] < 0.6, m
    assert m["run.rps"] == pytest.approx(m["requests.sent"] / m["run.load_s"], rel=0.01)
    assert m["run.elapsed_s"] == pytest.approx(m["run.load_s"] + m["run.drain_s"], abs=0.01)


def test_connection_errors_are_kept_apart_from_request_failures(target: TargetServer) -> None:
    # The listener goes away: the warm pool's refills fail (no request lost), and
    # requests that needed a new connection fail without ever being sent.
    worker = make(
        target.host,
        target.port,
        pool_size=4,
        concurrency=2,
        duration_s=1.5,
        max_requests_per_conn=20,
        backoff_base_ms=5,
        backoff_cap_ms=20,
    )
    bg = Background(worker)
    time.sleep(0.4)
    target.control("stop_listening")
    snap = bg.join()
    c = snap.counters
    assert snap.connect_errors().get("ECONNREFUSED", 0) > 0
    assert snap.unsent().get("ECONNREFUSED", 0) > 0 and not snap.failures()
    assert c["requests.failed"] == 0
    assert sum(snap.unsent().values()) == c["requests.unsent"]
    balanced(c)


def test_timeline_rows_add_up_to_the_run(target: TargetServer, tmp_path: Path) -> None:
    timeline = tmp_path / "t.ndjson"
    doc = run_json(
        *address(target),
        "--duration",
        "2.5",
        "--timeline",
        str(timeline),
    )
    rows = [orjson.loads(line) for line in timeline.read_bytes().splitlines()]
    m = doc["metrics"]
    for key in ("sent", "ok", "failed", "unsent", "lost", "abandoned"):
        assert sum(r[key] for r in rows) == m[f"requests.{key}"], key
    assert max(r["max_ms"] for r in rows) <= m["latency.max_ms"]
    assert len(rows) >= 3  # the partial last second is a row of its own


def test_the_text_report_names_every_outcome(target: TargetServer, tmp_path: Path) -> None:
    target.set(hang=True)
    cfg = tmp_path / "run.json"
    cfg.write_bytes(orjson.dumps({"drain_timeout_ms": 200}))
    proc = subprocess.run(
        [
            *POOLSVC,
            "run",
            *address(target),
            "--workers",
            "1",
            "--size",
            "2",
            "--duration",
            "0.3",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[pool] sent = ok 0 + failed 0 + lost 0 + abandoned 2" in proc.stdout
    assert "abandoned: 2 (unanswered at the drain deadline)" in proc.stdout

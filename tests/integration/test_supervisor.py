"""The pre-fork service: real worker processes, real signals, the shared breaker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from poolsvc.arbiter.supervisor import EXIT_BOOT_FAILURE
from poolsvc.target import TargetServer
from tests.conftest import Nginx, in_background, run_json, supervisor, until
from workers.shared import shm
from workers.shared import slotstats as stats

pytestmark = pytest.mark.integration

POOLSVC = [sys.executable, "-m", "poolsvc"]


# Exactness -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_totals_equal_the_embedded_targets_count(target: TargetServer, n: int) -> None:
    doc = run_json(
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--workers",
        str(n),
        "--size",
        "8",
        "--requests",
        "3001",
    )
    m = doc["metrics"]
    assert m["requests.total"] == m["requests.ok"] == 3001 == target.stats()["requests"]
    assert len(doc["per_worker"]) == n == doc["workers"]
    assert sum(w["requests.total"] for w in doc["per_worker"]) == 3001
    assert all(w["requests.total"] > 0 for w in doc["per_worker"])
    assert m["connections.created"] == 8


@pytest.mark.nginx
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_totals_equal_nginx_count(nginx: Nginx, n: int) -> None:
    before = nginx.requests_served()
    doc = run_json(
        "--host",
        nginx.host,
        "--port",
        str(nginx.port),
        "--workers",
        str(n),
        "--size",
        "8",
        "--requests",
        "4000",
    )
    assert doc["metrics"]["requests.ok"] == 4000
    assert nginx.requests_served() - before == 4000 + 1  # + the first status request


def sending(sup: Any, worker: int) -> bool:
    """Worker ``worker`` has sent requests: it is past its boot, the load is on."""
    return int(sup.region.slot(worker)[stats.REQ_SENT]) > 0


# Worker death ----------------------------------------------------------------------------
def test_sigkilled_worker_is_replaced_and_totals_never_decrease(target: TargetServer) -> None:
    sup, events = supervisor(target.host, target.port, 2, duration_s=3.0, pool_size=4)
    samples: list[int] = []
    others: list[int] = []

    def chaos() -> None:
        until(lambda: sending(sup, 0) and sending(sup, 1))  # both workers under load
        os.kill(sup.slots[0].pids[-1], signal.SIGKILL)
        for _ in range(30):
            samples.append(sup.snapshot().counters["requests.total"])
            others.append(int(sup.region.slot(1)[stats.REQ_SENT]))  # worker 1's own word
            time.sleep(0.05)

    thread = in_background(chaos)
    assert sup.run() == 0
    thread.join()
    total = sup.snapshot().counters["requests.total"]
    assert samples == sorted(samples) and samples[-1] <= total  # never backwards
    assert len(sup.slots[0].pids) == 2 and sup.slots[0].exits == [-9]
    assert any("worker 0" in e and "signal 9" in e for e in events)
    assert others[-1] > others[0]  # the other worker kept working meanwhile
    assert sup.per_worker()[0]["requests.total"] > 0
    # What the killed worker had in flight is counted lost, not dropped from the totals:
    # the target's own count is what we sent (one less if it died just before a send).
    c = sup.snapshot().counters
    served = target.stats()["requests"]
    assert c["requests.sent"] - c["requests.in_doubt"] <= served <= c["requests.sent"]
    assert c["requests.sent"] == c["requests.ok"] + c["requests.lost"]


def test_worker_dying_at_boot_stops_the_service() -> None:
    # A target whose accept queue is full: every worker spends its boot (the warm-up)
    # waiting on connects, and each one is killed there, before it is ready.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    host, port = listener.getsockname()
    filler = socket.create_connection((host, port))
    sup, events = supervisor(host, port, 1, duration_s=30.0, connect_timeout_ms=3000)
    stop = threading.Event()

    def kill_each_new_worker() -> None:
        seen: set[int] = set()
        while not stop.is_set():
            for pid in sup.slots[0].pids:
                if pid not in seen:
                    seen.add(pid)
                    time.sleep(0.1)  # well inside its 3 s warm-up
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.01)

    thread = in_background(kill_each_new_worker)
    start = time.monotonic()
    try:
        code = sup.run()
    finally:
        stop.set()
        thread.join()
        filler.close()
        listener.close()
    assert code == EXIT_BOOT_FAILURE
    assert time.monotonic() - start < 15  # it gave up instead of crash-looping
    assert any("failed at boot 5 times in a row" in e for e in events)


# The shared breaker --------------------------------------------------------------------------
def test_breaker_opens_across_all_workers_and_recovers(target: TargetServer) -> None:
    sup, events = supervisor(
        target.host,
        target.port,
        2,
        duration_s=4.0,
        pool_size=4,
        concurrency=4,
        breaker_consecutive_failures=3,
        breaker_open_ms=200,
        breaker_open_max_ms=400,
        breaker_half_open_trials=2,
        backoff_base_ms=5,
        backoff_cap_ms=20,
        read_timeout_ms=500,
        connect_timeout_ms=200,
    )
    seen: dict[str, Any] = {}

    def outage() -> None:
        until(lambda: sending(sup, 0) and sending(sup, 1))  # both workers under load
        target.restart(down_ms=1500)  # every connection closed, connects refused for 1.5 s
        row = sup.region.breaker_row(0)
        blocks = [sup.region.target_words(w, 0) for w in (0, 1)]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if all(b[shm.T_REFUSED] > 0 for b in blocks):
                both = time.monotonic()
                # the supervisor stamps each transition with the same monotonic clock
                seen["both_refused_after_s"] = both - row[shm.B_CHANGED] / 1e6
                return
            time.sleep(0.001)

    thread = in_background(outage)
    assert sup.run() == 0
    thread.join()
    # While the breaker was first open (200 ms), both worker processes refused
    # requests without touching the network. (Typically within 3-8 ms of its opening;
    # the bound is the open period, not a timing claim a loaded machine could miss.)
    assert seen.get("both_refused_after_s", 1.0) < 0.2, seen
    kinds = [e.split()[3] for e in events if "circuit breaker" in e]
    assert kinds[0] == "OPEN" and "HALF_OPEN:" in kinds and kinds[-1] == "CLOSED", events
    brk = sup.breakers[0]
    assert brk.state == "CLOSED" and brk.total_trips >= 1
    # The HALF_OPEN that closed it admitted exactly `trials` requests across all workers.
    last_half_open = brk.generation - 1
    used = sum(
        shm.tagged_count(sup.region.target_words(w, 0)[shm.T_TRIAL_USED], last_half_open)
        for w in (0, 1)
    )
    assert used == 2
    snap = sup.snapshot()
    assert snap.counters["errors.breaker_open"] > 0
    assert snap.gauges["time.last_ok_us"] > snap.gauges["time.last_fail_us"]


# Stopping ------------------------------------------------------------------------------------
def _shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm")) if Path("/dev/shm").is_dir() else set()


def test_sigterm_under_load_drains_cleanly(target: TargetServer) -> None:
    shm_before = _shm_entries()
    proc = subprocess.Popen(
        [
            *POOLSVC,
            "run",
            "--host",
            target.host,
            "--port",
            str(target.port),
            "--workers",
            "2",
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until(lambda: target.stats()["requests"] > 100)  # forked, pools open, load on
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 2
        for child in children:
            # stdio + its audit's spare descriptor + its epoll + its 5 pooled sockets:
            # nothing inherited from the supervisor (wakeup pipe, target pipes, sibling
            # pipes) survived the fork
            fd_dir = f"/proc/{child.pid}/fd"
            fds = [fd for fd in os.listdir(fd_dir) if int(fd) > 2]
            kinds = sorted(os.readlink(f"{fd_dir}/{fd}").split(":")[0] for fd in fds)
            assert kinds == ["/dev/null", "anon_inode"] + ["socket"] * 5, kinds
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "[pool] SIGTERM: draining" in out
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert _shm_entries() == shm_before  # nothing left in /dev/shm
    lines = out.splitlines()
    total = int(next(x for x in lines if x.startswith("requests.total=")).split("=")[1])
    assert total == target.stats()["requests"]  # in-flight requests finished, none lost
    assert target.stats()["open"] == 0


def test_workers_exit_when_the_supervisor_is_killed() -> None:
    proc = subprocess.Popen(
        [*POOLSVC, "run", "--workers", "2", "--duration", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # 2 workers + the target, once everything has started (slowly, on a busy machine)
        until(lambda: len(psutil.Process(proc.pid).children(recursive=True)) == 3)
        time.sleep(0.3)  # and nothing more comes
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) == 3
        proc.kill()
        proc.wait()
        _gone, alive = psutil.wait_procs(family, timeout=5)
        assert not alive, alive
    finally:
        proc.kill()
        proc.wait()

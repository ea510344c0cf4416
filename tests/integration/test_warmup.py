"""--warmup: the pool opened and a ramp of requests sent before the measured period,
counted apart: each part keeps the ledger's identity, the target counts their sum,
and no measured figure includes the warm-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from poolsvc.cli.poolctl import render_status
from poolsvc.ctl.ctlclient import ControlClient, ServiceUnavailable
from poolsvc.target import TargetServer
from tests.conftest import address, make, settled
from tests.hostile import SLOW_FIRST, SLOW_MS, Hostile
from workers.shared import shm
from workers.shared import slotstats as stats
from workers.worker import Worker

pytestmark = pytest.mark.integration

POOLSVC = [sys.executable, "-m", "poolsvc"]
OUTCOMES = ("ok", "failed", "lost", "abandoned")


def run(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*POOLSVC, "run", *args, "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    metrics: dict[str, Any] = json.loads(proc.stdout)["metrics"]
    return metrics


def samples(text: str) -> dict[tuple[str, str], float]:
    """(name, result label) -> value, as Prometheus' own parser reads the text."""
    return {
        (s.name, s.labels.get("result", "")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def balanced(m: dict[str, Any], prefix: str = "") -> bool:
    """sent = ok + failed + lost + abandoned, in the measured part or the warm-up's."""
    sent = m[f"{prefix}requests.sent"]
    return bool(sent == sum(m[f"{prefix}requests.{k}"] for k in OUTCOMES))


def test_the_warm_up_opens_the_pool_and_its_requests_are_counted_apart(
    target: TargetServer, tmp_path: Path
) -> None:
    timeline = tmp_path / "t.ndjson"
    m = run(
        *address(target), "--workers", "2", "--warmup", "1", "--duration", "1",
        "--timeline", str(timeline),
    )  # fmt: skip
    assert m["warmup.s"] == 1.0
    assert m["warmup.requests.sent"] > 0 and m["requests.sent"] > 0
    assert balanced(m) and balanced(m, "warmup.")
    assert m["warmup.requests.failed"] == m["requests.failed"] == 0
    # the target saw both parts, and nothing else
    assert target.stats()["requests"] == m["requests.sent"] + m["warmup.requests.sent"]
    # the pool was opened in the warm-up: the measured period reuses it
    assert m["warmup.connections.created"] == 10 and m["connections.created"] == 0
    # the duration counts from the end of the warm-up
    assert 0.9 <= m["run.load_s"] <= 1.3, m["run.load_s"]
    # the per-second rows begin with the measured period and add up to it
    rows = [json.loads(line) for line in timeline.read_text().splitlines()]
    assert sum(r["sent"] for r in rows) == m["requests.sent"]
    assert rows[0]["sent"] > 0 and sum(r["seconds"] for r in rows) <= 1.5, rows


def test_an_anchored_warm_up_settles_before_the_measured_start(target: TargetServer) -> None:
    """--start-at with --warmup: the ramp ends early enough for its requests (200 ms
    each here) to end before the shards' measured start, so the schedule starts on
    time, with nothing owed."""
    target.set(delay_ms=200)
    start = f"{time.time() + 2.0:.3f}"
    proc = subprocess.run(
        [*POOLSVC, "run", *address(target), "--start-at", start, "--warmup", "3",
         "--rate", "200", "--duration", "2", "--size", "60", "--workers", "1", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    m = doc["metrics"]
    # ready before the anchor: a negative skew (it settled ~200 ms, within its 300 ms)
    assert doc["shard"]["start_skew_ms"] < 60, doc["shard"]
    assert m["requests.sent"] == 400 and m["warmup.requests.sent"] > 0
    assert m["latency.max_ms"] < 400, m["latency.max_ms"]  # no burst of owed requests


def test_a_request_bound_is_the_measured_period_s_alone(target: TargetServer) -> None:
    """--requests N with a warm-up: the warm-up runs its time, whatever N; then exactly
    N requests are measured."""
    m = run(*address(target), "--workers", "2", "--warmup", "1", "--requests", "500")
    assert m["requests.sent"] == m["requests.ok"] == 500
    assert m["warmup.requests.sent"] > 500 and balanced(m, "warmup.")
    assert target.stats()["requests"] == 500 + m["warmup.requests.sent"]


def test_warm_up_latency_is_out_of_the_measured_figures() -> None:
    """The target answers its first requests slowly (a cold cache): with a warm-up they
    are the warm-up's; without one (the control) they are the run's slowest."""
    args = ("--workers", "1", "--concurrency", "2", "--duration", "0.5")
    with Hostile("slow_start") as cold:
        m = run(*address(cold), *args, "--warmup", "1.5")
    slow = SLOW_MS * 0.9
    assert m["warmup.latency.max_ms"] >= slow and m["latency.max_ms"] < slow, m
    assert m["warmup.requests.ok"] >= SLOW_FIRST
    with Hostile("slow_start") as cold:
        control = run(*address(cold), *args)
    assert control["latency.max_ms"] >= slow and "warmup.s" not in control


def test_open_loop_warm_up_ramps_and_the_measured_count_is_exact(target: TargetServer) -> None:
    rate, seconds = 400, 1.0
    m = run(
        *address(target), "--workers", "2", "--rate", str(rate), "--warmup", "1",
        "--duration", "1", "--seed", "7",
    )  # fmt: skip
    # a linear ramp from 0 to the rate over the warm-up (less the pool's opening, which
    # it includes): up to rate * S / 2 requests fall due, not the full rate's rate * S
    assert 0.35 * rate * seconds <= m["warmup.requests.sent"] <= 0.52 * rate * seconds, m
    assert m["requests.sent"] == rate * seconds  # the measured bound, exact as without one
    assert balanced(m) and balanced(m, "warmup.")
    assert target.stats()["requests"] == m["requests.sent"] + m["warmup.requests.sent"]


@pytest.mark.parametrize("shape", [(), ("--rate", "2000")], ids=["closed", "open"])
def test_a_stop_during_the_warm_up_settles_it_and_measures_nothing(
    target: TargetServer, shape: tuple[str, ...]
) -> None:
    target.set(delay_ms=200)  # the stop finds requests in flight: settling takes a while
    proc = subprocess.Popen(
        [*POOLSVC, "run", *address(target), "--workers", "2", "--warmup", "30",
         "--duration", "5", *shape, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while target.stats()["requests"] < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    m = json.loads(out)["metrics"]
    assert m["requests.sent"] == 0 and m["warmup.requests.sent"] >= 50
    assert balanced(m, "warmup.")
    assert target.stats()["requests"] == m["warmup.requests.sent"]


@pytest.mark.parametrize("when", ["warming", "measuring"])
def test_a_worker_killed_keeps_both_ledgers(target: TargetServer, when: str) -> None:
    """SIGKILL one worker in the warm-up or after it: what it had in flight is lost in
    the part it belonged to, each part balances, and the target's count is the sum
    (within the requests in doubt)."""
    proc = subprocess.Popen(
        [*POOLSVC, "run", *address(target), "--workers", "2", "--warmup", "1.5",
         "--duration", "1.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20  # the warm-up's load has begun (slowly, when busy)
    while target.stats()["requests"] < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3 if when == "warming" else 2.0)  # into the warm-up, or past its 1.5 s
    workers = psutil.Process(proc.pid).children()
    assert workers, "no worker to kill"
    os.kill(workers[0].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    m = json.loads(out)["metrics"]
    assert balanced(m) and balanced(m, "warmup.")
    total = m["requests.sent"] + m["warmup.requests.sent"]
    doubt = m["requests.in_doubt"] + m["warmup.requests.in_doubt"]
    assert total - doubt <= target.stats()["requests"] <= total
    assert m["requests.sent"] > 0 and m["warmup.requests.sent"] > 0
    # what it had in flight is lost in the part it was killed in, and only there
    died_in, other = ("warmup.", "") if when == "warming" else ("", "warmup.")
    assert m[f"{died_in}requests.lost"] > 0 and m[f"{other}requests.lost"] == 0, m


def _warmup_sent(path: Path) -> int:
    with ControlClient(path) as c:
        return int(c.call("status")["totals"]["warmup.requests.sent"])


def test_status_shows_the_warm_up_then_the_measured_load(
    target: TargetServer, tmp_path: Path
) -> None:
    tmp_path.chmod(0o700)
    path = tmp_path / "control.sock"
    proc = subprocess.Popen(
        [*POOLSVC, "serve", *address(target), "--control", str(path), "--warmup", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        seen: list[tuple[str, int, int]] = []
        prom: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (seen and seen[-1][0] == "running"):
            try:
                with ControlClient(path) as c:
                    st = c.call("status")
            except (ServiceUnavailable, OSError):
                time.sleep(0.05)
                continue
            t = st["totals"]
            seen.append((st["service"]["state"], t["requests.sent"], t["warmup.requests.sent"]))
            if st["service"]["state"] == "warming up" and t["warmup.requests.ok"] and not prom:
                with ControlClient(path) as c:
                    prom.update(samples(c.call("metrics", format="prometheus")))
                header = render_status(st).splitlines()[0]  # what poolctl status prints
                assert "warming up" in header and "(warm-up: " in header, header
            time.sleep(0.1)
        warming = [s for s in seen if s[0] == "warming up"]
        assert warming and all(sent == 0 for _, sent, _ in warming), seen
        assert any(warm > 0 for _, _, warm in warming), seen
        assert seen[-1][0] == "running", seen
        # Prometheus, read while warming up: the warm-up's counter apart, the run's at 0
        assert prom[("poolsvc_warmup_requests_total", "ok")] > 0, prom
        assert prom[("poolsvc_requests_total", "ok")] == 0, prom
        # "running" once one worker measures: the other may still settle its warm-up.
        # A ramp never pauses, so two equal reads apart mean every warm-up is sealed.
        warm = settled(lambda: _warmup_sent(path))
        # a worker added now joins the measured load at once: no second warm-up
        with ControlClient(path) as c:
            c.call("workers", count=3)
        time.sleep(1.0)
        with ControlClient(path) as c:
            st = c.call("status")
        t = st["totals"]
        assert t["requests.sent"] > 0 and t["warmup.requests.sent"] == warm
        assert [w["requests"] > 0 for w in st["workers"]] == [True] * 3, st["workers"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a service running after a failure
            proc.communicate()


def test_a_bad_warm_up_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"warmup_s": -2}')
    for args, named in (
        (["--warmup=-1s"], "--warmup"),
        (["--warmup", "soon"], "--warmup"),
        (["--config", str(cfg)], "warmup_s"),
    ):
        proc = subprocess.run([*POOLSVC, "run", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_pool_opens_inside_the_warm_up(
    target: TargetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up is published before the pool opens, so no reader ever sees its
    connections as measured (they would vanish from the run's totals later)."""
    seen: list[int] = []
    opened = Worker._warm_up

    def watched(self: Worker) -> None:
        seen.append(self.s[stats.GAUGE_INDEX["time.warmup_us"]])
        opened(self)

    monkeypatch.setattr(Worker, "_warm_up", watched)
    worker = make(target.host, target.port, warmup_s=0.3, duration_s=0.3, pool_size=2)
    worker.run()
    assert seen and seen[0] > 0
    view = worker.shared
    lay, n = view.layout, view.layout.slot_words
    slot = view.words[lay.slot(0) : lay.slot(0) + n].tolist()
    block = view.words[lay.warmup(0) : lay.warmup(0) + n].tolist()
    measured, warm = shm.split(lay, slot, block)
    created = stats.INDEX["connections.created"]
    assert (warm[created], measured[created]) == (2, 0)
    sent = stats.INDEX["requests.sent"]
    assert warm[sent] > 0 and measured[sent] > 0
    assert target.stats()["requests"] == warm[sent] + measured[sent]

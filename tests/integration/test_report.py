"""The report does not hide what the target said: status codes, failures by name,
the breaker's refusals and reasons, and each target's own figures."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from poolsvc.target import TargetServer
from tests.conftest import POOLSVC, Service
from tests.hostile import Hostile

pytestmark = pytest.mark.integration


def run_text(*args: str) -> str:
    proc = subprocess.run([*POOLSVC, "run", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_all_5xx_is_a_failed_run_with_its_codes_and_the_breaker_on_one_line() -> None:
    with Hostile("status", status=503) as server:
        base = ["--host", server.host, "--port", str(server.port), "--workers", "1"]
        out = run_text(*base, "--size", "2", "--duration", "1")
        off = run_text(*base, "--size", "2", "--requests", "200", "--no-breaker")
    assert "[pool] failures: none" not in out
    assert "failures: status_5xx=" in out and "non-2xx/3xx responses: " in out
    # the breaker opened on the 5xx and refused requests: how many, and why, on one line
    line = next(x for x in out.splitlines() if x.startswith("[pool] breaker: "))
    assert re.search(r"refused [1-9]\d* requests; opened \d+ times \((first: )?\d+ consec", line)
    assert "requests.ok=0" in out
    # switched off: every request is sent and answered 503, nothing refused
    assert "[pool] breaker: off (--no-breaker)" in off
    assert "responses: 503=200; non-2xx/3xx responses: 200" in off
    assert "failures: status_5xx=200" in off and "not sent:" not in off


def test_status_for_a_live_open_loop_says_so(target: TargetServer, tmp_path: Path) -> None:
    svc = Service(target, tmp_path, "--workers", "2", "--rate", "300")
    try:
        status = svc.call("status")
        metrics = svc.call("metrics", format="json")
    finally:
        svc.close()
    assert status["load"]["model"] == "open" and status["load"]["rate"] == 300
    assert status["totals"]["run.model"] == "open" == metrics["run.model"]
    assert status["totals"]["run.rate_target"] == 300 == metrics["run.rate_target"]


def test_each_target_reports_its_own_figures(target: TargetServer, tmp_path: Path) -> None:
    target.set(delay_ms=20)  # the slow one
    with Hostile("status", status=404) as hostile:  # the fast one, and every answer a 404
        cfg = tmp_path / "two.json"
        cfg.write_text(
            json.dumps(
                {
                    "targets": [
                        {"host": target.host, "port": target.port, "name": "slow"},
                        {"host": hostile.host, "port": hostile.port, "name": "fast"},
                    ],
                    "workers": 1,
                    "pool_size": 4,
                }
            )
        )
        svc = Service(None, tmp_path, "--config", str(cfg))
        try:
            time.sleep(2.2)  # two whole intervals of each target's own
            status = svc.call("status")
        finally:
            svc.close()
    targets = {t["name"]: t for t in status["targets"]}
    slow, fast = targets["slow"], targets["fast"]
    assert slow["p50_ms"] >= 20 > fast["p50_ms"]
    # round-robin 1:1 in a closed loop: each gets half of what the run does
    assert fast["rps"] == pytest.approx(slow["rps"], rel=0.1)
    assert fast["rps"] + slow["rps"] == pytest.approx(status["interval"]["rps"], rel=0.1)
    assert fast["errors"] == {"status_4xx": fast["failed"]} and fast["failed"] > 0
    assert slow["errors"] == {} and slow["failed"] == 0 and slow["ok"] > 0

"""Thresholds in a real run: pass, fail (exit 99), abort after a sustained breach and not
before, a misspelled metric stopped before any load, per-target verdicts, JUnit."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from poolsvc.target import TargetServer
from tests.conftest import POOLSVC
from tests.hostile import Hostile

pytestmark = pytest.mark.integration


def poolsvc_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLSVC, "run", *args], capture_output=True, text=True, timeout=timeout)


def at(server: Any) -> list[str]:
    return ["--host", server.host, "--port", str(server.port)]


def test_thresholds_that_hold_exit_0_and_are_in_the_json(target: TargetServer) -> None:
    proc = poolsvc_run(
        *at(target), "--requests", "400", "--threshold", "latency:p(99)<2s",
        "--threshold", "requests.failed:rate<1%", "--threshold", "http_reqs>=400", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    verdicts = json.loads(proc.stdout)["thresholds"]
    assert [v["ok"] for v in verdicts] == [True, True, True]
    assert verdicts[2]["metric"] == "requests.total" and verdicts[2]["value"] == 400


def test_a_failed_threshold_exits_99_with_its_line_and_junit(
    target: TargetServer, tmp_path: Path
) -> None:
    target.set(delay_ms=20)
    junit = tmp_path / "junit.xml"
    proc = poolsvc_run(
        *at(target), "--requests", "60", "--size", "4", "--threshold", "latency:p(50)<5ms",
        "--threshold", "requests.failed:count==0", "--junit", str(junit),
    )  # fmt: skip
    assert proc.returncode == 99, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if x.startswith("[threshold]")]
    seen = re.match(r"\[threshold\] FAIL latency:p\(50\)<5ms: ([\d.]+)ms", lines[0])
    assert seen and float(seen.group(1)) >= 20 and "limit < 5.000ms" in lines[0], lines[0]
    assert lines[1] == "[threshold] pass requests.failed:count==0: 0"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "2"


def slow_for(target: TargetServer, start: float, seconds: float) -> threading.Thread:
    def run() -> None:
        time.sleep(start)
        target.set(delay_ms=30)
        time.sleep(seconds)
        target.clear()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_abort_on_fail_stops_the_run_after_a_sustained_breach(target: TargetServer) -> None:
    target.set(delay_ms=30)  # slow from the first request on
    started = time.monotonic()
    proc = poolsvc_run(
        *at(target), "--duration", "30s", "--size", "4",
        "--threshold", "latency:p(50)<10ms abort_on_fail for=3s", "--json",
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == 99, proc.stderr
    doc = json.loads(proc.stdout)
    (v,) = doc["thresholds"]
    assert v["aborted_the_run"] and not v["ok"]
    # breached in every second from the start: stopped once the 3 s window was whole
    # (the first second also holds the warm-up, hence the slack), long before 30 s
    assert 2.5 <= doc["metrics"]["run.load_s"] < 8.0 and took < 20
    assert any("breached for 3s: stopping the run" in e for e in doc["events"])


def test_a_breach_shorter_than_its_window_does_not_stop_the_run(target: TargetServer) -> None:
    slow_for(target, 1.0, 1.2)
    proc = poolsvc_run(
        *at(target), "--duration", "5s", "--size", "4",
        "--threshold", "latency:p(50)<10ms abort_on_fail for=3s", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["metrics"]["run.load_s"] >= 4.9
    assert not doc["thresholds"][0]["aborted_the_run"]


@pytest.mark.parametrize(
    ("threshold", "named"),
    [
        ("latncy:p(99)<25ms", "unknown metric 'latncy'"),
        ("latency:p(99)<25parsecs", "unknown unit 'parsecs'"),
        ("latency{target=nope}:p(99)<1", "unknown target 'nope'"),
    ],
)
def test_a_bad_threshold_is_exit_2_before_any_load(threshold: str, named: str) -> None:
    with Hostile("ok") as server:
        proc = poolsvc_run(*at(server), "--requests", "50", "--threshold", threshold)
        assert proc.returncode == 2 and named in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert server.requests == []  # nothing was sent


def test_per_target_thresholds_judge_their_own_target(target: TargetServer, tmp_path: Path) -> None:
    target.set(delay_ms=15)
    with Hostile("ok") as fast:
        cfg = tmp_path / "two.json"
        cfg.write_text(
            json.dumps(
                {
                    "targets": [
                        {"host": target.host, "port": target.port, "name": "slow"},
                        {"host": fast.host, "port": fast.port, "name": "fast"},
                    ],
                    "requests": 200,
                    "pool_size": 4,
                    "thresholds": [
                        "latency{target=fast}:p(50)<10ms",
                        {"threshold": "latency{target=slow}:p(50)<10ms"},
                        "requests.ok{target=fast}:count>=90",
                    ],
                }
            )
        )
        proc = poolsvc_run("--config", str(cfg), "--json")
    assert proc.returncode == 99, proc.stderr
    verdicts = {v["threshold"]: v for v in json.loads(proc.stdout)["thresholds"]}
    assert verdicts["latency{target=fast}:p(50)<10ms"]["ok"]
    assert not verdicts["latency{target=slow}:p(50)<10ms"]["ok"]
    assert verdicts["latency{target=slow}:p(50)<10ms"]["value"] >= 15_000
    assert verdicts["requests.ok{target=fast}:count>=90"]["ok"]

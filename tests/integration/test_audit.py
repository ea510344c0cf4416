"""FD-leak audits across real worker processes, checked against the kernel's own view."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from poolsvc.target import TargetServer
from tests.conftest import Service, address, settled, until

pytestmark = pytest.mark.integration

POOLSVC = [sys.executable, "-m", "poolsvc"]


def run_json(*args: str, **kw: Any) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [*POOLSVC, "run", *args, "--json"], capture_output=True, text=True, timeout=120, **kw
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


def socket_fds(pid: int) -> set[int]:
    fd_dir = f"/proc/{pid}/fd"
    out = set()
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                out.add(int(name))
        except OSError:
            pass
    return out


@pytest.fixture
def audited(target: TargetServer, tmp_path: Path) -> Iterator[Service]:
    svc = Service(target, tmp_path, "--workers", "2", "--size", "4", "--read-timeout-ms", "300")
    yield svc
    svc.close()


def pool(svc: Service) -> dict[str, int]:
    (target,) = svc.call("status")["targets"]
    return dict(target["pool"])


def test_clean_run_with_restarts_and_resets_has_no_leak(target: TargetServer) -> None:
    import threading

    def chaos() -> None:
        # Restart only once the workers are sending: a restart during the run's start-up
        # preflight is an unreachable target (exit 4), not the chaos this test is about.
        deadline = time.monotonic() + 30
        while target.stats()["requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        for _ in range(3):
            time.sleep(0.4)
            target.restart(down_ms=50)

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    code, doc, err = run_json(
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--workers",
        "2",
        "--duration",
        "2",
        "--inject-failures",
        "--seed",  # the draws fixed: each worker's first reset comes early (3rd, 31st
        "2",  # request), so a run slowed by a busy machine still has some
        "--read-timeout-ms",
        "200",
        "--fail-on-leak",
    )
    thread.join()
    assert code == 0, err
    m = doc["metrics"]
    chaos_seen = {
        k: m.get(k, 0) for k in ("requests.sent", "injected.reset", "connections.created")
    }
    # (the JSON leaves out counters that stayed 0: .get, so that a miss says what it saw)
    assert chaos_seen["injected.reset"] > 0, chaos_seen
    assert chaos_seen["connections.created"] > 20, chaos_seen  # replaced after each
    assert len(doc["audit"]) == 2  # every worker audited itself before exiting
    for final in doc["audit"]:
        assert final["leaked"] == [] and final["close_wait"] == []
        assert final["fds_now"] == final["fds_baseline"], final  # back at baseline


def test_leak_fault_found_exactly(audited: Service) -> None:
    first = audited.call("audit")
    assert first["verdict"] == "clean" and first["totals"]["leaked"] == 0
    audited.call("inject", action="set", fault="leak", rate=1.0)
    audited.call("breaker", action="close")  # keep the load going whatever happens
    # Make the pool close connections (the server ends each one): every close leaks
    # (once the workers have taken the fault).
    audited.target.set(close_after_response=True)
    until(lambda: audited.call("metrics").get("injected.leak", 0) > 0)
    audited.target.clear()
    audited.call("inject", action="clear")
    # the pool refills; no more leaks from here on: the count holds still
    settled(lambda: int(audited.call("metrics").get("injected.leak", 0)))
    leaked_total = audited.call("metrics")["injected.leak"]
    assert leaked_total > 0
    # Pause the load so that no read timeout opens or closes a socket between the
    # audit and the kernel's view read below (a loaded machine can be that slow):
    # paused once every request in flight has ended, the whole pool idle.
    audited.call("load", pause=True)
    until(lambda: pool(audited)["idle"] == 4)
    report = audited.call("audit")
    assert report["verdict"] == "LEAK"
    found = sum(len(w["leaked"]) for w in report["workers"])
    assert found == leaked_total == report["totals"]["leaked"]
    for w in report["workers"]:
        # Cross-check with the kernel: every socket of the worker is either registered
        # or reported as leaked; every reported fd really is an open socket.
        kernel = socket_fds(w["pid"])
        leaked = {row["fd"] for row in w["leaked"]}
        assert leaked <= kernel
        assert len(kernel) == w["registered"] + len(leaked)
        for row in w["leaked"]:
            assert row["registry"].startswith("CLOSED") and row["tcp_state"]
    text = audited.poolctl("audit")
    assert text.returncode == 5 and "verdict: LEAK" in text.stdout
    out = audited.path.parent / "audit.md"
    assert (
        audited.poolctl("audit", "--last", "--format", "markdown", "--out", str(out)).returncode
        == 5
    )
    assert out.read_text().startswith("# FD audit") and "| worker | pid |" in out.read_text()


def test_close_wait_reported_until_evicted(audited: Service) -> None:
    # The pool stops reading its idle sockets (half_open), the server closes them:
    # the kernel holds them in CLOSE_WAIT until the pool evicts them.
    audited.call("load", concurrency=2)
    until(lambda: pool(audited)["idle"] == 2)  # the workers took it: one idle socket each
    audited.call("inject", action="set", fault="half_open", rate=1.0)
    until(lambda: audited.call("metrics").get("injected.half_open", 0) > 0)
    audited.call("inject", action="clear")
    audited.target.set(idle_close_ms=100)
    until(lambda: audited.call("audit")["totals"]["close_wait"] > 0)
    report = audited.call("audit")
    waiting = report["totals"]["close_wait"]
    assert waiting > 0
    assert all(r["tcp_state"] == "CLOSE_WAIT" for w in report["workers"] for r in w["close_wait"])
    audited.target.clear()
    audited.call("load", concurrency=8)  # every socket gets used: the dead ones time out
    until(lambda: audited.call("audit")["totals"]["close_wait"] == 0)
    after = audited.call("audit")
    assert after["totals"]["close_wait"] == 0
    m = audited.call("metrics")
    # evicted by the checkout probe (the FIN is there to read) or by the read timeout
    assert m["connections.evicted.validation"] + m.get("errors.read_timeout", 0) >= waiting


def test_cheap_tier_history_and_periodic_report(target: TargetServer, tmp_path: Path) -> None:
    report = tmp_path / "periodic.json"
    svc = Service(
        target, tmp_path, "--workers", "1", "--audit-every", "0.5", "--audit-report", str(report)
    )
    try:
        until(report.exists)  # the first report follows the first 0.5 s audit
        doc = json.loads(report.read_text())
        assert doc["verdict"] == "clean" and doc["summary"][0]["cost_ms"] > 0
        history = doc["history"]["0"]
        assert len(history) >= 1 and history[-1][1] == history[-1][2]  # counted == expected
        key = f"{target.host}:{target.port}"
        assert list(doc["time_wait"]) == [key] and doc["time_wait"][key] >= 0
    finally:
        svc.close()


def _limit(soft: int, hard: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def test_preflight_raises_the_soft_limit_when_allowed(target: TargetServer) -> None:
    code, doc, err = run_json(
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--workers",
        "1",
        "--size",
        "200",
        "--concurrency",
        "4",
        "--requests",
        "500",
        preexec_fn=_limit(64, 4096),
    )
    assert code == 0, err
    assert any("raised the RLIMIT_NOFILE soft limit from 64" in e for e in doc["events"])
    assert doc["metrics"]["connections.created"] == 200
    assert "errors.EMFILE" not in doc["metrics"]


def test_preflight_refuses_clearly_when_it_cannot(target: TargetServer) -> None:
    proc = subprocess.run(
        [
            *POOLSVC,
            "run",
            "--host",
            target.host,
            "--port",
            str(target.port),
            "--workers",
            "1",
            "--size",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit(64, 64),
    )
    assert proc.returncode == 2
    assert "RLIMIT_NOFILE is 64" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_an_audit_out_of_descriptors_still_runs_and_never_says_clean(
    target: TargetServer, tmp_path: Path
) -> None:
    # Every connection the pool closes is leaked on purpose, until the worker runs out
    # of descriptors (EMFILE). The audits must not crash the worker (a spare descriptor
    # is handed back for them), must find the leak, and --fail-on-leak must exit 5.
    cfg = tmp_path / "leak.json"
    cfg.write_text('{"inject_failures": [{"fault": "leak", "rate": 1.0}]}')
    proc = subprocess.run(
        [
            *POOLSVC,
            "run",
            *address(target),
            "--workers",
            "1",
            "--size",
            "4",
            "--duration",
            "2",
            "--max-requests-per-conn",
            "3",
            "--fail-on-leak",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit(48, 48),
    )
    assert proc.returncode == 5, proc.stdout[-800:] + proc.stderr
    assert "Traceback" not in proc.stderr and "restarting" not in proc.stdout  # no crash
    assert "errors.EMFILE" in proc.stdout or "connect_errors.EMFILE" in proc.stdout
    verdict = next(x for x in proc.stdout.splitlines() if x.startswith("[audit] "))
    assert "leaked=0" not in verdict, verdict

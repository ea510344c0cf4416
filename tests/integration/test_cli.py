"""``poolsvc run`` as a user runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poolsvc.target import TargetServer
from tools.nginx import free_port

pytestmark = pytest.mark.integration

POOLSVC = [sys.executable, "-m", "poolsvc"]


def poolsvc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLSVC, *args], capture_output=True, text=True, timeout=timeout)


def metrics_block(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)


def test_default_run_uses_embedded_target_and_prints_the_report() -> None:
    proc = poolsvc("run", "--duration", "1", "--size", "4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("[pool] target 127.0.0.1:") and "(embedded target)" in lines[0]
    assert "[pool] created 4 connections" in lines
    assert any(line.startswith("[pool] request latency p50=") for line in lines)
    assert "[pool] failures: none" in lines
    m = metrics_block(proc.stdout)
    stable = (
        "requests.total",
        "requests.ok",
        "requests.failed",
        "connections.created",
        "connections.reused",
        "connections.evicted",
        "connections.active",
        "connections.idle",
        "latency.p50_ms",
        "latency.p95_ms",
        "latency.p99_ms",
    )
    for key in stable:
        assert key in m, key
    assert int(m["requests.total"]) == int(m["requests.ok"]) > 0
    assert float(m["latency.p50_ms"]) <= float(m["latency.p99_ms"]) <= float(m["latency.max_ms"])


def test_request_bound_and_json_match_the_server_count(target: TargetServer) -> None:
    proc = poolsvc(
        "run", "--host", target.host, "--port", str(target.port), "--requests", "777", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    m = doc["metrics"]
    assert m["requests.total"] == m["requests.ok"] == 777 == target.stats()["requests"]
    assert doc["recovered"] is None and doc["embedded_target"] is False


def test_failures_and_recovery_lines(target: TargetServer) -> None:
    proc = subprocess.Popen(
        [
            *POOLSVC,
            "run",
            "--host",
            target.host,
            "--port",
            str(target.port),
            "--duration",
            "3",
            "--read-timeout-ms",
            "300",
            "--breaker-open-ms",
            "200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20  # the load runs (a loaded machine starts slowly)
    while target.stats()["requests"] < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    target.set(reset=True)
    time.sleep(0.3)
    target.clear()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    failures = next(line for line in out.splitlines() if line.startswith("[pool] failures:"))
    assert "ECONNRESET=" in failures
    lines = out.splitlines()
    opened = next(i for i, x in enumerate(lines) if x.startswith("[pool] circuit breaker OPEN for"))
    closed = next(i for i, x in enumerate(lines) if x.startswith("[pool] circuit breaker CLOSED"))
    assert opened < closed
    assert "[pool] recovered, pool size=10" in lines
    assert int(metrics_block(out)["errors.ECONNRESET"]) > 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--size", "0"], "pool_size must be >= 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--size", "x"], "invalid int value"),
        (["--host", "127.0.0.1"], "host and port go together"),
        (["--exhaustion", "maybe"], "exhaustion must be"),
        (["--header", "nocolon"], "header must be NAME:VALUE"),
        (["--config", "/nonexistent/poolsvc.json"], "cannot read config"),
    ],
)
def test_invalid_arguments_exit_2_with_one_line(args: list[str], reason: str) -> None:
    proc = poolsvc("run", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and reason in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_config_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pool_size": "ten"}))
    proc = poolsvc("run", "--config", str(path))
    assert proc.returncode == 2 and "pool_size must be int, not str" in proc.stderr


def test_config_file_keys_are_used_and_flags_override(tmp_path: Path, target: TargetServer) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "host": target.host,
                "port": target.port,
                "pool_size": 3,
                "connect_timeout_ms": 500,
                "read_timeout_ms": 2000,
                "idle_timeout_ms": 10000,
                "inject_failures": False,
                "requests": 50,
            }
        )
    )
    proc = poolsvc("run", "--config", str(path), "--size", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["pool_size"] == 2 and doc["metrics"]["connections.created"] == 2
    assert doc["metrics"]["requests.total"] == 50


def test_unreachable_port_exits_4_quickly() -> None:
    start = time.monotonic()
    proc = poolsvc("run", "--host", "127.0.0.1", "--port", str(free_port()))
    assert proc.returncode == 4
    assert "ECONNREFUSED" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 10


def test_port_9_exits_4_within_about_the_connect_timeout() -> None:
    start = time.monotonic()
    proc = poolsvc("run", "--host", "127.0.0.1", "--port", "9", "--connect-timeout-ms", "500")
    elapsed = time.monotonic() - start
    assert proc.returncode == 4, proc.stdout
    assert "cannot connect to 127.0.0.1:9" in proc.stderr
    assert elapsed < 5


def test_blackholed_target_exits_4_after_the_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    try:
        start = time.monotonic()
        proc = poolsvc(
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(listener.getsockname()[1]),
            "--connect-timeout-ms",
            "300",
        )
        elapsed = time.monotonic() - start
    finally:
        filler.close()
        listener.close()
    assert proc.returncode == 4 and "connect_timeout" in proc.stderr
    assert 0.3 <= elapsed < 5


def test_sigint_drains_and_reports(target: TargetServer) -> None:
    proc = subprocess.Popen(
        [*POOLSVC, "run", "--host", target.host, "--port", str(target.port), "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20  # the load runs: the handlers are in place
        while target.stats()["requests"] < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()  # no-op when it exited; never leave a load running after a failure
        proc.wait()
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 5
    m = metrics_block(out)
    assert int(m["requests.total"]) == target.stats()["requests"] > 0
    assert target.stats()["open"] == 0  # every socket closed at exit


EMFILE_SCRIPT = """
import json, sys
from tests.conftest import run
snap = run(sys.argv[1], int(sys.argv[2]), pool_size=40, concurrency=4, duration_s=0.5)
errors = {**snap.errors(), **snap.connect_errors()}
print(json.dumps({"errors": errors, "ok": snap.counters["requests.ok"]}))
"""


def test_emfile_is_classified_not_reported_as_a_connect_failure(target: TargetServer) -> None:
    # A worker run directly (no pre-flight in front of it) with only 24 descriptors and a
    # pool of 40: socket() itself fails.  That is EMFILE, a local limit -- never a
    # connect failure blamed on the target.
    import resource

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

    proc = subprocess.run(
        [sys.executable, "-c", EMFILE_SCRIPT, target.host, str(target.port)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_fd_limit,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["errors"]["EMFILE"] > 0
    assert "ECONNREFUSED" not in doc["errors"] and "connect_timeout" not in doc["errors"]
    assert doc["ok"] > 0  # the sockets it could open still carried the load

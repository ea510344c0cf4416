"""The data path against a real nginx on loopback."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Background, Nginx, Service, fd_count, make, run, run_json, until

pytestmark = [pytest.mark.integration, pytest.mark.nginx, pytest.mark.usefixtures("both_paths")]


def test_exact_count_and_keepalive_against_nginx(nginx: Nginx) -> None:
    before = nginx.requests_served()
    snap = run(nginx.host, nginx.port, pool_size=8, requests=5000)
    c = snap.counters
    assert c["requests.ok"] == 5000 and c["responses.2xx"] == 5000
    assert c["connections.created"] == 8 and c["connections.reused"] == 5000 - 8
    assert nginx.requests_served() - before == 5000 + 1  # + the first status request


def test_nginx_head_chunked_and_health(nginx: Nginx) -> None:
    for path, method in (("/", "HEAD"), ("/chunked", "GET")):
        snap = run(nginx.host, nginx.port, path=path, method=method, pool_size=2, requests=50)
        assert snap.counters["requests.ok"] == 50, (path, snap.errors())
        assert snap.counters["connections.reused"] == 48


def test_nginx_idle_close_fails_no_request(nginx: Nginx) -> None:
    # This server block closes idle keep-alive sockets after 1 s: our 3 cold pooled
    # sockets are closed behind the pool's back (and refilled) while one stays hot.
    snap = run(nginx.host, nginx.short_port, pool_size=4, concurrency=1, duration_s=2.5)
    c = snap.counters
    assert c["requests.failed"] == 0, snap.errors()
    assert c["connections.evicted.peer_closed"] >= 3


def test_nginx_restart_recovers_without_fd_leak(nginx: Nginx) -> None:
    fds = fd_count()
    worker = make(
        nginx.host,
        nginx.port,
        pool_size=6,
        concurrency=2,
        duration_s=3.0,
        read_timeout_ms=1000,
        backoff_cap_ms=200,
    )
    bg = Background(worker)
    time.sleep(0.7)
    nginx.stop()
    time.sleep(0.3)
    nginx.start()
    snap = bg.join()
    c, g = snap.counters, snap.gauges
    assert c["connections.created"] > 6  # the dead sockets were replaced
    assert g["time.last_ok_us"] > g["time.last_fail_us"]  # recovered
    assert g["connections.idle"] + g["connections.active"] == 6
    assert snap.latency()["max"] < 1_000_000
    assert fd_count() == fds


# Nothing on the wire but our requests ------------------------------------------------------
LOG_LINE = re.compile(r'^\S+ - \S+ \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) ')


def access_log(server: Nginx) -> list[tuple[str, str]]:
    """(request line, status) of every line nginx logged, its status probes excluded."""
    rows = []
    for line in (server.dir / "access.log").read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        assert m, f"unparsable access log line: {line!r}"
        if "/nginx_status" not in m["request"]:
            rows.append((m["request"], m["status"]))
    return rows


@pytest.fixture
def logged_nginx(tmp_path: Path) -> Iterator[Nginx]:
    (tmp_path / "nginx").mkdir()
    server = Nginx(tmp_path / "nginx", access_log=True)
    server.start()
    yield server
    server.stop()


def test_signals_never_put_a_byte_on_a_target_socket(logged_nginx: Nginx, tmp_path: Path) -> None:
    # The supervisor's SIGTERM/SIGCHLD handling must not follow the workers: an inherited
    # signal wakeup fd would write the signal number into whatever socket now has its
    # number ("\x0fGET / HTTP/1.1" -> 400), and the timerfd lookup must not fork.
    (tmp_path / "svc").mkdir()
    svc = Service(logged_nginx, tmp_path / "svc", "--workers", "3", "--size", "9")
    try:
        assert svc.poolctl("workers", "1").returncode == 0  # a scale-down: SIGTERM to two
        until(lambda: [w["state"] for w in svc.call("workers")] == ["RUNNING", *["RETIRED"] * 2])
        svc.proc.send_signal(signal.SIGTERM)  # a drain: SIGTERM to the rest
        code, _ = svc.wait_exit()
        assert code == 0
    finally:
        svc.close()
    doc = run_json(
        "--host",
        logged_nginx.host,
        "--port",
        str(logged_nginx.port),
        "--workers",
        "2",
        "--rate",
        "300",
        "--duration",
        "1",
    )
    assert doc["metrics"]["requests.sent"] == 300
    rows = access_log(logged_nginx)
    assert len(rows) > 300
    assert {r for r in rows} == {("GET / HTTP/1.1", "200")}, [r for r in rows if r[1] != "200"][:5]


def test_a_port_taken_before_nginx_first_listens_is_exchanged(tmp_path: Path) -> None:
    """The test harness's nginx: a port another socket took between the pick and the
    start (an ephemeral port, say) is picked again, rather than failing the test."""
    import socket

    ng = Nginx(tmp_path)
    taken = ng.port
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))  # bound, not listening: nginx cannot bind it
    try:
        ng.start()
        assert ng.port != taken and len({ng.port, ng.short_port}) == 2
        assert ng.requests_served() >= 1
    finally:
        ng.stop()
        blocker.close()

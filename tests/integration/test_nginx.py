"""The data path against a real nginx on loopback."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Background, Nginx, fd_count, make, run

pytestmark = [pytest.mark.integration, pytest.mark.nginx]


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

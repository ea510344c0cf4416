"""The worker's data path against the embedded target, over real loopback sockets."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from poolsvc.target import TargetServer
from tests.conftest import Background, fd_count, make, run
from tools.nginx import free_port
from workers.net.transport import DEADLINE, connect_blocking

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("both_paths")]


# SO_ERROR -------------------------------------------------------------------------
def test_so_error_success_and_refused(target: TargetServer) -> None:
    err, sock = connect_blocking(socket.AF_INET, (target.host, target.port), 1.0)
    assert err == 0 and sock is not None
    sock.close()
    err, sock = connect_blocking(socket.AF_INET, ("127.0.0.1", free_port()), 1.0)
    assert (err, sock) == (errno.ECONNREFUSED, None)


@pytest.fixture
def blackhole() -> Iterator[tuple[str, int]]:
    """A listener whose accept queue (backlog 0) is full: further SYNs are dropped,
    so connects hang until the caller's deadline -- a real connect timeout on loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    addr = listener.getsockname()
    filler = socket.create_connection(addr)
    yield addr
    filler.close()
    listener.close()


def test_connect_deadline_expires(blackhole: tuple[str, int]) -> None:
    start = time.monotonic()
    err, sock = connect_blocking(socket.AF_INET, blackhole, 0.2)
    assert (err, sock) == (DEADLINE, None)
    assert 0.19 <= time.monotonic() - start < 1.0


def test_worker_counts_connect_timeouts_and_never_pools_them(blackhole: tuple[str, int]) -> None:
    fds = fd_count()
    snap = run(
        *blackhole,
        pool_size=2,
        concurrency=2,
        duration_s=1.0,
        connect_timeout_ms=150,
        backoff_base_ms=10,
        backoff_cap_ms=50,
    )
    c = snap.counters
    assert c["unsent.connect_timeout"] >= 2  # requests that waited on them: never sent
    # the phase counts both: requests that needed the connect, and warm-pool refills
    assert (
        c["errors.phase.connect"]
        == c["errors.connect_timeout"] + c["connect_errors.connect_timeout"]
    )
    assert c["connections.created"] == 0 and c["requests.ok"] == 0
    assert c["requests.unsent"] >= 2 and c["requests.sent"] == c["requests.failed"] == 0
    assert fd_count() == fds


def test_worker_counts_refused_with_backoff() -> None:
    snap = run(
        "127.0.0.1",
        free_port(),
        pool_size=2,
        concurrency=2,
        duration_s=1.0,
        backoff_base_ms=20,
        backoff_cap_ms=200,
    )
    c = snap.counters
    assert c["errors.ECONNREFUSED"] > 0 and c["connections.created"] == 0
    # Without backoff two clients fail thousands of times a second; with a 200 ms cap,
    # attempts stay bounded (a few per cap interval per client plus the warm-up).
    assert c["connections.attempted"] < 100


# Normal operation ------------------------------------------------------------------
def test_keepalive_reuse_and_exact_count(target: TargetServer) -> None:
    snap = run(target.host, target.port, pool_size=4, requests=2000)
    c = snap.counters
    assert c["requests.ok"] == c["requests.total"] == 2000 == target.stats()["requests"]
    assert c["connections.created"] == 4
    assert c["connections.reused"] == 2000 - 4
    assert snap.gauges["connections.idle"] == 4
    lat = snap.latency()
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


@pytest.mark.parametrize(
    ("path", "method", "closes"),
    [
        ("/chunked/3000", "GET", False),
        ("/", "HEAD", False),
        ("/status/204", "GET", False),
        ("/status/304", "GET", False),
        ("/close-delimited/500", "GET", True),
        ("/close", "GET", True),
        ("/http10", "GET", True),
    ],
)
def test_response_framing(target: TargetServer, path: str, method: str, closes: bool) -> None:
    snap = run(target.host, target.port, path=path, method=method, pool_size=2, requests=40)
    c = snap.counters
    assert c["requests.ok"] == 40 and c["requests.failed"] == 0, snap.errors()
    if closes:  # each response ended the connection: never pooled again
        assert c["connections.evicted.server_close"] == 40
        assert c["connections.reused"] == 0
    else:  # read to its end and pooled: the next request reused it
        assert c["connections.reused"] == 40 - c["connections.created"]
        assert c["connections.evicted.server_close"] == 0


def test_chunked_body_is_read_to_its_end(target: TargetServer) -> None:
    snap = run(target.host, target.port, path="/chunked/5000", pool_size=1, requests=10)
    assert snap.counters["bytes.in"] > 10 * 5000
    assert snap.counters["connections.created"] == 1


# Failures --------------------------------------------------------------------------
def test_read_timeout_on_hung_server(target: TargetServer) -> None:
    target.set(hang=True)
    start = time.monotonic()
    snap = run(
        target.host, target.port, pool_size=1, concurrency=1, requests=3, read_timeout_ms=200
    )
    elapsed = time.monotonic() - start
    c = snap.counters
    assert c["errors.read_timeout"] == 3 and c["requests.failed"] == 3
    assert c["errors.phase.read"] == 3
    assert c["retries.stale_reuse"] == 0  # a timeout is never re-sent: it may have been served
    assert 0.6 <= elapsed < 3.0


def test_reset_is_econnreset(target: TargetServer) -> None:
    target.set(reset=True)
    snap = run(target.host, target.port, pool_size=1, concurrency=1, requests=5, retry_stale=False)
    assert snap.counters["errors.ECONNRESET"] == 5
    assert snap.counters["connections.evicted.error"] == 5


def test_pool_exhaustion_wait_policy(target: TargetServer) -> None:
    target.set(delay_ms=30)
    snap = run(
        target.host,
        target.port,
        pool_size=2,
        concurrency=6,
        requests=60,
        exhaustion="wait",
        pool_wait_timeout_ms=5000,
    )
    c = snap.counters
    assert c["requests.ok"] == 60 and c["requests.failed"] == 0
    assert c["connections.created"] == 2  # never more than the pool allows
    # 6 requests share 2 connections: each waits for two turns of ~30 ms first.
    assert snap.latency()["p50"] >= 60_000


def test_pool_exhaustion_wait_timeout(target: TargetServer) -> None:
    target.set(delay_ms=200)
    snap = run(
        target.host, target.port, pool_size=1, concurrency=3, requests=6, pool_wait_timeout_ms=50
    )
    c = snap.counters
    assert c["errors.pool_timeout"] > 0 and c["errors.phase.pool"] == c["errors.pool_timeout"]
    assert c["requests.ok"] > 0 and c["connections.created"] == 1


def test_pool_exhaustion_fail_policy(target: TargetServer) -> None:
    target.set(delay_ms=20)
    snap = run(
        target.host, target.port, pool_size=2, concurrency=5, duration_s=0.5, exhaustion="fail"
    )
    c = snap.counters
    assert c["errors.pool_exhausted"] > 0 and c["requests.ok"] > 0
    assert c["connections.created"] == 2


# Stale connections -------------------------------------------------------------------
def test_server_restart_with_idle_connections(target: TargetServer) -> None:
    fds = fd_count()
    worker = make(
        target.host, target.port, pool_size=8, concurrency=2, duration_s=2.5, read_timeout_ms=1000
    )
    bg = Background(worker)
    for _ in range(3):
        time.sleep(0.5)
        target.restart(down_ms=50)
    snap = bg.join()
    c, g = snap.counters, snap.gauges
    # every restart closed all 8 sockets; the 6 idle ones were reaped as soon as
    # the FIN arrived, and the pool was refilled each time
    assert c["connections.evicted.peer_closed"] >= 3 * 5
    assert c["connections.created"] >= 8 + 3 * 6
    assert g["connections.idle"] + g["connections.active"] == 8  # back to full size
    assert g["time.last_ok_us"] > g["time.last_fail_us"]  # recovered
    assert snap.latency()["max"] < 1_000_000  # nothing hung until the read timeout
    assert c["requests.ok"] > 1000
    assert fd_count() == fds  # every socket the run opened was closed


def test_server_closing_idle_connections_fails_no_request(target: TargetServer) -> None:
    target.set(idle_close_ms=100)
    snap = run(target.host, target.port, pool_size=6, concurrency=2, duration_s=1.5)
    c = snap.counters
    assert c["connections.evicted.peer_closed"] > 0  # the server really closed idle ones
    assert c["requests.failed"] == 0, snap.errors()


class CloseOnSecondRequest:
    """A scripted server: answers the first request on each connection with
    keep-alive, then closes the connection when the second request arrives --
    the stale keep-alive race, made deterministic."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.served = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if conn.recv(4096):
                self.served += 1  # before answering: the client may finish right after
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                conn.recv(4096)  # the second request: close without answering

    def close(self) -> None:
        self.listener.close()


def test_stale_reuse_is_resent_once_on_a_fresh_connection() -> None:
    server = CloseOnSecondRequest()
    try:
        snap = run(
            "127.0.0.1",
            server.port,
            pool_size=1,
            pool_min=0,
            concurrency=1,
            requests=4,
            validate_after_ms=60_000,
        )
    finally:
        server.close()
    c = snap.counters
    assert c["requests.ok"] == 4 and c["requests.failed"] == 0
    assert c["retries.stale_reuse"] == 3  # requests 2..4 met a closed socket, re-sent once
    assert c["connections.created"] == 4 == server.served


def test_stale_reuse_not_resent_for_post() -> None:
    server = CloseOnSecondRequest()
    try:
        snap = run(
            "127.0.0.1",
            server.port,
            pool_size=1,
            pool_min=0,
            concurrency=1,
            requests=2,
            method="POST",
            validate_after_ms=60_000,
        )
    finally:
        server.close()
    c = snap.counters
    assert c["retries.stale_reuse"] == 0
    assert c["requests.ok"] == 1 and c["errors.early_eof"] == 1


def test_checkout_probe_evicts_a_socket_closed_while_idle(target: TargetServer) -> None:
    # validate_after 0: every checkout probes.  The server closes idle sockets after
    # 150 ms; requests take ~200 ms, so the idle ones are found closed. The one in use
    # is never idle that long (its next request goes as its response comes) unless
    # the machine stalls as long: with 30 ms, a loaded machine failed it once.
    target.set(idle_close_ms=150, delay_ms=200)
    snap = run(
        target.host,
        target.port,
        pool_size=3,
        concurrency=1,
        requests=5,
        validate_after_ms=0,
        retry_stale=False,
    )
    c = snap.counters
    assert c["requests.failed"] == 0, snap.errors()
    assert c["connections.evicted.peer_closed"] + c["connections.evicted.validation"] > 0


def test_health_check_after_idle(target: TargetServer) -> None:
    # Two warm connections, one client: the hot one serves two requests (~60 ms each)
    # and is retired by the request budget, so the next checkout takes the cold one,
    # idle for > 50 ms: it gets a HEAD /health first.
    target.set(delay_ms=60)
    snap = run(
        target.host,
        target.port,
        pool_size=2,
        concurrency=1,
        requests=6,
        health_check_after_ms=50,
        max_requests_per_conn=2,
    )
    c = snap.counters
    assert c["connections.health_checks"] > 0
    assert c["requests.ok"] == 6 and c["requests.failed"] == 0
    assert target.stats()["requests"] == 6 + c["connections.health_checks"]


def test_failed_health_check_evicts_and_request_still_succeeds(target: TargetServer) -> None:
    target.set(delay_ms=60)
    snap = run(
        target.host,
        target.port,
        pool_size=2,
        concurrency=1,
        requests=4,
        health_check_after_ms=50,
        max_requests_per_conn=2,
        health_check_path="/status/503",
    )
    c = snap.counters
    assert c["connections.evicted.health_check"] > 0
    assert c["requests.ok"] == 4 and c["requests.failed"] == 0


def test_fd_count_unchanged_after_run_with_resets_and_restarts(target: TargetServer) -> None:
    fds = fd_count()
    worker = make(target.host, target.port, pool_size=5, concurrency=5, duration_s=1.5)
    bg = Background(worker)
    time.sleep(0.3)
    target.set(reset=True)
    time.sleep(0.3)
    target.clear()
    target.restart(down_ms=100)
    bg.join()
    assert fd_count() == fds

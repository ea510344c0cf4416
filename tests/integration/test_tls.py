"""TLS against real peers: nginx with ``ssl`` and the embedded target serving TLS.

Certificates are made by the suite (``trustme``): a CA, a certificate for the
loopback address, an expired one. Every failure is checked by its name, at
pre-flight (exit 4, one line) and in the counters.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from poolsvc.target import TargetServer
from tests.conftest import run as run_worker
from tests.conftest import until
from tools.nginx import Nginx
from workers.net.tls import Tls, TlsSpec
from workers.net.transport import connect_blocking

pytestmark = pytest.mark.integration
POOLSVC = [sys.executable, "-m", "poolsvc"]


@dataclass
class Pki:
    """The suite's certificates, as files."""

    ca: Path  # the CA to trust
    other_ca: Path  # a CA that signed nothing here
    chain: Path  # 127.0.0.1 and localhost, valid now
    key: Path
    expired_chain: Path
    expired_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    year = datetime.timedelta(days=365)
    now = datetime.datetime.now(datetime.UTC)
    old = ca.issue_cert("127.0.0.1", not_before=now - 2 * year, not_after=now - year)
    files = {}
    for name, cert in (("good", leaf), ("expired", old)):
        files[f"{name}_chain"] = d / f"{name}-chain.pem"
        files[f"{name}_chain"].write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        files[f"{name}_key"] = d / f"{name}-key.pem"
        cert.private_key_pem.write_to_path(str(files[f"{name}_key"]))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    return Pki(
        d / "ca.pem",
        d / "other-ca.pem",
        files["good_chain"],
        files["good_key"],
        files["expired_chain"],
        files["expired_key"],
    )


def _nginx(d: Path, chain: Path, key: Path, protocols: str = "TLSv1.2 TLSv1.3") -> Nginx:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    server = Nginx(d, access_log=True, tls=(chain, key), tls_protocols=protocols)
    server.start()
    return server


@pytest.fixture
def tls_nginx(pki: Pki, tmp_path: Path) -> Iterator[Nginx]:
    server = _nginx(tmp_path, pki.chain, pki.key)
    yield server
    server.stop()


def poolsvc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POOLSVC, *args], capture_output=True, text=True, timeout=timeout)


def metrics(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out)
    return dict(doc["metrics"])


def url(server: Nginx, path: str = "/") -> str:
    return f"https://127.0.0.1:{server.tls_port}{path}"


# A clean run ------------------------------------------------------------------------------
def test_a_clean_tls_run_is_counted_exactly_by_nginx(tls_nginx: Nginx, pki: Pki) -> None:
    proc = poolsvc(
        "run", url(tls_nginx), "--cacert", str(pki.ca), "--requests", "3000", "--workers", "2",
        "--size", "8", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.stdout)
    assert m["requests.sent"] == m["requests.ok"] == 3000 == tls_nginx.requests_logged()
    assert m["tls.handshakes.full"] + m["tls.handshakes.resumed"] == m["connections.created"]
    assert m["tls.full.p50_ms"] > 0 and m["connect.p50_ms"] > 0


# Failures named at pre-flight ---------------------------------------------------------------
def _one_line_exit_4(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 4, (proc.returncode, proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_an_unknown_ca_is_named_at_pre_flight(tls_nginx: Nginx, pki: Pki) -> None:
    proc = poolsvc("run", url(tls_nginx), "--cacert", str(pki.other_ca), "--requests", "10")
    _one_line_exit_4(proc, "tls_cert_verify_failed", "unable to get local issuer certificate")
    proc = poolsvc("run", url(tls_nginx), "--requests", "10")  # the system's CAs: unknown too
    _one_line_exit_4(proc, "tls_cert_verify_failed")


def test_a_hostname_mismatch_is_named_at_pre_flight(tls_nginx: Nginx, pki: Pki) -> None:
    proc = poolsvc(
        "run", url(tls_nginx), "--cacert", str(pki.ca), "--sni", "other.example", "--requests", "5"
    )
    _one_line_exit_4(proc, "tls_cert_verify_failed", "other.example")


def test_an_expired_certificate_is_named_at_pre_flight(pki: Pki, tmp_path: Path) -> None:
    server = _nginx(tmp_path, pki.expired_chain, pki.expired_key)
    try:
        proc = poolsvc("run", url(server), "--cacert", str(pki.ca), "--requests", "5")
    finally:
        server.stop()
    _one_line_exit_4(proc, "tls_cert_verify_failed", "expired")


def test_no_common_version_is_named(pki: Pki, tmp_path: Path) -> None:
    server = _nginx(tmp_path, pki.chain, pki.key, protocols="TLSv1.3")
    try:
        proc = poolsvc(
            "run", url(server), "--cacert", str(pki.ca), "--tls-max", "1.2", "--requests", "5"
        )
    finally:
        server.stop()
    _one_line_exit_4(proc, "tls_protocol_version")


def test_insecure_skips_verification_and_says_so_in_the_config(tls_nginx: Nginx) -> None:
    proc = poolsvc("run", url(tls_nginx), "--insecure", "--requests", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    assert metrics(proc.stdout)["requests.ok"] == 20


# Session resumption ----------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_the_resumed_fraction_is_the_asked_ratio(tls_nginx: Nginx, pki: Pki, ratio: float) -> None:
    # A connection per request: 1,000 new connections, each a handshake.
    proc = poolsvc(
        "run", url(tls_nginx), "--cacert", str(pki.ca), "--no-keepalive", "--requests", "1000",
        "--workers", "1", "--size", "4", "--tls-resume-ratio", str(ratio), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.stdout)
    handshakes = m["tls.handshakes.full"] + m["tls.handshakes.resumed"]
    assert handshakes >= 1000
    assert abs(m["tls.resumed_fraction"] - ratio) <= 0.02, m
    assert m["tls.sessions.offered"] >= m["tls.handshakes.resumed"]


# Restarts under TLS load ---------------------------------------------------------------
def test_ten_nginx_restarts_under_tls_load_leak_nothing_and_hang_nothing(
    tls_nginx: Nginx, pki: Pki
) -> None:
    proc = subprocess.Popen(
        [
            *POOLSVC,
            "run",
            url(tls_nginx),
            "--cacert",
            str(pki.ca),
            "--duration",
            "7",
            "--workers",
            "2",
            "--size",
            "8",
            "--read-timeout-ms",
            "1000",
            "--connect-timeout-ms",
            "500",
            "--breaker-open-ms",
            "100",
            "--breaker-open-max-ms",
            "400",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def restarts() -> None:
        for _ in range(10):
            tls_nginx.stop()
            time.sleep(0.1)
            tls_nginx.start()
            time.sleep(0.4)

    # Restart only once the workers are sending: a restart during the run's start-up
    # pre-flight is an unreachable target (exit 4), not what this test is about.
    until(lambda: tls_nginx.requests_logged() > 0, timeout=30)
    chaos = threading.Thread(target=restarts)
    chaos.start()
    out, err = proc.communicate(timeout=60)
    chaos.join()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    m = doc["metrics"]
    assert m["requests.sent"] == (
        m["requests.ok"] + m["requests.failed"] + m["requests.lost"] + m["requests.abandoned"]
    )
    assert m["requests.ok"] > 0
    assert all(not r["leaked"] for r in doc["audit"]) and len(doc["audit"]) == 2
    # hung: nothing took longer than a wait for the pool, a connect, a handshake and a read
    assert m["latency.max_ms"] < 1000 + 2 * (500 + 500 + 1000) + 500


# The checkout probe over TLS -----------------------------------------------------------
@pytest.fixture(scope="module")
def tls_target() -> Iterator[TargetServer]:
    with TargetServer(tls=True) as server:
        yield server


def _connected_tls(server: TargetServer) -> tuple[Tls, Any]:
    """A TLS connection to ``server`` made by the worker's transport, one request done."""
    transport = Tls(TlsSpec(sni=server.host, cadata=server.ca_pem))
    family = socket.AF_INET
    err, sock = connect_blocking(family, (server.host, server.port), 2.0)
    assert sock is not None, err
    tls, _ = transport.wrap(sock)
    deadline = time.monotonic() + 2
    while transport.handshake(tls):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    send, recv = transport.streams(tls)
    send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"ok" not in got and time.monotonic() < deadline:
        try:
            got += recv(65536)
        except BlockingIOError:
            time.sleep(0.005)
    assert b"200" in got
    return transport, tls


def test_the_probe_keeps_a_live_idle_tls_socket_and_evicts_a_closed_one(
    tls_target: TargetServer,
) -> None:
    tls_target.clear()
    transport, tls = _connected_tls(tls_target)
    try:
        time.sleep(0.1)  # a session ticket may arrive meanwhile: that is not data
        assert transport.probe(tls) == ""
        tls_target.set(idle_close_ms=30)
        transport2, tls2 = _connected_tls(tls_target)
        time.sleep(0.3)  # the server closed it while idle (close_notify, FIN)
        assert transport2.probe(tls2) == "validation"
        transport2.close(tls2)
    finally:
        tls_target.clear()
        transport.close(tls)


def test_the_pool_evicts_idle_tls_sockets_the_server_closed(
    tls_target: TargetServer, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(tls_target.ca_pem)
    tls_target.clear()
    # The idle ones are closed after 150 ms; the one in use is never idle that long
    # (its next request goes as its response comes) unless the machine stalls as long.
    tls_target.set(idle_close_ms=150, delay_ms=200)
    try:
        snap = run_worker(
            tls_target.host, tls_target.port, tls=True, cacert=str(ca), pool_size=3,
            concurrency=1, requests=5, validate_after_ms=0, retry_stale=False,
        )  # fmt: skip
    finally:
        tls_target.clear()
    c = snap.counters
    assert c["requests.ok"] == 5, snap.errors()
    assert c["connections.evicted.peer_closed"] + c["connections.evicted.validation"] > 0


# Shown while it runs ------------------------------------------------------------------------
def test_status_and_prometheus_show_the_handshakes(
    tls_nginx: Nginx, pki: Pki, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import Service, settled

    target = type("T", (), {"host": "127.0.0.1", "port": tls_nginx.tls_port})()
    extra = ("--tls", "--cacert", str(pki.ca), "--workers", "1", "--size", "4")
    extra += ("--max-requests-per-conn", "20", "--tls-resume-ratio", "0.5")
    (tmp_path / "svc").mkdir()
    svc = Service(target, tmp_path / "svc", *extra)

    def handshakes_made() -> int:
        totals = svc.call("status")["totals"]
        return int(totals["tls.handshakes.full"] + totals["tls.handshakes.resumed"])

    try:
        until(lambda: handshakes_made() >= 100)  # enough of them for the fraction below
        svc.call("load", pause=True)  # the counts hold still: the figures agree exactly
        settled(lambda: int(svc.call("status")["totals"]["requests.total"]))
        totals = svc.call("status")["totals"]
        text = svc.call("metrics", format="prometheus")
    finally:
        svc.close()
    assert totals["tls.handshakes.full"] > 0 and totals["tls.handshakes.resumed"] > 0
    assert 0.3 <= totals["tls.resumed_fraction"] <= 0.6
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["poolsvc_tls_handshake_duration_seconds"]
    counts = {
        s.labels["kind"]: s.value
        for s in hist.samples
        if s.name.endswith("_count") and "kind" in s.labels
    }
    handshakes = {
        s.labels["kind"]: s.value for s in families["poolsvc_tls_handshakes"].samples
    }  # the same exposition, the counts still
    assert counts == handshakes and counts["full"] > 0 and counts["resumed"] > 0
    assert "poolsvc_connect_duration_seconds" in families


def test_churn_over_tls_compares_full_and_resumed_handshakes(tls_nginx: Nginx, pki: Pki) -> None:
    proc = poolsvc(
        "churn", url(tls_nginx), "--cacert", str(pki.ca), "--workers", "1", "--rate", "300",
        "--duration", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r for r in json.loads(proc.stdout)["rows"]}

    def num(metric: str, column: str) -> float:
        return float(rows[metric][column])

    assert num("TLS full handshakes/s", "per-req full") > 200
    assert num("TLS resumed handshakes/s", "per-req full") == 0
    assert num("TLS resumed handshakes/s", "per-req resumed") > 200
    assert num("TLS full handshakes/s", "per-req resumed") < 5  # the first, then resumed
    assert num("handshakes/s", "pooled") < 10


@pytest.mark.parametrize("notify", [True, False])
def test_an_orderly_close_sends_close_notify_and_only_then(pki: Pki, notify: bool) -> None:
    """A TLS server of the test's own sees how we close: close_notify (a clean EOF),
    or a bare FIN (an EOF in violation of the protocol) after the peer's own close."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.chain, pki.key)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False) as conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            try:
                seen.append("close_notify" if conn.recv(4096) == b"" else "data")
            except ssl.SSLEOFError:
                seen.append("bare EOF")

    thread = threading.Thread(target=serve)
    thread.start()
    port = listener.getsockname()[1]
    server = type("S", (), {"host": "127.0.0.1", "port": port, "ca_pem": pki.ca.read_text()})()
    transport, tls = _connected_tls(server)  # type: ignore[arg-type]
    transport.close(tls, notify=notify)
    thread.join(5)
    listener.close()
    assert seen == ["close_notify" if notify else "bare EOF"]


# Failures named in the counters (an in-process worker: no pre-flight) ------------------
def test_a_silent_peer_is_a_tls_handshake_timeout_in_phase_tls(pki: Pki) -> None:
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)  # accepts, never speaks
    try:
        snap = run_worker(
            "127.0.0.1", silent.getsockname()[1], tls=True, cacert=str(pki.ca), pool_size=2,
            concurrency=1, duration_s=0.6, tls_handshake_timeout_ms=100, backoff_cap_ms=50,
        )  # fmt: skip
    finally:
        silent.close()
    c = snap.counters
    timeouts = c["unsent.tls_handshake_timeout"] + c["connect_errors.tls_handshake_timeout"]
    assert timeouts > 0 and c["errors.phase.tls"] == timeouts
    assert c["requests.sent"] == 0 and c["tls.handshakes.full"] == 0


def test_tls_to_a_plain_http_port_is_a_protocol_version_failure(tls_nginx: Nginx) -> None:
    # nginx answers our ClientHello on its plain port with an HTTP 400: not TLS at all
    snap = run_worker(
        tls_nginx.host, tls_nginx.port, tls=True, insecure=True, pool_size=2, concurrency=1,
        duration_s=0.4, backoff_cap_ms=50,
    )  # fmt: skip
    c = snap.counters
    named = c["unsent.tls_protocol_version"] + c["connect_errors.tls_protocol_version"]
    assert named > 0 and c["requests.sent"] == 0


def test_health_checks_and_stale_resends_work_over_tls(tls_nginx: Nginx, pki: Pki) -> None:
    proc = poolsvc(
        "run", url(tls_nginx), "--cacert", str(pki.ca), "--requests", "400", "--workers", "1",
        "--size", "4", "--health-check-after-ms", "1", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.stdout)
    assert m["requests.ok"] == 400 == tls_nginx.requests_logged() - m["connections.health_checks"]
    assert m["connections.health_checks"] > 0


def test_sslkeylogfile_is_honoured(tls_nginx: Nginx, pki: Pki, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    proc = subprocess.run(
        [*POOLSVC, "run", url(tls_nginx), "--cacert", str(pki.ca), "--requests", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "SSLKEYLOGFILE": str(keylog)},
    )
    assert proc.returncode == 0, proc.stderr
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_HANDSHAKE_TRAFFIC_SECRET") for line in lines)

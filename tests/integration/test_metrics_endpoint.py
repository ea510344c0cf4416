"""``--metrics-addr``: GET /metrics from the supervisor, as Prometheus scrapes it.

Parsed by prometheus_client's parsers (text format and OpenMetrics), linted by
``promtool check metrics``; every failure counter moves when its fault is
injected; scraped concurrently under full load; hostile scrapers stay bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import POOLSVC, Service, run_json, until
from workers.shared.injection import KINDS

pytestmark = pytest.mark.integration


def scrape(url: str, accept: str = "") -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode(), resp.headers["Content-Type"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def total(text: str, name: str) -> float:
    return sum(v for (n, _), v in samples(text).items() if n == name)


@pytest.fixture
def served(target: Any, tmp_path: Path) -> Iterator[tuple[Service, str]]:
    (tmp_path / "svc").mkdir()
    svc = Service(
        target,
        tmp_path / "svc",
        "--metrics-addr",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--read-timeout-ms",
        "300",
        "--max-requests-per-conn",
        "20",  # connections renew: the per-connection faults get their chance
        "--concurrency",
        "4",
        "--size",
        "8",  # and some are idle: half_open and close_idle strike idle ones
    )
    try:
        url = svc.call("status")["service"]["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        yield svc, url
    finally:
        svc.close()


def test_the_exposition_parses_in_both_formats_and_agrees_with_status(
    served: tuple[Service, str],
) -> None:
    svc, url = served
    text, ctype = scrape(url)
    assert ctype.startswith("text/plain; version=0.0.4")
    om, om_type = scrape(url, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert om_type.startswith("application/openmetrics-text")
    assert om.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(om)}  # strict: raises on any flaw
    assert families["poolsvc_build"].type == "info"
    assert families["poolsvc_requests"].type == "counter"
    assert families["poolsvc_request_duration_seconds"].type == "histogram"
    build = [v for (n, _), v in samples(text).items() if n == "poolsvc_build_info"]
    assert build == [1.0]
    name = svc.call("status")["targets"][0]["name"]
    assert value(text, "poolsvc_target_requests_total", target=name, result="ok") > 0
    assert value(text, "poolsvc_breaker_state", target=name) == 0
    assert value(text, "poolsvc_workers") == 2
    later = svc.call("status")["totals"]["requests.ok"]
    assert later >= value(text, "poolsvc_requests_total", result="ok")
    # The families agree exactly once the counts hold still: paused, every request in
    # flight ended. (Under load, a copy taken while a worker counts a response may hold
    # its status and not yet its bucket: the skew docs/architecture.md describes.)
    svc.call("load", pause=True)
    try:
        stable = _settled(lambda: scrape(url)[0])
        count = value(stable, "poolsvc_request_duration_seconds_count")
        responses = total(stable, "poolsvc_responses_total")
        assert count == responses > 0
        assert value(stable, "poolsvc_request_duration_seconds_bucket", le="+Inf") == count
        ok = svc.call("status")["totals"]["requests.ok"]
        assert ok == value(stable, "poolsvc_requests_total", result="ok")
    finally:
        svc.call("load", resume=True)


def _settled(read: Callable[[], str], timeout: float = 10.0) -> str:
    """The exposition once its request counts stop moving (two scrapes 0.3 s apart)."""
    last, deadline = read(), time.monotonic() + timeout
    while True:
        time.sleep(0.3)
        now = read()
        if total(now, "poolsvc_requests_total") == total(last, "poolsvc_requests_total"):
            return now
        assert time.monotonic() < deadline, "the counts kept moving while paused"
        last = now


def test_promtool_finds_nothing_to_lint(served: tuple[Service, str]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: .ci/run must install prometheus")
        pytest.skip("promtool is not installed (.ci/run installs the prometheus package)")
    _, url = served
    text, _ = scrape(url)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_fault_moves_its_counters(served: tuple[Service, str], kind: str) -> None:
    svc, url = served
    before, _ = scrape(url)
    args: dict[str, Any] = {"action": "set", "fault": kind, "rate": 1.0}
    if kind in ("delay", "timeout"):
        args[f"{kind}_ms"] = 20
    svc.call("inject", **args)
    failures = ("poolsvc_errors_total", "poolsvc_connect_errors_total")
    fails = kind in ("reset", "timeout", "connect_fail")  # each fails requests or connects

    def failed(text: str) -> float:
        return sum(total(text, n) for n in failures)

    after = before

    def moved() -> bool:
        nonlocal after
        after, _ = scrape(url)
        injected = value(after, "poolsvc_injected_faults_total", kind=kind) > value(
            before, "poolsvc_injected_faults_total", kind=kind
        )  # and what it causes, counted after it (an injected timeout: 20 ms later)
        return injected and (not fails or failed(after) > failed(before))

    try:
        until(moved)
    finally:
        svc.call("inject", action="clear")
    if fails:
        assert sum(total(after, n) for n in failures) > sum(total(before, n) for n in failures)
        assert total(after, "poolsvc_errors_by_phase_total") >= total(
            before, "poolsvc_errors_by_phase_total"
        )


def test_concurrent_scrapes_under_full_load_all_answer(served: tuple[Service, str]) -> None:
    svc, url = served
    failures: list[str] = []
    counts: list[float] = []

    def scraper() -> None:
        for _ in range(15):
            try:
                text, _ = scrape(url)
                counts.append(value(text, "poolsvc_request_duration_seconds_count"))
            except Exception as exc:  # collected: the test fails on any
                failures.append(repr(exc))

    threads = [threading.Thread(target=scraper) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and len(counts) == 120
    assert svc.call("status")["totals"]["requests.total"] > 0  # the load kept going


def raw(url: str, request: bytes, read: bool = True) -> bytes:
    host, port = url.split("/")[2].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        if not read:
            return b""
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_other_paths_methods_and_oversized_heads_get_their_status(
    served: tuple[Service, str],
) -> None:
    _, url = served
    assert raw(url, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 404")
    reply = raw(url, b"POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in reply
    assert raw(url, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000).startswith(b"HTTP/1.1 431")
    assert raw(url, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    head = raw(url, b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    two = raw(url, b"GET /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.0\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK") == 2  # pipelined, answered in order, then closed


def test_a_scraper_that_never_reads_cannot_grow_the_supervisor(
    served: tuple[Service, str],
) -> None:
    svc, url = served
    host, port = url.split("/")[2].split(":")
    supervisor = psutil.Process(svc.proc.pid)
    hog = socket.create_connection((host, int(port)))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    request = b"GET /metrics HTTP/1.1\r\n\r\n" * 1000
    sent = 0
    rss_before = supervisor.memory_info().rss
    try:
        for _ in range(400):  # pipelined requests, replies never read
            try:
                sent += hog.send(request)
            except BlockingIOError:
                time.sleep(0.005)
        rss_after = supervisor.memory_info().rss
        text, _ = scrape(url)  # everyone else is still served
        assert value(text, "poolsvc_workers") == 2
    finally:
        hog.close()
    assert sent < 400 * len(request)  # it was stopped being read: the kernel pushed back
    assert rss_after - rss_before < 20 * 2**20


def test_a_bounded_run_lingers_for_a_final_scrape(target: Any, tmp_path: Path) -> None:
    """The endpoint outlives the load by --linger, showing the final totals."""
    proc = subprocess.Popen(
        [*POOLSVC, "run", "--host", target.host, "--port", str(target.port), "--requests",
         "500", "--metrics-addr", "127.0.0.1:0", "--linger", "30s", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = ""
        deadline = time.monotonic() + 20
        while not url and time.monotonic() < deadline:
            for conn in psutil.Process(proc.pid).net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == "127.0.0.1":
                    url = f"http://127.0.0.1:{conn.laddr.port}/metrics"
            time.sleep(0.05)
        assert url
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text, _ = scrape(url)
            if value(text, "poolsvc_workers") == 0:
                break  # the run is over and the endpoint still answers
            time.sleep(0.1)
        assert value(text, "poolsvc_requests_total", result="ok") == 500
        proc.send_signal(2)  # Ctrl-C ends the linger early
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert '"requests.ok": 500' in out


def test_an_address_in_use_is_exit_2_naming_the_key(target: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*POOLSVC, "run", "--host", target.host, "--port", str(target.port),
             "--requests", "10", "--metrics-addr", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "metrics_addr" in proc.stderr, proc.stderr
    bad = subprocess.run(
        [*POOLSVC, "run", "--requests", "10", "--metrics-addr", "localhost"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "metrics_addr" in bad.stderr and bad.stderr.count("\n") == 1


def test_the_json_result_agrees_with_the_last_scrape_of_a_run(target: Any) -> None:
    doc = run_json("--host", target.host, "--port", str(target.port), "--requests", "300")
    lat = doc["histograms"]["latency"]
    assert lat["count"] == doc["metrics"]["requests.ok"] == 300
    assert sum(b[2] for b in lat["buckets"]) == lat["count"]
    assert all(low <= high for low, high, _ in lat["buckets"])
    assert doc["histograms"]["failure_time"]["count"] == 0


@pytest.mark.parametrize("flag", ["--report=x.html", "--hlog=x.hlog", "--metrics-addr=127.0.0.1:0"])
def test_churn_refuses_the_outputs_of_one_run(flag: str, tmp_path: Path) -> None:
    """churn makes several runs: a single report, log or endpoint would mix them."""
    proc = subprocess.run(
        [*POOLSVC, "churn", flag], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2 and "not churn" in proc.stderr and proc.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())

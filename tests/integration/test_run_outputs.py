"""The issue's own command, from a clean run: ``--report``, ``--metrics-addr``, ``--hlog``
together, against the embedded target and nginx; the log read back by ``hdrhistogram``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from poolsvc.metrics import hlog
from tests.conftest import POOLSVC
from tools.nginx import Nginx

pytestmark = pytest.mark.integration


def run_all(tmp_path: Path, *where: str) -> tuple[dict[str, Any], Path]:
    html, log = tmp_path / "run.html", tmp_path / "run.hlog"
    proc = subprocess.run(
        [*POOLSVC, "run", *where, "--duration", "2s", "--report", str(html),
         "--metrics-addr", "127.0.0.1:0", "--hlog", str(log), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert html.stat().st_size > 50_000  # uPlot and the data, inlined
    return json.loads(proc.stdout), log


def check_log(doc: dict[str, Any], log: Path) -> None:
    """Adding the log's intervals reproduces the run's counts and its percentiles."""
    merged = HdrHistogram(hlog.LOWEST, hlog.HIGHEST, hlog.DIGITS)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("Tag=")]
    assert len(lines) >= 2
    for line in lines:
        merged.decode_and_add(line.rsplit(",", 1)[1])
    lat = doc["histograms"]["latency"]
    assert merged.get_total_count() == lat["count"] == doc["metrics"]["requests.ok"] > 0
    total = lat["count"]
    for p in (50.0, 90.0, 99.0, 99.9):
        rank = max(1, int(p / 100 * total + 0.5))
        cumulative = 0
        top = next(
            high for _low, high, n in lat["buckets"] if (cumulative := cumulative + n) >= rank
        )
        assert merged.get_value_at_percentile(p) == pytest.approx(top, rel=1e-3)
    assert doc["metrics"]["latency.p50_ms"] * 1000 == pytest.approx(
        merged.get_value_at_percentile(50), rel=2e-3, abs=1
    )


def test_against_the_embedded_target(tmp_path: Path) -> None:
    doc, log = run_all(tmp_path)
    check_log(doc, log)


def test_against_nginx(nginx: Nginx, tmp_path: Path) -> None:
    before = nginx.requests_served()
    doc, log = run_all(tmp_path, f"http://{nginx.host}:{nginx.port}/")
    check_log(doc, log)
    assert nginx.requests_served() - before == doc["metrics"]["requests.sent"] + 1  # + this probe


def test_failures_are_timed_apart_from_the_responses(tmp_path: Path) -> None:
    """A target that never answers: each request fails at its read timeout, and the
    failure histogram says so (the response latency has nothing in it)."""
    from tests.hostile import Hostile

    with Hostile("silent") as server:
        proc = subprocess.run(
            [*POOLSVC, "run", "--host", server.host, "--port", str(server.port), "--requests",
             "12", "--size", "4", "--read-timeout-ms", "150", "--no-breaker", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    m = doc["metrics"]
    assert m["errors.read_timeout"] == doc["histograms"]["failure_time"]["count"] == 12
    assert 150 <= m["failure_time.p50_ms"] < 400
    assert doc["histograms"]["latency"]["count"] == 0

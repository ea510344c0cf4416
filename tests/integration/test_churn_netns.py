"""``poolsvc churn --netns --capture DIR`` end to end: port exhaustion reproduced in a
private namespace (1,000 ports, tcp_tw_reuse off), with packets and ss as evidence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from poolsvc.churn import netns
from tests.conftest import POOLSVC

# one namespace user at a time; its counts depend on the rate it reaches: alone
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("netns"), pytest.mark.timing]


def needs() -> None:
    reason = netns.why_not() or (None if shutil.which("tcpdump") else "no tcpdump")
    if reason is None:
        return
    if os.environ.get("CI") and reason == "no tcpdump":
        pytest.fail("tcpdump is not installed: .ci/run must install it")
    pytest.skip(reason)


def test_per_request_churn_runs_out_of_ports_and_the_pool_does_not(tmp_path: Path) -> None:
    needs()
    proc = subprocess.run(
        [*POOLSVC, "churn", "--netns", "--capture", str(tmp_path), "--rate", "400",
         "--duration", "4", "--workers", "1", "--json"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["metric"]: r for r in doc["rows"]}
    exhausted = rows["EADDRNOTAVAIL errors"]
    assert exhausted["pooled"] == 0 and exhausted["per-req, we close"] > 0
    assert rows["failed requests"]["pooled"] == 0
    assert rows["failed requests"]["per-req, we close"] > 0
    assert rows["our ports in use (max)"]["per-req, we close"] >= 900  # of the 1,000
    assert doc["namespace"]["net.ipv4.ip_local_port_range"] == "40000 40999"
    assert doc["namespace"]["net.ipv4.tcp_tw_reuse"] == "0"
    pooled, churned = doc["captures"]["pooled"], doc["captures"]["per-req, we close"]
    assert pooled["syns_per_request"] < 0.05 and churned["syns_per_request"] >= 0.99
    assert "[S  ]" in churned["fresh"][0] and any("GET /" in x for x in churned["fresh"])
    assert pooled["reused"] and "GET /" in pooled["reused"][0]
    assert all(Path(c["file"]).stat().st_size > 0 for c in doc["captures"].values())
    assert not list(Path("/var/run/netns").glob("poolsvc-churn-*"))  # removed afterwards


def test_capture_without_the_namespace_says_why(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*POOLSVC, "churn", "--capture", str(tmp_path), "--duration", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "capture:" in proc.stderr and proc.stderr.count("\n") == 1


def churn_rows(*args: str) -> dict[str, dict[str, Any]]:
    """`poolsvc churn ARGS --json`, which must succeed without a traceback: its rows."""
    proc = subprocess.run(
        [*POOLSVC, "churn", *args, "--json"], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return {r["metric"]: r for r in json.loads(proc.stdout)["rows"]}


def test_nagle_stalls_small_writes_that_tcp_nodelay_sends_at_once() -> None:
    """Head and body written apart on a pooled connection: with Nagle's algorithm on,
    the body waits for the ACK of the head, which the target delays (~40 ms)."""
    rows = churn_rows("--nagle", "--duration", "2", "--workers", "1", "--size", "16")
    p50 = rows["p50 latency (ms)"]
    assert p50["TCP_NODELAY"] < 10 and p50["Nagle on"] > 30
    assert rows["failed requests"]["Nagle on"] == 0


def test_a_half_that_runs_out_of_ports_leaves_the_next_its_own() -> None:
    """At 2,000/s for 4 s the halves before the last use up to all 1,000 ports of their range
    (how many stay in TIME_WAIT on our side when the server closes first is a race, so it is
    not asserted); the last half, which closes first itself, still starts on 1,000 ports no
    half used: it reaches ~all of them before it runs out, and never fails at the start."""
    if reason := netns.why_not():
        pytest.skip(reason)
    rows = churn_rows("--netns", "--rate", "2000", "--duration", "4", "--workers", "1")
    assert rows["EADDRNOTAVAIL errors"]["per-req, we close"] > 0
    assert rows["our ports in use (max)"]["per-req, we close"] >= 900  # a fresh 1,000
    assert rows["failed requests"]["pooled"] == 0
    assert not list(Path("/var/run/netns").glob("poolsvc-churn-*"))

"""Faults on a real network path: a private network namespace, a veth pair to it, and
nginx listening inside, for the scenarios that break the path (blackhole, sigstop,
packet_loss, added_delay).

Where namespaces cannot be created (not root, no iproute2) those scenarios are skipped and
say why. :func:`path_fault` runs one fault that breaks the path for a while and then mends
it; :func:`run_json` runs one `poolsvc run --json` against nginx in the namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tools.chaos.harness import PY, ROOT, RateProbe, Result, Service, finish
from tools.nginx import Nginx

# Faults on a real network path: a namespace with nginx behind a veth pair -------------------
NS_HOST, NS_PEER = "10.254.77.1", "10.254.77.2"


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str:
    """'' if this machine lets us create a namespace and a veth pair, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return ""


@contextlib.contextmanager
def namespace() -> Iterator[tuple[str, Nginx]]:
    """A private namespace, a veth pair to it, and nginx listening inside it."""
    ns = f"psvc{os.getpid()}"
    veth = f"pv{os.getpid() % 100000}"
    steps = [
        ("ip", "netns", "add", ns),
        ("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}n"),
        ("ip", "link", "set", f"{veth}n", "netns", ns),
        ("ip", "addr", "add", f"{NS_HOST}/30", "dev", veth),
        ("ip", "link", "set", veth, "up"),
        ("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_PEER}/30", "dev", f"{veth}n"),
        ("ip", "netns", "exec", ns, "ip", "link", "set", f"{veth}n", "up"),
        ("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"),
    ]
    with tempfile.TemporaryDirectory() as d:
        try:
            for step in steps:
                done = sh(*step)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(step)}: {done.stderr.strip()}")
            server = Nginx(Path(d), host=NS_PEER, wrap=["ip", "netns", "exec", ns])
            server.start()
            try:
                yield ns, server
            finally:
                server.stop()
        finally:
            sh("ip", "link", "del", veth)
            sh("ip", "netns", "del", ns)


def path_fault(
    name: str,
    start: Callable[[str, Nginx], str],
    stop: Callable[[str, Nginx], None],
    hold: float = 2.0,
) -> Result:
    """Run against nginx in a namespace; ``start`` breaks the path (returns '' or a skip
    reason) for ``hold`` seconds, ``stop`` mends it; the pool must detect and recover."""
    res = Result(name, name)
    why = netns_unavailable()
    if why:
        res.note = f"skipped: {why}"
        return res
    try:
        with namespace() as (ns, ng):
            svc = Service(ng.host, ng.port, "--workers", "2", "--size", "8")
            try:
                probe = RateProbe(svc)
                baseline = probe.rate(1.0)
                why = start(ns, ng)
                if why:
                    res.note = f"skipped: {why}"
                    svc.stop()
                    return res
                time.sleep(hold)
                stop(ns, ng)
                t0 = time.monotonic()
                res.recovery_s = probe.recovery(baseline, t0)
                report = svc.drain()
            finally:
                svc.stop()
            served = ng.requests_served() - 1
    except RuntimeError as exc:
        res.note = f"skipped: cannot build the namespace ({exc})"
        return res
    res = finish(res, report, served, may_drop=True, extra_ok=res.recovery_s is not None)
    res.passed = res.passed and sum(res.errors.values()) > 0  # the fault was really felt
    return res


def run_json(ng: Nginx, *args: str) -> subprocess.CompletedProcess[str]:
    """One `poolsvc run --json` (1 worker) against nginx in the namespace."""
    cmd = [
        PY,
        "-m",
        "poolsvc",
        "run",
        "--host",
        ng.host,
        "--port",
        str(ng.port),
        "--workers",
        "1",
        "--json",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)

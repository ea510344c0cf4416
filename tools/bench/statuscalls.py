"""Benchmark: how long `status` takes over the control socket with 4 workers under full load.

    python -m tools.bench.statuscalls [--workers 4] [--calls 300] [--seconds 10]

Starts nginx (or the embedded target when nginx is not installed), then
``poolsvc serve`` with N workers at full closed-loop load, then times ``status``
round trips the way ``poolctl status`` makes them (a fresh connection each). It
prints p50/p99/max in ms and the service's req/s meanwhile. The load is bounded:
the service is stopped after ``--seconds`` or after the last call, whichever
comes first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from poolsvc.ctl.ctlclient import ControlClient, ServiceUnavailable
from poolsvc.target import TargetServer
from tools.nginx import Nginx


@contextlib.contextmanager
def a_target(directory: Path) -> Iterator[tuple[str, int, str]]:
    if shutil.which("nginx"):
        server = Nginx(directory)
        server.start()
        try:
            yield server.host, server.port, "nginx"
        finally:
            server.stop()
    else:
        with TargetServer() as target:
            yield target.host, target.port, "embedded target"


def measure(workers: int, calls: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, a_target(Path(tmp)) as (host, port, kind):
        sock = Path(tmp) / "c.sock"
        os.chmod(tmp, 0o700)
        svc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poolsvc",
                "serve",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--size",
                str(workers * 10),
                "--control",
                str(sock),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(sock)
            time.sleep(1.0)  # warm: every worker at full load
            stop_at = time.monotonic() + seconds
            times = []
            with ControlClient(sock) as c:
                before = c.call("status")["totals"]["requests.total"]
            t0 = time.monotonic()
            for _ in range(calls):
                start = time.perf_counter()
                with ControlClient(sock) as c:
                    c.call("status")
                times.append((time.perf_counter() - start) * 1000)
                if time.monotonic() > stop_at:
                    break
                time.sleep(0.01)
            with ControlClient(sock) as c:
                after = c.call("status")["totals"]["requests.total"]
            rps = (after - before) / (time.monotonic() - t0)
        finally:
            svc.terminate()
            svc.wait(30)
    times.sort()
    return {
        "target": kind,
        "calls": len(times),
        "p50_ms": statistics.median(times),
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
        "max_ms": times[-1],
        "rps_during": rps,
    }


def _wait(sock: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with ControlClient(sock) as c:
                if c.call("status")["totals"]["requests.total"] > 0:
                    return
        except ServiceUnavailable:
            time.sleep(0.05)
    raise RuntimeError("the service did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    r = measure(args.workers, args.calls, args.seconds)
    print(
        f"status latency with {args.workers} workers under full load against {r['target']}: "
        f"p50={r['p50_ms']:.2f}ms p99={r['p99_ms']:.2f}ms max={r['max_ms']:.2f}ms "
        f"over {r['calls']} calls; load meanwhile {r['rps_during']:.0f} req/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

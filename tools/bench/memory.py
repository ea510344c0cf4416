"""Memory: a worker's RSS with 1,000 and 10,000 pooled connections."""

from __future__ import annotations

import subprocess
import time

import psutil

from poolsvc.target import TargetServer
from tools.bench.common import ROOT, run_argv


def memory() -> str:
    lines = ["| pooled connections (1 worker) | worker RSS | per connection |", "|---|---|---|"]
    base = None
    with TargetServer() as target:
        for size in (1, 1000, 10000):
            rss = _worker_rss((target.host, target.port), size)
            base = base or rss
            per = f"{(rss - base) / size / 1024:.1f} KiB" if size > 1 else "-"
            lines.append(f"| {size:,} | {rss / 2**20:.1f} MiB | {per} |")
    return "\n".join(lines)


def _worker_rss(url: tuple[str, int], size: int) -> int:
    proc = subprocess.Popen(
        run_argv(
            url,
            "--size",
            str(size),
            "--concurrency",
            "1",
            "--duration",
            "6",
            "--connect-timeout-ms",
            "5000",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        rss = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            kids = psutil.Process(proc.pid).children()
            if kids and len(psutil.Process(kids[0].pid).net_connections()) >= size:
                time.sleep(1.0)
                rss = kids[0].memory_info().rss
                break
        return rss
    finally:
        proc.wait(60)

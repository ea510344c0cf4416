"""Steady load (3000 requests/s) against the embedded target for ``seconds``, each worker
sampled every ``every`` seconds (`make soak`: 180 s).

Checks: per worker, RSS grows by at most 4 MiB or 10 % and the fd count moves by at most 8
after the warm-up sample, and every request is accounted for exactly.
"""

from __future__ import annotations

import time

import psutil

from poolsvc.target import TargetServer
from tools.chaos.harness import Result, Service, finish


# Soak ------------------------------------------------------------------------------------------
def soak(seconds: float = 180.0, every: float = 10.0) -> Result:
    """Steady load for ``seconds``: per-worker RSS and fd counts stay flat, totals exact."""
    res = Result(f"soak {seconds:g}s", "none")
    samples: dict[int, list[tuple[int, int]]] = {}
    with TargetServer() as target:
        svc = Service(target.host, target.port, "--workers", "2", "--size", "8", "--rate", "3000")
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(min(every, max(0.0, end - time.monotonic())))
                for pid in svc.worker_pids():
                    p = psutil.Process(pid)
                    samples.setdefault(pid, []).append((p.memory_info().rss, p.num_fds()))
            report = svc.drain()
        finally:
            svc.stop()
        served = target.stats()["requests"]
    flat = True
    notes = []
    for pid, rows in samples.items():
        rows = rows[1:] or rows  # the first sample is the warm-up
        rss = [r for r, _ in rows]
        fds = [f for _, f in rows]
        growth = max(rss) - rss[0]
        # tolerance: 4 MiB or 10 % of RSS; fds within the pool shard's churn
        if growth > max(4 << 20, rss[0] // 10) or max(fds) - min(fds) > 8:
            flat = False
        notes.append(f"w{pid}: rss +{growth / 2**20:.1f} MiB, fds {min(fds)}-{max(fds)}")
    res.note = "; ".join(notes)
    return finish(res, report, served, extra_ok=flat and bool(samples))

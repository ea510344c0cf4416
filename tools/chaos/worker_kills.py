"""A random worker of `poolsvc serve` SIGKILLed every ``gap`` seconds, ``count`` times.

Checks: the supervisor replaces every one (restarts equal kills), the rate recovers after
each (the recovery column is the slowest), the totals never decrease, what the killed
workers had in flight is counted lost, and the target counted exactly what was sent (fewer
only by the requests in doubt).
"""

from __future__ import annotations

import os
import random
import signal
import time

from poolsvc.target import TargetServer
from tools.chaos.harness import RateProbe, Result, Service, finish


def worker_kills(count: int = 6, gap: float = 1.5) -> Result:
    """A worker SIGKILLed every ``gap`` seconds: replaced, totals never decrease."""
    res = Result(f"worker SIGKILL x{count}", f"{count} kills")
    with TargetServer() as target:
        svc = Service(target.host, target.port, "--workers", "2", "--size", "8")
        try:
            probe = RateProbe(svc)
            baseline = probe.rate(1.0)
            worst = 0.0
            for _ in range(count):
                victim = random.choice(svc.worker_pids())
                t0 = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                took = probe.recovery(baseline, t0)
                worst = max(worst, took if took is not None else 99.0)
                time.sleep(max(0.0, gap - (time.monotonic() - t0)))
            restarts = sum(w["restarts"] for w in svc.call("workers"))
            report = svc.drain()
        finally:
            svc.stop()
        served = target.stats()["requests"]
    res.recovery_s = worst
    ok = restarts == count
    if not ok:
        res.note += f" restarts {restarts} != {count};"
    return finish(res, report, served, extra_ok=ok)

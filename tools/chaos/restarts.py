"""The target restarted ``count`` times during a run, ``gap`` seconds apart: the embedded
target (down 100 ms each time) or nginx (stopped and started again).

Checks: after every restart the answered rate is back to 80 % of the baseline within 10 s
(the recovery column is the slowest; the note gives the median), and every request is
accounted for. A restart may reset requests the target had not read yet, so the target may
count fewer than were sent, but only by requests that failed.
"""

from __future__ import annotations

import contextlib
import time

from poolsvc.target import TargetServer
from tools.chaos.harness import RateProbe, Result, Service, finish, nginx_server


def restarts(kind: str, count: int = 10, gap: float = 1.0) -> Result:
    """The target restarted ``count`` times during a run; recovery time after each."""
    res = Result(f"restart {kind} x{count}", f"{count} restarts")
    recoveries: list[float] = []
    with contextlib.ExitStack() as stack:
        if kind == "nginx":
            ng = stack.enter_context(nginx_server())
            host, port = ng.host, ng.port
        else:
            target = stack.enter_context(TargetServer())
            host, port = target.host, target.port
        svc = Service(host, port, "--workers", "2", "--size", "8")
        try:
            probe = RateProbe(svc)
            baseline = probe.rate(1.0)
            for _ in range(count):
                t0 = time.monotonic()
                if kind == "nginx":
                    ng.stop()
                    time.sleep(0.1)
                    ng.start()
                else:
                    target.restart(down_ms=100)
                took = probe.recovery(baseline, t0)
                if took is None:
                    res.note += " did not recover within 10 s;"
                    break
                recoveries.append(took)
                time.sleep(max(0.0, gap - took))
            report = svc.drain()
        finally:
            svc.stop()
        served = ng.requests_logged() if kind == "nginx" else target.stats()["requests"]
    res.recovery_s = max(recoveries) if recoveries else None
    if recoveries:
        median = sorted(recoveries)[len(recoveries) // 2]
        res.note += f" recovery median {median:.2f}s max {max(recoveries):.2f}s"
    return finish(res, report, served, may_drop=True, extra_ok=len(recoveries) == count)

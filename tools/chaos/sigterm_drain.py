"""SIGTERM to `poolsvc serve` under load.

Checks: it drains and exits 0, leaks no descriptor, and every request is accounted for
exactly: a drain loses nothing.
"""

from __future__ import annotations

import signal
import time

from poolsvc.target import TargetServer
from tools.chaos.harness import Result, Service, finish, parse_report


def sigterm_drain() -> Result:
    """SIGTERM under load: exit 0, every request accounted for exactly."""
    res = Result("SIGTERM under load", "SIGTERM")
    with TargetServer() as target:
        svc = Service(target.host, target.port, "--workers", "2", "--size", "8")
        time.sleep(1.0)
        svc.proc.send_signal(signal.SIGTERM)
        out, _ = svc.proc.communicate(timeout=60)
        report = parse_report(out, svc.proc.returncode)
        svc.stop()
        served = target.stats()["requests"]
    res = finish(res, report, served)  # a drain loses nothing: exact
    return res

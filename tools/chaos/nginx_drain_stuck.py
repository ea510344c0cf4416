"""SIGTERM to `poolsvc run` while nginx is SIGSTOPped (drain deadline 500 ms).

Checks: the requests stuck in flight at the drain deadline are counted abandoned (at least
one), and nginx, once continued, logs exactly what was sent.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import psutil

from tools.chaos.harness import Result, finish, nginx_server, parse_report, poolsvc_run


def nginx_drain_stuck(stuck_s: float = 0.3) -> Result:
    """SIGTERM while nginx is SIGSTOPped: the requests stuck in flight at the drain
    deadline are counted abandoned, and nginx, once continued, logs exactly what was sent."""
    res = Result("nginx SIGSTOPped, then SIGTERM drain", "SIGSTOP + SIGTERM")
    with nginx_server() as ng, tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "run.json"
        cfg.write_text(json.dumps({"drain_timeout_ms": 500, "read_timeout_ms": 30_000}))
        proc = poolsvc_run(
            ng, "--workers", "2", "--size", "8", "--duration", "60", "--config", str(cfg)
        )
        assert ng.proc is not None
        frozen = [ng.proc.pid, *(c.pid for c in psutil.Process(ng.proc.pid).children())]
        try:
            time.sleep(1.0)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(stuck_s)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        report = parse_report(out, proc.returncode, err)
        served, settled = -1, 0
        while settled < 5:  # nginx reads and logs what it was sent once it runs again
            time.sleep(0.1)
            now = ng.requests_logged()
            settled = settled + 1 if now == served else 0
            served = now
    res.note = f"abandoned {report.get('requests.abandoned')};"
    return finish(res, report, served, extra_ok=int(report.get("requests.abandoned", 0)) > 0)

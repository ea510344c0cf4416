"""`poolsvc run` against nginx (access log on), with ``count`` worker SIGKILLs spread over
``seconds``.

Checks: every kill landed, what the killed workers had in flight is counted lost, and
nginx's access log holds exactly the requests sent (sent = ok + failed + lost + abandoned;
fewer only by the requests in doubt).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time

import psutil

from tools.chaos.harness import Result, finish, nginx_server, parse_report, poolsvc_run


def _workers_of(pid: int) -> list[psutil.Process]:
    kids = psutil.Process(pid).children()
    return [k for k in kids if k.status() != psutil.STATUS_ZOMBIE]


def nginx_worker_kills(seconds: float = 10.0, count: int = 13) -> Result:
    """`poolsvc run` against nginx (access log on) with ``count`` worker SIGKILLs spread
    over the run: what they had in flight is counted lost, and nginx logged exactly the
    requests sent (sent = ok + failed + lost + abandoned)."""
    res = Result(f"nginx, {count} worker SIGKILLs in {seconds:g}s", f"{count} kills")
    with nginx_server() as ng:
        proc = poolsvc_run(ng, "--workers", "2", "--size", "16", "--duration", str(seconds))
        kills = 0
        try:
            time.sleep(0.5)
            for _ in range(count):
                victims = _workers_of(proc.pid)
                if victims:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(random.choice(victims).pid, signal.SIGKILL)
                        kills += 1
                time.sleep((seconds - 1.0) / count)
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            proc.kill()
            proc.wait()
        report = parse_report(out, proc.returncode, err)
        served = ng.requests_logged()
    res.note = f"{kills} kills, lost {report.get('requests.lost')}, in doubt "
    res.note += f"{report.get('requests.in_doubt')};"
    return finish(res, report, served, extra_ok=kills == count)

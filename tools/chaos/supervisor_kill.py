"""The supervisor of `poolsvc run` SIGKILLed after 2 s of load.

Checks: its three children (two workers and the embedded target) exit by themselves within
5 s: nothing is left orphaned.
"""

from __future__ import annotations

import subprocess
import time

import psutil

from tools.chaos.harness import PY, ROOT, Result


def supervisor_kill() -> Result:
    """The supervisor SIGKILLed: its workers and the embedded target exit by themselves."""
    res = Result("supervisor SIGKILL", "1 kill")
    proc = subprocess.Popen(
        [PY, "-m", "poolsvc", "run", "--workers", "2", "--duration", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(2.0)
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(family, timeout=5)
        res.passed = len(family) == 3 and not alive
        res.note = f"{len(family)} children, {len(alive)} left after 5 s"
    finally:
        proc.kill()
        proc.wait()
    return res

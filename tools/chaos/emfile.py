"""A worker limited to 24 descriptors (RLIMIT_NOFILE) with a pool of 40 connections.

Checks: the failures are named EMFILE (never taken for a refused connection), requests
still succeed, nothing crashes, and the target counted exactly what was sent.
"""

from __future__ import annotations

import json
import subprocess

from poolsvc.target import TargetServer
from tools.chaos.harness import PY, ROOT, Result


def emfile() -> Result:
    """A worker with 24 descriptors and a pool of 40: EMFILE, named as such; no crash."""
    res = Result("EMFILE (RLIMIT_NOFILE 24)", "fd limit")
    script = (
        "import json,sys\nfrom tests.conftest import run\n"
        "s=run(sys.argv[1],int(sys.argv[2]),pool_size=40,concurrency=4,duration_s=1.0)\n"
        "print(json.dumps({'e':{**s.errors(),**s.connect_errors()},"
        "'ok':s.counters['requests.ok'],'t':s.counters['requests.sent']}))"
    )

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

    with TargetServer() as target:
        proc = subprocess.run(
            [PY, "-c", script, target.host, str(target.port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=limit,
        )
        res.served = target.stats()["requests"]
    if proc.returncode != 0:
        res.note = proc.stderr[-200:]
        return res
    doc = json.loads(proc.stdout)
    res.errors, res.requests = doc["e"], doc["t"]
    res.passed = (
        doc["e"].get("EMFILE", 0) > 0
        and doc["ok"] > 0
        and "ECONNREFUSED" not in doc["e"]
        and res.served == res.requests
    )
    return res

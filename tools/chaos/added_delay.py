"""tc netem adds ``ms`` of delay on the veth path to nginx in a namespace.

Checks: p50 shows the delay and no request fails. Skipped without network namespaces, tc,
or netem in the kernel.
"""

from __future__ import annotations

import json
import os
import shutil

from tools.chaos.harness import Result
from tools.chaos.netns import namespace, netns_unavailable, run_json, sh


def added_delay(ms: int = 20) -> Result:
    """tc netem adds ``ms`` of delay on the path: p50 must show it."""
    res = Result(f"netem delay {ms}ms", f"+{ms} ms (netem)")
    why = netns_unavailable() or ("" if shutil.which("tc") else "tc is not installed")
    if why:
        res.note = f"skipped: {why}"
        return res
    with namespace() as (_, ng):
        veth = f"pv{os.getpid() % 100000}"
        done = sh("tc", "qdisc", "add", "dev", veth, "root", "netem", "delay", f"{ms}ms")
        if done.returncode != 0:
            res.note = f"skipped: netem unavailable in this kernel ({done.stderr.strip()[:60]})"
            return res
        out = run_json(ng, "--rate", "200", "--duration", "3")
    m = json.loads(out.stdout)["metrics"]
    res.requests = m["requests.sent"]
    res.passed = m["latency.p50_ms"] >= ms and m["requests.failed"] == 0
    res.note = f"p50 {m['latency.p50_ms']} ms"
    return res

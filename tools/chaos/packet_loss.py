"""nftables in a namespace drops ``percent`` % of nginx's incoming TCP for a paced run.

Checks: the run completes with answers, p99 shows the loss (at least 100 ms), no descriptor
leaks, and nginx served what was sent, fewer only by requests that failed. Skipped without
network namespaces or nftables.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from tools.chaos.harness import Result, errors_of
from tools.chaos.netns import namespace, netns_unavailable, run_json, sh


def packet_loss(percent: int = 3, seconds: float = 4.0) -> Result:
    """nftables drops ``percent`` % of the target's incoming TCP: the run completes, p99 shows
    it."""
    res = Result(f"packet loss {percent}%", f"{percent}% loss (nftables)")
    why = netns_unavailable() or ("" if shutil.which("nft") else "nft (nftables) is not installed")
    if why:
        res.note = f"skipped: {why}"
        return res
    with namespace() as (ns, ng):
        ruleset = Path(tempfile.mkdtemp()) / "loss.nft"
        ruleset.write_text(
            "table inet psvc {\n  chain in {\n    type filter hook input priority 0;\n"
            f"    meta l4proto tcp numgen random mod 100 < {percent} drop\n  }}\n}}\n"
        )
        done = sh("ip", "netns", "exec", ns, "nft", "-f", str(ruleset))
        shutil.rmtree(ruleset.parent, ignore_errors=True)
        if done.returncode != 0:
            res.note = f"skipped: nftables unavailable ({done.stderr.strip()[:80]})"
            return res
        # a lost SYN is retransmitted after 1 s: the connect timeout must outlast it
        out = run_json(
            ng,
            "--rate",
            "500",
            "--duration",
            str(seconds),
            "--read-timeout-ms",
            "3000",
            "--connect-timeout-ms",
            "3000",
        )
        res.served = ng.requests_served() - 1  # minus this status request
    if out.returncode != 0:
        res.note = out.stderr[-200:]
        return res
    m = json.loads(out.stdout)["metrics"]
    res.requests, res.errors = m["requests.sent"], errors_of(m)
    res.leaked_fds = sum(len(a["leaked"]) for a in json.loads(out.stdout)["audit"])
    # TCP's minimum retransmission timeout is 200 ms: lost segments show in the tail
    # TCP retransmits what the path lost: only a request that failed may be missing
    exact = m["requests.sent"] - m["requests.failed"] <= res.served <= m["requests.sent"]
    res.passed = (
        m["latency.p99_ms"] >= 100 and m["requests.ok"] > 0 and res.leaked_fds == 0 and exact
    )
    res.note = f"p50 {m['latency.p50_ms']} ms, p99 {m['latency.p99_ms']} ms"
    return res

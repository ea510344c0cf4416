"""Scaling with workers (both cores shared) and the open loop's rate accuracy."""

from __future__ import annotations

import json

from poolsvc.target import TargetServer
from tools.bench.common import nginx, poolsvc_metrics, run_argv, timed


def scaling(seconds: float) -> str:
    lines = ["| target | 1 worker | 2 workers |", "|---|---|---|"]
    with TargetServer() as target:
        row = [run_scaled((target.host, target.port), n, seconds) for n in (1, 2)]
        lines.append(f"| embedded target | {row[0]:,.0f} | {row[1]:,.0f} |")
    with nginx(pinned=False) as ng:
        row = [run_scaled((ng.host, ng.port), n, seconds) for n in (1, 2)]
        lines.append(f"| nginx (1 worker process) | {row[0]:,.0f} | {row[1]:,.0f} |")
    return "\n".join(lines)


def run_scaled(url: tuple[str, int], workers: int, seconds: float) -> float:
    """req/s of an unpinned `poolsvc run` with ``workers`` workers and 50 connections."""
    cmd = run_argv(url, "--workers", str(workers), "--size", "50", "--duration", str(seconds))
    out, _ = timed([*cmd, "--json"])
    return float(json.loads(out[out.index("{") :])["metrics"]["run.rps"])


def rate_accuracy(seconds: float) -> str:
    """Open loop below capacity: the rate kept, on the accelerated path."""
    lines = ["| asked req/s | achieved | error | late | p99 (corrected) |", "|---|---|---|---|---|"]
    with nginx() as ng:
        for rate in (1000, 5000, 20000):
            m, _ = poolsvc_metrics((ng.host, ng.port), seconds, ["--rate", str(rate)])
            got = m["run.rps"]  # requests sent over the load period
            lines.append(
                f"| {rate:,} | {got:,.1f} | {100 * (got - rate) / rate:+.2f} % | "
                f"{m['requests.late']} | {m['latency.p99_ms']} ms |"
            )
    return "\n".join(lines)

"""Section 1, head to head: poolsvc (both paths), wrk, hey and Locust on pinned nginx,
interleaved rounds, medians and the median of the per-round ratios.
"""

from __future__ import annotations

import statistics

from tools.bench.common import _have, nginx
from tools.bench.rivals import TOOLS


def head_to_head(rounds: int, seconds: float) -> str:
    tools = {k: v for k, v in TOOLS.items() if k.startswith("poolsvc") or _have(k)}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in tools}
    with nginx() as ng:
        url = (ng.host, ng.port)
        for fn in tools.values():
            fn(url, 2.0)  # warm up each once, not measured
        for _ in range(rounds):
            for name, fn in tools.items():  # interleaved: A B C D, A B C D, ...
                results[name].append(fn(url, seconds))
    lines = [
        "| tool | req/s median | min | max | CPU per request | p50 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        cpu = statistics.median(r["cpu"] / max(1, r["requests"]) * 1e6 for r in runs)
        lines.append(
            f"| {name} | {statistics.median(rps):,.0f} | {min(rps):,.0f} | "
            f"{max(rps):,.0f} | {cpu:.1f} µs | "
            f"{statistics.median(r['p50'] for r in runs):.2f} ms | "
            f"{statistics.median(r['p99'] for r in runs):.2f} ms |"
        )
    lines += ["", "| ratio (median of per-round ratios) | value |", "|---|---|"]
    for ours in ("poolsvc", "poolsvc (pure Python)"):
        for other in (k for k in results if not k.startswith("poolsvc")):
            ratios = [
                a["rps"] / b["rps"] for a, b in zip(results[ours], results[other], strict=True)
            ]
            lines.append(f"| {ours} / {other} | {statistics.median(ratios):.3f} |")
    missing = [k for k in TOOLS if k not in tools]
    if missing:
        lines.append(f"\n(not installed here, skipped: {', '.join(missing)})")
    return "\n".join(lines)

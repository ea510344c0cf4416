"""CPU per request in the steady state: user and kernel time of the working process
(poolsvc's worker, wrk), start-up excluded, per request counted by nginx.
"""

from __future__ import annotations

from tools.bench.common import Steady, medians, nginx, path_env, run_argv, steady


def steady_cpu(rounds: int, seconds: float) -> str:
    """User and kernel CPU per request of the process doing the work, poolsvc against wrk."""
    runs: dict[str, list[Steady]] = {
        "poolsvc worker": [],
        "poolsvc worker (pure Python)": [],
        "wrk": [],
    }
    with nginx() as ng:
        url = f"http://{ng.host}:{ng.port}/"
        poolsvc = run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))
        wrk = ["wrk", "-t1", "-c50", f"-d{round(seconds + 3)}s", url]
        for _ in range(rounds):
            runs["poolsvc worker"].append(steady(ng, poolsvc, seconds, env=path_env(False)))
            pure = steady(ng, poolsvc, seconds, env=path_env(True))
            runs["poolsvc worker (pure Python)"].append(pure)
            runs["wrk"].append(steady(ng, wrk, seconds))
    lines = [
        "| process | user per request | kernel per request | req/s meanwhile |",
        "|---|---|---|---|",
    ]
    for name, rows in runs.items():
        user, kern, rps, _ = medians(rows)
        lines.append(f"| {name} | {user:.2f} µs | {kern:.2f} µs | {rps:,.0f} |")
    return "\n".join(lines)

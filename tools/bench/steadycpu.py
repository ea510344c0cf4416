"""CPU per request in the steady state: user and kernel time of the working process
(poolsvc's worker, wrk), start-up excluded, per request counted by nginx.

The open loop runs at 0.9 of the round's closed-loop rate (the rate the open loop's
goal asks it to sustain), beside wrk2 (wrk's open loop) at the same rate where it is on
the PATH: "core" is (user + kernel) x req/s, the share of the generator's core that rate
takes. Near 1.0, no generator doing a send and a receive per request has room left.
"""

from __future__ import annotations

import statistics

from tools.bench.common import (
    Steady,
    _have,
    medians,
    nginx,
    path_env,
    run_argv,
    section_main,
    steady,
)
from tools.bench.rivals import wrk_argv

SHARE = 0.9  # of the round's closed-loop rate: the open loop's goal
OPEN = f"poolsvc worker, open loop at {SHARE} of its closed loop"


def steady_cpu(rounds: int, seconds: float) -> str:
    """User and kernel CPU per request of the process doing the work, poolsvc against wrk,
    closed loop and open loop at 0.9 of the round's closed loop."""
    runs: dict[str, list[Steady]] = {
        "poolsvc worker": [],
        "poolsvc worker (pure Python)": [],
        "wrk": [],
        OPEN: [],
    }
    wrk2 = _have("wrk2")
    if wrk2:
        runs["wrk2 at the same rate"] = []
    with nginx() as ng:
        url = f"http://{ng.host}:{ng.port}/"
        poolsvc = run_argv((ng.host, ng.port), "--size", "50", "--duration", str(seconds + 3))
        wrk = wrk_argv(url, seconds + 3)
        for _ in range(rounds):
            closed = steady(ng, poolsvc, seconds, env=path_env(False))
            runs["poolsvc worker"].append(closed)
            pure = steady(ng, poolsvc, seconds, env=path_env(True))
            runs["poolsvc worker (pure Python)"].append(pure)
            runs["wrk"].append(steady(ng, wrk, seconds))
            rate = round(closed[2] * SHARE)
            opened = steady(ng, [*poolsvc, "--rate", str(rate)], seconds, env=path_env(False))
            runs[OPEN].append(opened)
            if wrk2:
                cmd = wrk_argv(url, seconds + 3, rate=rate)
                runs["wrk2 at the same rate"].append(steady(ng, cmd, seconds))
    lines = [
        "| process | user per request | kernel per request | req/s meanwhile | core |",
        "|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        user, kern, rps, _ = medians(rows)
        core = statistics.median((r[0] + r[1]) * r[2] / 1e6 for r in rows)  # per round
        lines.append(f"| {name} | {user:.2f} µs | {kern:.2f} µs | {rps:,.0f} | {core:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(section_main("python -m tools.bench.steadycpu", __doc__ or "", steady_cpu))

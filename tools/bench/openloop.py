"""The open loop at capacity: against the closed loop and wrk, on the same pinned nginx.

    python -m tools.bench.openloop [--rounds 5] [--seconds 5]

Two questions, one worker with 50 connections on core 1, nginx on core 0:

1. **Overload.** Asked for 3x what the closed loop sends, does the open loop send
   at the closed loop's rate? The rounds interleave a closed-loop run, wrk (closed
   loop, 50 connections) and the open loop at 3x the round's closed-loop req/s,
   through each path; the table gives the medians, the median of the per-round
   ratios, how long the drain took and who the report named as the limit.
2. **The maximum sustained rate**: the highest rate, stepping down by 5 % of the
   closed loop, at which the open loop keeps its schedule (under 1 % of its
   requests late, p99 under 10x the p99 at 20,000/s). Each step runs the closed
   loop and wrk just before and asks for the step's share of that closed loop (the
   VM's capacity drifts by 15 % from one minute to the next); and, where `wrk2`
   is on the PATH (wrk's open loop, built from its source: it has no Debian
   package), wrk2 at each of those rates on the same nginx, to tell the
   generator's limit from the target's.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from tools.bench.common import _have, nginx, poolsvc_metrics, section_main
from tools.bench.rivals import run_wrk, run_wrk2

OVERLOAD = 3.0  # asked this many times the closed loop's req/s
STEPS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)  # of the closed loop, downwards
LATE_MAX = 0.01  # sustained: under 1 % of the requests late ...
P99_FACTOR = 10.0  # ... and the p99 under 10x the p99 at BASE_RATE
BASE_RATE = 20_000


def open_run(url: tuple[str, int], seconds: float, rate: float, pure: bool) -> dict[str, Any]:
    m, cpu = poolsvc_metrics(url, seconds, ["--rate", f"{rate:.0f}"], pure=pure)
    return {**m, "cpu_us": cpu / max(1, m["requests.sent"]) * 1e6}


def overload(url: tuple[str, int], rounds: int, seconds: float) -> str:
    """The overload table: medians and the median of per-round ratios."""
    runs: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}  # the whole process's CPU per request sent
    drains: dict[str, list[float]] = {}
    limits: dict[str, set[str]] = {}
    for _ in range(rounds):
        runs.setdefault("wrk", []).append(run_wrk(url, seconds)["rps"])
        for name, pure in (("accelerated", False), ("pure Python", True)):
            c, cpu = poolsvc_metrics(url, seconds, pure=pure)
            closed = c["run.rps"]
            m = open_run(url, seconds, OVERLOAD * closed, pure)
            runs.setdefault(f"closed {name}", []).append(closed)
            cpus.setdefault(f"closed {name}", []).append(cpu / c["requests.sent"] * 1e6)
            runs.setdefault(f"open {name}", []).append(m["run.rps"])
            cpus.setdefault(f"open {name}", []).append(m["cpu_us"])
            drains.setdefault(name, []).append(m["run.drain_s"])
            limits.setdefault(name, set()).add(m["run.limit"])
    lines = [
        "| run | req/s median | min | max | CPU per request (process) |",
        "|---|---|---|---|---|",
    ]
    for name, rps in runs.items():
        asked = f" (asked {OVERLOAD:g}x closed)" if name.startswith("open") else ""
        per = f"{statistics.median(cpus[name]):.1f} µs" if name in cpus else "-"
        lines.append(
            f"| {name}{asked} | {statistics.median(rps):,.0f} | {min(rps):,.0f} | "
            f"{max(rps):,.0f} | {per} |"
        )
    lines += [
        "",
        "| path | open / closed (median of ratios) | open / wrk | drain (max) | limit named |",
        "|---|---|---|---|---|",
    ]
    for name in ("accelerated", "pure Python"):
        opened, closed = runs[f"open {name}"], runs[f"closed {name}"]
        to_closed = statistics.median(a / b for a, b in zip(opened, closed, strict=True))
        to_wrk = statistics.median(a / b for a, b in zip(opened, runs["wrk"], strict=True))
        lines.append(
            f"| {name} | {to_closed:.3f} | {to_wrk:.3f} | {max(drains[name]):.2f} s | "
            f"{', '.join(sorted(limits[name]))} |"
        )
    return "\n".join(lines)


def sustained(url: tuple[str, int], seconds: float) -> str:
    """The highest rate on :data:`STEPS` that keeps the schedule (the accelerated path).
    Each step runs the closed loop and wrk first and asks the open loop for the step's
    share of that closed loop: the VM's capacity drifts between minutes, so the ratio is
    taken against the capacity of the moment, not a median from earlier rounds."""
    base = open_run(url, seconds, BASE_RATE, False)["latency.p99_ms"]
    lines = [
        f"p99 at {BASE_RATE:,}/s: {base:.3f} ms, so sustained means late < {LATE_MAX:.0%} and "
        f"p99 < {P99_FACTOR * base:.2f} ms",
        "",
        "| step | closed loop just before | wrk just before | asked req/s | sent req/s | late "
        "| p99 | sustained | wrk2 sent req/s | wrk2 p99 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    have_wrk2 = _have("wrk2")
    if have_wrk2:  # its p99 at the base rate, for the same criterion
        lines.insert(
            1, f"(wrk2's p99 at {BASE_RATE:,}/s: {run_wrk2(url, seconds, BASE_RATE)['p99']:.3f} ms)"
        )
    best: tuple[float, float, float] | None = None  # (rate, its closed loop, its wrk)
    for step in STEPS:
        closed = poolsvc_metrics(url, seconds)[0]["run.rps"]
        wrk = run_wrk(url, seconds)["rps"]
        rate = round(closed * step, -2)
        m = open_run(url, seconds, rate, False)
        late = m["requests.late"] / max(1, m["requests.sent"])
        ok = late < LATE_MAX and m["latency.p99_ms"] < P99_FACTOR * base
        rival = "| - | - |"
        if have_wrk2:
            w = run_wrk2(url, seconds, rate)
            rival = f"| {w['rps']:,.0f} | {w['p99']:.2f} ms |"
        lines.append(
            f"| {step:g} | {closed:,.0f} | {wrk:,.0f} | {rate:,.0f} | {m['run.rps']:,.0f} | "
            f"{late:.2%} | {m['latency.p99_ms']:.2f} ms | {'yes' if ok else 'no'} {rival}"
        )
        if ok:
            best = (rate, closed, wrk)
            break
    lines += ["", "| maximum sustained open-loop rate | value |", "|---|---|"]
    if best is None:
        return "\n".join([*lines, f"| req/s | none down to {STEPS[-1]:g} of the closed loop |"])
    rate, closed, wrk = best
    return "\n".join(
        [
            *lines,
            f"| req/s | {rate:,.0f} |",
            f"| / the closed loop just before ({closed:,.0f} req/s) | {rate / closed:.3f} |",
            f"| / wrk just before ({wrk:,.0f} req/s) | {rate / wrk:.3f} |",
        ]
    )


def open_loop_at_capacity(rounds: int, seconds: float) -> str:
    with nginx() as ng:
        url = (ng.host, ng.port)
        poolsvc_metrics(url, 2.0)  # warm up once, not measured
        return overload(url, rounds, seconds) + "\n\n" + sustained(url, seconds)


def main() -> int:
    return section_main("python -m tools.bench.openloop", __doc__ or "", open_loop_at_capacity)


if __name__ == "__main__":
    sys.exit(main())

"""``poolsvc churn``: the same load twice, pooled and one connection per request.

Both runs are open loop at the same rate, so the load is identical and only the
connection strategy differs. The table shows what a connection per request
costs:

- a handshake per request;
- sockets piling up in TIME_WAIT (sampled each second). Whichever side closes
  first holds them for 60 s on Linux. Ours holds local ports; the target's holds
  its memory. Against a local target both sides are counted;
- EADDRNOTAVAIL once those ports run out;
- the latency and the CPU per request that all of this adds.

See ``docs/churn.md``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, TextIO

import orjson

from poolsvc.keys import Config
from poolsvc.runner import Outcome, execute

DEFAULT_RATE = 1000.0


def churn(
    cfg: Config, out: TextIO | None = None, err: TextIO | None = None, as_json: bool = False
) -> int:
    """Run ``cfg`` pooled, then with a connection per request; print the comparison."""
    out = out or sys.stdout
    err = err or sys.stderr
    rate = cfg.rate or DEFAULT_RATE
    base = dataclasses.replace(cfg, rate=rate, timeline=None)
    results: dict[str, Outcome] = {}
    for label, keep_alive in (("pooled", True), ("per-request", False)):
        result = execute(
            dataclasses.replace(base, keep_alive=keep_alive),
            out,
            err,
            quiet=True,
            sample_time_wait=True,
        )
        if isinstance(result, int):
            return result
        results[label] = result
    rows = table(results)
    if as_json:
        out.write(orjson.dumps({"rate": rate, "rows": rows}, option=orjson.OPT_INDENT_2).decode())
        out.write("\n")
        return 0
    pooled = results["pooled"].info
    out.write(
        f"[churn] the same load twice: open loop at {rate:g} req/s for "
        f"{cfg.duration_s:g}s against {pooled.target}\n"
    )
    out.write(f"{'metric':<28}{'pooled':>14}{'per-request':>14}{'ratio':>9}\n")
    for row in rows:
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] is not None else "-"
        out.write(f"{row['metric']:<28}{row['pooled']:>14}{row['per-request']:>14}{ratio:>9}\n")
    return 0


def _figures(o: Outcome) -> dict[str, float]:
    c = o.snap.counters
    lat = o.snap.latency()
    elapsed = o.info.elapsed_s or 1.0
    sent = c["requests.sent"] or 1
    return {
        "requests/s": c["requests.sent"] / (o.info.load_s or 1.0),
        "p50 latency (ms)": lat["p50"] / 1000,
        "p99 latency (ms)": lat["p99"] / 1000,
        "handshakes/s": c["connections.created"] / elapsed,
        "TIME_WAIT (max, both sides)": max(o.time_wait, default=0),
        "TIME_WAIT (mean)": sum(o.time_wait) / len(o.time_wait) if o.time_wait else 0,
        "EADDRNOTAVAIL errors": c["errors.EADDRNOTAVAIL"] + c["connect_errors.EADDRNOTAVAIL"],
        "failed requests": c["requests.failed"] + c["requests.unsent"],
        "CPU per request (us)": o.cpu_s / sent * 1e6,
    }


def table(results: dict[str, Outcome]) -> list[dict[str, Any]]:
    a, b = _figures(results["pooled"]), _figures(results["per-request"])
    rows = []
    for metric in a:
        ratio = b[metric] / a[metric] if a[metric] and metric != "requests/s" else None
        rows.append(
            {
                "metric": metric,
                "pooled": _fmt(a[metric]),
                "per-request": _fmt(b[metric]),
                "ratio": ratio,
            }
        )
    return rows


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"

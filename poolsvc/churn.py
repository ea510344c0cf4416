"""``poolsvc churn``: the same load twice, pooled and one connection per request.

Both runs are open loop at the same rate, so the load is identical and only the
connection strategy differs. Over TLS there are three runs: pooled, a connection
per request with a full handshake each time (resume ratio 0), and a connection
per request resuming a session each time (resume ratio 1). The table shows what
a connection per request costs:

- a handshake per request;
- sockets piling up in TIME_WAIT (sampled each second). Whichever side closes
  first holds them for 60 s on Linux. Ours holds local ports; the target's holds
  its memory. Against a local target both sides are counted;
- EADDRNOTAVAIL once those ports run out;
- the latency and the CPU per request that all of this adds;
- over TLS, the handshakes: full ones cost the target (and us) public-key
  crypto, resumed ones much less.

See ``docs/churn.md``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, TextIO

import orjson

from poolsvc.keys import Config
from poolsvc.runner import Outcome, execute
from poolsvc.usage import EXIT_USAGE

DEFAULT_RATE = 1000.0


def strategies(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    """The runs to compare, each a label and the keys it changes."""
    runs: list[tuple[str, dict[str, Any]]] = [("pooled", {"keep_alive": True})]
    if not cfg.tls:
        return [*runs, ("per-request", {"keep_alive": False})]
    return [
        *runs,
        ("per-req full", {"keep_alive": False, "tls_resume_ratio": 0.0}),
        ("per-req resumed", {"keep_alive": False, "tls_resume_ratio": 1.0}),
    ]


RUN_OUTPUTS = ("report", "hlog", "metrics_addr", "linger_s", "shard", "shards", "start_at")


def churn(
    cfg: Config, out: TextIO | None = None, err: TextIO | None = None, as_json: bool = False
) -> int:
    """Run ``cfg`` pooled, then with a connection per request; print the comparison."""
    out = out or sys.stdout
    err = err or sys.stderr
    for key in RUN_OUTPUTS:  # each of these describes one run; churn makes several
        if getattr(cfg, key):
            print(f"poolsvc: error: {key} is for run and serve, not churn", file=err)
            return EXIT_USAGE
    rate = cfg.rate or DEFAULT_RATE
    base = dataclasses.replace(cfg, rate=rate, timeline=None)
    results: dict[str, Outcome] = {}
    for label, changes in strategies(cfg):
        result = execute(
            dataclasses.replace(base, **changes), out, err, quiet=True, sample_time_wait=True
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
        f"[churn] the same load {len(results)} times: open loop at {rate:g} req/s for "
        f"{cfg.duration_s:g}s against {pooled.target}\n"
    )
    labels = list(results)
    out.write(f"{'metric':<28}" + "".join(f"{label:>16}" for label in labels))
    out.write("".join(f"{'ratio':>9}" for _ in labels[1:]) + "\n")
    for row in rows:
        out.write(f"{row['metric']:<28}" + "".join(f"{row[label]:>16}" for label in labels))
        for label in labels[1:]:
            ratio = row["ratios"][label]
            out.write(f"{ratio:>8.1f}x" if ratio is not None else f"{'-':>9}")
        out.write("\n")
    return 0


def _figures(o: Outcome) -> dict[str, float]:
    c = o.snap.counters
    lat = o.snap.latency()
    elapsed = o.info.elapsed_s or 1.0
    sent = c["requests.sent"] or 1
    figures = {
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
    if o.info.tls_resume_ratio is not None:
        full, resumed = c["tls.handshakes.full"], c["tls.handshakes.resumed"]
        figures["TLS full handshakes/s"] = full / elapsed
        figures["TLS resumed handshakes/s"] = resumed / elapsed
        for kind in ("full", "resumed"):
            t = o.snap.timing(f"tls_{kind}")
            figures[f"TLS {kind} p50 (ms)"] = t["p50"] / 1000 if t else 0.0
    return figures


def table(results: dict[str, Outcome]) -> list[dict[str, Any]]:
    """One row per metric: each run's figure, and its ratio to the pooled one."""
    figures = {label: _figures(o) for label, o in results.items()}
    pooled = figures["pooled"]
    rows = []
    for metric in pooled:
        row: dict[str, Any] = {"metric": metric}
        row.update({label: _fmt(f[metric]) for label, f in figures.items()})
        row["ratios"] = {
            label: f[metric] / pooled[metric] if pooled[metric] and metric != "requests/s" else None
            for label, f in figures.items()
            if label != "pooled"
        }
        rows.append(row)
    return rows


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"

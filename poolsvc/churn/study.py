"""``poolsvc churn``: the same load pooled and with one connection per request.

All runs are open loop at the same rate, so the load is identical and only the
connection strategy differs: pooled, a connection per request with
``Connection: close``, and one closed by us after its response. Over TLS there
are three runs: pooled, a connection
per request with a full handshake each time (resume ratio 0), and a connection
per request resuming a session each time (resume ratio 1). The table shows what
a connection per request costs:

- a handshake per request;
- sockets piling up in TIME_WAIT (``ss``, each second: :mod:`poolsvc.metrics.sockstats`).
  Whichever side closes first holds them for 60 s on Linux. Ours hold local
  ports; the target's hold its memory. Against a local target both are counted;
- EADDRNOTAVAIL once those ports run out;
- the latency and the CPU per request that all of this adds;
- over TLS, the handshakes: full ones cost the target (and us) public-key
  crypto, resumed ones much less.

``--netns`` (:mod:`poolsvc.churn.netns`) runs it all in a namespace with 1,000 ports and
no TIME_WAIT reuse, where the per-request half really runs out of ports;
``--capture`` (:mod:`poolsvc.churn.capture`, :mod:`poolsvc.churn.pcap`) records and reads each
half's packets; ``--nagle`` compares TCP_NODELAY with Nagle's algorithm on. See
``docs/churn.md`` and ``docs/runbook-churn.md``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Final, TextIO

import orjson

from poolsvc.arbiter.runner import Outcome, execute
from poolsvc.churn import netns, pcap
from poolsvc.churn.capture import Capture, capture_problem
from poolsvc.config.keys import Config
from poolsvc.config.usage import EXIT_USAGE
from workers.shared.errors import ConfigError

DEFAULT_RATE = 1000.0
NAGLE_RATE = 200.0  # a request stalled ~40 ms by Nagle needs a connection of its own


NAGLE: Final = (  # the Nagle study: one pooled load, head and body written apart, twice
    ("TCP_NODELAY", {"split_writes": True}),
    ("Nagle on", {"split_writes": True, "tcp_nodelay": False}),
)
NAGLE_BODY: Final = "0123456789abcdef" * 4  # a small body: what Nagle holds back


def strategies(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    """The runs to compare, each a label and the keys it changes. A connection per
    request twice: ``Connection: close`` (the target closes first and holds the
    TIME_WAIT), and closed by us after one response (we hold it, on our ports:
    the half that runs out of them)."""
    runs: list[tuple[str, dict[str, Any]]] = [("pooled", {"keep_alive": True})]
    if not cfg.tls:
        return [
            *runs,
            ("per-request", {"keep_alive": False}),
            ("per-req, we close", {"keep_alive": True, "max_requests_per_conn": 1}),
        ]
    return [
        *runs,
        ("per-req full", {"keep_alive": False, "tls_resume_ratio": 0.0}),
        ("per-req resumed", {"keep_alive": False, "tls_resume_ratio": 1.0}),
    ]


RUN_OUTPUTS = ("report", "hlog", "metrics_addr", "linger_s", "shard", "shards", "start_at")


def churn(
    cfg: Config,
    out: TextIO | None = None,
    err: TextIO | None = None,
    as_json: bool = False,
    capture: str | None = None,
    nagle: bool = False,
) -> int:
    """Run ``cfg`` pooled, then with a connection per request; print the comparison
    (``capture``: a directory for a pcap of each half, see :mod:`poolsvc.churn.pcap`)."""
    out = out or sys.stdout
    err = err or sys.stderr
    for key in RUN_OUTPUTS:  # each of these describes one run; churn makes several
        if getattr(cfg, key):
            print(f"poolsvc: error: {key} is for run and serve, not churn", file=err)
            return EXIT_USAGE
    if capture and (problem := capture_problem(capture)):
        print(f"poolsvc: error: capture: {problem}", file=err)
        return EXIT_USAGE
    rate = cfg.rate or (NAGLE_RATE if nagle else DEFAULT_RATE)
    base = dataclasses.replace(cfg, rate=rate, timeline=None)
    if nagle and not (cfg.body or cfg.body_file):
        base = dataclasses.replace(base, method="POST", body=NAGLE_BODY)
    results: dict[str, Outcome] = {}
    captures: dict[str, dict[str, Any]] = {}
    inside = netns.settings_here() if os.environ.get(netns.INSIDE) else None
    for half, (label, changes) in enumerate(list(NAGLE) if nagle else strategies(cfg)):
        if inside is not None:
            try:  # ports no half used: the last one's TIME_WAIT must not starve this one
                netns.fresh_ports(half)
            except (OSError, ConfigError) as exc:
                print(f"poolsvc: error: {exc}", file=err)
                return EXIT_USAGE
        with Capture(capture, label) as cap:
            result = execute(
                dataclasses.replace(base, **changes), out, err, quiet=True, sample_sockets=True
            )
        if isinstance(result, int):
            return result
        results[label] = result
        if cap.path is not None:
            port = int(result.info.target.rpartition(":")[2])
            captures[label] = {"file": str(cap.path), **pcap.study(pcap.read(cap.path), port)}
    rows = table(results)
    if as_json:
        doc = {"rate": rate, "rows": rows, "namespace": inside, "captures": captures}
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    pooled = next(iter(results.values())).info
    out.write(
        f"[churn] the same load {len(results)} times: open loop at {rate:g} req/s for "
        f"{cfg.duration_s:g}s against {pooled.target}\n"
    )
    if inside:
        shown = ", ".join(f"{k.rpartition('.')[2]}={v}" for k, v in inside.items())
        out.write(f"[churn] in a private network namespace: {shown}; each half on ports")
        out.write(" no half used before\n")
    write_table(out, rows, list(results))
    for label, study in captures.items():
        write_capture(out, label, study)
    return 0


def write_table(out: TextIO, rows: list[dict[str, Any]], labels: list[str]) -> None:
    out.write(f"{'metric':<30}" + "".join(f"{label:>19}" for label in labels))
    out.write("".join(f"{'ratio':>9}" for _ in labels[1:]) + "\n")
    for row in rows:
        out.write(f"{row['metric']:<30}" + "".join(f"{_fmt(row[lb]):>19}" for lb in labels))
        for label in labels[1:]:
            ratio = row["ratios"][label]
            out.write(f"{ratio:>8.1f}x" if ratio is not None else f"{'-':>9}")
        out.write("\n")


def write_capture(out: TextIO, label: str, study: dict[str, Any]) -> None:
    out.write(
        f"\n[capture] {label}: {study['file']}: {study['packets']} packets, "
        f"{study['connections']} connections, {study['syns']} SYNs for {study['requests']} "
        f"requests ({study['syns_per_request']} per request), handshake round trip "
        f"p50 {study['handshake_rtt_us_p50']} us\n"
    )
    for kind, title in (("fresh", "a request on a fresh connection"),
                        ("reused", "a request on a reused connection")):  # fmt: skip
        if study[kind]:
            out.write(f"  {title}:\n")
            out.writelines(f"    {line}\n" for line in study[kind])


def _figures(o: Outcome) -> dict[str, float]:
    c = o.snap.counters
    lat = o.snap.latency()
    elapsed = o.info.elapsed_s or 1.0
    sent = c["requests.sent"] or 1
    socks = o.sockets

    def most(key: str) -> int:
        return max((s[key] for s in socks), default=0)

    figures = {
        "requests/s": c["requests.sent"] / (o.info.load_s or 1.0),
        "p50 latency (ms)": lat["p50"] / 1000,
        "p99 latency (ms)": lat["p99"] / 1000,
        "handshakes/s": c["connections.created"] / elapsed,
        "TIME_WAIT ours (max)": most("time_wait_ours"),
        "TIME_WAIT target's (max)": most("time_wait_theirs"),
        "our ports in use (max)": most("ports_in_use"),
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
    first = next(iter(figures))
    pooled = figures[first]
    rows = []
    for metric in pooled:
        row: dict[str, Any] = {"metric": metric}
        row.update({label: round(f[metric], 3) for label, f in figures.items()})
        row["ratios"] = {
            label: f[metric] / pooled[metric] if pooled[metric] and metric != "requests/s" else None
            for label, f in figures.items()
            if label != first
        }
        rows.append(row)
    return rows


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"

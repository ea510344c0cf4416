"""The Prometheus text exposition of a snapshot and the breaker states.

Every series is built from the same snapshot as the report, under the same names
(``requests.ok`` is ``poolsvc_requests_total{result="ok"}``).
"""

from __future__ import annotations

from typing import Any

from workers import histogram
from workers.stats import EVICT_REASONS, STATUS_CLASSES, Snapshot

RESULTS = ("ok", "failed", "unsent", "lost", "abandoned", "in_doubt")


def label(value: object) -> str:
    """A label value escaped as the text exposition format requires: backslash, double
    quote and newline (a target's name is the user's, and may hold any of them)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


# Histogram boundaries for the exposition, in seconds (our buckets are finer; these
# are cumulative counts at each boundary, exact up to the 1/64 bucket precision).
_LE = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def exposition(snap: Snapshot, breakers: list[dict[str, Any]]) -> str:
    """The Prometheus text exposition of ``snap`` and the breaker states."""
    c, g = snap.counters, snap.gauges
    out: list[str] = []
    _line(out, "poolsvc_requests_total", "counter", "Requests by outcome (see the ledger).")
    for result in RESULTS:
        out.append(f'poolsvc_requests_total{{result="{result}"}} {c[f"requests.{result}"]}')
    _line(out, "poolsvc_requests_sent_total", "counter", "Requests whose last byte was written.")
    out.append(f"poolsvc_requests_sent_total {c['requests.sent']}")
    _line(out, "poolsvc_responses_total", "counter", "Final responses by HTTP status class.")
    for cls in STATUS_CLASSES:
        out.append(f'poolsvc_responses_total{{class="{cls}"}} {c[f"responses.{cls}"]}')
    _line(out, "poolsvc_responses_by_code_total", "counter", "Final responses by status code.")
    for code, n in sorted(snap.statuses.items()):
        out.append(f'poolsvc_responses_by_code_total{{code="{code}"}} {n}')
    _line(out, "poolsvc_errors_total", "counter", "Request failures by name; sent or not.")
    for sent, named in (("true", snap.failures()), ("false", snap.unsent())):
        for name, value in named.items():
            out.append(f'poolsvc_errors_total{{error="{name}",sent="{sent}"}} {value}')
    _line(out, "poolsvc_connect_errors_total", "counter", "Connects with no request that failed.")
    for name, value in snap.connect_errors().items():
        out.append(f'poolsvc_connect_errors_total{{error="{name}"}} {value}')
    _line(out, "poolsvc_connections_created_total", "counter", "Handshakes completed.")
    out.append(f"poolsvc_connections_created_total {c['connections.created']}")
    _line(out, "poolsvc_connections_reused_total", "counter", "Requests on a reused connection.")
    out.append(f"poolsvc_connections_reused_total {c['connections.reused']}")
    _line(out, "poolsvc_connections_evicted_total", "counter", "Connections evicted, by reason.")
    for reason in EVICT_REASONS:
        out.append(
            f'poolsvc_connections_evicted_total{{reason="{reason}"}} '
            f"{c[f'connections.evicted.{reason}']}"
        )
    _line(
        out, "poolsvc_stale_reuse_total", "counter", "Requests re-sent once after a stale socket."
    )
    out.append(f"poolsvc_stale_reuse_total {c['retries.stale_reuse']}")
    _line(out, "poolsvc_pool_connections", "gauge", "Pool connections by state.")
    for state in ("active", "idle", "connecting"):
        out.append(f'poolsvc_pool_connections{{state="{state}"}} {g[f"connections.{state}"]}')
    _line(out, "poolsvc_pool_waiting", "gauge", "Requests waiting for a connection.")
    out.append(f"poolsvc_pool_waiting {g['pool.waiting']}")
    _line(out, "poolsvc_breaker_state", "gauge", "Breaker state: 0 closed, 1 open, 2 half-open.")
    codes = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2}
    for b in breakers:
        out.append(f'poolsvc_breaker_state{{target="{label(b["target"])}"}} {codes[b["state"]]}')
    name = "poolsvc_request_duration_seconds"
    _line(out, name, "histogram", "Latency of requests that got a final response.")
    _histogram(out, name, "", snap.hist, c["latency.sum_us"])
    name = "poolsvc_connect_duration_seconds"
    _line(out, name, "histogram", "TCP connect time: connect() to SO_ERROR == 0.")
    _histogram(out, name, "", snap.timings["connect"], c["connect.sum_us"])
    _line(out, "poolsvc_tls_handshakes_total", "counter", "TLS handshakes, full or resumed.")
    for kind in ("full", "resumed"):
        out.append(f'poolsvc_tls_handshakes_total{{kind="{kind}"}} {c[f"tls.handshakes.{kind}"]}')
    _line(
        out, "poolsvc_tls_sessions_offered_total", "counter", "New connections offering a session."
    )
    out.append(f"poolsvc_tls_sessions_offered_total {c['tls.sessions.offered']}")
    name = "poolsvc_tls_handshake_duration_seconds"
    _line(out, name, "histogram", "TLS handshake time, full and resumed apart.")
    for kind in ("full", "resumed"):
        counts = snap.timings[f"tls_{kind}"]
        _histogram(out, name, f'kind="{kind}",', counts, c[f"tls.{kind}.sum_us"])
    return "\n".join(out) + "\n"


def _histogram(out: list[str], name: str, labels: str, counts: list[int], sum_us: int) -> None:
    """One histogram's series: cumulative counts at each boundary, the sum and the count
    (``labels``: extra labels, each followed by a comma)."""
    cumulative = 0
    i = 0
    for le in _LE:
        limit_us = int(le * 1_000_000)
        while i < len(counts) and histogram.bucket_high(i) <= limit_us:
            cumulative += counts[i]
            i += 1
        out.append(f'{name}_bucket{{{labels}le="{le:g}"}} {cumulative}')
    out.append(f'{name}_bucket{{{labels}le="+Inf"}} {sum(counts)}')
    tail = f"{{{labels.rstrip(',')}}}" if labels else ""
    out.append(f"{name}_sum{tail} {sum_us / 1e6:.6f}")
    out.append(f"{name}_count{tail} {sum(counts)}")

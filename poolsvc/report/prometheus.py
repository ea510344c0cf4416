"""The Prometheus exposition of the service: text format 0.0.4, or OpenMetrics 1.0.

Built from one :class:`poolsvc.report.views.View` (the same read as ``poolctl status``),
so a scrape reads the shared region like ``status`` and asks nothing of the
workers. Conventions: base units (``_seconds``, ``_bytes``), counters end in
``_total``, request latency as classic histograms with fixed buckets (so
``histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m])))`` aggregates
across workers and machines), bounded labels only (target name, status class
and code, error name, phase, fault kind; never a URL or a message).

Run-wide families carry no ``target`` label; what is kept per target has its own
``poolsvc_target_*`` families with one, so no family mixes the two.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from poolsvc.report.views import TargetView, View
from poolsvc.version import __version__
from workers.shared import histogram
from workers.shared.errors import ERROR_NAMES, PHASES
from workers.shared.injection import KINDS
from workers.shared.slotstats import EVICT_REASONS, STATUS_CLASSES, Snapshot

TEXT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"
RESULTS: Final = ("ok", "failed", "unsent", "lost", "abandoned", "in_doubt")
BREAKER_CODES: Final = {"CLOSED": 0, "OPEN": 1, "HALF_OPEN": 2}
# Bucket boundaries in seconds, the same for every latency histogram and every run
# (fixed: aggregation across machines needs equal `le`s). Our own buckets are finer
# (1/64 of a value); each count lands under the first boundary at or above its
# bucket's top, so a boundary's count is exact to that precision.
LE: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

Labels = tuple[tuple[str, str], ...]
_TEXT_NAMES: Final = {"counter": ("counter", "_total"), "info": ("gauge", "_info")}


def label(value: object) -> str:
    """A label value escaped as both formats require: backslash, double quote and
    newline (a target's name is the user's, and may hold any of them)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class Family:
    """One metric family; ``name`` without ``_total`` for a counter."""

    name: str
    kind: str  # counter, gauge, histogram, info
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: object) -> None:
        self.samples.append((suffix, tuple((k, str(v)) for k, v in labels.items()), value))

    def render(self, out: list[str], openmetrics: bool) -> None:
        # OpenMetrics names a family without its sample suffix; the text format names
        # a counter by its _total sample and has no info type (a gauge _info instead)
        kind, head = self.kind, self.name
        if not openmetrics and kind in _TEXT_NAMES:
            kind, suffix = _TEXT_NAMES[kind]
            head += suffix
        out.append(f"# HELP {head} {self.help}")
        out.append(f"# TYPE {head} {kind}")
        for suffix, labels, value in self.samples:
            inner = ",".join(f'{k}="{label(v)}"' for k, v in labels)
            shown = f"{value:.6f}" if isinstance(value, float) else str(value)
            out.append(
                f"{self.name}{suffix}{{{inner}}} {shown}"
                if inner
                else f"{self.name}{suffix} {shown}"
            )


def _histogram(fam: Family, counts: Sequence[int], sum_us: int, **labels: object) -> None:
    """One histogram's samples: cumulative counts at each boundary, the sum, the count."""
    cumulative, i = 0, 0
    for le in LE:
        limit_us = int(le * 1_000_000)
        while i < len(counts) and histogram.bucket_high(i) <= limit_us:
            cumulative += counts[i]
            i += 1
        fam.add(cumulative, "_bucket", **labels, le=f"{le:g}")
    total = sum(counts)
    fam.add(total, "_bucket", **labels, le="+Inf")
    fam.add(sum_us / 1e6, "_sum", **labels)
    fam.add(total, "_count", **labels)


def run_families(snap: Snapshot) -> Iterable[Family]:
    """The run-wide families: every worker, retired ones included."""
    c = snap.counters
    f = Family("poolsvc_requests", "counter", "Requests by outcome (see the ledger).")
    for result in RESULTS:
        f.add(c[f"requests.{result}"], "_total", result=result)
    yield f
    f = Family("poolsvc_requests_sent", "counter", "Requests whose last byte was written.")
    f.add(c["requests.sent"], "_total")
    yield f
    f = Family("poolsvc_requests_late", "counter", "Open loop: sent over 1 ms after due.")
    f.add(c["requests.late"], "_total")
    yield f
    f = Family("poolsvc_requests_dropped", "counter", "Open loop: never issued (backlog full).")
    f.add(c["requests.dropped"], "_total")
    yield f
    f = Family("poolsvc_responses", "counter", "Final responses by HTTP status class.")
    for cls in STATUS_CLASSES:
        f.add(c[f"responses.{cls}"], "_total", **{"class": cls})
    yield f
    f = Family("poolsvc_responses_by_code", "counter", "Final responses by status code.")
    for code, n in sorted(snap.statuses.items()):
        f.add(n, "_total", code=code)
    yield f
    f = Family("poolsvc_errors", "counter", "Request failures by name; sent or not.")
    for name in ERROR_NAMES:
        f.add(c[f"failed.{name}"], "_total", error=name, sent="true")
        f.add(c[f"unsent.{name}"], "_total", error=name, sent="false")
    yield f
    f = Family("poolsvc_errors_by_phase", "counter", "Request failures by the phase they hit.")
    for phase in PHASES:
        f.add(c[f"errors.phase.{phase}"], "_total", phase=phase)
    yield f
    f = Family("poolsvc_connect_errors", "counter", "Connects with no request that failed.")
    for name in ERROR_NAMES:
        f.add(c[f"connect_errors.{name}"], "_total", error=name)
    yield f
    f = Family("poolsvc_injected_faults", "counter", "Injected faults that hit, by kind.")
    for kind in KINDS:
        f.add(c[f"injected.{kind}"], "_total", kind=kind)
    yield f
    for name, key, text in (
        ("connections_attempted", "connections.attempted", "connect() calls."),
        ("connections_created", "connections.created", "Connections established."),
        ("connections_reused", "connections.reused", "Requests on a reused connection."),
        ("health_checks", "connections.health_checks", "Health checks of idle connections."),
        ("stale_reuse", "retries.stale_reuse", "Requests re-sent once after a stale socket."),
        ("received_bytes", "bytes.in", "Bytes read from targets."),
        ("sent_bytes", "bytes.out", "Bytes written to targets."),
    ):
        f = Family(f"poolsvc_{name}", "counter", text)
        f.add(c[key], "_total")
        yield f
    f = Family("poolsvc_connections_evicted", "counter", "Connections evicted, by reason.")
    for reason in EVICT_REASONS:
        f.add(c[f"connections.evicted.{reason}"], "_total", reason=reason)
    yield f
    f = Family("poolsvc_tls_handshakes", "counter", "TLS handshakes, full or resumed.")
    for kind in ("full", "resumed"):
        f.add(c[f"tls.handshakes.{kind}"], "_total", kind=kind)
    yield f
    f = Family("poolsvc_tls_sessions_offered", "counter", "New connections offering a session.")
    f.add(c["tls.sessions.offered"], "_total")
    yield f
    yield from _timing_families(snap)


def _timing_families(snap: Snapshot) -> Iterable[Family]:
    c = snap.counters
    f = Family(
        "poolsvc_request_duration_seconds",
        "histogram",
        "Latency of requests with a final response (open loop: from the intended time).",
    )
    _histogram(f, snap.hist, c["latency.sum_us"])
    yield f
    f = Family(
        "poolsvc_failure_duration_seconds",
        "histogram",
        "How long failed requests took to fail, from when they were due.",
    )
    _histogram(f, snap.timings["failure_time"], c["failure_time.sum_us"])
    yield f
    f = Family("poolsvc_connect_duration_seconds", "histogram", "TCP connect time.")
    _histogram(f, snap.timings["connect"], c["connect.sum_us"])
    yield f
    f = Family("poolsvc_tls_handshake_duration_seconds", "histogram", "TLS handshake time.")
    for kind in ("full", "resumed"):
        _histogram(f, snap.timings[f"tls_{kind}"], c[f"tls.{kind}.sum_us"], kind=kind)
    yield f


def warmup_families(warmup: dict[str, Any] | None) -> Iterable[Family]:
    """``--warmup``: its requests by outcome, apart from every measured family."""
    if warmup is None:
        return
    f = Family("poolsvc_warmup_requests", "counter", "Warm-up requests by outcome (not measured).")
    for result in RESULTS:
        f.add(warmup[f"warmup.requests.{result}"], "_total", result=result)
    yield f


def target_families(targets: Sequence[TargetView]) -> Iterable[Family]:
    """What is kept per target: outcomes, failures by name, latency, pool, breaker
    (the service's targets, or a library client's hosts)."""
    req = Family("poolsvc_target_requests", "counter", "A target's requests by outcome.")
    err = Family("poolsvc_target_errors", "counter", "A target's request failures by name.")
    lat = Family(
        "poolsvc_target_request_duration_seconds", "histogram", "A target's request latency."
    )
    pool = Family("poolsvc_pool_connections", "gauge", "Pool connections by state, live workers.")
    wait = Family("poolsvc_pool_waiting", "gauge", "Requests waiting for a connection.")
    bounds = Family("poolsvc_pool_bounds", "gauge", "A target's pool bounds over all workers.")
    brk = Family("poolsvc_breaker_state", "gauge", "Breaker state: 0 closed, 1 open, 2 half-open.")
    trips = Family("poolsvc_breaker_trips", "counter", "Times the breaker opened.")
    for t in targets:
        for result in ("ok", "failed", "unsent"):
            req.add(t.figures[result], "_total", target=t.name, result=result)
        for name, n in t.errors.items():
            err.add(n, "_total", target=t.name, error=name)
        _histogram(lat, t.own.hist, t.own.counters["latency.sum_us"], target=t.name)
        for state in ("active", "idle", "connecting"):
            pool.add(t.pool[state], target=t.name, state=state)
        wait.add(t.pool["waiting"], target=t.name)
        for bound in ("max", "min", "limit"):
            bounds.add(t.pool.get(bound, 0), target=t.name, bound=bound)
        brk.add(BREAKER_CODES[t.breaker["state"]], target=t.name)
        trips.add(t.breaker["trips"], "_total", target=t.name)
    yield from (req, err, lat, pool, wait, bounds, brk, trips)


def exposition(view: View, openmetrics: bool = False) -> str:
    """The whole exposition of ``view``, in the text format or OpenMetrics."""
    build = Family("poolsvc_build", "info", "The poolsvc build that serves these metrics.")
    build.add(1, "_info", version=__version__, python=platform.python_version())
    workers = Family("poolsvc_workers", "gauge", "Worker processes running.")
    workers.add(view.load.workers)
    up = Family("poolsvc_uptime_seconds", "gauge", "Seconds since the service started.")
    up.add(float(view.uptime_s))
    out: list[str] = []
    families = (
        *run_families(view.snapshot),
        *warmup_families(view.info.warmup),
        *target_families(view.targets),
    )
    for fam in (build, workers, up, *families):
        fam.render(out, openmetrics)
    if openmetrics:
        out.append("# EOF")
    return "\n".join(out) + "\n"


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header asks for OpenMetrics (as Prometheus does when it may)."""
    return "application/openmetrics-text" in accept.lower()

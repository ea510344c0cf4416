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
from workers.shared import catalog, histogram
from workers.shared.slotstats import STATUS_CLASSES, Snapshot

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


# The slot's timing histograms, by the family that exports each (its _sum is a catalog
# row; request latency is the slot's main histogram).
_TIMINGS: Final = {
    "failure_duration_seconds": "failure_time",
    "connect_duration_seconds": "connect",
}


def run_families(snap: Snapshot) -> Iterable[Family]:
    """The run-wide families: every worker, retired ones included. Every counter of the
    slot is a sample here, as the catalog says (:mod:`workers.shared.catalog`); the
    status families come from the slot's status words."""
    c = snap.counters
    for name, rows in catalog.by_family().items():
        kind, text = catalog.FAMILIES[name]
        f = Family(f"poolsvc_{name}", kind, text)
        if kind == "histogram":
            for row in rows:  # one histogram per _sum row (TLS: full and resumed)
                labels = dict(row.labels)
                counts = _histogram_counts(snap, name, labels)
                _histogram(f, counts, c[row.name], **labels)
        else:
            for row in rows:
                value = c[row.name] * row.scale if row.scale != 1.0 else c[row.name]
                f.add(value, "_total" if kind == "counter" else "", **dict(row.labels))
        yield f
        if name == "requests_dropped":  # the responses follow the requests' families
            yield from _status_families(snap)


def _histogram_counts(snap: Snapshot, family: str, labels: dict[str, str]) -> Sequence[int]:
    if family == "request_duration_seconds":
        return snap.hist
    if family == "tls_handshake_duration_seconds":
        return snap.timings[f"tls_{labels['kind']}"]
    return snap.timings[_TIMINGS[family]]


def _status_families(snap: Snapshot) -> Iterable[Family]:
    c = snap.counters
    f = Family("poolsvc_responses", "counter", "Final responses by HTTP status class.")
    for cls in STATUS_CLASSES:
        f.add(c[f"responses.{cls}"], "_total", **{"class": cls})
    yield f
    f = Family("poolsvc_responses_by_code", "counter", "Final responses by status code.")
    for code, n in sorted(snap.statuses.items()):
        f.add(n, "_total", code=code)
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

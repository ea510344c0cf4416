"""The metric catalog: every counter, its dotted name and its Prometheus sample, one table.

Each :class:`Row` names one counter of the stats slot (``requests.ok``: the name
``poolctl metrics``, the JSON result and the report print) and the Prometheus sample
it becomes (family ``poolsvc_requests``, labels ``result="ok"``); each family's kind and
help are in :data:`FAMILIES`. :data:`workers.shared.slotstats.COUNTERS`, the slot's
layout, is this table's names in this order, and :mod:`poolsvc.report.prometheus`
renders the run-wide families from it, so a counter cannot exist without being exported
(a test reads a real exposition back for every row).

Units: a row whose name ends in ``_us`` is exported in seconds (``scale``); a ``sum``
row is the ``_sum`` of its histogram family; a ``max`` row is a gauge sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from workers.shared.errors import ERROR_NAMES, PHASES
from workers.shared.injection import KINDS

EVICT_REASONS: Final = (
    "idle_timeout",  # idle longer than idle_timeout_ms
    "max_age",  # older than max_age_ms
    "validation",  # checkout probe found FIN/RST
    "health_check",  # active health check failed
    "peer_closed",  # FIN/RST while idle, seen by the event loop
    "server_close",  # response said Connection: close (or HTTP/1.0)
    "error",  # a request on it failed
    "resized",  # the pool was made smaller at runtime
    "unsolicited",  # bytes nobody asked for: while idle, or after the end of a response
)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Row:
    """One counter: its dotted ``name`` and the sample of ``family`` it is exported as."""

    name: str
    family: str  # without the poolsvc_ prefix (and a counter's _total)
    labels: Labels = ()
    role: str = "total"  # total: a counter's sample; sum: a histogram's _sum; max: a gauge
    meaning: str = ""

    @property
    def scale(self) -> float:
        """The factor from the stored value to the exported one (microseconds: seconds)."""
        return 1e-6 if self.name.endswith("_us") else 1.0


def _r(name: str, family: str, meaning: str = "", **labels: str) -> Row:
    return Row(name, family, tuple(labels.items()), "total", meaning)


def _sum(name: str, family: str, **labels: str) -> Row:
    return Row(name, family, tuple(labels.items()), "sum")


def _max(name: str, of: str) -> Row:
    return Row(name, "duration_max_seconds", (("of", of),), "max")


#: family -> (kind, help). Histograms take their buckets from the slot's histograms.
FAMILIES: Final = {
    "requests": ("counter", "Requests by outcome (see the ledger)."),
    "requests_sent": ("counter", "Requests whose last byte was written."),
    "requests_late": ("counter", "Open loop: sent over 1 ms after due."),
    "requests_dropped": ("counter", "Open loop: never issued (backlog full, rate change)."),
    "responses_interim": ("counter", "Interim (1xx) responses skipped before a final one."),
    "errors": ("counter", "Request failures by name; sent or not."),
    "errors_by_phase": ("counter", "Request failures by the phase they hit."),
    "connect_errors": ("counter", "Connects with no request that failed."),
    "injected_faults": ("counter", "Injected faults that hit, by kind."),
    "connections_attempted": ("counter", "connect() calls."),
    "connections_created": ("counter", "Connections established."),
    "connections_reused": ("counter", "Requests on a reused connection."),
    "connections_evicted": ("counter", "Connections evicted, by reason."),
    "connections_shutdown": ("counter", "Connections closed because the run ended."),
    "health_checks": ("counter", "Health checks of idle connections."),
    "stale_reuse": ("counter", "Requests re-sent once after a stale socket."),
    "received_bytes": ("counter", "Bytes read from targets."),
    "sent_bytes": ("counter", "Bytes written to targets."),
    "tls_handshakes": ("counter", "TLS handshakes, full or resumed."),
    "tls_sessions_offered": ("counter", "New connections offering a session."),
    "request_duration_seconds": (
        "histogram",
        "Latency of requests with a final response (open loop: from the intended time).",
    ),
    "failure_duration_seconds": (
        "histogram",
        "How long failed requests took to fail, from when they were due.",
    ),
    "connect_duration_seconds": ("histogram", "TCP connect time."),
    "tls_handshake_duration_seconds": ("histogram", "TLS handshake time."),
    "duration_max_seconds": ("gauge", "The longest of each duration so far, in seconds."),
}

ROWS: Final[tuple[Row, ...]] = (
    _r("requests.sent", "requests_sent", "its last byte was written (a stale try taken back)"),
    _r("requests.ok", "requests", "sent, and a final response with a success status", result="ok"),
    _r("requests.failed", "requests", "sent, then a failure status or an error", result="failed"),
    _r("requests.unsent", "requests", "ended before its last byte was written", result="unsent"),
    _r("requests.abandoned", "requests", "sent, unanswered at the drain deadline",
       result="abandoned"),
    _r("requests.lost", "requests", "sent, in flight in a worker that died", result="lost"),
    _r("requests.in_doubt", "requests", "of the lost: their worker died inside send()",
       result="in_doubt"),
    _r("requests.late", "requests_late", "open loop: sent over 1 ms after the intended time"),
    _r("requests.dropped", "requests_dropped", "open loop: never issued (max_backlog, a rate)"),
    _max("send_lag.max_us", "send_lag"),
    _r("responses.interim", "responses_interim", "1xx before a final response: skipped"),
    _r("connections.created", "connections_created", "handshakes done with SO_ERROR == 0"),
    _r("connections.attempted", "connections_attempted", "connect() calls"),
    _r("connections.reused", "connections_reused", "requests on a connection that had served"),
    *(_r(f"connections.evicted.{r}", "connections_evicted", reason=r) for r in EVICT_REASONS),
    _r("connections.health_checks", "health_checks"),
    _r("connections.shutdown", "connections_shutdown", "closed because the run ended"),
    _r("retries.stale_reuse", "stale_reuse", "re-sent once on a fresh connection"),
    _r("bytes.in", "received_bytes"),
    _r("bytes.out", "sent_bytes"),
    _sum("latency.sum_us", "request_duration_seconds"),
    _max("latency.max_us", "request"),
    _max("latency_uncorrected.max_us", "request_uncorrected"),
    *(_r(f"failed.{n}", "errors", error=n, sent="true") for n in ERROR_NAMES),
    *(_r(f"unsent.{n}", "errors", error=n, sent="false") for n in ERROR_NAMES),
    *(_r(f"connect_errors.{n}", "connect_errors", error=n) for n in ERROR_NAMES),
    *(_r(f"errors.phase.{p}", "errors_by_phase", phase=p) for p in PHASES),
    *(_r(f"injected.{k}", "injected_faults", kind=k) for k in KINDS),
    _max("connect.max_us", "connect"),
    _r("tls.handshakes.full", "tls_handshakes", kind="full"),
    _r("tls.handshakes.resumed", "tls_handshakes", kind="resumed"),
    _r("tls.sessions.offered", "tls_sessions_offered", "new connections offering a session"),
    _max("tls.full.max_us", "tls_full"),
    _max("tls.resumed.max_us", "tls_resumed"),
    _sum("connect.sum_us", "connect_duration_seconds"),
    _sum("tls.full.sum_us", "tls_handshake_duration_seconds", kind="full"),
    _sum("tls.resumed.sum_us", "tls_handshake_duration_seconds", kind="resumed"),
    _max("failure_time.max_us", "failure"),
    _sum("failure_time.sum_us", "failure_duration_seconds"),
)  # fmt: skip

BY_NAME: Final = {row.name: row for row in ROWS}


def by_family() -> dict[str, list[Row]]:
    """Each family's rows, in the table's order (the families in :data:`FAMILIES`')."""
    out: dict[str, list[Row]] = {family: [] for family in FAMILIES}
    for row in ROWS:
        out[row.family].append(row)
    return out

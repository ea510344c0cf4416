"""What a client shows of its hosts: ``client.stats()``, and the read model the
Prometheus collector renders (the service's :class:`poolsvc.report.views.TargetView`)."""

from __future__ import annotations

from typing import Any

from poolsvc.library.hostpool import HostPool
from poolsvc.report.views import TargetView
from workers.shared.errors import PHASES
from workers.shared.slotstats import EVICT_REASONS, Snapshot


def read(host: HostPool) -> tuple[Snapshot, dict[str, int], dict[str, Any]]:
    """One consistent read of ``host``: its counters, its pool gauges, its breaker."""
    with host.lock:
        active, idle, connecting, waiting = host.pool.gauges()
        host.meter.gauges(active, idle, connecting, waiting)
        snap = host.meter.snapshot()
        b = host.breaker
        breaker = {"state": b.state, "trips": b.total_trips, "reason": b.reason,
                   "enabled": b.settings.enabled}  # fmt: skip
        size = host.pool.settings.max_size
    pool = {"active": active, "idle": idle, "connecting": connecting, "waiting": waiting,
            "max": size, "min": host.pool.settings.min_size, "limit": size}  # fmt: skip
    return snap, pool, breaker


def host_stats(host: HostPool) -> dict[str, Any]:
    """``client.stats()``'s entry for one host (every count by the service's name)."""
    snap, pool, breaker = read(host)
    c = snap.counters
    return {
        **{k: pool[k] for k in ("active", "idle", "connecting", "waiting")},
        "max_per_host": pool["max"],
        "created": c["connections.created"],
        "attempted": c["connections.attempted"],
        "reused": c["connections.reused"],
        "evicted": {r: n for r in EVICT_REASONS if (n := c[f"connections.evicted.{r}"])},
        "closed": c["connections.shutdown"],
        "stale_reuse": c["retries.stale_reuse"],
        "requests": {k: c[f"requests.{k}"] for k in ("sent", "ok", "failed", "unsent")},
        "responses": {code: n for code, n in sorted(snap.statuses.items())},
        "errors": snap.errors(),
        "errors_by_phase": {p: n for p in PHASES if (n := c[f"errors.phase.{p}"])},
        "connect_errors": snap.connect_errors(),
        "injected": {k[9:]: v for k, v in c.items() if k.startswith("injected.") and v},
        "latency_us": snap.latency(),
        "connect_us": snap.timing("connect"),
        "bytes": {"in": c["bytes.in"], "out": c["bytes.out"]},
        "breaker": breaker,
    }


def target_view(host: HostPool) -> TargetView:
    """The host as a service target, for the Prometheus families."""
    snap, pool, breaker = read(host)
    c = snap.counters
    scheme, name, port = host.key
    figures = {"ok": c["requests.ok"], "failed": c["requests.failed"],
               "unsent": c["requests.unsent"]}  # fmt: skip
    return TargetView(f"{scheme}://{name}:{port}", breaker, pool, figures, None, snap.errors(),
                      snap)  # fmt: skip

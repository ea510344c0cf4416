"""A prometheus_client collector of a client, by the service's family names.

``registry.register(client.collector())`` exposes what ``poolsvc serve``'s /metrics
exposes for a run: the run-wide families summed over the client's hosts
(``poolsvc_requests_total{result}``, ``poolsvc_errors_total{error,sent}``,
``poolsvc_connections_evicted_total{reason}``, the latency histograms ...) and the
per-target families with one ``target`` per host (``poolsvc_pool_connections``,
``poolsvc_breaker_state`` ...). The families are built by :mod:`poolsvc.report.prometheus`
itself, from the same read model, so the names cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from poolsvc.library.hostpool import HostPool
from poolsvc.library.observe import target_view
from poolsvc.report.prometheus import Family, run_families, target_families
from workers.shared.slotstats import Snapshot


class Client(Protocol):
    """What the collector reads of a client: its hosts."""

    def hosts(self) -> list[HostPool]: ...


class ClientCollector:
    """Collects ``client`` at each scrape (a read under each host's lock, no I/O)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def families(self) -> list[Family]:
        hosts = self.client.hosts()
        views = [target_view(h) for h in hosts]
        copies = []
        for host in hosts:
            with host.lock:
                copies.append(host.meter.s.tolist())
        return [*run_families(Snapshot.of(copies)), *target_families(views)]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric

        for fam in self.families():
            metric = Metric(fam.name, fam.help, fam.kind)
            for suffix, labels, value in fam.samples:
                metric.add_sample(fam.name + suffix, dict(labels), float(value))
            yield metric

    def __repr__(self) -> str:
        return f"<ClientCollector {self.client!r}>"

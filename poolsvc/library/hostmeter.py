"""A host's counters: the service's stats slot layout, in private memory.

Each host of a :class:`poolsvc.Client` keeps its figures in one stats slot laid out
by :mod:`workers.shared.slotstats` (the layout a worker writes in shared memory), so the
library's counters have the service's names by construction: ``requests.ok``,
``failed.ECONNRESET``, ``errors.phase.read``, ``connections.evicted.validation``,
the latency histogram... and :class:`workers.shared.slotstats.Snapshot` decodes them, the
Prometheus families render them (:mod:`poolsvc.library.collector`). Every write of
a library counter is a method of :class:`HostMeter`; the host pool calls them
while it holds its lock, so no increment is lost between threads.
"""

from __future__ import annotations

from typing import Any

from workers.shared import slotstats as st
from workers.shared.histogram import bucket_of
from workers.shared.injection import KINDS
from workers.shared.slotstats import count_error


def new_slot() -> Any:
    """A zeroed stats slot of 64-bit words."""
    return memoryview(bytearray(st.SLOT_BYTES)).cast("Q")


class HostMeter:
    """The counter writes of one host (see the module docstring)."""

    __slots__ = ("s",)

    def __init__(self) -> None:
        self.s = new_slot()

    def attempted(self) -> None:
        self.s[st.CONN_ATTEMPTED] += 1

    def connected(self, connect_s: float, tls_s: float, tls: bool, offered: bool,
                  resumed: bool) -> None:  # fmt: skip
        s = self.s
        s[st.CONN_CREATED] += 1
        _time(s, st.CONNECT_BASE, st.CONNECT_SUM, st.CONNECT_MAX, connect_s)
        if tls:
            s[st.TLS_OFFERED] += offered
            if resumed:
                s[st.TLS_RESUMED] += 1
                _time(s, st.TLS_RESUMED_BASE, st.TLS_RESUMED_SUM, st.TLS_RESUMED_MAX, tls_s)
            else:
                s[st.TLS_FULL] += 1
                _time(s, st.TLS_FULL_BASE, st.TLS_FULL_SUM, st.TLS_FULL_MAX, tls_s)

    def connect_error(self, name: str) -> None:
        """A connect that carried no request (a warm-up) failed."""
        self.s[st.CONNECT_ERROR[name]] += 1

    def sent(self, n: int, reused: bool) -> None:
        s = self.s
        s[st.REQ_SENT] += 1
        s[st.BYTES_OUT] += n
        s[st.CONN_REUSED] += reused

    def stale(self, sent: bool) -> None:
        """A reused connection was found dead under an idempotent request: its try is
        taken back (``sent``: it had been counted), and the request re-sent once on a
        fresh connection."""
        s = self.s
        s[st.REQ_SENT] -= sent
        s[st.STALE_REUSE] += 1

    def received(self, n: int) -> None:
        self.s[st.BYTES_IN] += n

    def response(self, status: int, seconds: float, good: bool) -> None:
        s = self.s
        us = int(seconds * 1_000_000)
        s[st.STATUS_BASE + status] += 1
        s[st.LAT_SUM] += us
        if us > s[st.LAT_MAX]:
            s[st.LAT_MAX] = us
        s[st.HIST_BASE + bucket_of(us)] += 1
        if good:
            s[st.REQ_OK] += 1
        else:
            s[st.REQ_FAILED] += 1
            name = (
                "status_5xx" if status >= 500 else "status_4xx" if status >= 400 else "status_other"
            )
            count_error(s, "status", name, True)

    def failed(self, phase: str, name: str, sent: bool, seconds: float, fault: str = "") -> None:
        """A request that ended in an exception (``fault``: the injected fault's kind)."""
        s = self.s
        s[st.REQ_FAILED if sent else st.REQ_UNSENT] += 1
        count_error(s, "injected" if fault else phase, name, sent)
        if fault:
            s[st.INJECTED[fault]] += 1
        _time(s, st.FAILURE_BASE, st.FAILURE_SUM, st.FAILURE_MAX, seconds)

    def injected(self, fault: str) -> None:
        """A connection fault that hit (no request failed of it by itself)."""
        if fault in KINDS:
            self.s[st.INJECTED[fault]] += 1

    def evicted(self, reason: str) -> None:
        self.s[st.EVICT[reason]] += 1

    def shutdown(self) -> None:
        self.s[st.SHUTDOWN] += 1

    def gauges(self, active: int, idle: int, connecting: int, waiting: int) -> None:
        s = self.s
        g = st.GAUGE_INDEX
        s[g["connections.active"]] = active
        s[g["connections.idle"]] = idle
        s[g["connections.connecting"]] = connecting
        s[g["pool.waiting"]] = waiting

    def snapshot(self) -> st.Snapshot:
        return st.Snapshot.of([self.s])

    def __repr__(self) -> str:
        s = self.s
        return (
            f"<HostMeter sent={s[st.REQ_SENT]} ok={s[st.REQ_OK]} failed={s[st.REQ_FAILED]} "
            f"unsent={s[st.REQ_UNSENT]}>"
        )


def _time(s: Any, base: int, sum_at: int, max_at: int, seconds: float) -> None:
    us = max(0, int(seconds * 1_000_000))
    s[base + bucket_of(us)] += 1
    s[sum_at] += us
    if us > s[max_at]:
        s[max_at] = us

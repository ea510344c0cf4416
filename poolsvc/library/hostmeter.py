"""A host's counters: the service's stats slot layout, in private memory.

Each host of a :class:`poolsvc.Client` keeps its figures in one stats slot laid out
by :mod:`workers.shared.slotstats` (the layout a worker writes in shared memory), so the
library's counters have the service's names by construction: ``requests.ok``,
``failed.ECONNRESET``, ``errors.phase.read``, ``connections.evicted.validation``,
the latency histogram... and :class:`workers.shared.slotstats.Snapshot` decodes them, the
Prometheus families render them (:mod:`poolsvc.library.collector`). Every write of
a library counter goes through the worker's own :class:`workers.shared.meter.Meter`
(by :class:`HostMeter`, which the host pool calls while it holds its lock, so no
increment is lost between threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.shared import slotstats as st
from workers.shared.histogram import bucket_of
from workers.shared.injection import KINDS
from workers.shared.meter import Meter


def new_slot() -> Any:
    """A zeroed stats slot of 64-bit words."""
    return memoryview(bytearray(st.SLOT_BYTES)).cast("Q")


@dataclass(slots=True)
class _Host:
    """A host as the meter places it: the slot is its own, no target block besides."""

    index: int = 0
    own: bool = False
    block: int = 0
    hist: int = 0
    errors: int = 0
    ok_word: int = 0


_HOST = _Host()


class HostMeter:
    """The counter writes of one host (see the module docstring): the worker's
    :class:`~workers.shared.meter.Meter` on a private slot, called with what the
    library knows (seconds, a whole request at a time)."""

    __slots__ = ("meter", "s")

    def __init__(self) -> None:
        self.s = new_slot()
        self.meter = Meter(self.s, None, ())

    def attempted(self) -> None:
        self.meter.attempted()

    def connected(self, connect_s: float, tls_s: float, tls: bool, offered: bool,
                  resumed: bool) -> None:  # fmt: skip
        m = self.meter
        m.created()
        m.connected_in(_us(connect_s))
        if tls:
            m.tls_offered(int(offered))
            m.handshake(_us(tls_s), resumed)

    def connect_error(self, name: str) -> None:
        """A connect that carried no request (a warm-up) failed."""
        self.meter.connect_error("connect", name)

    def sent(self, n: int, reused: bool) -> None:
        """A whole request written (``requests.sending`` up while it is counted)."""
        self.meter.send_one()
        self.meter.end_batch(int(reused), n)

    def stale(self, sent: bool) -> None:
        """A reused connection was found dead under an idempotent request: its try is
        taken back (``sent``: it had been counted), and the request re-sent once on a
        fresh connection."""
        self.meter.resent(sent)

    def received(self, n: int) -> None:
        self.meter.bytes_in(n)

    def response(self, status: int, seconds: float, good: bool) -> None:
        us = _us(seconds)
        self.meter.answered(_HOST, status, good, us, -1, bucket_of(us), healthy=False)

    def failed(self, phase: str, name: str, sent: bool, seconds: float, fault: str = "") -> None:
        """A request that ended in an exception (``fault``: the injected fault's kind)."""
        self.meter.failed(_HOST, "injected" if fault else phase, name, sent, _us(seconds))
        if fault:
            self.meter.injected(fault)

    def injected(self, fault: str) -> None:
        """A connection fault that hit (no request failed of it by itself)."""
        if fault in KINDS:
            self.meter.injected(fault)

    def evicted(self, reason: str) -> None:
        self.meter.evicted(reason)

    def shutdown(self) -> None:
        self.meter.shutdown()

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


def _us(seconds: float) -> int:
    return max(0, int(seconds * 1_000_000))

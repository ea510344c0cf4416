"""The meter: every counter write of a worker's request path, through one object.

A worker's parts (the dialer, the request path, the responses, the failures, the
backlog, the drain) say *what happened* (``meter.evicted("idle_timeout")``,
``meter.failed(target, "read", "ECONNRESET", True, us)``); the meter knows where each
fact is stored: the stats slot of :mod:`workers.shared.slotstats`, this worker's words of
each target's block in :mod:`workers.shared.shm`, and, with several targets, the
target's own block. The C lane writes the same words through the offsets
:meth:`Meter.lane_words` gives it (the layout is defined once, there). The library's
client counts a host into a slot of the same layout through a Meter of its own.

One writer per word: a Meter writes only its worker's slot and words; the supervisor
and ``poolctl`` read them while it runs. Speed: the methods on the per-request path
(:meth:`answered`, the send batch) are a few stores each; the send batch keeps the
``requests.sending`` flag up for the whole batch (:meth:`sending`), so a worker
killed inside it leaves at most one request counted and in doubt, never one uncounted
(:mod:`poolsvc.metrics.ledger`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

from workers.shared import shm
from workers.shared import slotstats as st
from workers.shared.errors import ERROR_INDEX
from workers.shared.histogram import bucket_of

_REQ_SENT: Final = st.REQ_SENT
_SENDING: Final = st.SENDING_FLAG


class Placed(Protocol):
    """A target as the meter sees it: where its own figures are (``own``: several
    targets, so it has a block of its own besides the run's)."""

    index: int
    own: bool
    block: int
    hist: int
    errors: int
    ok_word: int


def status_error(status: int) -> str:
    """The error name of a response whose status is not a success."""
    return "status_5xx" if status >= 500 else "status_4xx" if status >= 400 else "status_other"


class Meter:
    """Writes one worker's counters (see the module docstring). ``slot``: its stats slot;
    ``words``: the whole region; ``target_words``: each target's block of this worker."""

    __slots__ = ("s", "tw", "w")

    def __init__(self, slot: Any, words: Any, target_words: Sequence[int]) -> None:
        self.s = slot
        self.w = words
        self.tw = target_words

    # Connections --------------------------------------------------------------------
    def attempted(self) -> None:
        self.s[st.CONN_ATTEMPTED] += 1

    def created(self) -> None:
        self.s[st.CONN_CREATED] += 1

    def connected_in(self, us: int) -> None:
        """A TCP connect took ``us``."""
        s = self.s
        s[st.CONNECT_BASE + bucket_of(us)] += 1
        s[st.CONNECT_SUM] += us
        if us > s[st.CONNECT_MAX]:
            s[st.CONNECT_MAX] = us

    def tls_offered(self, offered: int) -> None:
        """A TLS session was offered for resumption (1) or not (0)."""
        self.s[st.TLS_OFFERED] += offered

    def handshake(self, us: int, resumed: bool) -> None:
        """A TLS handshake took ``us``, resumed or full."""
        base, count, top, total = (
            (st.TLS_RESUMED_BASE, st.TLS_RESUMED, st.TLS_RESUMED_MAX, st.TLS_RESUMED_SUM)
            if resumed
            else (st.TLS_FULL_BASE, st.TLS_FULL, st.TLS_FULL_MAX, st.TLS_FULL_SUM)
        )
        s = self.s
        s[count] += 1
        s[total] += us
        s[base + bucket_of(us)] += 1
        if us > s[top]:
            s[top] = us

    def connect_error(self, phase: str, name: str) -> None:
        """A connection opened for the pool (no request on it) failed."""
        self.s[st.CONNECT_ERROR[name]] += 1
        self.s[st.PHASE[phase]] += 1

    def evicted(self, reason: str) -> None:
        self.s[st.EVICT[reason]] += 1

    def shutdown(self) -> None:
        """A connection still open when the worker ended closed (``connections.shutdown``)."""
        self.s[st.SHUTDOWN] += 1

    def injected(self, kind: str) -> None:
        self.s[st.INJECTED[kind]] += 1

    def interim(self) -> None:
        """A 1xx response skipped before the final one (``responses.interim``)."""
        self.s[st.INTERIM] += 1

    def health_check(self) -> None:
        self.s[st.HEALTH_CHECKS] += 1

    def bytes_in(self, n: int) -> None:
        self.s[st.BYTES_IN] += n

    def bytes_out(self, n: int) -> None:
        self.s[st.BYTES_OUT] += n

    # The send batch -----------------------------------------------------------------
    def sending(self) -> int:
        """Raise ``requests.sending`` (a batch begins, or goes on after a failure path
        inside it); the sent count, which :meth:`sent` then stores (a failure path may
        have sent a request itself: read again each time)."""
        self.s[_SENDING] = 1
        return int(self.s[_REQ_SENT])

    def sent(self, count: int) -> None:
        """``requests.sent`` is ``count``: stored before the ``send`` of the last byte."""
        self.s[_REQ_SENT] = count

    def late(self, lag: float) -> None:
        """An open-loop request went out ``lag`` seconds after its intended time."""
        s = self.s
        s[st.REQ_LATE] += 1
        if lag * 1e6 > s[st.LAG_MAX]:
            s[st.LAG_MAX] = int(lag * 1e6)

    def end_batch(self, reused: int, out: int) -> None:
        s = self.s
        s[_SENDING] = 0
        s[st.CONN_REUSED] += reused
        s[st.BYTES_OUT] += out

    def send_one(self) -> None:
        """The rest of a partly written request is about to go: counted sent again."""
        self.s[_SENDING] = 1
        self.s[_REQ_SENT] += 1

    def take_back(self, sending: bool = False) -> None:
        """A request counted sent was not (its ``send`` failed or wrote part of it);
        ``sending``: the flag stays up (inside a batch)."""
        self.s[_REQ_SENT] -= 1
        if not sending:
            self.s[_SENDING] = 0

    def sent_done(self) -> None:
        self.s[_SENDING] = 0

    # Outcomes -----------------------------------------------------------------------
    def answered(
        self, target: Placed, status: int, good: int, us: int, raw: int, bucket: int,
        healthy: bool = True,
    ) -> None:  # fmt: skip
        """A whole response: its status, its outcome (``good`` nonzero: a success), its
        latency ``us`` (in ``bucket``), from the actual send too (``raw``, open loop; -1:
        closed loop); ``healthy``: the target answered, for its breaker (one call per
        response: speed)."""
        s = self.s
        if healthy:
            self.w[target.ok_word] += 1
        s[st.STATUS_BASE + status] += 1
        s[st.LAT_SUM] += us
        if us > s[st.LAT_MAX]:
            s[st.LAT_MAX] = us
        s[st.HIST_BASE + bucket] += 1
        if raw >= 0:
            s[st.HIST2_BASE + bucket_of(raw)] += 1
            if raw > s[st.LAT2_MAX]:
                s[st.LAT2_MAX] = raw
        if good:
            s[st.REQ_OK] += 1
        else:
            s[st.REQ_FAILED] += 1
            name = status_error(status)
            s[st.FAILED[name]] += 1
            s[st.PHASE["status"]] += 1
        if target.own:  # several targets: this target's own figures too
            w = self.w
            w[target.block + (shm.T_RESP_OK if good else shm.T_RESP_FAILED)] += 1
            w[target.hist + bucket] += 1
            if not good:
                w[target.errors + ERROR_INDEX[name]] += 1

    def failed(self, target: Placed, phase: str, name: str, sent: bool, us: int) -> None:
        """A request failed by ``name`` in ``phase``, ``us`` after it was due; ``sent``:
        its last byte had been written (``failed``), else ``unsent``."""
        s = self.s
        s[st.REQ_FAILED if sent else st.REQ_UNSENT] += 1
        s[(st.FAILED if sent else st.UNSENT)[name]] += 1
        s[st.PHASE[phase]] += 1
        s[st.FAILURE_BASE + bucket_of(us)] += 1
        s[st.FAILURE_SUM] += us
        if us > s[st.FAILURE_MAX]:
            s[st.FAILURE_MAX] = us
        if target.own:
            self.w[target.block + (shm.T_RESP_FAILED if sent else shm.T_UNSENT)] += 1
            self.w[target.errors + ERROR_INDEX[name]] += 1

    def timed_out(
        self, target: Placed, n: int, buckets: dict[int, int], total_us: int, top_us: int
    ) -> None:
        """``n`` requests of the open loop's backlog waited past the pool's wait timeout:
        each fails as ``pool_timeout`` (as :meth:`failed` counts one), in one step: their
        waits by failure-histogram bucket, summed, the longest."""
        s = self.s
        s[st.REQ_UNSENT] += n
        s[st.UNSENT["pool_timeout"]] += n
        s[st.PHASE["pool"]] += n
        for bucket, count in buckets.items():
            s[st.FAILURE_BASE + bucket] += count
        s[st.FAILURE_SUM] += total_us
        if top_us > s[st.FAILURE_MAX]:
            s[st.FAILURE_MAX] = top_us
        self.local_failure(target.index, n)
        if target.own:
            self.w[target.block + shm.T_UNSENT] += n
            self.w[target.errors + ERROR_INDEX["pool_timeout"]] += n

    def cancelled(self, n: int = 1) -> None:
        """Requests never sent end because the run stops (``unsent.cancelled``)."""
        s = self.s
        s[st.REQ_UNSENT] += n
        s[st.UNSENT["cancelled"]] += n
        s[st.PHASE["pool"]] += n

    def abandoned(self) -> None:
        """A request sent and unanswered when the drain's time was up."""
        self.s[st.REQ_ABANDONED] += 1

    def dropped(self, n: int) -> None:
        """Due requests the open loop's backlog could not hold (``requests.dropped``)."""
        self.s[st.REQ_DROPPED] += n

    def resent(self, take_back: bool) -> None:
        """A stale keep-alive request is re-sent on a fresh connection; ``take_back``: the
        socket was dead, the target never took the first try."""
        if take_back:
            self.s[_REQ_SENT] -= 1
        self.s[st.STALE_REUSE] += 1

    # The target's breaker words (this worker's) ---------------------------------------
    def local_failure(self, index: int, n: int = 1) -> None:
        """A failure that is ours, not the target's (pool, breaker): never its streak."""
        self.w[self.tw[index] + shm.T_LOCAL] += n

    def refused(self, index: int) -> None:
        self.w[self.tw[index] + shm.T_REFUSED] += 1

    def target_failed(self, index: int, streak: int) -> None:
        """The target failed a request; ``streak``: its tagged failure streak now."""
        block = self.tw[index]
        self.w[block + shm.T_FAILED] += 1
        self.w[block + shm.T_CONSEC] = streak

    def streak_ended(self, index: int) -> None:
        self.w[self.tw[index] + shm.T_CONSEC] = 0

    # The C lane ---------------------------------------------------------------------
    @staticmethod
    def lane_words() -> dict[str, int]:
        """The slot offsets the C lane writes (its counters are these, nowhere else)."""
        return {
            "status_base": st.STATUS_BASE,
            "lat_sum": st.LAT_SUM,
            "lat_max": st.LAT_MAX,
            "hist_base": st.HIST_BASE,
            "hist2_base": st.HIST2_BASE,
            "lat2_max": st.LAT2_MAX,
            "late": st.REQ_LATE,
            "lag_max": st.LAG_MAX,
            "req_ok": st.REQ_OK,
            "req_sent": st.REQ_SENT,
            "sending": st.SENDING_FLAG,
            "bytes_in": st.BYTES_IN,
            "bytes_out": st.BYTES_OUT,
            "reused": st.CONN_REUSED,
        }

    def __repr__(self) -> str:
        return f"<Meter sent={self.s[_REQ_SENT]} ok={self.s[st.REQ_OK]} targets={len(self.tw)}>"

"""Every request accounted for: the identity the counters keep, the count of what a
dead worker had in flight, and the run's own clock.

Each request the load issues ends in exactly one outcome, and every figure
poolsvc prints is built from these (``workers.shared.slotstats.COUNTERS``)::

    sent = ok + failed + lost + abandoned
    total = ok + failed + unsent + abandoned + lost

- ``sent``: the request's last byte was written, so the target can count it.
- ``ok`` / ``failed``: a sent request got a success status, or a failure status or
  an error after it was sent.
- ``unsent``: it ended before its last byte was written (breaker, pool, connect,
  a partial write, cancelled at the drain): the target never saw it whole.
- ``abandoned``: sent, still unanswered at the drain deadline (counted by the worker).
- ``lost``: sent, in flight in a worker that died (SIGKILL, crash). The worker
  cannot count these; the supervisor derives them from the dead worker's slot
  when it folds it: ``sent - ok - failed - abandoned``.
- ``in_doubt``: the worker died while sending. A request is counted sent just
  before the ``send`` that writes its last byte (and taken back if that fails),
  with ``requests.sending`` set meanwhile. A SIGKILL that lands inside the system
  call lets it finish, one that lands in the few instructions before it does not,
  and no process can tell which happened: the last request counted is kept as
  sent (and lost), the likely case, and marked in doubt. At most one per death:
  the target's own count is within ``[sent - in_doubt, sent]``.

A dead worker's requests that were issued but never sent (waiting for a
connection, say) are not outcomes: they never left, and a replacement worker
issues them again within the same request bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.shared import shm
from workers.shared import slotstats as stats

_SENT, _OK, _FAILED, _ABANDONED = (
    stats.INDEX[f"requests.{k}"] for k in ("sent", "ok", "failed", "abandoned")
)
_LOST, _IN_DOUBT = stats.INDEX["requests.lost"], stats.INDEX["requests.in_doubt"]


@dataclass(frozen=True, slots=True)
class Dead:
    """What a dead worker's slot held when it was folded."""

    snapshot: stats.Snapshot  # its measured counts, lost and in_doubt included
    sent: int  # every request it sent, its warm-up's included (the worker's own rate)
    lost: int
    in_doubt: int
    ready: bool  # it had started its load (a death after that is not a boot failure)

    @property
    def outcomes(self) -> int:
        """Requests of that incarnation that ended one way or another."""
        return int(self.snapshot.counters["requests.total"])


def fold_dead(region: shm.Region, worker: int) -> Dead:
    """Fold the slot of ``worker``, which has died, into RETIRED, counting what it
    had in flight (``lost``, ``in_doubt``). Call once, after the worker was reaped:
    the supervisor is then the slot's only writer."""
    slot = region.slot(worker)
    in_doubt = 1 if slot[stats.SENDING_FLAG] else 0
    lost = max(0, slot[_SENT] - slot[_OK] - slot[_FAILED] - slot[_ABANDONED])
    g = stats.GAUGE_INDEX
    ready = bool(slot[g["time.started_us"]] or slot[g["time.warmup_us"]])
    slot[_LOST] += lost  # the slot's writer is gone: its words are ours now
    slot[_IN_DOUBT] += in_doubt
    snap = stats.Snapshot.of([region.measured(worker)])  # a warm-up's counts stay apart
    sent = int(slot[_SENT])
    region.fold(worker)
    return Dead(snap, sent, lost, in_doubt, ready)


def unbalanced(counters: dict[str, int]) -> str:
    """'' when ``sent = ok + failed + lost + abandoned`` holds, else what differs."""
    c = counters
    parts = [c[f"requests.{k}"] for k in ("ok", "failed", "lost", "abandoned")]
    if c["requests.sent"] == sum(parts):
        return ""
    return f"sent={c['requests.sent']} but ok+failed+lost+abandoned={sum(parts)}"


class RunClock:
    """The run's times as the supervisor measures them (monotonic seconds).

    ``started``: the first worker began its load (after its warm-up). ``stopped``:
    the last worker stopped issuing requests (the duration ran out, a drain began,
    or its request bound was reached). ``finished``: every worker had exited. The
    load period is ``stopped - started``, the drain ``finished - stopped``; workers
    replaced on the way change none of them.
    """

    def __init__(self) -> None:
        self.started = self.stopped = self.finished = 0.0

    def observe(self, gauges: dict[str, int]) -> None:
        """Take in one snapshot's (or one slot's) time gauges, before they are lost
        (``stopped`` is only read once the run has finished: every worker stopped)."""
        start = gauges["time.started_us"] / 1e6
        if start and (not self.started or start < self.started):
            self.started = start
        self.stopped = max(self.stopped, gauges["time.issue_end_us"] / 1e6)

    def finish(self, now: float) -> None:
        self.finished = now
        if not self.stopped or self.stopped > now:
            self.stopped = now

    def load_s(self, now: float) -> float:
        """Seconds of load so far (the whole load period once the run has finished)."""
        if not self.started:
            return 0.0
        end = self.stopped if self.finished else now
        return max(0.0, end - self.started)

    def drain_s(self) -> float:
        return max(0.0, self.finished - self.stopped) if self.finished and self.stopped else 0.0

    def elapsed_s(self, now: float) -> float:
        """Wall time of the run: from the load's start to the end (or to ``now``)."""
        if not self.started:
            return 0.0
        return max(0.0, (self.finished or now) - self.started)

    def __repr__(self) -> str:
        return f"<RunClock started={self.started:.3f} stopped={self.stopped:.3f}>"

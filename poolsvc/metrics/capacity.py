"""Who was the limit of an open-loop run: the generator, or the target.

An open loop that falls behind its schedule reports latencies that include its own
queueing (they are measured from the intended times, as they must be). Whether
that queueing is the target's doing or the generator's own is the first thing a
reader must know, so the report says it in one line, from two facts:

- *behind*: it sent less than :data:`KEPT` of the requests that fell due (the rest
  were dropped, timed out waiting or cancelled), or more than :data:`LATE_SHARE` of
  them went out late (over 1 ms after their time);
- *busy*: the share of the load period the workers' loops spent working rather
  than waiting for events (``load.busy_us``).

Behind and busy (:data:`BUSY` or more): the generator was the limit, a faster
generator (more workers, cores) would have sent more. Behind but not busy: the
loops were waiting for responses, so the target (or the pool's size) was the limit.
Pure: numbers in, a :class:`Verdict` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KEPT: Final = 0.99  # sent at least this share of the due requests: kept up
LATE_SHARE: Final = 0.01  # ... with at most this share of them late
BUSY: Final = 0.85  # a loop working this share of the load had no time to spare


@dataclass(frozen=True, slots=True)
class Verdict:
    """An open-loop run's capacity figures; ``limit`` is "generator", "target" or ""
    (it kept up)."""

    due: int  # requests that fell due in the load period (sent or not)
    sent: int
    late: int
    busy: float  # share of the load the workers' loops were working, 0..1
    limit: str

    @property
    def sent_share(self) -> float:
        return self.sent / self.due if self.due else 1.0

    @property
    def late_share(self) -> float:
        return self.late / self.sent if self.sent else 0.0

    def line(self) -> str:
        """The report's one line on it ('' when the run kept up)."""
        facts = (
            f"sent {self.sent_share:.0%} of the requests due, {self.late_share:.0%} of them "
            f"late; the workers were busy {self.busy:.0%} of the load"
        )
        if self.limit == "generator":
            return (
                f"[pool] the generator was the limit, not the target: {facts}; the latency "
                "above includes its own queueing (more workers or cores would send more)"
            )
        if self.limit == "target":
            return (
                f"[pool] the target was the limit (or the pool's size): {facts}, waiting for "
                "responses the rest of the time"
            )
        return ""


def judge(due: int, sent: int, late: int, busy_s: float, workers: int, load_s: float) -> Verdict:
    """The verdict on an open-loop run: ``busy_s`` the workers' working seconds in all,
    over ``workers`` loops for ``load_s`` seconds each."""
    span = workers * load_s
    busy = min(1.0, busy_s / span) if span > 0 else 0.0
    behind = (due > 0 and sent < KEPT * due) or (sent > 0 and late > LATE_SHARE * sent)
    limit = "" if not behind else "generator" if busy >= BUSY else "target"
    return Verdict(due, sent, late, busy, limit)

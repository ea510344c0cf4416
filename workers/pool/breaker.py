"""The circuit breaker's decisions: pure, one instance per target, driven by the supervisor.

Theory of operation.  Workers never decide breaker state; they publish what
they saw (per-target ok/failure counters, their current run of consecutive
failures, trial outcomes) in their own shared-memory slots.  On every tick the
supervisor sums those, feeds the deltas to this class, and writes the resulting
state into the one breaker row it alone writes.  A single writer needs no lock,
and a worker killed at any instant cannot leave the breaker half-changed.

States and transitions (every cell of :data:`TRANSITIONS`; anything else raises):

    CLOSED    --trip-------> OPEN        failure rate over the window, or consecutive failures
    OPEN      --cooled-----> HALF_OPEN   the open duration has passed
    HALF_OPEN --trial_fail-> OPEN        a trial failed: open again, for longer
    HALF_OPEN --trials_ok--> CLOSED      ``half_open_trials`` trials succeeded
    any       --force_open-> OPEN        operator: stays open until reset
    any       --force_closed> CLOSED     operator: stays closed (never trips) until reset
    any       --reset------> CLOSED      operator: back to automatic

The open duration grows exponentially with every trip in a row
(``open_base * 2**(trips-1)``, capped at ``open_max``) with +-20 % jitter so that
breakers of different targets do not probe in lockstep.  In HALF_OPEN, ``trials``
permits exist across all workers; a permit whose trial has not reported within
``trial_lease`` is re-issued (its worker may have died or its request hung).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Final

CLOSED: Final = "CLOSED"
OPEN: Final = "OPEN"
HALF_OPEN: Final = "HALF_OPEN"
STATES: Final = (CLOSED, OPEN, HALF_OPEN)
STATE_CODE: Final = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}  # the value workers read in shared memory

TRANSITIONS: Final[dict[str, dict[str, str]]] = {
    CLOSED: {"trip": OPEN, "force_open": OPEN, "force_closed": CLOSED, "reset": CLOSED},
    OPEN: {"cooled": HALF_OPEN, "force_open": OPEN, "force_closed": CLOSED, "reset": CLOSED},
    HALF_OPEN: {
        "trial_fail": OPEN,
        "trials_ok": CLOSED,
        "force_open": OPEN,
        "force_closed": CLOSED,
        "reset": CLOSED,
    },
}


class InvalidTransition(RuntimeError):
    """An event the table does not allow in the current state."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Times in seconds."""

    window: float = 10.0  # sliding window for the failure rate
    min_calls: int = 20  # no rate verdict below this many calls in the window
    failure_rate: float = 0.5  # trip at or above this fraction of failures
    consecutive: int = 5  # trip after this many failures in a row (0 = off)
    open_base: float = 5.0
    open_max: float = 60.0
    trials: int = 1  # HALF_OPEN permits across all workers
    trial_lease: float = 10.0
    jitter: float = 0.2
    enabled: bool = True  # False (--no-breaker): it never trips and cannot be forced

    def __post_init__(self) -> None:
        if self.window <= 0 or not 0 < self.failure_rate <= 1:
            raise ValueError("breaker window must be > 0 and failure_rate in (0, 1]")
        if self.open_base <= 0 or self.open_max < self.open_base:
            raise ValueError("breaker needs 0 < open_base <= open_max")
        if self.trials < 1 or self.trial_lease <= 0:
            raise ValueError("breaker needs trials >= 1 and trial_lease > 0")


class Breaker:
    """One target's breaker.  Feed it with :meth:`observe` and :meth:`tick`; read ``state``.

    ``generation`` increases on every transition: workers tag trial permits and
    results with it, so a late result from an earlier HALF_OPEN is never counted.
    """

    def __init__(self, settings: BreakerSettings, rng: random.Random, now: float) -> None:
        self.settings = settings
        self.rng = rng
        self.state = CLOSED
        self.generation = 1
        self.trips = 0  # trips in a row (reset when it closes)
        self.total_trips = 0
        self.open_until = 0.0
        self.forced = False
        self.changed_at = now
        self.reason = ""
        self.opened_because = ""  # the reason of the last transition to OPEN
        self.first_opened_because = ""  # ... and of the first one
        self._buckets: deque[tuple[int, int, int]] = deque()  # (second, ok, fail)
        self.permits = 0  # HALF_OPEN: permits issued in this generation
        self.lease_until = 0.0

    # transitions ------------------------------------------------------------------
    def _fire(self, event: str, now: float, reason: str) -> None:
        try:
            self.state = TRANSITIONS[self.state][event]
        except KeyError:
            raise InvalidTransition(f"{self!r}: no transition on {event!r}") from None
        self.generation += 1
        self.changed_at = now
        self.reason = reason
        if self.state == OPEN:
            self.opened_because = reason
            self.first_opened_because = self.first_opened_because or reason
            self.total_trips += 1
            self.trips += 1
            self.open_until = now + self.open_duration()
        elif self.state == HALF_OPEN:
            self.permits = self.settings.trials
            self.lease_until = now + self.settings.trial_lease
        else:
            self.trips = 0
            self.open_until = 0.0
            self._buckets.clear()

    def open_duration(self) -> float:
        """Length of the current open period (call after ``trips`` was counted)."""
        s = self.settings
        base = min(s.open_max, s.open_base * float(1 << min(max(0, self.trips - 1), 30)))
        return min(s.open_max, base * self.rng.uniform(1 - s.jitter, 1 + s.jitter))

    # inputs -------------------------------------------------------------------------
    def observe(self, now: float, ok: int, failed: int, consecutive: int) -> None:
        """Outcomes since the last call (summed over workers) and the largest current
        run of consecutive failures; may trip a CLOSED breaker."""
        if self.state != CLOSED or self.forced or not self.settings.enabled:
            return
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            _, o, f = self._buckets.pop()
            self._buckets.append((second, o + ok, f + failed))
        elif ok or failed:
            self._buckets.append((second, ok, failed))
        horizon = now - self.settings.window
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            self._buckets.popleft()
        s = self.settings
        if s.consecutive and consecutive >= s.consecutive:
            self._fire("trip", now, f"{consecutive} consecutive failures")
            return
        calls, fails = self.window_counts()
        if calls >= s.min_calls and fails >= s.failure_rate * calls:
            self._fire("trip", now, f"failure rate {fails}/{calls} over {s.window:g}s")

    def window_counts(self) -> tuple[int, int]:
        """(calls, failures) in the sliding window."""
        calls = sum(o + f for _, o, f in self._buckets)
        return calls, sum(f for _, _, f in self._buckets)

    def tick(self, now: float, trial_ok: int, trial_fail: int) -> int:
        """Advance time; ``trial_ok``/``trial_fail`` are this generation's trial
        results so far.  Returns how many permits must be (re-)issued now (0 if none)."""
        if self.state == OPEN:
            if not self.forced and now >= self.open_until:
                self._fire("cooled", now, "open period over")
                return self.permits
            return 0
        if self.state != HALF_OPEN:
            return 0
        if trial_fail:
            self._fire("trial_fail", now, "a trial request failed")
            return 0
        if trial_ok >= self.settings.trials:
            self._fire("trials_ok", now, f"{trial_ok} trial requests succeeded")
            return 0
        if now >= self.lease_until:
            # Permits whose trial never reported: issue them again (to live workers).
            self.lease_until = now + self.settings.trial_lease
            return self.settings.trials - trial_ok
        return 0

    def force_open(self, now: float) -> None:
        self.forced = True
        self._fire("force_open", now, "forced open")
        self.open_until = float("inf")

    def force_closed(self, now: float) -> None:
        self.forced = True
        self._fire("force_closed", now, "forced closed")

    def reset(self, now: float) -> None:
        self.forced = False
        self._fire("reset", now, "reset")

    def __repr__(self) -> str:
        calls, fails = self.window_counts()
        extra = f" until t+{self.open_until - self.changed_at:.1f}s" if self.state == OPEN else ""
        return f"<Breaker {self.state}{extra} gen={self.generation} window={fails}/{calls}>"

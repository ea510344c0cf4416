"""Reconnect backoff: exponential growth, full jitter, a cap, reset on success.

``delay = uniform(0, min(cap, base * 2**attempt))`` ("full jitter", the AWS
architecture blog's recommendation): spreading retries over the whole interval
keeps a worker's reconnects from arriving at a recovering target in lockstep.
Failures of attempts made inside the current window do not escalate it (one
outage, one step).  The attempt counter resets on the first *good response*, not
on a TCP connect
(gRPC resets on SETTINGS for the same reason: a target that accepts and then
fails is still failing).

**Adaptive** (``--backoff-adaptive``): the base grows with the target's recent
connect failure rate, ``base * (1 + GAIN * rate)``, the rate taken over the last
``WINDOW`` seconds of this worker's connects to the target (successes count too).
A target refusing every connect is retried ten times more patiently from the
first failure; one refusing a few barely changes; the jitter, the doubling and
the cap are as before, and a good response still resets the doubling (the rate
itself decays as the window moves on). :func:`delays` tabulates the rule.
"""

from __future__ import annotations

import random
from typing import Final

_MAX_EXPONENT: Final = 30  # 2**30 * base overflows any sane cap; stop growing there
GAIN: Final = 9.0  # at a 100 % failure rate the base is ten times the configured one
WINDOW: Final = 10  # seconds of connect outcomes the failure rate is taken over


class Backoff:
    """Per-target reconnect pacing; pure: no clock of its own, the caller passes ``now``."""

    __slots__ = ("_fails", "_second", "_tries", "adaptive", "attempt", "base", "cap",
                 "not_before", "rng")  # fmt: skip

    def __init__(self, base: float, cap: float, rng: random.Random, adaptive: bool = False) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng
        self.adaptive = adaptive
        self.attempt = 0
        self.not_before = 0.0
        # connect outcomes in one-second buckets, a ring of WINDOW (second, tries, fails)
        self._second = [-1] * WINDOW
        self._tries = [0] * WINDOW
        self._fails = [0] * WINDOW

    def _record(self, now: float, failed: bool) -> None:
        second = int(now)
        at = second % WINDOW
        if self._second[at] != second:
            self._second[at], self._tries[at], self._fails[at] = second, 0, 0
        self._tries[at] += 1
        self._fails[at] += failed

    def failure_rate(self, now: float) -> float:
        """Failed connects over all connects in the last WINDOW seconds (0 with none)."""
        oldest = int(now) - WINDOW
        live = [i for i, sec in enumerate(self._second) if sec > oldest]
        tries = sum(self._tries[i] for i in live)
        return sum(self._fails[i] for i in live) / tries if tries else 0.0

    def ceiling(self, now: float = 0.0) -> float:
        """Upper bound of the next delay (before jitter)."""
        base = self.base * (1 + GAIN * self.failure_rate(now)) if self.adaptive else self.base
        return min(self.cap, base * (1 << min(self.attempt, _MAX_EXPONENT)))

    def connected(self, now: float) -> None:
        """A connect succeeded (adaptive: it counts toward the failure rate)."""
        if self.adaptive:
            self._record(now, False)

    def failure(self, now: float) -> float:
        """Record a connect failure at ``now``; return the time before which not to connect.

        Only a failure at or after the current window's end escalates: ten connects that
        were in flight together and fail together are one failed round, not ten (else a
        brief outage would push a whole pool to the cap at once).
        """
        if self.adaptive:
            self._record(now, True)
        if now < self.not_before:
            return self.not_before
        delay = self.rng.uniform(0.0, self.ceiling(now))
        self.attempt += 1
        self.not_before = now + delay
        return self.not_before

    def success(self) -> None:
        """A good response arrived: connect freely again."""
        self.attempt = 0
        self.not_before = 0.0

    def __repr__(self) -> str:
        return f"<Backoff attempt={self.attempt} ceiling={self.ceiling():.3f}s>"


def delays(rates: tuple[float, ...] = (0.0, 0.5, 1.0), attempts: int = 4) -> list[list[float]]:
    """The adaptive rule as a table: for each failure rate, the ceiling of the delay
    (seconds, before jitter) after 0 .. ``attempts``-1 failures in a row, with the
    defaults (base 50 ms, cap 5 s). docs/architecture.md shows it (a test compares)."""
    rows = []
    for rate in rates:
        b = Backoff(0.05, 5.0, random.Random(0), adaptive=True)
        for second in range(WINDOW):  # a window of connects at this failure rate
            for i in range(10):
                b._record(float(second), i < round(rate * 10))
        row = []
        for attempt in range(attempts):
            b.attempt = attempt
            row.append(round(b.ceiling(float(WINDOW - 1)), 3))
        rows.append(row)
    return rows

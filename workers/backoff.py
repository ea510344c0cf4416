"""Reconnect backoff: exponential growth, full jitter, a cap, reset on success.

``delay = uniform(0, min(cap, base * 2**attempt))`` ("full jitter", the AWS
architecture blog's recommendation): spreading retries over the whole interval
keeps a worker's reconnects from arriving at a recovering target in lockstep.
Failures of attempts made inside the current window do not escalate it (one
outage, one step).  The attempt counter resets on the first *good response*, not
on a TCP connect
(gRPC resets on SETTINGS for the same reason: a target that accepts and then
fails is still failing).
"""

from __future__ import annotations

import random
from typing import Final

_MAX_EXPONENT: Final = 30  # 2**30 * base overflows any sane cap; stop growing there


class Backoff:
    """Per-target reconnect pacing; pure: no clock of its own, the caller passes ``now``."""

    __slots__ = ("attempt", "base", "cap", "not_before", "rng")

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0
        self.not_before = 0.0

    def ceiling(self) -> float:
        """Upper bound of the next delay (before jitter)."""
        return min(self.cap, self.base * (1 << min(self.attempt, _MAX_EXPONENT)))

    def failure(self, now: float) -> float:
        """Record a connect failure at ``now``; return the time before which not to connect.

        Only a failure at or after the current window's end escalates: ten connects that
        were in flight together and fail together are one failed round, not ten (else a
        brief outage would push a whole pool to the cap at once).
        """
        if now < self.not_before:
            return self.not_before
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        self.not_before = now + delay
        return self.not_before

    def success(self) -> None:
        """A good response arrived: connect freely again."""
        self.attempt = 0
        self.not_before = 0.0

    def __repr__(self) -> str:
        return f"<Backoff attempt={self.attempt} ceiling={self.ceiling():.3f}s>"

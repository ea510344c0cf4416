"""Load shape: the bounds of a run and the open-loop schedule, without I/O.

A closed loop is ``concurrency`` clients (:mod:`workers.client`), each with at
most one request in flight: a client sends, waits for the response (or the
failure), records it and sends the next. An open loop sends at intended times
(:class:`Schedule`), whatever the responses do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def split(total: int, n: int) -> list[int]:
    """``total`` in ``n`` near-equal integer parts that sum to ``total`` (the first
    ``total % n`` parts get one more)."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


@dataclass(frozen=True, slots=True)
class Bounds:
    """When a run stops issuing requests: whichever bound is reached first.

    ``requests`` 0 = no count bound; ``duration`` 0 = no time bound.  At least one
    must be set, so that a run stops by itself -- except for a service
    (``forever``), which runs until it is told to stop.
    """

    concurrency: int
    requests: int = 0
    duration: float = 0.0
    forever: bool = False
    rate: float = 0.0  # > 0: open loop at this many requests per second, all workers together
    ramp: float = 0.0  # seconds to reach full rate (open) or full concurrency (closed)
    warmup: float = 0.0  # seconds of ramped load before the measured period (counted apart)
    max_outstanding: int = 100_000  # open loop: requests in flight or waiting, at most
    stride: int = 1  # open loop: the workers sharing the rate ...
    phase: int = 0  # ... and which of them this one is (see Schedule)
    start_wall: float = 0.0  # wall clock: begin at this instant (0: when ready) ...
    warmup_wall: float = 0.0  # ... and anchor the measured load this long after it (--warmup)
    shard: int = 0  # this instance is shard ``shard`` of ``shards`` (poolsvc.sharding):
    shards: int = 1  # open loop, its workers take the arrivals i = shard (mod shards)

    @property
    def measure_wall(self) -> float:
        """Wall clock: where every shard anchors its measured schedule (--start-at)."""
        return self.start_wall + self.warmup_wall

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if min(self.requests, self.duration, self.rate, self.ramp, self.warmup) < 0:
            raise ValueError("requests, duration, rate, ramp and warmup must not be negative")
        if not self.requests and not self.duration and not self.forever:
            raise ValueError("a run needs a bound: requests or duration")


class Schedule:
    """Open loop: the intended send time of every request, at ``rate`` per second in total.

    The requests of all workers form one global schedule; worker ``phase`` of
    ``stride`` takes every ``stride``-th request of it, starting at request
    ``phase``. Its k-th request is the global request ``j = phase + k * stride``,
    due at ``base + offset(j)``, computed from j, never accumulated, so the
    schedule does not drift however long the run. Bounds are then exact: the
    global requests due before the end number ``ceil(rate * duration)``, and the
    workers' shares of them sum to exactly that whatever the shares' rounding.

    With a ramp, the rate grows linearly from 0 to ``rate`` over ``ramp`` seconds:
    ``n(t) = rate * t**2 / (2 * ramp)`` requests are due by ``t``, so request j is
    due at ``sqrt(2 * ramp * j / rate)``; after the ramp, one every ``1 / rate``.
    Latency is measured from these intended times (coordinated omission corrected):
    a request that waits for a connection waits on the clock.
    """

    __slots__ = ("base", "k", "phase", "ramp", "rate", "stride")

    def __init__(
        self, rate: float, start: float, ramp: float = 0.0, stride: int = 1, phase: int = 0
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if not 0 <= phase < stride:
            raise ValueError("phase must be in [0, stride)")
        self.rate = rate
        self.base = start
        self.ramp = ramp
        self.stride = stride
        self.phase = phase
        self.k = 0

    def due(self, k: int) -> float:
        """Intended time of this worker's request ``k`` (0-based) since the last change."""
        j = self.phase + k * self.stride
        ramp, rate = self.ramp, self.rate
        if ramp > 0:
            in_ramp = rate * ramp / 2  # requests due during the ramp
            if j < in_ramp:
                return self.base + math.sqrt(2 * ramp * j / rate)
            return self.base + ramp + (j - in_ramp) / rate
        return self.base + j / rate

    def next_at(self) -> float:
        return self.due(self.k)

    def take(self) -> float:
        """The next intended time; advances the schedule."""
        at = self.due(self.k)
        self.k += 1
        return at

    def restart(self, start: float, ramp: float) -> None:
        """Begin again from request 0 at ``start``, ramping over ``ramp`` (the measured
        period after a warm-up); the rate and this worker's share stay as they are."""
        self.base, self.ramp, self.k = start, ramp, 0

    def change_rate(self, rate: float, now: float, stride: int = 0, phase: int = 0) -> None:
        """From ``now`` on, ``rate`` per second in total (no ramp; nothing owed from before),
        shared by ``stride`` workers (0: as before)."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        base = max(now, self.next_at())
        if stride:
            self.stride, self.phase = stride, phase
        self.rate, self.base, self.ramp, self.k = rate, base, 0.0, 0

    def __repr__(self) -> str:
        return (
            f"<Schedule {self.rate:g}/s {self.phase}/{self.stride} k={self.k} "
            f"next={self.next_at():.6f}>"
        )

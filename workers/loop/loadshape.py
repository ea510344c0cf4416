"""Load shape: the bounds of a run and the open-loop schedule, without I/O.

A closed loop is ``concurrency`` clients (:mod:`workers.pool.client`), each with at
most one request in flight: a client sends, waits for the response (or the
failure), records it and sends the next. An open loop sends at intended times
(:class:`Schedule`), whatever the responses do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from workers.shared import histogram

EXACT_WAITS: Final = 4096  # up to this many timed-out requests, each wait is taken exactly


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
    max_backlog: int = 100_000  # open loop: requests due and not yet sent, at most
    stride: int = 1  # open loop: the workers sharing the rate ...
    phase: int = 0  # ... and which of them this one is (see Schedule)
    start_wall: float = 0.0  # wall clock: begin at this instant (0: when ready) ...
    warmup_wall: float = 0.0  # ... and anchor the measured load this long after it (--warmup)
    shard: int = 0  # this instance is shard ``shard`` of ``shards`` (poolsvc.config.sharding):
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

    The backlog is the schedule itself. ``picks`` is one period of the targets'
    weighted round-robin (request k goes to target ``picks[k % len(picks)]``), and
    each target has a cursor: how many of its requests were taken. A request due
    but not taken is the backlog of its target: it waits there for a connection
    without an object, a timer or a queue entry, so an overload costs nothing per
    waiting request. :meth:`count_by` says in O(1) how many were due by a time,
    which is how the worker times out, drops or cancels a backlog in one step.
    """

    __slots__ = ("base", "has", "k", "period", "phase", "picks", "ramp", "rate", "spots", "stride")

    def __init__(
        self,
        rate: float,
        start: float,
        ramp: float = 0.0,
        stride: int = 1,
        phase: int = 0,
        picks: Sequence[int] = (0,),
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
        self.picks = tuple(picks)
        self.period = len(self.picks)
        targets = max(self.picks) + 1
        # spots[t]: the positions in one period that go to target t; has[t][r]: how many
        # of them lie below position r (so a count of k requests splits in O(1))
        self.spots = [[i for i, p in enumerate(self.picks) if p == t] for t in range(targets)]
        self.has = [[0] * (self.period + 1) for _ in range(targets)]
        for t, has in enumerate(self.has):
            for r, p in enumerate(self.picks):
                has[r + 1] = has[r] + (p == t)
        self.k = [0] * targets  # taken, per target

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

    def index(self, target: int, n: int) -> int:
        """The worker's request number of target ``target``'s ``n``-th request."""
        spots = self.spots[target]
        q, r = divmod(n, len(spots))
        return q * self.period + spots[r]

    def due_of(self, target: int) -> float:
        """Intended time of the next request of ``target`` (the oldest of its backlog)."""
        if self.period == 1:  # one target (speed: the common case)
            return self.due(self.k[0])
        return self.due(self.index(target, self.k[target]))

    def take_of(self, target: int) -> float:
        """The next intended time of ``target``; advances its cursor."""
        at = self.due_of(target)
        self.k[target] += 1
        return at

    def next_at(self) -> float:
        """The earliest intended time not yet taken, over every target."""
        return min(self.due_of(t) for t in range(len(self.k)))

    def take(self) -> float:
        """The earliest intended time not yet taken; advances its target's cursor."""
        t = min(range(len(self.k)), key=self.due_of)
        return self.take_of(t)

    def _requests_by(self, when: float, before: float = 0.0) -> int:
        """How many of this worker's requests are due at or before ``when`` (and, with
        ``before``, strictly before it: the end of a run)."""
        n = self._due_by(when)
        if before:
            m = self._due_by(before)
            while m > 0 and self.due(m - 1) >= before:
                m -= 1
            n = min(n, m)
        return n

    def _due_by(self, when: float) -> int:
        """How many of this worker's requests are due at or before ``when`` (O(1): the
        inverse of :meth:`due`, settled on due() itself against rounding)."""
        x = when - self.base
        if x < 0:
            return 0
        rate, ramp = self.rate, self.ramp
        if ramp > 0 and x < ramp:
            j = rate * x * x / (2 * ramp)
        elif ramp > 0:
            j = rate * ramp / 2 + (x - ramp) * rate
        else:
            j = x * rate
        k = max(0, int((j - self.phase) // self.stride) + 1) if j >= self.phase else 0
        while k > 0 and self.due(k - 1) > when:
            k -= 1
        while self.due(k) <= when:
            k += 1
        return k

    def count_by(self, target: int, when: float, before: float = 0.0) -> int:
        """How many of ``target``'s requests are due at or before ``when`` (taken or not),
        and before ``before`` if given."""
        n = self._requests_by(when, before)
        q, r = divmod(n, self.period)
        return q * len(self.spots[target]) + self.has[target][r]

    def backlog(self, target: int, when: float, before: float = 0.0) -> int:
        """``target``'s requests due by ``when`` (and before ``before``), not yet taken."""
        return max(0, self.count_by(target, when, before) - self.k[target])

    def skip(self, target: int, n: int) -> None:
        """Take ``n`` of ``target``'s requests at once (dropped, timed out or cancelled:
        the caller counts them). O(1): a backlog is a count, never walked."""
        self.k[target] += n

    def waits(self, target: int, n: int, now: float) -> tuple[dict[int, int], int, int]:
        """How long ``target``'s next ``n`` requests (its oldest due) have waited at
        ``now``: the failure histogram's counts by bucket, the sum and the longest, in
        microseconds. Exact per request for a few; for more, each bucket's count from
        the inverse of :meth:`due` (:meth:`count_by`) in O(buckets spanned), whatever
        ``n`` is, and its sum taken at the bucket's middle (within a bucket's width:
        1/64 of the value), so a backlog of millions costs what one of a few does."""
        k0 = self.k[target]
        if n <= EXACT_WAITS:
            waited = [max(0, int((now - self.due(self.index(target, i))) * 1e6)) for i in
                      range(k0, k0 + n)]  # fmt: skip
            counts: dict[int, int] = {}
            for us in waited:
                b = histogram.bucket_of(us)
                counts[b] = counts.get(b, 0) + 1
            return counts, sum(waited), max(waited, default=0)
        top = max(0, int((now - self.due(self.index(target, k0))) * 1e6))
        least = max(0, int((now - self.due(self.index(target, k0 + n - 1))) * 1e6))

        def waited_at_least(us: int) -> int:  # of the n, how many waited >= us
            return min(max(self.count_by(target, now - us / 1e6) - k0, 0), n)

        counts, total = {}, 0
        for b in range(histogram.bucket_of(least), histogram.bucket_of(top) + 1):
            low, high = histogram.bucket_low(b), histogram.bucket_high(b)
            above = 0 if b == histogram.BUCKETS - 1 else waited_at_least(high + 1)
            c = waited_at_least(low) - above
            if c:
                counts[b] = c
                total += c * (low + min(high, top)) // 2
        return counts, total, top

    def restart(self, start: float, ramp: float) -> None:
        """Begin again from request 0 at ``start``, ramping over ``ramp`` (the measured
        period after a warm-up); the rate and this worker's share stay as they are."""
        self.base, self.ramp = start, ramp
        self.k = [0] * len(self.k)

    def change_rate(self, rate: float, now: float, stride: int = 0, phase: int = 0) -> None:
        """From ``now`` on, ``rate`` per second in total (no ramp; nothing owed from before:
        the caller settles a backlog first), shared by ``stride`` workers (0: as before)."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        base = max(now, self.next_at())
        if stride:
            self.stride, self.phase = stride, phase
        self.rate, self.base, self.ramp = rate, base, 0.0
        self.k = [0] * len(self.k)

    def __repr__(self) -> str:
        return (
            f"<Schedule {self.rate:g}/s {self.phase}/{self.stride} taken={self.k} "
            f"next={self.next_at():.6f}>"
        )


def wrr_period(weights: Sequence[int]) -> list[int]:
    """One period of smooth weighted round-robin over ``weights`` (nginx's): the target
    of each request, evenly spread; ``sum(weights)`` long."""
    cur = [0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(total):
        best = 0
        for i, w in enumerate(weights):
            cur[i] += w
            if cur[i] > cur[best]:
                best = i
        cur[best] -= total
        out.append(best)
    return out

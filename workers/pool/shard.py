"""One worker's pool shard for one target: decisions only, no I/O.

The pool never touches a socket.  Its methods take ``now`` and return what the
event loop must do, as a typed action (:class:`Use` this connection, :class:`Probe`
it first, :class:`Connect`, :class:`Wait`, ...); the loop performs the I/O and reports the
outcome back (:meth:`Pool.connected`, :meth:`Pool.checkin`, :meth:`Pool.discard`).
Keeping it pure lets the tests drive every decision with a fake clock.

Accounting: every connection the pool knows is in exactly one place: ``idle``
(a LIFO deque: the most recently used is reused first, so surplus connections
age out at the cold end), ``in_use`` (reserved, busy or being checked), or
counted in ``connecting`` (a handshake in progress).  ``size`` is their sum and
never exceeds ``max_size``.  Requests that found the pool full wait in
``waiters`` (FIFO) when the exhaustion policy is ``wait``.

Checkout layers the defences against the stale keep-alive race:
 1. expired connections (idle timeout, max age, request budget) are evicted;
 2. a connection idle longer than ``health_after`` gets an active health check;
 3. one idle longer than ``validate_after`` gets a zero-wait readability probe
    (the loop also reaps idle sockets the moment they become readable);
 4. the loop re-sends an idempotent request once on a fresh connection if a
    reused one fails before any response byte (``stale_reuse``).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

from workers.pool.backoff import Backoff

C = TypeVar("C", bound="Pooled")
W = TypeVar("W")


# Checkout decisions -------------------------------------------------------------
@dataclass(slots=True)
class Use(Generic[C]):
    """Send on this idle connection now."""

    conn: C


@dataclass(slots=True)
class Probe(Generic[C]):
    """Zero-wait readability probe first; then use it, or evict it and ask again."""

    conn: C


@dataclass(slots=True)
class Health(Generic[C]):
    """An active health-check request first, then use it."""

    conn: C


@dataclass(slots=True)
class Evict(Generic[C]):
    """Close this expired idle connection (``reason``) and ask again."""

    conn: C
    reason: str


@dataclass(slots=True)
class Connect:
    """Open a new connection for this request (its slot is reserved)."""


@dataclass(slots=True)
class Wait:
    """Queued: a connection will be handed over, or the wait times out at ``until``."""

    until: float


@dataclass(slots=True)
class BackingOff:
    """Connects are paused until ``until``: ask again then."""

    until: float


@dataclass(slots=True)
class Exhausted:
    """Exhaustion policy ``fail``: the pool is full (``pool_exhausted``)."""


Checkout = Use[C] | Probe[C] | Health[C] | Evict[C] | Connect | Wait | BackingOff | Exhausted
CONNECT: Final = Connect()  # the actions without a field are made once
EXHAUSTED: Final = Exhausted()


# Check-in outcomes --------------------------------------------------------------
@dataclass(slots=True)
class Idle:
    """Back in the idle list."""


@dataclass(slots=True)
class Handoff(Generic[W]):
    """Handed straight to ``waiter`` (still reserved: the loop dispatches it)."""

    waiter: W


@dataclass(slots=True)
class Close:
    """Close it, for ``reason`` (an eviction reason)."""

    reason: str


Checkin = Idle | Handoff[W] | Close
IDLE: Final = Idle()


class Pooled(Protocol):
    """What the pool reads and writes on a connection."""

    created: float
    last_used: float
    expires: float  # 0.0 = no max age
    requests: int


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool shard limits; times in seconds (0 disables idle_timeout/max_age/health_after)."""

    max_size: int
    min_size: int = 0
    idle_timeout: float = 30.0
    max_age: float = 0.0
    max_requests: int = 0  # requests per connection before it is retired; 0 = unlimited
    validate_after: float = 0.1
    health_after: float = 0.0
    exhaustion: str = "wait"  # or "fail"
    wait_timeout: float = 1.0
    max_age_jitter: float = 0.025  # retire up to 2.5 % early so connections do not expire together
    adaptive: bool = False  # max_size follows demand (workers.pool.sizing) up to the worker's share

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("pool max_size must be >= 1")
        if not 0 <= self.min_size <= self.max_size:
            raise ValueError("pool min_size must be between 0 and max_size")
        if self.exhaustion not in ("wait", "fail"):
            raise ValueError("exhaustion policy must be 'wait' or 'fail'")


class Pool(Generic[C, W]):
    """Pool shard state and decisions for one target (see the module docstring)."""

    def __init__(self, settings: PoolSettings, backoff: Backoff) -> None:
        self.settings = settings
        self.backoff = backoff
        self.idle: deque[C] = deque()
        self.in_use: set[C] = set()
        self.connecting = 0
        self.waiters: deque[W] = deque()

    @property
    def size(self) -> int:
        return len(self.idle) + len(self.in_use) + self.connecting

    def _expiry(self, conn: C, now: float) -> str:
        """Why ``conn`` must not be reused, or '' if it may."""
        if self._worn(conn, now):
            return "max_age"
        s = self.settings
        if s.idle_timeout and now - conn.last_used >= s.idle_timeout:
            return "idle_timeout"
        return ""

    def _worn(self, conn: C, now: float) -> bool:
        """``conn`` reached its maximum age or its request budget."""
        budget = self.settings.max_requests
        return bool((conn.expires and now >= conn.expires) or (budget and conn.requests >= budget))

    def checkout(self, now: float, waiter: W) -> Checkout[C]:
        """Decide how ``waiter`` gets a connection."""
        idle = self.idle
        s = self.settings
        while idle:
            conn = idle.pop()
            reason = self._expiry(conn, now)
            if reason:
                return Evict(conn, reason)
            self.in_use.add(conn)
            idle_for = now - conn.last_used
            if s.health_after and idle_for >= s.health_after:
                return Health(conn)
            if idle_for >= s.validate_after:
                return Probe(conn)
            return Use(conn)
        if self.size < s.max_size:
            if now < self.backoff.not_before:
                return BackingOff(self.backoff.not_before)
            self.connecting += 1
            return CONNECT
        if s.exhaustion == "fail":
            return EXHAUSTED
        self.waiters.append(waiter)
        return Wait(now + s.wait_timeout)

    def saturated(self) -> bool:
        """A checkout now would wait: nothing idle, no room to connect, policy ``wait``
        (the open loop then leaves its due requests in the schedule, workers.exchange.backlog)."""
        return (
            not self.idle
            and self.size >= self.settings.max_size
            and self.settings.exhaustion == "wait"
        )

    def connected(self, conn: C, now: float, owned: bool, jitter: float = 0.0) -> W | None:
        """A handshake finished.  Owned connections go to their requester; others to
        the first waiter (returned) or the idle list.  ``jitter`` in [0, 1) shortens
        the max age by up to ``max_age_jitter``."""
        self.connecting -= 1
        self.backoff.connected(now)
        s = self.settings
        conn.created = conn.last_used = now
        conn.expires = now + s.max_age * (1.0 - s.max_age_jitter * jitter) if s.max_age else 0.0
        if owned:
            self.in_use.add(conn)
            return None
        if self.waiters:
            self.in_use.add(conn)
            return self.waiters.popleft()
        self.idle.append(conn)
        return None

    def unreserve(self) -> None:
        """A connect reserved by :meth:`checkout` that will not be made (the caller's own
        limit refused it, e.g. a library client's total): free its slot, no backoff."""
        self.connecting -= 1

    def connect_failed(self, now: float) -> float:
        """A handshake failed: free its slot and back off; returns when connects resume."""
        self.connecting -= 1
        return self.backoff.failure(now)

    def checkin(self, conn: C, now: float, keep_alive: bool) -> Checkin[W]:
        """The response on ``conn`` was read to its end; decide where ``conn`` goes."""
        self.in_use.discard(conn)
        conn.last_used = now
        if not keep_alive:
            return Close("server_close")
        reason = self._expiry(conn, now)
        if reason:
            return Close(reason)
        if self.size >= self.settings.max_size:  # the pool was shrunk while it was in use
            return Close("resized")
        if self.waiters:
            self.in_use.add(conn)
            return Handoff(self.waiters.popleft())
        self.idle.append(conn)
        return IDLE

    def renew(self, conn: C, now: float) -> bool:
        """The fast path of checkin + checkout for the same requester: ``conn`` stays in
        use if nobody waits for a connection, the pool was not shrunk below its size,
        and ``conn`` is not worn out.  (LIFO checkout would hand back this very
        connection, idle for no time: nothing to probe, no idle timeout.)"""
        if self.waiters or self.size > self.settings.max_size:
            return False
        conn.last_used = now
        return not self._worn(conn, now)

    def release(self, conn: C) -> None:
        """Put a reserved but unused connection (e.g. after a passing probe) back as idle."""
        self.in_use.discard(conn)
        self.idle.append(conn)

    def discard(self, conn: C) -> None:
        """Forget ``conn`` (the loop closes it), wherever it was."""
        self.in_use.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def cancel_wait(self, waiter: W) -> bool:
        """Remove a waiter whose wait timed out; False if it was already served."""
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def serve_waiter(self, now: float) -> W | None:
        """If a waiter is queued and there is room, reserve a connect for it and return it."""
        if self.waiters and self.size < self.settings.max_size and now >= self.backoff.not_before:
            self.connecting += 1
            return self.waiters.popleft()
        return None

    def reserve_connect(self) -> bool:
        """Reserve a slot for a connect that ignores backoff (the one re-send of a
        request that met a stale connection); False when the pool is full."""
        if self.size >= self.settings.max_size:
            return False
        self.connecting += 1
        return True

    def refill(self, now: float) -> int:
        """How many unowned connects to start to bring the pool back to ``min_size``."""
        if now < self.backoff.not_before:
            return 0
        deficit = self.settings.min_size - self.size
        if deficit <= 0:
            return 0
        self.connecting += deficit
        return deficit

    def resize(self, max_size: int, min_size: int) -> list[C]:
        """Apply new limits.  Returns the idle connections over the new maximum, coldest
        first, for the caller to close; busy ones over it close when checked in."""
        self.settings = dataclasses.replace(self.settings, max_size=max_size, min_size=min_size)
        surplus = []
        while self.size > max_size and self.idle:
            surplus.append(self.idle.popleft())
        return surplus

    def sweep(self, now: float) -> list[tuple[C, str]]:
        """Remove and return the idle connections that expired, with the reason."""
        expired = [(c, r) for c in self.idle if (r := self._expiry(c, now))]
        for conn, _ in expired:
            self.idle.remove(conn)
        return expired

    def gauges(self) -> tuple[int, int, int, int]:
        """(active, idle, connecting, waiting)."""
        return (len(self.in_use), len(self.idle), self.connecting, len(self.waiters))

    def __repr__(self) -> str:
        active, idle, connecting, waiting = self.gauges()
        return (
            f"<Pool [{active} active, {idle} idle, {connecting} connecting | "
            f"{waiting} waiting] max={self.settings.max_size}>"
        )

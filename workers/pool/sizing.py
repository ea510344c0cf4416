"""Adaptive pool sizing (``--pool-adaptive``): how big one worker's pool for a target
should be now, between its share of ``pool_min`` and of ``pool_size``. Pure: inputs
in, a state and a limit out; the upkeep tick performs it (:mod:`workers.upkeep`).

The rule, judged each tick (100 ms) on what the pool shows:

- **Grow on waiting.** Requests have waited for a connection for ``GROW_AFTER``
  in a row (one tick with waiters is a blip, not demand): the limit grows by the
  number waiting (at least one), up to the maximum. Then ``COOLDOWN``: the new
  connections get time to open before demand is judged again.
- **Shrink on idleness.** Connections have sat idle, with nobody waiting, for a
  whole ``IDLE_WINDOW``: the limit falls by the fewest idle seen during the window
  (what was never needed), down to the minimum, and a new window starts.
- **Hysteresis.** Growth needs sustained waiting; shrinking needs a window of
  idleness 25 times longer than the wait that grows it, and any waiting or any
  full use restarts the window: a pool at the edge of its demand holds its size
  instead of oscillating.

States (every one named, transient ones included):

=========  =====================================================================
STEADY     every connection in use, nobody waiting: nothing to judge
WANTING    requests waiting since ``since``: growth once it lasts ``GROW_AFTER``
COOLING    grown at ``since``: waiting is not judged until ``COOLDOWN`` passes
SLACK      connections idle, nobody waiting, since ``since``; ``floor``: the fewest
           idle seen since: shrunk by that once it lasts ``IDLE_WINDOW``
=========  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

STEADY: Final = "STEADY"
WANTING: Final = "WANTING"
COOLING: Final = "COOLING"
SLACK: Final = "SLACK"
STATES: Final = (STEADY, WANTING, COOLING, SLACK)

GROW_AFTER: Final = 0.2  # seconds of waiting in a row before growing
COOLDOWN: Final = 0.5  # seconds after a growth before waiting is judged again
IDLE_WINDOW: Final = 5.0  # seconds of idleness before shrinking

#: what each tick's observation is: "waiting" (waiters > 0), "idle" (idle > 0, nobody
#: waiting), "busy" (neither). The table: (state, observation) -> the next state before
#: any resize (the decision below then applies the timers).
WAITING, IDLE, BUSY = "waiting", "idle", "busy"
TABLE: Final = {
    (STEADY, WAITING): WANTING,
    (STEADY, IDLE): SLACK,
    (STEADY, BUSY): STEADY,
    (WANTING, WAITING): WANTING,
    (WANTING, IDLE): SLACK,
    (WANTING, BUSY): STEADY,
    (COOLING, WAITING): COOLING,
    (COOLING, IDLE): COOLING,
    (COOLING, BUSY): COOLING,
    (SLACK, WAITING): WANTING,
    (SLACK, IDLE): SLACK,
    (SLACK, BUSY): STEADY,
}


@dataclass(frozen=True, slots=True)
class Sizing:
    """One worker's sizing state for one target; ``limit``: its pool's maximum now."""

    limit: int
    state: str = STEADY
    since: float = 0.0
    floor: int = 0

    def __repr__(self) -> str:
        return f"<Sizing {self.state} limit={self.limit} since={self.since:.1f} floor={self.floor}>"


def observe(waiters: int, idle: int) -> str:
    return WAITING if waiters else IDLE if idle else BUSY


def decide(s: Sizing, now: float, waiters: int, idle: int, low: int, high: int) -> Sizing:
    """The state after this tick, its ``limit`` within ``[low, high]`` (``low`` >= 1)."""
    limit = min(max(s.limit, low), high)
    seen = observe(waiters, idle)
    if s.state == COOLING:
        if now - s.since < COOLDOWN:
            return replace(s, limit=limit)
        s = replace(s, state=STEADY)  # cooled: judge this tick afresh
    state = TABLE[(s.state, seen)]
    if state != s.state:  # entering a state starts its clock
        return Sizing(limit, state, now, idle if state == SLACK else 0)
    if state == WANTING and now - s.since >= GROW_AFTER and limit < high:
        return Sizing(min(high, limit + max(1, waiters)), COOLING, now)
    if state == SLACK:
        floor = min(s.floor, idle)
        if now - s.since >= IDLE_WINDOW:
            return Sizing(max(low, limit - floor), SLACK, now, idle)  # a new window
        return Sizing(limit, SLACK, s.since, floor)
    return replace(s, limit=limit)

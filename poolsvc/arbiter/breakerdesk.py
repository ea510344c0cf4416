"""The supervisor's breaker desk: reads the workers' per-target counters, drives the
pure breakers, and writes the breaker rows, which the supervisor alone writes.

Every tick (see :mod:`poolsvc.arbiter.supervisor`), for each target:

1. sum ok, failed and the current-generation failure streaks over all slots and
   RETIRED;
2. feed the deltas since the last tick to the :class:`~workers.pool.breaker.Breaker`;
3. sum this generation's trial results and let the breaker advance in time;
4. hand out the trial permits it asks for, round-robin over live workers;
5. if the generation changed, write the row (``open_until`` before the state word,
   so a worker that sees OPEN also sees when it ends) and announce the change.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from workers.pool.breaker import CLOSED, HALF_OPEN, OPEN, STATE_CODE, Breaker, BreakerSettings
from workers.shared import shm

_FOREVER_US = 2**62  # open_until for a breaker forced open


class BreakerDesk:
    """One breaker per target, driven from the shared region's counters."""

    def __init__(
        self,
        region: shm.Region,
        settings: BreakerSettings,
        names: list[str],
        seed: int,
        emit: Callable[[str], None],
        now: float,
    ) -> None:
        self.region = region
        self.names = names
        self.emit = emit
        self.breakers = [Breaker(settings, random.Random(seed + t), now) for t in range(len(names))]
        self._seen = [(0, 0)] * len(names)  # per target: (ok, failed) at the last tick
        self._turn = 0
        for t, breaker in enumerate(self.breakers):
            self._write_row(t, breaker, now)  # workers read generation 1 from the start

    def tick(self, now: float, workers: list[int], live: list[int]) -> None:
        """Advance every breaker; ``workers``: slots in use, ``live``: slots with a worker."""
        for t, breaker in enumerate(self.breakers):
            blocks = [self.region.target_words(w, t) for w in workers]
            blocks.append(self.region.retired_target_words(t))
            # a folded worker's warm-up counts moved apart: still the breaker's past input
            blocks.append(self.region.warmup_retired_target_words(t))
            ok = sum(b[shm.T_OK] for b in blocks)
            failed = sum(b[shm.T_FAILED] for b in blocks)
            gen = breaker.generation
            consec = sum(shm.tagged_count(b[shm.T_CONSEC], gen) for b in blocks)
            last_ok, last_failed = self._seen[t]
            self._seen[t] = (ok, failed)
            breaker.observe(now, ok - last_ok, failed - last_failed, consec)
            g = breaker.generation
            trial_ok = sum(shm.tagged_count(b[shm.T_TRIAL_OK], g) for b in blocks)
            trial_fail = sum(shm.tagged_count(b[shm.T_TRIAL_FAIL], g) for b in blocks)
            permits = breaker.tick(now, trial_ok, trial_fail)
            if permits:
                self._grant(t, breaker.generation, permits, live or workers)
            if breaker.generation != gen:
                self._changed(t, breaker, now)

    def _grant(self, t: int, generation: int, permits: int, workers: list[int]) -> None:
        row = self.region.breaker_row(t)
        for _ in range(permits):
            at = shm.BRK_FIXED + workers[self._turn % len(workers)]
            self._turn += 1
            row[at] = shm.tag(generation, shm.tagged_count(row[at], generation) + 1)

    def _changed(self, t: int, breaker: Breaker, now: float) -> None:
        self._write_row(t, breaker, now)
        name = self.names[t]
        prefix = "[pool] circuit breaker" if len(self.names) == 1 else f"[pool] {name} breaker"
        if breaker.state == OPEN and not breaker.forced:
            self.emit(f"{prefix} OPEN for {breaker.open_until - now:.1f}s ({breaker.reason})")
        elif breaker.state == HALF_OPEN:
            self.emit(f"{prefix} HALF_OPEN: {breaker.settings.trials} trial(s)")
        else:
            self.emit(f"{prefix} {breaker.state} ({breaker.reason})")

    def _write_row(self, t: int, breaker: Breaker, now: float) -> None:
        row = self.region.breaker_row(t)
        if breaker.state != OPEN:
            row[shm.B_OPEN_UNTIL] = 0
        elif breaker.forced:
            row[shm.B_OPEN_UNTIL] = _FOREVER_US
        else:
            row[shm.B_OPEN_UNTIL] = int(breaker.open_until * 1e6)
        row[shm.B_TRIPS] = breaker.total_trips
        row[shm.B_CHANGED] = int(now * 1e6)
        row[shm.B_STATE] = shm.breaker_word(breaker.generation, STATE_CODE[breaker.state])  # last

    def action(self, t: int, what: str, now: float) -> None:
        """Operator action on target ``t``: ``open``, ``close`` or ``reset``."""
        breaker = self.breakers[t]
        if not breaker.settings.enabled:
            raise ValueError("the breaker is off (--no-breaker): there is nothing to force")
        if what == "open":
            breaker.force_open(now)
        elif what == "close":
            breaker.force_closed(now)
        elif what == "reset":
            breaker.reset(now)
        else:
            raise ValueError(f"breaker action must be show, open, close or reset, not {what!r}")
        self._changed(t, breaker, now)

    def status(self, now: float) -> list[dict[str, Any]]:
        out = []
        for t, b in enumerate(self.breakers):
            calls, fails = b.window_counts()
            open_for = b.open_until - now if b.state == OPEN and not b.forced else None
            out.append(
                {
                    "target": self.names[t],
                    "state": b.state,
                    "forced": b.forced,
                    "generation": b.generation,
                    "trips": b.total_trips,
                    "open_for_s": round(open_for, 3) if open_for is not None else None,
                    "window_calls": calls,
                    "window_failures": fails,
                    "reason": b.reason,
                    "enabled": b.settings.enabled,
                    "opened_because": b.opened_because,
                    "first_opened_because": b.first_opened_because,
                }
            )
        return out

    def closed(self) -> bool:
        return all(b.state == CLOSED for b in self.breakers)

    def __repr__(self) -> str:
        return f"<BreakerDesk {self.breakers}>"

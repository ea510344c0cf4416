"""The supervisor's fault board: the injected faults in force, written to shared memory.

The supervisor is the only writer of the fault table (seqlock in
:meth:`workers.shared.shm.Region.write_faults`); workers pick a new table up within one
tick.  Setting a fault of a kind that is already in force for the same target
replaces it.  A fault given a duration clears itself; the board removes it from
the table and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poolsvc.ctl.protocol import ControlError
from workers.shared import shm
from workers.shared.injection import MAX_FAULTS, Fault, parse_fault


class FaultBoard:
    def __init__(
        self,
        region: shm.Region,
        emit: Callable[[str], None],
        clock: Callable[[], float],
        initial: list[Fault],
    ) -> None:
        self.region = region
        self.emit = emit
        self.clock = clock
        self.faults: list[Fault] = []
        for fault in initial:
            self._put(fault)
        self._write()

    def _put(self, fault: Fault) -> None:
        kept = [f for f in self.faults if (f.kind, f.target) != (fault.kind, fault.target)]
        if len(kept) >= MAX_FAULTS:
            raise ControlError("conflict", f"at most {MAX_FAULTS} faults at once")
        self.faults = [*kept, fault]

    def _write(self) -> None:
        self.region.write_faults(self.faults)

    def set(self, fault: Fault) -> None:
        self._put(fault)
        self._write()
        self.emit(
            f"[pool] inject {fault.kind} rate={fault.rate:g}"
            + ("" if fault.target is None else f" target={fault.target}")
        )

    def clear(self, kind: str | None = None) -> int:
        before = len(self.faults)
        self.faults = [f for f in self.faults if kind is not None and f.kind != kind]
        removed = before - len(self.faults)
        if removed:
            self._write()
            self.emit(f"[pool] inject cleared: {kind or 'all'}")
        return removed

    def expire(self, now: float) -> None:
        """Drop faults whose duration is over (workers already ignore them)."""
        over = [f for f in self.faults if f.until and now >= f.until]
        if over:
            self.faults = [f for f in self.faults if f not in over]
            self._write()
            for f in over:
                self.emit(f"[pool] inject {f.kind} ended (its duration is over)")

    def describe(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [f.describe(now) for f in self.faults]


def fault_from_args(args: dict[str, Any], now: float, default_seed: int) -> Fault:
    """A Fault from an ``inject set`` request's arguments (raises ControlError on bad
    values): the same parser as the config's ``inject_failures`` entries."""
    try:
        return parse_fault({k: v for k, v in args.items() if k != "action"}, now, default_seed)
    except ValueError as exc:
        raise ControlError("bad_request", str(exc)) from None

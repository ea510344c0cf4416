"""The supervisor's fault board: the injected faults in force, written to shared memory.

The supervisor is the only writer of the fault table (seqlock in
:meth:`poolsvc.shm.Region.write_faults`); workers pick a new table up within one
tick.  Setting a fault of a kind that is already in force for the same target
replaces it.  A fault given a duration clears itself; the board removes it from
the table and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from poolsvc import shm
from poolsvc.control import ControlError
from workers.injection import CONNECT_MODES, MAX_FAULTS, Fault


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
    """A Fault from control/poolctl arguments (raises ControlError on bad values)."""
    from poolsvc.config import fault_param
    from poolsvc.control import arg

    kind = arg(args, "fault", str)
    rate = float(arg(args, "rate", (int, float)))
    target = args.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
        raise ControlError("bad_request", "target must be an integer or null")
    duration = args.get("for_s")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0
    ):
        raise ControlError("bad_request", "for_s must be a positive number")
    seed = arg(args, "seed", int, default_seed)
    for key, kinds in (
        ("delay_ms", ("delay",)),
        ("timeout_ms", ("timeout",)),
        ("mode", ("connect_fail",)),
    ):
        if key in args and kind not in kinds:
            raise ControlError("bad_request", f"{key} applies to {kinds[0]}, not to {kind}")
    mode = arg(args, "mode", str, "refused")
    if mode not in CONNECT_MODES:
        raise ControlError("bad_request", f"mode must be one of {', '.join(CONNECT_MODES)}")
    try:
        param = fault_param(
            kind, arg(args, "delay_ms", int, 100), arg(args, "timeout_ms", int, 0), mode
        )
        return Fault(kind, rate, target, now + duration if duration else 0.0, seed, param)
    except ValueError as exc:
        raise ControlError("bad_request", str(exc)) from None

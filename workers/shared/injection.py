"""Failure injection: which faults exist, how they are encoded, and the pure draw logic.

Faults, and the granularity at which each one draws:

| fault | draws per | effect (performed by the worker loop, with real sockets) |
|---|---|---|
| reset | request | after sending, abort the socket with RST (SO_LINGER 0 + close) |
| timeout | request | stop reading the response: a real read timeout fires (``timeout_ms``) |
| delay | request | hold the request ``delay_ms`` before sending it |
| connect_fail | connection | connect to a port that refuses (``mode`` refused) or stays silent |
| half_open | connection | an idle socket stops delivering anything, FIN included |
| close_idle | connection | an idle socket is shut down behind the pool's back |
| leak | connection | a socket the pool closes is kept open and forgotten (for the FD audit) |

An injected timeout fires after the fault's ``timeout_ms``, or after the
configured read timeout when that is 0.

Each fault has its own random stream, seeded from (fault seed, worker index), and
draws once per decision point.  Every side effect of a fault happens only when
its draw hits, so probability 0 means no effect at all (the Toxiproxy #603
lesson).  Because each fault has its own stream, adding one fault does not change
the draws of another.

Encoding (the supervisor writes, workers read; :data:`FAULT_WORDS` words per entry):
``kind code | target + 1 (0 = all) | probability in parts per billion | until_us
(0 = no end) | seed | param (delay ms, timeout ms, or connect_fail mode)``.  A kind code of 0
marks a free entry.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

KINDS: Final = ("reset", "timeout", "delay", "connect_fail", "half_open", "close_idle", "leak")
PER_REQUEST: Final = frozenset({"reset", "timeout", "delay"})
PER_CONNECTION: Final = frozenset({"connect_fail", "half_open", "close_idle", "leak"})
CODE: Final = {kind: i + 1 for i, kind in enumerate(KINDS)}
CONNECT_MODES: Final = ("refused", "timeout")
FAULT_WORDS: Final = 6
MAX_FAULTS: Final = 16
PPB: Final = 1_000_000_000

#: The `--inject-failures` mix, (fault, rate, param): a few percent of requests reset or
#: time out. The injected timeouts are short (param: ms), so that the run shows
#: them and keeps going: with the configured read timeout (5 s) every client would
#: soon be waiting on one, and most seconds would see no request at all.
DEFAULT_MIX: Final = (("reset", 0.02, 0), ("timeout", 0.02, 50))


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault as configured (``target`` None = every target)."""

    kind: str
    rate: float
    target: int | None = None
    until: float = 0.0  # monotonic seconds; 0 = until cleared
    seed: int = 0
    param: int = 0  # delay/timeout: milliseconds; connect_fail: index into CONNECT_MODES

    def __post_init__(self) -> None:
        if self.kind not in CODE:
            raise ValueError(f"unknown fault {self.kind!r}; faults: {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate}")
        if self.kind == "delay" and self.param <= 0:
            raise ValueError("delay needs delay_ms > 0")

    def encode(self) -> tuple[int, int, int, int, int, int]:
        target = 0 if self.target is None else self.target + 1
        until_us = int(self.until * 1e6)
        return (CODE[self.kind], target, round(self.rate * PPB), until_us, self.seed, self.param)

    @classmethod
    def decode(cls, words: tuple[int, ...]) -> Fault | None:
        code, target, ppb, until_us, seed, param = words
        if not code or code > len(KINDS):
            return None
        return cls(
            KINDS[code - 1], ppb / PPB, target - 1 if target else None, until_us / 1e6, seed, param
        )

    def describe(self, now: float) -> dict[str, object]:
        out: dict[str, object] = {
            "fault": self.kind,
            "rate": self.rate,
            "seed": self.seed,
            "target": "all" if self.target is None else self.target,
            "per": "request" if self.kind in PER_REQUEST else "connection",
        }
        if self.until:
            out["remaining_s"] = round(max(0.0, self.until - now), 3)
        if self.kind == "delay":
            out["delay_ms"] = self.param
        if self.kind == "timeout":
            out["timeout_ms"] = self.param or "read_timeout"
        if self.kind == "connect_fail":
            out["mode"] = CONNECT_MODES[self.param]
        return out


def stream(fault: Fault, worker: int) -> random.Random:
    """The fault's own random stream in ``worker``: seeded from (seed, kind, target,
    worker), so two faults with one seed still draw independently.  (String seeds are
    hashed with SHA-512 by ``random``: the same in every process and run.)"""
    return random.Random(f"{fault.seed}:{fault.kind}:{fault.target}:{worker}")


class Injector:
    """One worker's injection decisions.  Pure: no sockets, the clock comes in as ``now``."""

    def __init__(self, faults: list[Fault], worker: int, previous: Injector | None = None) -> None:
        self.faults = faults
        # One stream per fault: its draws do not depend on any other fault's.  A fault
        # that was already in force keeps its stream when the table changes.
        kept = dict(zip(previous.faults, previous.rngs, strict=True)) if previous else {}
        self.rngs: list[random.Random] = [kept.get(f) or stream(f, worker) for f in faults]
        self.any = bool(faults)
        self.requests = any(f.kind in PER_REQUEST for f in faults)

    def _draw(self, i: int, fault: Fault, target: int, now: float) -> bool:
        if fault.target is not None and fault.target != target:
            return False
        if fault.until and now >= fault.until:
            return False
        return self.rngs[i].random() < fault.rate

    def on_request(self, target: int, now: float) -> tuple[str, int] | None:
        """What to do to a request about to be sent: ('reset'|'timeout'|'delay', param) or None.

        Every per-request fault draws (so each stream advances once per request);
        the first that hits, in table order, applies.
        """
        hit: tuple[str, int] | None = None
        for i, fault in enumerate(self.faults):
            if fault.kind in PER_REQUEST and self._draw(i, fault, target, now) and hit is None:
                hit = (fault.kind, fault.param)
        return hit

    def on_connection(self, kind: str, target: int, now: float) -> Fault | None:
        """Whether a connection-level fault of ``kind`` hits this connection now."""
        hit = None
        for i, fault in enumerate(self.faults):
            if fault.kind == kind and self._draw(i, fault, target, now) and hit is None:
                hit = fault
        return hit

    def expired(self, now: float) -> bool:
        """True if some fault has passed its end (the worker then drops it)."""
        return any(f.until and now >= f.until for f in self.faults)

    def __repr__(self) -> str:
        return f"<Injector {[f'{f.kind}@{f.rate:g}' for f in self.faults]}>"


#: The keys a fault is given by (a config entry, a control request), and the fault
#: kinds each parameter applies to.
FAULT_KEYS: Final = frozenset(
    {"fault", "rate", "target", "for_s", "seed", "delay_ms", "timeout_ms", "mode"}
)
_PARAMS: Final = {"delay_ms": "delay", "timeout_ms": "timeout", "mode": "connect_fail"}


def _number(item: Mapping[str, Any], key: str, integer: bool, low: float, default: Any) -> Any:
    if key not in item:
        return default
    value = item[key]
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{key} must be {'an integer' if integer else 'a number'}")
    if value < low:
        raise ValueError(f"{key} must be >= {low:g}")
    return value


def parse_fault(item: Mapping[str, Any], now: float, seed: int) -> Fault:
    """The one parser of a fault given as a mapping (``inject_failures`` entries and
    ``inject set`` requests alike); raises ValueError naming the key at fault.
    ``for_s`` counts from ``now``; ``seed`` is the default seed."""
    unknown = sorted(set(item) - FAULT_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r}; a fault takes {', '.join(sorted(FAULT_KEYS))}"
        )
    kind = item.get("fault")
    if not isinstance(kind, str) or kind not in CODE:
        raise ValueError(f"fault must be one of {', '.join(KINDS)}, not {kind!r}")
    for key, applies in _PARAMS.items():
        if key in item and kind != applies:
            raise ValueError(f"{key} applies to {applies}, not to {kind}")
    if "rate" not in item:
        raise ValueError("rate is missing (a probability from 0 to 1)")
    rate = float(_number(item, "rate", False, 0.0, None))
    target = _number(item, "target", True, 0, None)
    for_s = _number(item, "for_s", False, 0.0, None)
    if for_s is not None and for_s <= 0:
        raise ValueError("for_s must be > 0")
    mode = item.get("mode", "refused")
    if mode not in CONNECT_MODES:
        raise ValueError(f"mode must be one of {', '.join(CONNECT_MODES)}")
    param = {
        "delay": _number(item, "delay_ms", True, 1, 100),
        "timeout": _number(item, "timeout_ms", True, 0, 0),
        "connect_fail": CONNECT_MODES.index(mode),
    }.get(kind, 0)
    until = now + float(for_s) if for_s else 0.0
    return Fault(kind, rate, target, until, int(_number(item, "seed", True, 0, seed)), int(param))

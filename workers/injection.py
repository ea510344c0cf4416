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
from dataclasses import dataclass
from typing import Final

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


def parse_duration(text: str) -> float:
    """'10s', '500ms', '2m' or a bare number of seconds -> seconds (ValueError otherwise)."""
    text = text.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            value = float(text[: -len(suffix)]) * scale
            break
    else:
        value = float(text)
    if not value > 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value

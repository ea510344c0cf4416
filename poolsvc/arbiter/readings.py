"""Reading the shared region for the read model: per target, per worker, per slot.

Lock-free reads of what the workers wrote (their slots and target blocks) and of
what the supervisor folded (the RETIRED block), for the status views, the
per-second figures and the final report. Plain functions of the region and the
slots: they read, they never write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from poolsvc.arbiter.slots import Slot
from poolsvc.report.views import SlotView
from workers.pool.breaker import Breaker
from workers.shared import histogram, shm
from workers.shared.errors import ERROR_NAMES
from workers.shared.slotstats import HEARTBEAT, INDEX, Snapshot

POOL_GAUGES = ("active", "idle", "connecting", "waiting")


def totals(region: shm.Region, slots: Sequence[Slot]) -> Snapshot:
    """The run's totals: every used slot plus the retired block (the measured
    period's: a warm-up's counts are apart, :func:`warmup`)."""
    return Snapshot.of([*(region.measured(s.index) for s in slots), region.retired_slot()])


def warmup(region: shm.Region, slots: Sequence[Slot]) -> Snapshot:
    """The warm-up's totals (``--warmup``): every used slot's, the retired workers'."""
    warmed = [w for s in slots if (w := region.warmed(s.index)) is not None]
    return Snapshot.of([*warmed, region.warmup_retired()])


def _blocks(region: shm.Region, slots: Sequence[Slot], t: int) -> list[memoryview | list[int]]:
    """Target ``t``'s block of every used slot (measured), and of the retired block."""
    blocks = [region.measured_target(s.index, t, settled) for s in slots]
    return [*blocks, region.retired_target_words(t)]


_TRIES = 8  # a busy worker may keep one read from settling: then the last copy stands


def settled(block: memoryview | list[int]) -> list[int]:
    """One copy of a target block whose outcome words agree with each other.

    A worker writes a failure's count and its name as two words, and a reader
    copying between the two sees a failure without its name. The words compared
    (outcomes, names, histogram) only grow, so two copies that agree on them held
    those values together at the instant between the copies (a double collect):
    a consistent read with no cost to the writer. Bounded: after ``_TRIES`` the
    last copy is taken as it is (each word is still exact on its own).
    """
    if isinstance(block, list):
        return block  # a copy already (a slot split at its warm-up: Region.measured)
    copy = block.tolist()
    for _ in range(_TRIES):
        again = block.tolist()
        if again[shm.T_RESP_OK :] == copy[shm.T_RESP_OK :]:
            return again
        copy = again
    return copy


def own_snapshots(
    region: shm.Region, slots: Sequence[Slot], n: int, whole: Snapshot
) -> list[Snapshot]:
    """Each of ``n`` targets' own figures; with one target, the run's totals ``whole``."""
    return [whole] if n == 1 else [target_snapshot(region, slots, t) for t in range(n)]


def target_snapshot(region: shm.Region, slots: Sequence[Slot], t: int) -> Snapshot:
    """Target ``t``'s own figures over every worker (retired ones included): its
    outcomes, failures by name and latency histogram (several targets only: with
    one, the run's own totals are the target's)."""
    snap = Snapshot()
    c = snap.counters
    for b in _blocks(region, slots, t):
        copy = settled(b)
        c["requests.ok"] += copy[shm.T_RESP_OK]
        c["requests.failed"] += copy[shm.T_RESP_FAILED]
        c["requests.unsent"] += copy[shm.T_UNSENT]
        for i, name in enumerate(ERROR_NAMES):
            c[f"errors.{name}"] += copy[shm.T_ERRORS + i]
        histogram.merge_into(snap.hist, copy[shm.T_HIST : shm.T_HIST + histogram.BUCKETS])
    c["requests.sent"] = c["requests.ok"] + c["requests.failed"]  # those that finished
    return snap


def per_target(
    region: shm.Region,
    slots: Sequence[Slot],
    names: Sequence[str],
    breakers: Sequence[Breaker],
    owns: Sequence[Snapshot],
) -> list[dict[str, Any]]:
    """Each target's outcome counts over every worker (retired ones included), and
    what its breaker did (``owns``: each target's own snapshot, from
    :func:`own_snapshots`, so that its counts and its failures by name are one read).
    The breaker's trips are the breaker's, a warm-up's included: one breaker per target
    for the whole run, whose count never goes back."""
    out = []
    for t, name in enumerate(names):
        blocks = _blocks(region, slots, t)
        c = owns[t].counters
        breaker = breakers[t]
        out.append(
            {
                "target": name,
                "ok": c["requests.ok"],
                "failed": c["requests.failed"],
                "unsent": c["requests.unsent"],
                "refused": sum(b[shm.T_REFUSED] for b in blocks),
                "local_failures": sum(b[shm.T_LOCAL] for b in blocks),
                "breaker": breaker.state,
                "breaker_trips": breaker.total_trips,
                "breaker_because": breaker.opened_because,
                "breaker_first_because": breaker.first_opened_because,
            }
        )
    return out


def pool(region: shm.Region, live: Sequence[Slot], t: int) -> dict[str, int]:
    """Target ``t``'s pool over the live workers (their last published gauges)."""
    blocks = [region.target_words(s.index, t) for s in live]
    out = {name: sum(b[shm.T_POOL + i] for b in blocks) for i, name in enumerate(POOL_GAUGES)}
    out["limit"] = sum(b[shm.T_POOL_LIMIT] for b in blocks)  # the pools' maxima now
    return out


def _outcomes(slot: Any) -> int:
    """Requests with an outcome in one live slot (the derived ``requests.total``)."""
    return sum(int(slot[INDEX[f"requests.{k}"]]) for k in ("ok", "failed", "unsent", "abandoned"))


def slot_views(region: shm.Region, slots: Sequence[Slot], now: float) -> list[SlotView]:
    """Each slot as ``poolctl workers`` shows it (``now``: the supervisor's clock)."""
    out = []
    for s in slots:
        words = region.measured(s.index)
        beat = words[HEARTBEAT]
        out.append(
            SlotView(
                index=s.index,
                state=s.state,
                pid=s.pids[-1] if s.pids else None,
                restarts=len(s.exits),
                heartbeat_age_ms=round((now * 1e6 - beat) / 1000, 1) if beat else None,
                requests=_outcomes(words) + s.completed,
                rps=round(s.rps, 1),
                concurrency=s.shard.concurrency,
                pool_size=s.shard.pool_size,
            )
        )
    return out


WORKER_FIGURES = (
    "requests.total",
    "requests.sent",
    "requests.ok",
    "requests.failed",
    "requests.unsent",
    "requests.lost",
    "requests.abandoned",
    "requests.in_doubt",
    "connections.created",
)


def per_worker(region: shm.Region, slots: Sequence[Slot]) -> list[dict[str, Any]]:
    """Per-worker totals for the run report (all incarnations of each slot)."""
    rows = []
    for s in slots:
        c = Snapshot.of([region.measured(s.index)]).counters
        for old in s.retired:
            for k, v in old.counters.items():
                c[k] += v
        rows.append(
            {
                "index": s.index,
                "pids": s.pids,
                "restarts": len(s.exits),
                "exit_codes": s.exits,
                "pool_size": s.shard.pool_size,
                "concurrency": s.shard.concurrency,
                **{k: c[k] for k in WORKER_FIGURES},
            }
        )
    return rows

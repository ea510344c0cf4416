"""What a worker runs: a plain spec built by the control plane, and the Worker built from it.

The data plane does not read the control plane's configuration. The supervisor
resolves the configuration into one :class:`WorkerSpec` per worker (its targets
with their requests and its share of each pool, its bounds, its loop settings)
and hands it over at fork; :func:`build_worker` turns it into a
:class:`~workers.loop.Worker`. Nothing here does I/O but resolving the targets'
addresses, once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.admission import SharedView
from workers.backoff import Backoff
from workers.load import Bounds
from workers.loop import LoopSettings, Worker
from workers.pool import Pool, PoolSettings
from workers.target import Target, TargetSpec


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """One target as one worker runs it."""

    spec: TargetSpec  # what to send where
    pool: PoolSettings  # this worker's share of the target's pool
    total: tuple[int, int]  # the whole pool over all workers (max, min): for a re-split
    weight: int = 1  # smooth weighted round-robin over the targets


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything one worker runs; built once by the control plane (``poolsvc.plan``)."""

    index: int
    targets: tuple[TargetPlan, ...]
    bounds: Bounds
    settings: LoopSettings
    backoff: tuple[float, float]  # reconnect backoff: base and cap, in seconds
    seed: int  # jitter and fault draws


def build_worker(
    spec: WorkerSpec,
    shared: SharedView,
    watchdog: Callable[[Worker], None] | None = None,
    end_at: float = 0.0,
    report: Callable[[str, dict[str, Any]], None] | None = None,
) -> Worker:
    """The Worker for ``spec`` on the shared region ``shared``; ``end_at`` (monotonic)
    for a replacement that must stop when the one it replaces would have."""
    rng = random.Random(spec.seed)
    targets = []
    for t, plan in enumerate(spec.targets):
        target = Target(t, plan.spec, Pool(plan.pool, Backoff(*spec.backoff, rng)))
        target.total = plan.total
        targets.append(target)
    return Worker(
        targets,
        spec.bounds,
        spec.settings,
        shared,
        rng,
        watchdog=watchdog,
        end_at=end_at,
        report=report,
        weights=[p.weight for p in spec.targets],
    )

"""What a worker runs: a plain spec, built by the control plane.

The data plane does not read the control plane's configuration. The supervisor
resolves the configuration into one :class:`WorkerSpec` per worker (its targets
with their requests and its share of each pool, its bounds, its loop settings)
and hands it over at fork; :func:`workers.worker.build_worker` turns it into a
:class:`~workers.worker.Worker`. Plain data: no I/O, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.loop.loadshape import Bounds
from workers.net.httpwire import DEFAULT_SUCCESS, parse_statuses, status_table
from workers.pool.shard import PoolSettings
from workers.pool.target import TargetSpec


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How the worker treats its requests; times in seconds."""

    connect_timeout: float = 1.0
    read_timeout: float = 5.0
    drain_timeout: float = 5.0
    retry_stale: bool = True
    count_5xx: bool = True  # 5xx responses count as failures toward the breaker
    injected_count_for_breaker: bool = True  # injected failures feed the breaker too
    max_header_bytes: int = 32768  # a longer header block fails its request
    busy_poll: float = (
        0.0  # the accelerated path's spin before a blocking wait (workers.lane.fastpath)
    )
    success: bytes = status_table(parse_statuses(DEFAULT_SUCCESS))  # by status code: 1 = ok


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """One target as one worker runs it."""

    spec: TargetSpec  # what to send where
    pool: PoolSettings  # this worker's share of the target's pool
    total: tuple[int, int]  # the whole pool over all workers (max, min): for a re-split
    weight: int = 1  # smooth weighted round-robin over the targets


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything one worker runs; built once by the control plane (``poolsvc.config.plan``)."""

    index: int
    targets: tuple[TargetPlan, ...]
    bounds: Bounds
    settings: LoopSettings
    backoff: tuple[float, float, bool]  # reconnect backoff: base, cap (seconds), adaptive
    seed: int  # jitter and fault draws

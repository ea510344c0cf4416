"""From a validated Config to what each worker runs: shards, then one WorkerSpec each.

Pool size, kept-open minimum, concurrency and the request bound are split across
workers as evenly as integers allow (the first ``total % n`` workers get one more),
so their sums are exactly what was asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from poolsvc import __version__
from poolsvc.breaker import BreakerSettings
from poolsvc.config import target_configs, target_spec, target_weights
from poolsvc.keys import Config
from workers.admission import SharedView
from workers.errors import ConfigError
from workers.http import parse_statuses, status_table
from workers.load import Bounds, split
from workers.pool import PoolSettings
from workers.spec import LoopSettings, TargetPlan, WorkerSpec
from workers.worker import Worker, build_worker

USER_AGENT = f"poolsvc/{__version__}"

MAX_WORKERS = 64


def concurrency(cfg: Config) -> int:
    """Requests in flight in total: as configured, else one per pooled connection."""
    if cfg.concurrency is not None:
        return cfg.concurrency
    return sum(tc.pool_size for tc in target_configs(cfg))


def worker_count(cfg: Config) -> int:
    """``cfg.workers`` or the default: one per CPU, at most what every target's pool and
    the concurrency allow (each worker needs a connection to every target)."""
    smallest = min(tc.pool_size for tc in target_configs(cfg))
    limits = [("pool_size", smallest), ("concurrency", concurrency(cfg))]
    if cfg.requests:  # a worker with no request to send would have no bound at all
        limits.append(("requests", cfg.requests))
    if cfg.workers is not None:
        n = cfg.workers
        for key, value in limits:
            if n > value:
                raise ConfigError(f"workers ({n}) exceeds {key} ({value}): each needs one")
        return n
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS, *(value for _, value in limits)))


@dataclass(frozen=True, slots=True)
class Shard:
    """One worker's share of the run."""

    index: int
    pools: tuple[tuple[int, int], ...]  # per target: (max size, kept-open minimum)
    concurrency: int
    requests: int  # 0 = no count bound
    seed: int
    rate: float = 0.0  # open loop: the total rate, all workers together (0: closed loop)
    workers: int = 1  # open loop: how many workers share it (this one is `index`)

    @property
    def pool_size(self) -> int:
        return sum(size for size, _ in self.pools)


def pool_share(cfg: Config, n: int, index: int) -> tuple[tuple[int, int], ...]:
    """Worker ``index`` of ``n``: its (max, min) share of every target's pool."""
    return tuple(
        (split(tc.pool_size, n)[index], split(tc.effective_pool_min, n)[index])
        for tc in target_configs(cfg)
    )


def shards(cfg: Config, n: int, seed: int) -> list[Shard]:
    conc = split(concurrency(cfg), n)
    reqs = split(cfg.requests, n) if cfg.requests else [0] * n
    return [
        Shard(i, pool_share(cfg, n, i), conc[i], reqs[i], seed + i, cfg.rate, n) for i in range(n)
    ]


def target_names(cfg: Config, hosts: list[tuple[str, int]]) -> list[str]:
    """Each target's label: its configured name, else host:port."""
    names = []
    for i, (host, port) in enumerate(hosts):
        label = cfg.targets[i].get("name") if cfg.targets else None
        names.append(str(label) if label else target_spec(cfg, host, port).name)
    return names


def breaker_settings(cfg: Config) -> BreakerSettings:
    return BreakerSettings(
        window=cfg.breaker_window_ms / 1000.0,
        min_calls=cfg.breaker_min_calls,
        failure_rate=cfg.breaker_failure_rate,
        consecutive=cfg.breaker_consecutive_failures,
        open_base=cfg.breaker_open_ms / 1000.0,
        open_max=cfg.breaker_open_max_ms / 1000.0,
        trials=cfg.breaker_half_open_trials,
        trial_lease=(cfg.connect_timeout_ms + cfg.read_timeout_ms) / 1000.0 + 1.0,
        enabled=cfg.breaker,
    )


def pool_settings(cfg: Config, size: int, minimum: int) -> PoolSettings:
    return PoolSettings(
        max_size=size,
        min_size=minimum,
        idle_timeout=cfg.idle_timeout_ms / 1000.0,
        max_age=cfg.max_age_ms / 1000.0,
        max_requests=cfg.max_requests_per_conn,
        validate_after=cfg.validate_after_ms / 1000.0,
        health_after=cfg.health_check_after_ms / 1000.0,
        exhaustion=cfg.exhaustion,
        wait_timeout=cfg.pool_wait_timeout_ms / 1000.0,
    )


def worker_spec(
    cfg: Config, hosts: list[tuple[str, int]], shard: Shard, forever: bool = False
) -> WorkerSpec:
    """What the worker of ``shard`` runs: ``cfg`` resolved for it, its targets at ``hosts``
    (addresses known at run time: the embedded target's port is the kernel's choice)."""
    targets = tuple(
        TargetPlan(
            target_spec(tc, host, port, USER_AGENT),
            pool_settings(tc, *shard.pools[t]),
            (tc.pool_size, tc.effective_pool_min),
            weight,
        )
        for t, (tc, (host, port), weight) in enumerate(
            zip(target_configs(cfg), hosts, target_weights(cfg), strict=True)
        )
    )
    bounds = Bounds(
        shard.concurrency,
        0 if forever else shard.requests,
        0.0 if forever else float(cfg.duration_s),
        forever,
        rate=shard.rate,
        ramp=float(cfg.ramp_s),
        max_outstanding=cfg.max_outstanding,
        stride=shard.workers,
        phase=shard.index,
    )
    settings = LoopSettings(
        connect_timeout=cfg.connect_timeout_ms / 1000.0,
        read_timeout=cfg.read_timeout_ms / 1000.0,
        drain_timeout=cfg.drain_timeout_ms / 1000.0,
        retry_stale=cfg.retry_stale,
        injected_count_for_breaker=cfg.inject_counts_toward_breaker,
        max_header_bytes=cfg.max_header_bytes,
        success=status_table(parse_statuses(cfg.success_statuses)),
    )
    backoff = (cfg.backoff_base_ms / 1000.0, cfg.backoff_cap_ms / 1000.0)
    return WorkerSpec(shard.index, targets, bounds, settings, backoff, shard.seed)


def make_worker(
    cfg: Config, hosts: list[tuple[str, int]], shard: Shard, shared: SharedView
) -> Worker:
    """An in-process Worker for ``shard`` of ``cfg`` (tests and tools; the supervisor
    forks workers from :func:`worker_spec` instead)."""
    return build_worker(worker_spec(cfg, hosts, shard), shared)

"""From a validated Config to the pieces a worker runs: shards, settings, the Worker.

Pool size, kept-open minimum, concurrency and the request bound are split across
workers as evenly as integers allow (the first ``total % n`` workers get one more),
so their sums are exactly what was asked for.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poolsvc.breaker import BreakerSettings
from poolsvc.config import Config
from workers.admission import SharedView
from workers.backoff import Backoff
from workers.errors import ConfigError
from workers.load import Bounds
from workers.loop import LoopSettings, Worker
from workers.pool import Pool, PoolSettings
from workers.target import Target, TargetSpec

MAX_WORKERS = 64


def split(total: int, n: int) -> list[int]:
    """``total`` in ``n`` near-equal integer parts that sum to ``total``."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def worker_count(cfg: Config) -> int:
    """``cfg.workers`` or the default: one per CPU, at most one per connection/client."""
    if cfg.workers is not None:
        n = cfg.workers
        for key, value in (
            ("pool_size", cfg.pool_size),
            ("concurrency", cfg.effective_concurrency),
        ):
            if n > value:
                raise ConfigError(f"workers ({n}) exceeds {key} ({value}): each needs one")
        return n
    return max(1, min(os.cpu_count() or 1, cfg.pool_size, cfg.effective_concurrency, MAX_WORKERS))


@dataclass(frozen=True, slots=True)
class Shard:
    """One worker's share of the run."""

    index: int
    pool_size: int
    pool_min: int
    concurrency: int
    requests: int  # 0 = no count bound
    seed: int
    rate: float = 0.0  # open loop: this worker's share (0: closed loop)


def shards(cfg: Config, n: int, seed: int) -> list[Shard]:
    sizes = split(cfg.pool_size, n)
    mins = split(cfg.effective_pool_min, n)
    conc = split(cfg.effective_concurrency, n)
    reqs = split(cfg.requests, n) if cfg.requests else [0] * n
    rate = cfg.rate / n
    return [Shard(i, sizes[i], mins[i], conc[i], reqs[i], seed + i, rate) for i in range(n)]


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
    )


def pool_settings(cfg: Config, shard: Shard) -> PoolSettings:
    return PoolSettings(
        max_size=shard.pool_size,
        min_size=shard.pool_min,
        idle_timeout=cfg.idle_timeout_ms / 1000.0,
        max_age=cfg.max_age_ms / 1000.0,
        max_requests=cfg.max_requests_per_conn,
        validate_after=cfg.validate_after_ms / 1000.0,
        health_after=cfg.health_check_after_ms / 1000.0,
        exhaustion=cfg.exhaustion,
        wait_timeout=cfg.pool_wait_timeout_ms / 1000.0,
    )


def target_spec(cfg: Config, host: str, port: int) -> TargetSpec:
    return TargetSpec(
        host=host,
        port=port,
        method=cfg.method,
        path=cfg.path,
        headers=dict(cfg.headers or {}),
        body=cfg.body.encode(),
        keep_alive=cfg.keep_alive,
        health_method=cfg.health_check_method,
        health_path=cfg.health_check_path,
    )


def make_worker(
    cfg: Config,
    spec: TargetSpec,
    shard: Shard,
    shared: SharedView,
    watchdog: Callable[[Worker], None] | None = None,
    end_at: float = 0.0,
    forever: bool = False,
    report: Callable[[str, dict[str, Any]], None] | None = None,
) -> Worker:
    """The Worker for ``shard`` of ``cfg`` against ``spec``, writing through ``shared``."""
    rng = random.Random(shard.seed)
    backoff = Backoff(cfg.backoff_base_ms / 1000.0, cfg.backoff_cap_ms / 1000.0, rng)
    target = Target(0, spec, Pool(pool_settings(cfg, shard), backoff))
    duration = 0.0 if forever else float(cfg.duration_s)
    bounds = Bounds(
        shard.concurrency,
        0 if forever else shard.requests,
        duration,
        forever,
        rate=shard.rate,
        ramp=float(cfg.ramp_s),
        max_outstanding=cfg.max_outstanding,
    )
    settings = LoopSettings(
        connect_timeout=cfg.connect_timeout_ms / 1000.0,
        read_timeout=cfg.read_timeout_ms / 1000.0,
        drain_timeout=cfg.drain_timeout_ms / 1000.0,
        retry_stale=cfg.retry_stale,
        injected_count_for_breaker=cfg.inject_counts_toward_breaker,
    )
    return Worker(
        [target], bounds, settings, shared, rng, watchdog=watchdog, end_at=end_at, report=report
    )

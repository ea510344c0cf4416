"""From a validated Config to the run's plan, resolved once; from the plan, what each
worker runs.

:func:`resolve` turns the configuration and the targets' addresses into a
:class:`RunPlan`: each target's request and pool, the shards, the loop and
breaker settings, the faults. Everything downstream (the supervisor, the fleet,
each worker's :class:`~workers.loop.workerspec.WorkerSpec`) takes the plan and re-derives
nothing from the configuration.

Pool size, kept-open minimum, concurrency and the request bound are split across
workers as evenly as integers allow (the first ``total % n`` workers get one more),
so their sums are exactly what was asked for.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from poolsvc.config import sharding
from poolsvc.config.keys import Config
from poolsvc.config.loader import faults, parse_addr, target_configs, target_spec, target_weights
from poolsvc.config.sharding import ALONE, Instance, open_loop_share
from poolsvc.version import __version__
from workers.loop.loadshape import Bounds, split
from workers.loop.workerspec import LoopSettings, TargetPlan, WorkerSpec
from workers.net.httpwire import parse_statuses, status_table
from workers.pool.breaker import BreakerSettings
from workers.pool.shard import PoolSettings
from workers.pool.target import TargetSpec
from workers.shared.admission import SharedView
from workers.shared.errors import ConfigError
from workers.shared.injection import Fault
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
    workers: int = 1  # how many workers share the run (this one is `index`)
    stride: int = 1  # open loop: it fires the global arrivals i = phase (mod stride)
    phase: int = 0

    @property
    def pool_size(self) -> int:
        return sum(size for size, _ in self.pools)


def split_shards(
    pools: list[tuple[int, int]],
    concurrency: int,
    requests: int,
    rate: float,
    n: int,
    seed: int,
    inst: Instance = ALONE,
) -> list[Shard]:
    """``n`` shards of the whole: each target's pool (max, kept-open min), the
    concurrency and the request bound split as evenly as integers allow. Open loop,
    worker i of this instance (``inst``, see :mod:`poolsvc.config.sharding`) fires the global
    arrivals ``inst.index + inst.count * i (mod inst.count * n)``, and its request
    bound is the number of those below the global bound."""
    conc = split(concurrency, n)
    shares = [(split(size, n), split(minimum, n)) for size, minimum in pools]
    out = []
    for i in range(n):
        stride, phase = inst.count * n, inst.index + inst.count * i
        if rate:
            reqs = open_loop_share(requests, phase, stride)
        else:
            reqs = split(requests, n)[i] if requests else 0
        pool = tuple((s[i], m[i]) for s, m in shares)
        out.append(Shard(i, pool, conc[i], reqs, seed + i, rate, n, stride, phase))
    return out


def shards(cfg: Config, n: int, seed: int, inst: Instance = ALONE) -> list[Shard]:
    pools = [(tc.pool_size, tc.effective_pool_min) for tc in target_configs(cfg)]
    return split_shards(pools, concurrency(cfg), cfg.requests, cfg.rate, n, seed, inst)


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
        adaptive=cfg.pool_adaptive,
    )


@dataclass(frozen=True, slots=True)
class TargetSetup:
    """One target as the run resolved it."""

    name: str  # its label: the configured name, else host:port
    spec: TargetSpec  # what to send where
    pool: PoolSettings  # the whole pool (max_size, min_size: the totals over all workers)
    weight: int  # smooth weighted round-robin


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The run, resolved once from the configuration (see the module docstring)."""

    targets: tuple[TargetSetup, ...]
    shards: tuple[Shard, ...]  # one per worker
    seed: int
    forever: bool  # a service: no bound, runs until stopped
    concurrency: int  # in total
    rate: float  # open loop, in total (0: closed loop)
    requests: int  # the request bound (0: none)
    duration_s: float
    ramp_s: float
    warmup_s: float
    max_backlog: int
    settings: LoopSettings
    backoff: tuple[float, float, bool]  # reconnect backoff: base and cap (seconds), adaptive
    breaker: BreakerSettings
    faults: tuple[Fault, ...]  # in force from the start (inject_failures)
    drain_timeout_s: float
    audit_every_s: float
    audit_report: str | None
    metrics_addr: tuple[str, int] | None  # serve GET /metrics here (None: no endpoint)
    linger_s: float  # after a bounded run, keep the endpoint up this long
    instance: Instance = ALONE  # this instance's shard of the run (poolsvc.config.sharding)
    start_at: float = 0.0  # wall clock: when every shard's load starts (0: now)
    run_id: str = ""  # the whole run's digest, equal on every shard

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def pool_size(self) -> int:
        """Every target's pool, over all workers."""
        return sum(t.pool.max_size for t in self.targets)

    @property
    def tls_resume_ratio(self) -> float | None:
        """The resume ratio asked of the TLS targets (the first's); None without TLS."""
        ratios = [t.spec.tls.resume_ratio for t in self.targets if t.spec.tls is not None]
        return ratios[0] if ratios else None

    def reshard(self, n: int, concurrency: int, rate: float) -> list[Shard]:
        """The shards of ``n`` workers running ``concurrency`` and ``rate`` in total."""
        pools = [(t.pool.max_size, t.pool.min_size) for t in self.targets]
        return split_shards(pools, concurrency, self.requests, rate, n, self.seed, self.instance)

    def spec(self, shard: Shard, warm: bool = True) -> WorkerSpec:
        """What the worker of ``shard`` runs; ``warm`` False: no warm-up (a worker
        added or replaced once the measured period has begun joins it at once)."""
        targets = tuple(
            TargetPlan(
                t.spec,
                dataclasses.replace(t.pool, max_size=size, min_size=minimum),
                (t.pool.max_size, t.pool.min_size),
                t.weight,
            )
            for t, (size, minimum) in zip(self.targets, shard.pools, strict=True)
        )
        forever = self.forever
        bounds = Bounds(
            shard.concurrency,
            0 if forever else shard.requests,
            0.0 if forever else self.duration_s,
            forever,
            rate=shard.rate,
            ramp=self.ramp_s,
            warmup=self.warmup_s if warm else 0.0,
            max_backlog=self.max_backlog,
            stride=shard.stride,
            phase=shard.phase,
            start_wall=self.start_at,
            warmup_wall=self.warmup_s if self.start_at else 0.0,  # warmed or not: one anchor
            shard=self.instance.index,
            shards=self.instance.count,
        )
        return WorkerSpec(shard.index, targets, bounds, self.settings, self.backoff, shard.seed)


def resolve(
    cfg: Config,
    hosts: list[tuple[str, int]],
    seed: int,
    n: int | None = None,
    forever: bool = False,
    trust: str = "",
) -> RunPlan:
    """The plan of running ``cfg`` against the targets at ``hosts`` (addresses known at
    run time: the embedded target's port is the kernel's choice) with ``n`` workers
    (default: :func:`worker_count`); ``trust``: the PEM of a CA to trust besides
    ``cacert`` (the embedded target's throwaway one). Raises ConfigError."""
    inst = sharding.instance(cfg)
    whole = sharding.run_id(cfg, inst)
    cfg = sharding.instance_config(cfg, inst)  # from here on: this shard's share
    n = worker_count(cfg) if n is None else n
    names = target_names(cfg, hosts)
    targets = tuple(
        TargetSetup(
            name,
            target_spec(tc, host, port, USER_AGENT, trust),
            pool_settings(tc, tc.pool_size, tc.effective_pool_min),
            weight,
        )
        for tc, (host, port), weight, name in zip(
            target_configs(cfg), hosts, target_weights(cfg), names, strict=True
        )
    )
    return RunPlan(
        targets=targets,
        shards=tuple(shards(cfg, n, seed, inst)),
        seed=seed,
        forever=forever,
        concurrency=concurrency(cfg),
        rate=cfg.rate,
        requests=cfg.requests,
        duration_s=float(cfg.duration_s),
        ramp_s=float(cfg.ramp_s),
        warmup_s=float(cfg.warmup_s),
        max_backlog=cfg.max_backlog,
        settings=loop_settings(cfg),
        backoff=(cfg.backoff_base_ms / 1000.0, cfg.backoff_cap_ms / 1000.0, cfg.backoff_adaptive),
        breaker=breaker_settings(cfg),
        faults=tuple(faults(cfg, seed)),
        drain_timeout_s=cfg.drain_timeout_ms / 1000.0,
        audit_every_s=cfg.audit_every_s,
        audit_report=cfg.audit_report,
        metrics_addr=parse_addr(cfg.metrics_addr) if cfg.metrics_addr else None,
        linger_s=cfg.linger_s,
        instance=inst,
        start_at=sharding.start_at(cfg.start_at),
        run_id=whole,
    )


def loop_settings(cfg: Config) -> LoopSettings:
    return LoopSettings(
        connect_timeout=cfg.connect_timeout_ms / 1000.0,
        read_timeout=cfg.read_timeout_ms / 1000.0,
        drain_timeout=cfg.drain_timeout_ms / 1000.0,
        retry_stale=cfg.retry_stale,
        injected_count_for_breaker=cfg.inject_counts_toward_breaker,
        max_header_bytes=cfg.max_header_bytes,
        busy_poll=cfg.busy_poll_us / 1e6,
        success=status_table(parse_statuses(cfg.success_statuses)),
    )


def make_worker(cfg: Config, host: str, port: int, seed: int, shared: SharedView) -> Worker:
    """An in-process Worker running all of ``cfg`` against ``host:port`` (tests and
    tools; the supervisor forks workers from :meth:`RunPlan.spec` instead)."""
    run = resolve(cfg, [(host, port)], seed, n=1)
    return build_worker(run.spec(run.shards[0]), shared)

"""``poolsvc run``: one bounded run of load against one target, then the report.

Steps: start the embedded target if no host was given; a pre-flight connect by
the same non-blocking path the workers use (an unreachable target exits 4 within
about the connect timeout instead of failing every request for the whole run);
then the worker loop, bounded by duration and/or request count; then the report.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from poolsvc.config import Config
from poolsvc.report import RunInfo, as_json, text
from workers import stats
from workers.backoff import Backoff
from workers.connection import DEADLINE, connect_blocking
from workers.errors import errno_name
from workers.load import Bounds
from workers.loop import LoopSettings, Worker
from workers.pool import Pool, PoolSettings
from workers.target import Target, TargetSpec, resolve

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 4


class Unreachable(Exception):
    """The target cannot be reached at all (exit 4)."""


def pool_settings(cfg: Config) -> PoolSettings:
    return PoolSettings(
        max_size=cfg.pool_size,
        min_size=cfg.effective_pool_min,
        idle_timeout=cfg.idle_timeout_ms / 1000.0,
        max_age=cfg.max_age_ms / 1000.0,
        max_requests=cfg.max_requests_per_conn,
        validate_after=cfg.validate_after_ms / 1000.0,
        health_after=cfg.health_check_after_ms / 1000.0,
        exhaustion=cfg.exhaustion,
        wait_timeout=cfg.pool_wait_timeout_ms / 1000.0,
    )


def make_worker(cfg: Config, host: str, port: int, slot: memoryview, seed: int) -> Worker:
    """A worker for ``cfg`` against host:port, writing into ``slot``."""
    rng = random.Random(seed)
    spec = TargetSpec(
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
    backoff = Backoff(cfg.backoff_base_ms / 1000.0, cfg.backoff_cap_ms / 1000.0, rng)
    target = Target(0, spec, Pool(pool_settings(cfg), backoff))
    bounds = Bounds(cfg.effective_concurrency, cfg.requests, float(cfg.duration_s))
    settings = LoopSettings(
        connect_timeout=cfg.connect_timeout_ms / 1000.0,
        read_timeout=cfg.read_timeout_ms / 1000.0,
        drain_timeout=cfg.drain_timeout_ms / 1000.0,
        retry_stale=cfg.retry_stale,
    )
    return Worker([target], bounds, settings, slot, rng)


def preflight(host: str, port: int, timeout_s: float) -> None:
    """Raise :class:`Unreachable` unless one TCP connect to host:port succeeds in time."""
    try:
        family, addr = resolve(host, port)
    except OSError as exc:
        raise Unreachable(f"cannot resolve {host}: {exc.strerror or exc}") from None
    err, sock = connect_blocking(family, addr, timeout_s)
    if sock is not None:
        sock.close()
        return
    why = "connect_timeout" if err == DEADLINE else errno_name(err)
    raise Unreachable(f"cannot connect to {host}:{port}: {why}")


@contextlib.contextmanager
def _stop_on_signals(worker: Worker) -> Iterator[None]:
    """First SIGINT/SIGTERM: record it (the loop drains); a second SIGINT interrupts."""

    def handler(signum: int, frame: Any) -> None:
        worker.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(
    cfg: Config, out: TextIO = sys.stdout, err: TextIO = sys.stderr, as_json_doc: bool = False
) -> int:
    """Run ``cfg`` and print the report; returns the process exit code."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**32)
    with contextlib.ExitStack() as stack:
        embedded = cfg.host is None
        if embedded:
            from tools.target import TargetServer  # the dev/test server, only when asked for

            server = stack.enter_context(TargetServer())
            host, port = server.host, server.port
        else:
            assert cfg.host is not None  # config validation: host and port go together
            assert cfg.port is not None
            host, port = cfg.host, cfg.port
        try:
            preflight(host, port, cfg.connect_timeout_ms / 1000.0)
        except Unreachable as exc:
            print(f"poolsvc: {exc}", file=err)
            return EXIT_UNREACHABLE
        slot = stats.new_slot()
        stats.init_slot(slot, os.getpid())
        worker = make_worker(cfg, host, port, slot, seed)
        with _stop_on_signals(worker):
            worker.run()
        elapsed = worker.finished_at - worker.started_at if worker.finished_at else 0.0
    snap = stats.Snapshot.of([slot])
    name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    info = RunInfo(name, embedded, cfg.effective_concurrency, cfg.pool_size, elapsed, seed)
    out.write(as_json(snap, info).decode() if as_json_doc else text(snap, info))
    out.flush()
    return EXIT_OK

"""Exact shards of one run across machines: no coordinator, each instance its own share.

Instance ``K`` of ``N`` (``--shard K/N``, or ``JOB_COMPLETION_INDEX`` with
``--shards N`` in a Kubernetes Indexed Job) runs its exact share of the one-machine
run, computed from K and N alone:

- **Open loop**: the global arrival sequence is the one-machine schedule at the
  whole rate (ramp included); instance K fires arrivals ``i = K (mod N)``, and its
  worker ``w`` of ``W`` fires ``i = K + N*w (mod N*W)``. The union over instances is
  exactly the one-machine schedule, interleaved, never bursty; a request bound is
  the global one, each worker taking the arrivals below it that are its own.
- **Closed loop**: concurrency, pools and the request bound are split with the
  remainders spread over the first instances (as across workers).
- **``--start-at``** (RFC 3339 or epoch seconds, wall clock): every instance anchors
  its schedule at that instant; the report shows how late each one was ready.

The ``run_id`` is a digest of everything that defines the whole run (not K), so
``poolsvc merge`` can refuse results that are not shards of one run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import os
from collections.abc import Mapping
from typing import Any, Final

import orjson

from poolsvc.config.keys import Config
from workers.loop.loadshape import split
from workers.shared.errors import ConfigError

ENV_INDEX: Final = "JOB_COMPLETION_INDEX"
MAX_SHARDS: Final = 100_000
#: what defines the whole run (a shard's index does not)
_RUN_KEYS: Final = (
    "url", "host", "port", "path", "method", "headers", "body", "targets", "rate", "ramp_s",
    "duration_s", "requests", "concurrency", "pool_size", "tls", "start_at",
)  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Instance:
    """This instance's place in the run: ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    @property
    def sharded(self) -> bool:
        return self.count > 1


ALONE: Final = Instance()  # an unsharded run: the whole of it


def instance(cfg: Config, env: Mapping[str, str] | None = None) -> Instance:
    """From ``--shard K/N``, or ``--shards N`` with ``$JOB_COMPLETION_INDEX``."""
    env = os.environ if env is None else env
    if cfg.shard:
        k_text, sep, n_text = cfg.shard.partition("/")
        if not sep or not k_text.isdigit() or not n_text.isdigit():
            raise ConfigError(f"shard must be K/N (e.g. 0/3), got {cfg.shard!r}")
        k, n = int(k_text), int(n_text)
        if cfg.shards is not None and cfg.shards != n:
            raise ConfigError(f"shard {cfg.shard} disagrees with shards {cfg.shards}")
    elif cfg.shards is not None:
        n = cfg.shards
        text = env.get(ENV_INDEX, "")
        if not text.isdigit():
            raise ConfigError(f"shards needs ${ENV_INDEX} (a Kubernetes Indexed Job) or --shard")
        k = int(text)
    else:
        return Instance()
    if not 1 <= n <= MAX_SHARDS or not 0 <= k < n:
        raise ConfigError(f"shard: index {k} must be in [0, {n}) and 1 <= N <= {MAX_SHARDS}")
    return Instance(k, n)


def start_at(text: str | None) -> float:
    """``--start-at`` as epoch seconds (0.0: none): RFC 3339 (with its offset) or a number."""
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = _rfc3339(text)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"start_at must be a time, got {text!r}")
    return value


def _rfc3339(text: str) -> float:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"start_at must be RFC 3339 (2026-11-30T10:00:00Z) or epoch seconds, got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"start_at {text!r} needs a UTC offset (Z or +01:00)")
    return when.timestamp()


def instance_config(cfg: Config, inst: Instance) -> Config:
    """``cfg`` as instance ``inst`` runs it: concurrency and pools (and, closed loop, the
    request bound) are its share; the rate stays the whole run's (the schedule is
    shared, see the module docstring)."""
    if not inst.sharded:
        return cfg
    k, n = inst.index, inst.count

    def share(total: int, key: str) -> int:
        part = split(total, n)[k]
        if part < 1:
            raise ConfigError(f"{key} ({total}) is smaller than the shards ({n}): each needs one")
        return part

    changes: dict[str, Any] = {"pool_size": share(cfg.pool_size, "pool_size")}
    if cfg.concurrency is not None:
        changes["concurrency"] = share(cfg.concurrency, "concurrency")
    if cfg.pool_min is not None:
        changes["pool_min"] = split(cfg.pool_min, n)[k]
    if cfg.targets is not None:
        changes["targets"] = [
            {**t, "pool_size": share(int(t["pool_size"]), "pool_size")} if "pool_size" in t else t
            for t in cfg.targets
        ]
    if cfg.requests and not cfg.rate:
        changes["requests"] = share(cfg.requests, "requests")
    return dataclasses.replace(cfg, **changes)


def open_loop_share(requests: int, phase: int, stride: int) -> int:
    """How many of the global arrivals ``i < requests`` are ``phase (mod stride)``."""
    return max(0, -(-(requests - phase) // stride)) if requests else 0


def run_id(cfg: Config, inst: Instance) -> str:
    """A digest of the whole run (not of this shard): equal on every instance of it."""
    doc = {key: getattr(cfg, key) for key in _RUN_KEYS}
    doc["shards"] = inst.count
    raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(raw).hexdigest()[:16]

"""The run report: human lines, a key=value metrics block, or one JSON document.

The metric names are a stable interface (scripts grep them); add, never rename.
All three forms are rendered from one :func:`metrics` dict so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from workers.stats import EVICT_REASONS, Snapshot


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What was run, for the report header."""

    target: str
    embedded: bool
    concurrency: int
    pool_size: int
    elapsed_s: float
    seed: int
    workers: int = 1
    rate: float = 0.0  # open loop: the asked total rate
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    per_target: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def _ms(us: int) -> float:
    return round(us / 1000.0, 3)


def metrics(snap: Snapshot, info: RunInfo) -> dict[str, Any]:
    """Flat metric name -> value; ``errors.<NAME>`` only for classes seen."""
    c, g = snap.counters, snap.gauges
    lat = snap.latency()
    ok = c["requests.ok"]
    out: dict[str, Any] = {
        "run.elapsed_s": round(info.elapsed_s, 3),
        "run.seed": info.seed,
        "run.model": "open" if info.rate else "closed",
        "run.rate_target": info.rate,
        "run.rps": round(c["requests.total"] / info.elapsed_s, 1) if info.elapsed_s else 0.0,
    }
    for name in (
        "requests.total",
        "requests.ok",
        "requests.failed",
        "requests.sent",
        "requests.cancelled",
        "requests.late",
        "requests.dropped",
        "retries.stale_reuse",
        "responses.1xx",
        "responses.2xx",
        "responses.3xx",
        "responses.4xx",
        "responses.5xx",
        "connections.created",
        "connections.attempted",
        "connections.reused",
    ):
        out[name] = c[name]
    out["connections.evicted"] = sum(c[f"connections.evicted.{r}"] for r in EVICT_REASONS)
    for reason in EVICT_REASONS:
        out[f"connections.evicted.{reason}"] = c[f"connections.evicted.{reason}"]
    out["connections.health_checks"] = c["connections.health_checks"]
    out["connections.active"] = g["connections.active"]
    out["connections.idle"] = g["connections.idle"]
    out["connections.connecting"] = g["connections.connecting"]
    out["pool.waiting"] = g["pool.waiting"]
    out["bytes.in"] = c["bytes.in"]
    out["bytes.out"] = c["bytes.out"]
    for key, value in lat.items():
        out[f"latency.{key.replace('.', '_')}_ms"] = _ms(value)
    out["latency.mean_ms"] = _ms(c["latency.sum_us"] // ok) if ok else 0.0
    raw = snap.latency_uncorrected()
    for key, value in (raw or {}).items():
        out[f"latency_uncorrected.{key.replace('.', '_')}_ms"] = _ms(value)
    for name, value in snap.errors().items():
        out[f"errors.{name}"] = value
    for key, value in c.items():
        if key.startswith(("errors.phase.", "injected.")) and value:
            out[key] = value
    return out


def recovered(snap: Snapshot) -> bool | None:
    """None: nothing failed; True: a good response came after the last failure."""
    if not snap.counters["requests.failed"] and not snap.errors():
        return None
    return snap.gauges["time.last_ok_us"] > snap.gauges["time.last_fail_us"]


def _fmt_ms(us: int) -> str:
    ms = us / 1000.0
    return f"{ms:.0f}ms" if ms >= 100 else f"{ms:.3g}ms"


def text(snap: Snapshot, info: RunInfo) -> str:
    """The human report followed by the key=value metrics block."""
    c, g = snap.counters, snap.gauges
    lat = snap.latency()
    where = f"{info.target} (embedded target)" if info.embedded else info.target
    lines = [
        f"[pool] target {where}, workers={info.workers}, concurrency={info.concurrency}, "
        f"pool size={info.pool_size}",
        f"[pool] created {c['connections.created']} connections",
        f"[pool] {c['requests.total']} requests in {info.elapsed_s:.2f}s "
        f"({c['requests.total'] / info.elapsed_s if info.elapsed_s else 0:.1f} req/s)",
        f"[pool] request latency p50={_fmt_ms(lat['p50'])} p95={_fmt_ms(lat['p95'])} "
        f"p99={_fmt_ms(lat['p99'])} max={_fmt_ms(lat['max'])}"
        + (" (from intended send times)" if info.rate else ""),
    ]
    raw = snap.latency_uncorrected()
    if raw is not None:
        lines.append(
            f"[pool] uncorrected latency p50={_fmt_ms(raw['p50'])} p99={_fmt_ms(raw['p99'])} "
            f"max={_fmt_ms(raw['max'])} (from the actual send: hides queueing)"
        )
    if info.rate:
        lines.append(
            f"[pool] open loop at {info.rate:g}/s: late={c['requests.late']} "
            f"dropped={c['requests.dropped']}"
        )
    errors = snap.errors()
    failures = " ".join(f"{k}={v}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))
    lines.append(f"[pool] failures: {failures or 'none'}")
    if len(info.per_target) > 1:
        for t in info.per_target:
            lines.append(
                f"[pool] target {t['target']}: ok={t['ok']} failed={t['failed']} "
                f"refused={t['refused']} breaker={t['breaker']}"
            )
    restarts = sum(w["restarts"] for w in info.per_worker)
    if restarts:
        lines.append(f"[pool] worker restarts: {restarts}")
    injected = " ".join(f"{k[9:]}={v}" for k, v in c.items() if k.startswith("injected.") and v)
    if injected:
        lines.append(f"[pool] injected: {injected}")
    if c["retries.stale_reuse"]:
        lines.append(f"[pool] stale connections re-sent once: {c['retries.stale_reuse']}")
    size = g["connections.active"] + g["connections.idle"] + g["connections.connecting"]
    state = recovered(snap)
    if state is True:
        lines.append(f"[pool] recovered, pool size={size}")
    elif state is False:
        lines.append(f"[pool] not recovered: the last request failed, pool size={size}")
    lines.append("")
    lines.extend(f"{k}={v}" for k, v in metrics(snap, info).items())
    return "\n".join(lines) + "\n"


def as_json(
    snap: Snapshot, info: RunInfo, audit_final: list[dict[str, Any]] | None = None
) -> bytes:
    """One JSON document with the same figures as :func:`text`."""
    doc = {
        "target": info.target,
        "embedded_target": info.embedded,
        "concurrency": info.concurrency,
        "pool_size": info.pool_size,
        "workers": info.workers,
        "recovered": recovered(snap),
        "metrics": metrics(snap, info),
        "per_worker": info.per_worker,
        "per_target": info.per_target,
        "events": info.events,
        "audit": audit_final or [],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"

"""The run report: human lines, a key=value metrics block, or one JSON document.

The metric names are a stable interface (scripts grep them); add, never rename.
All three forms are rendered from one :func:`metrics` dict so they cannot disagree.
The ledger's identities (:mod:`poolsvc.metrics.ledger`) hold in every form:
``requests.sent = ok + failed + lost + abandoned``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from poolsvc.metrics.capacity import Verdict, judge
from poolsvc.metrics.ledger import unbalanced
from workers.shared.slotstats import EVICT_REASONS, STATUS_CLASSES, Snapshot

_REQUESTS = ("total", "sent", "ok", "failed", "unsent", "lost", "abandoned", "in_doubt")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What was run, for the report header; times as the supervisor measured them."""

    target: str
    embedded: bool
    concurrency: int
    pool_size: int
    elapsed_s: float  # the run's wall time: from the start of the load to the end
    seed: int
    workers: int = 1
    rate: float = 0.0  # open loop: the asked total rate
    per_worker: list[dict[str, Any]] = field(default_factory=list)
    per_target: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    load_s: float = 0.0  # the load period: from its start until issuing stopped
    drain_s: float = 0.0  # from then until the last worker finished
    breaker: bool = True  # False: --no-breaker
    tls_resume_ratio: float | None = None  # asked of TLS targets (None: no TLS target)
    started_at: float = 0.0  # wall clock (epoch seconds) when the service started
    shard: dict[str, Any] = field(default_factory=dict)  # index, count, run_id, start skew
    warmup: dict[str, Any] | None = None  # --warmup: its figures (warmup_metrics), apart
    path: str = (
        ""  # the workers' request path: "accelerated" or "pure (why)" (workers.lane.fastpath)
    )


def capacity_of(snap: Snapshot, info: RunInfo) -> Verdict:
    """Who was the limit of this open-loop run (:mod:`poolsvc.metrics.capacity`)."""
    c = snap.counters
    due = c["requests.total"] + c["requests.dropped"]
    busy = snap.gauges["load.busy_us"] / 1e6
    return judge(due, c["requests.sent"], c["requests.late"], busy, info.workers, info.load_s)


def _ms(us: int) -> float:
    return round(us / 1000.0, 3)


def non_success_class(statuses: dict[int, int]) -> int:
    """Responses outside 2xx/3xx (wrk's "Non-2xx or 3xx responses")."""
    return sum(n for code, n in statuses.items() if not 200 <= code < 400)


def metrics(snap: Snapshot, info: RunInfo) -> dict[str, Any]:
    """Flat metric name -> value; named failures and status codes only where seen."""
    c, g = snap.counters, snap.gauges
    lat = snap.latency()
    answered = sum(snap.statuses.values())
    out: dict[str, Any] = {
        "run.elapsed_s": round(info.elapsed_s, 3),
        "run.load_s": round(info.load_s, 3),
        "run.drain_s": round(info.drain_s, 3),
        "run.seed": info.seed,
        "run.model": "open" if info.rate else "closed",
        "run.path": info.path,
        "run.rate_target": info.rate,
        # requests that reached the target, per second of load
        "run.rps": round(c["requests.sent"] / info.load_s, 1) if info.load_s else 0.0,
    }
    for name in _REQUESTS:
        out[f"requests.{name}"] = c[f"requests.{name}"]
    for name in ("cancelled", "late", "dropped"):
        out[f"requests.{name}"] = c[f"requests.{name}"]
    if info.rate:  # who was the limit (poolsvc.metrics.capacity)
        verdict = capacity_of(snap, info)
        out["send_lag.max_ms"] = _ms(c["send_lag.max_us"])
        out["run.sent_share"] = round(verdict.sent_share, 4)
        out["run.busy"] = round(verdict.busy, 3)
        out["run.limit"] = verdict.limit or "none"
    out["retries.stale_reuse"] = c["retries.stale_reuse"]
    for cls in STATUS_CLASSES:
        out[f"responses.{cls}"] = c[f"responses.{cls}"]
    out["responses.non_2xx_3xx"] = non_success_class(snap.statuses)
    out["responses.interim"] = c["responses.interim"]
    for code in sorted(snap.statuses):
        out[f"responses.{code}"] = snap.statuses[code]
    for name in ("created", "attempted", "reused"):
        out[f"connections.{name}"] = c[f"connections.{name}"]
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
    out["latency.mean_ms"] = _ms(c["latency.sum_us"] // answered) if answered else 0.0
    raw = snap.latency_uncorrected()
    for key, value in (raw or {}).items():
        out[f"latency_uncorrected.{key.replace('.', '_')}_ms"] = _ms(value)
    out.update(timing_metrics(snap, info))
    for prefix, named in (
        ("errors", snap.errors()),
        ("failed", snap.failures()),
        ("unsent", snap.unsent()),
        ("connect_errors", snap.connect_errors()),
    ):
        for name, value in named.items():
            out[f"{prefix}.{name}"] = value
    for key, value in c.items():
        if key.startswith(("errors.phase.", "injected.")) and value:
            out[key] = value
    for t in info.per_target if len(info.per_target) == 1 else ():
        out["breaker.refused"] = t["refused"]
        out["breaker.opened"] = t["breaker_trips"]
    out.update(info.warmup or {})
    return out


#: The warm-up's figures (``--warmup``), reported apart from every measured one:
#: counts that sum across workers and shards, and the one maximum.
WARMUP_COUNTS: Final = (
    *(f"requests.{k}" for k in ("sent", "ok", "failed", "unsent", "abandoned", "lost")),
    "requests.in_doubt",  # of the lost: the target's count is within [sent - in doubt, sent]
    "connections.created",
)


def warmup_metrics(w: Snapshot, seconds: float) -> dict[str, Any]:
    """``warmup.*``: how long it was asked to last, what it sent and how that ended,
    the connections it opened, its slowest response."""
    out: dict[str, Any] = {"warmup.s": seconds}
    for name in WARMUP_COUNTS:
        out[f"warmup.{name}"] = w.counters[name]
    out["warmup.latency.max_ms"] = _ms(w.counters["latency.max_us"])
    return out


def _warmup_line(w: dict[str, Any]) -> str:
    c = {k[7:]: v for k, v in w.items()}  # without "warmup."
    return (
        f"[pool] warm-up {c['s']:g}s before: {c['requests.sent']} requests sent (ok "
        f"{c['requests.ok']} + failed {c['requests.failed']} + lost {c['requests.lost']} + "
        f"abandoned {c['requests.abandoned']}), {c['connections.created']} connections opened,"
        f" max {c['latency.max_ms']:g}ms; in none of the figures below"
    )


def timing_metrics(snap: Snapshot, info: RunInfo) -> dict[str, Any]:
    """The connect time, and with TLS the handshakes: full and resumed apart."""
    c = snap.counters
    out: dict[str, Any] = {}
    names = {"connect": "connect", "failure_time": "failure_time"}
    if info.tls_resume_ratio is not None:
        names |= {"tls_full": "tls.full", "tls_resumed": "tls.resumed"}
    for name, shown in names.items():
        summary = snap.timing(name)
        for key in ("p50", "p90", "p99", "max"):
            out[f"{shown}.{key}_ms"] = _ms(summary[key]) if summary else 0.0
    if info.tls_resume_ratio is not None:
        full, resumed = c["tls.handshakes.full"], c["tls.handshakes.resumed"]
        out["tls.handshakes.full"] = full
        out["tls.handshakes.resumed"] = resumed
        out["tls.sessions.offered"] = c["tls.sessions.offered"]
        out["tls.resumed_fraction"] = (
            round(resumed / (full + resumed), 4) if full + resumed else 0.0
        )
        out["tls.resume_ratio_asked"] = info.tls_resume_ratio
    return out


def _timing_lines(snap: Snapshot, info: RunInfo) -> list[str]:
    c = snap.counters
    lines = []
    connect = snap.timing("connect")
    if connect is not None:
        lines.append(
            f"[pool] connect time p50={_fmt_ms(connect['p50'])} p99={_fmt_ms(connect['p99'])} "
            f"max={_fmt_ms(connect['max'])} (TCP, {c['connections.created']} connections)"
        )
    failing = snap.timing("failure_time")
    if failing is not None:
        lines.append(
            f"[errors] time to fail p50={_fmt_ms(failing['p50'])} "
            f"p99={_fmt_ms(failing['p99'])} max={_fmt_ms(failing['max'])} "
            "(from when each failed request was due)"
        )
    if info.tls_resume_ratio is None:
        return lines
    parts = []
    for kind in ("full", "resumed"):
        n, t = c[f"tls.handshakes.{kind}"], snap.timing(f"tls_{kind}")
        parts.append(
            f"{n} {kind}"
            + (f" p50={_fmt_ms(t['p50'])} p99={_fmt_ms(t['p99'])}" if t is not None else "")
        )
    total = c["tls.handshakes.full"] + c["tls.handshakes.resumed"]
    share = c["tls.handshakes.resumed"] / total if total else 0.0
    lines.append(
        f"[pool] TLS handshakes: {'; '.join(parts)}; resumed {share:.1%} "
        f"(asked {info.tls_resume_ratio:.0%}, {c['tls.sessions.offered']} sessions offered)"
    )
    return lines


def recovered(snap: Snapshot) -> bool | None:
    """None: nothing failed; True: a good response came after the last failure."""
    c = snap.counters
    if not (c["requests.failed"] or c["requests.unsent"] or snap.connect_errors()):
        return None
    return snap.gauges["time.last_ok_us"] > snap.gauges["time.last_fail_us"]


def _fmt_ms(us: int) -> str:
    ms = us / 1000.0
    return f"{ms:.0f}ms" if ms >= 100 else f"{ms:.3g}ms"


def _named(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def breaker_line(info: RunInfo, target: dict[str, Any] | None) -> str:
    """How many requests the breaker refused, and why it opened: one line."""
    if not info.breaker:
        return "breaker: off (--no-breaker)"
    if target is None or not target["breaker_trips"]:
        return "breaker: never opened"
    trips, first, last = (
        target["breaker_trips"],
        target["breaker_first_because"],
        target["breaker_because"],
    )
    why = f"({first})" if trips == 1 else f"(first: {first}; last: {last})"
    return f"breaker: refused {target['refused']} requests; opened {trips} times {why}"


def _outcome_lines(snap: Snapshot, info: RunInfo) -> list[str]:
    c = snap.counters
    rps = c["requests.sent"] / info.load_s if info.load_s else 0.0
    lines = [
        f"[pool] {c['requests.sent']} requests sent in {info.load_s:.2f}s of load "
        f"({rps:.1f} req/s), then {info.drain_s:.2f}s of drain",
        f"[pool] sent = ok {c['requests.ok']} + failed {c['requests.failed']} + lost "
        f"{c['requests.lost']} + abandoned {c['requests.abandoned']}"
        + (f"  ({unbalanced(c)}!)" if unbalanced(c) else ""),
    ]
    codes = " ".join(f"{code}={n}" for code, n in sorted(snap.statuses.items()))
    odd = non_success_class(snap.statuses)
    lines.append(
        f"[pool] responses: {codes or 'none'}"
        + (f"; non-2xx/3xx responses: {odd}" if odd else "")
        + (f"; interim 1xx skipped: {c['responses.interim']}" if c["responses.interim"] else "")
    )
    return lines


def _shard_lines(info: RunInfo) -> list[str]:
    shard = info.shard
    if not shard or (shard["count"] == 1 and not shard["start_at"]):
        return []
    skew = shard["start_skew_ms"]
    if shard["index"] is None:  # a merge: every shard's
        shown = ", ".join("-" if s is None else f"{s:+.1f}" for s in skew or [])
        return [
            f"[shard] {shard['count']} shards of run {shard['run_id']} merged; each ready after"
            f" --start-at by (ms): {shown}"
        ]
    line = f"[shard] {shard['index']} of {shard['count']} of run {shard['run_id']}"
    if shard["start_at"]:
        line += f", started at {shard['start_at']:.3f}" + (
            f" (ready {skew:+.1f} ms after it)" if skew is not None else ""
        )
    return [line]


def text(snap: Snapshot, info: RunInfo) -> str:
    """The human report followed by the key=value metrics block."""
    c, g = snap.counters, snap.gauges
    lat = snap.latency()
    where = f"{info.target} (embedded target)" if info.embedded else info.target
    lines = [
        f"[pool] target {where}, workers={info.workers}, concurrency={info.concurrency}, "
        f"pool size={info.pool_size}" + (f", path={info.path}" if info.path else ""),
        *([_warmup_line(info.warmup)] if info.warmup else []),
        f"[pool] created {c['connections.created']} connections",
        *_outcome_lines(snap, info),
        f"[pool] request latency p50={_fmt_ms(lat['p50'])} p95={_fmt_ms(lat['p95'])} "
        f"p99={_fmt_ms(lat['p99'])} max={_fmt_ms(lat['max'])}"
        + (" (from intended send times)" if info.rate else ""),
    ]
    lines.extend(_timing_lines(snap, info))
    lines.extend(_shard_lines(info))
    raw = snap.latency_uncorrected()
    if raw is not None:
        lines.append(
            f"[pool] uncorrected latency p50={_fmt_ms(raw['p50'])} p99={_fmt_ms(raw['p99'])} "
            f"max={_fmt_ms(raw['max'])} (from the actual send: hides queueing)"
        )
    if info.rate:
        verdict = capacity_of(snap, info)
        lag = f", worst lag {_fmt_ms(c['send_lag.max_us'])}" if c["requests.late"] else ""
        lines.append(
            f"[pool] open loop at {info.rate:g}/s: late={c['requests.late']}{lag} "
            f"dropped={c['requests.dropped']}"
        )
        if verdict.limit:
            lines.append(verdict.line())
    lines.append(f"[pool] failures: {_named(snap.failures()) or 'none'}")
    if c["requests.unsent"]:
        lines.append(
            f"[pool] not sent: {_named(snap.unsent())} (never reached the target; not in req/s)"
        )
    if snap.connect_errors():
        lines.append(
            f"[pool] connection errors: {_named(snap.connect_errors())} "
            "(connects that carried no request)"
        )
    if c["requests.lost"]:
        lines.append(f"[pool] lost: {c['requests.lost']} (in flight in workers that died)")
    if c["requests.abandoned"]:
        lines.append(
            f"[pool] abandoned: {c['requests.abandoned']} (unanswered at the drain deadline)"
        )
    if c["requests.in_doubt"]:
        lines.append(
            f"[pool] in doubt: {c['requests.in_doubt']} of the lost (a worker died while "
            "sending them: counted sent, though the target may lack them)"
        )
    if len(info.per_target) > 1:
        for t in info.per_target:
            lines.append(
                f"[pool] target {t['target']}: ok={t['ok']} failed={t['failed']} "
                f"unsent={t['unsent']}; {breaker_line(info, t)}"
            )
    else:
        lines.append(
            f"[pool] {breaker_line(info, info.per_target[0] if info.per_target else None)}"
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

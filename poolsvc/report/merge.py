"""``poolsvc merge``: the shards of one run, merged without loss.

Each shard's JSON result carries its counters and every histogram whole; merging
adds counts (exact), takes the maxima, and computes percentiles from the merged
histograms, never from the shards' percentiles. The timelines are aligned on the
wall clock (each shard's rows re-binned into common one-second bins, counts and
histograms added). Results of different runs (another ``run_id``), a shard given
twice, or one missing are refused, naming which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from poolsvc.metrics.recording import SEVERITY, dense, percentile_ms
from poolsvc.report.render import WARMUP_COUNTS, RunInfo, metrics, recovered
from poolsvc.report.result import FORMAT, buckets, histograms
from workers.shared import histogram
from workers.shared.errors import ConfigError
from workers.shared.slotstats import TIMINGS, Snapshot

BIN_S: Final = 1.0
_MAXED: Final = {  # result histogram -> the counter holding its exact maximum (and sum)
    "latency": ("latency.max_us", "latency.sum_us"),
    "latency_uncorrected": ("latency_uncorrected.max_us", ""),
    **{name: (top, total) for name, (_, top, total) in TIMINGS.items()},
}


def check(docs: Sequence[tuple[str, dict[str, Any]]]) -> int:
    """The shard count, if ``docs`` are every shard of one run exactly once."""
    first_path, first = docs[0]
    run, count = first.get("shard", {}).get("run_id"), first.get("shard", {}).get("count")
    if not run or not isinstance(count, int):
        raise ConfigError(f"{first_path} has no shard record: not a result poolsvc can merge")
    seen: dict[int, str] = {}
    for path, doc in docs:
        shard = doc.get("shard") or {}
        if shard.get("run_id") != run or shard.get("count") != count:
            raise ConfigError(
                f"{path} is not a shard of the run of {first_path} "
                f"(run {shard.get('run_id')} of {shard.get('count')} shards, "
                f"not {run} of {count}): different runs cannot be merged"
            )
        k = int(shard.get("index") or 0)
        if k in seen:
            raise ConfigError(f"shard {k}/{count} given twice: {seen[k]} and {path}")
        seen[k] = path
    missing = [k for k in range(int(count)) if k not in seen]
    if missing:
        names = ", ".join(f"{k}/{count}" for k in missing)
        raise ConfigError(f"missing shard{'s' if len(missing) > 1 else ''} {names}")
    return int(count)


def snapshot_of(doc: dict[str, Any]) -> Snapshot:
    """A result's figures back as a Snapshot (its counters, statuses and histograms)."""
    snap = Snapshot()
    m, c = doc["metrics"], snap.counters
    for key in c:
        if isinstance(m.get(key), int) and not isinstance(m.get(key), bool):
            c[key] = m[key]
    for key, value in m.items():
        code = key.removeprefix("responses.")
        if code.isdigit():
            snap.statuses[int(code)] = value
    for key in ("connections.active", "connections.idle", "connections.connecting"):
        snap.gauges[key] = m.get(key, 0)
    snap.gauges["pool.waiting"] = m.get("pool.waiting", 0)
    for name, (top, total) in _MAXED.items():
        h = doc["histograms"].get(name)
        if h is None:
            continue
        counts = snap.hist if name == "latency" else snap.hist2
        if name in TIMINGS:
            counts = snap.timings[name]
        for low, _high, n in h["buckets"]:
            counts[histogram.bucket_of(low)] += n
        c[top] = h["max"]
        if total:
            c[total] = h.get("sum", 0)
    return snap


def add(total: Snapshot, part: Snapshot) -> None:
    for key, value in part.counters.items():
        total.counters[key] = (
            max(total.counters[key], value)
            if key.endswith(".max_us")
            else total.counters[key] + value
        )
    for code, n in part.statuses.items():
        total.statuses[code] = total.statuses.get(code, 0) + n
    for key, value in part.gauges.items():
        total.gauges[key] += value
    histogram.merge_into(total.hist, part.hist)
    histogram.merge_into(total.hist2, part.hist2)
    for name in TIMINGS:
        histogram.merge_into(total.timings[name], part.timings[name])


def merged_targets(docs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Snapshot]]:
    """Per target (by name): outcomes, failures by name and latency, summed."""
    rows: dict[str, dict[str, Any]] = {}
    owns: dict[str, Snapshot] = {}
    for doc in docs:
        for t in doc["per_target"]:
            empty = {"target": t["target"], "ok": 0, "failed": 0, "unsent": 0, "refused": 0}
            row = rows.setdefault(
                t["target"],
                {**empty, "local_failures": 0, "errors": {}, "breaker_trips": 0,
                 "breaker": "CLOSED", "breaker_because": None, "breaker_first_because": None},
            )  # fmt: skip
            row["local_failures"] += t.get("local_failures", 0)
            row["breaker_trips"] += t.get("breaker_trips", 0)  # each shard has its own breaker
            if SEVERITY.get(t.get("breaker", ""), 0) > SEVERITY[row["breaker"]]:
                row["breaker"] = t["breaker"]
            for key in ("breaker_because", "breaker_first_because"):
                row[key] = row[key] or t.get(key)
            own = owns.setdefault(t["target"], Snapshot())
            for key in ("ok", "failed", "unsent", "refused"):
                row[key] += t.get(key, 0)
                if key != "refused":
                    own.counters[f"requests.{key}"] += t.get(key, 0)
            own.counters["requests.total"] += (
                t.get("ok", 0) + t.get("failed", 0) + t.get("unsent", 0)
            )
            for name, n in t.get("errors", {}).items():
                row["errors"][name] = row["errors"].get(name, 0) + n
                own.counters[f"errors.{name}"] += n
            lat = t.get("latency") or {"buckets": [], "max": 0}
            for low, _high, n in lat["buckets"]:
                own.hist[histogram.bucket_of(low)] += n
            own.counters["latency.max_us"] = max(own.counters["latency.max_us"], lat["max"])
    for name, own in owns.items():
        rows[name]["latency"] = buckets(own.hist, own.counters["latency.max_us"])
    return list(rows.values()), list(owns.values())


def timeline(docs: Sequence[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
    """Every shard's rows on the wall clock, in common bins from the earliest start."""
    origin = min(d["started_at"] for d in docs)
    bins: dict[int, dict[str, Any]] = {}
    for doc in docs:
        for one in doc["timeline"]["rows"]:
            mid = doc["started_at"] + (one["t0"] + one["t1"]) / 2 - origin
            b = bins.setdefault(
                int(mid // BIN_S),
                {"counts": {}, "latency": [0] * histogram.BUCKETS, "breakers": [], "faults": set()},
            )
            for key, n in one["counts"].items():
                b["counts"][key] = b["counts"].get(key, 0) + n
            for i, n in enumerate(dense(one.get("latency.buckets", []))):
                b["latency"][i] += n
            b["breakers"] = b["breakers"] or one["breakers"]
            if any(s != "CLOSED" for s in one["breakers"]):
                b["breakers"] = one["breakers"]
            b["faults"].update(one["faults"])
    rows = []
    for k in sorted(bins):
        b = bins[k]
        row: dict[str, Any] = {
            "t0": k * BIN_S,
            "t1": (k + 1) * BIN_S,
            "counts": dict(sorted(b["counts"].items())),
            "breakers": b["breakers"],
            "faults": sorted(b["faults"]),
            "rps": round(b["counts"].get("requests.sent", 0) / BIN_S, 1),
        }
        if any(b["latency"]):
            row["latency"] = {f"p{p:g}": percentile_ms(b["latency"], p) for p in (50, 90, 99, 99.9)}
            row["latency"]["max"] = percentile_ms(b["latency"], 100)
        rows.append(row)
    return origin, rows


@dataclass(frozen=True, slots=True)
class Merged:
    doc: dict[str, Any]  # the merged result, as a run's --json
    total: Snapshot
    owns: list[Snapshot]  # each target's, in per_target's order
    info: RunInfo


def warmup(docs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The shards' warm-ups (``--warmup``) as one: counts summed, the slowest kept."""
    parts = [d["metrics"] for d in docs if "warmup.s" in d["metrics"]]
    if not parts:
        return None
    out: dict[str, Any] = {"warmup.s": max(p["warmup.s"] for p in parts)}
    for name in WARMUP_COUNTS:
        out[f"warmup.{name}"] = sum(p[f"warmup.{name}"] for p in parts)
    out["warmup.latency.max_ms"] = max(p["warmup.latency.max_ms"] for p in parts)
    return out


def merge(docs: Sequence[tuple[str, dict[str, Any]]]) -> Merged:
    """The shards ``docs`` (path, result) merged."""
    count = check(docs)
    results = [doc for _, doc in docs]
    total = Snapshot()
    for doc in results:
        add(total, snapshot_of(doc))
    total.derive()
    per_target, owns = merged_targets(results)
    origin, rows = timeline(results)
    first = results[0]
    skews = [
        d["shard"].get("start_skew_ms") for d in sorted(results, key=lambda d: d["shard"]["index"])
    ]
    load_s = max(d["metrics"]["run.load_s"] for d in results)
    info = RunInfo(
        target=first["target"],
        embedded=False,
        concurrency=sum(d["concurrency"] for d in results),
        pool_size=sum(d["pool_size"] for d in results),
        elapsed_s=max(d["metrics"]["run.elapsed_s"] for d in results),
        seed=first["seed"],
        workers=sum(d["workers"] for d in results),
        rate=first["rate"],
        per_target=per_target,
        load_s=load_s,
        drain_s=max(d["metrics"]["run.drain_s"] for d in results),
        started_at=origin,
        shard={**first["shard"], "index": None, "start_skew_ms": skews},
        warmup=warmup(results),
        path=" / ".join(sorted({d["metrics"].get("run.path", "") for d in results})),
    )
    doc = {
        "format": FORMAT,
        "target": info.target,
        "embedded_target": False,
        "concurrency": info.concurrency,
        "pool_size": info.pool_size,
        "workers": info.workers,
        "mode": first["mode"],
        "rate": info.rate,
        "seed": info.seed,
        "shard": info.shard,
        "merged_from": [path for path, _ in docs],
        "started_at": round(origin, 3),
        "started_at_utc": first["started_at_utc"],
        "recovered": recovered(total),
        "metrics": metrics(total, info),
        "histograms": histograms(total),
        "timeline": {"period_s": BIN_S, "rows": rows},
        "per_worker": [],
        "per_target": per_target,
        "events": [f"[merge] {count} shards of run {first['shard']['run_id']}"],
        "audit": [],
    }
    return Merged(doc, total, owns, info)

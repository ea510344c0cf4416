"""The JSON result of a run: the report's figures, the full histograms and the timeline.

One document that can be re-rendered (``poolsvc report RESULT.json -o run.html``)
and merged later without loss: every histogram is carried whole, as the buckets
that counted something (``[low_us, high_us, count]``, a bucket holding every
value from low to high inclusive), and the timeline's rows carry their own
latency counts. ``metrics`` is the same flat dict as the text report's
key=value block, so the three forms cannot disagree.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import orjson

from poolsvc.metrics.recording import Recording
from poolsvc.report.render import RunInfo, metrics, recovered
from workers.shared import histogram
from workers.shared.errors import ConfigError
from workers.shared.slotstats import TIMINGS, Snapshot

FORMAT: Final = "poolsvc-result/1"
MAX_BYTES: Final = 256 * 1024 * 1024  # a result file larger than this is not ours


def buckets(counts: list[int], max_us: int, sum_us: int | None = None) -> dict[str, Any]:
    """One histogram as the result carries it."""
    out: dict[str, Any] = {
        "unit": "us",
        "count": sum(counts),
        "max": max_us,
        "buckets": [
            [histogram.bucket_low(i), histogram.bucket_high(i), n]
            for i, n in enumerate(counts)
            if n
        ],
    }
    if sum_us is not None:
        out["sum"] = sum_us
    return out


def histograms(snap: Snapshot) -> dict[str, Any]:
    """Every histogram of ``snap`` (the request latency, the uncorrected one, the timings)."""
    c = snap.counters
    out = {
        "latency": buckets(snap.hist, c["latency.max_us"], c["latency.sum_us"]),
        "latency_uncorrected": buckets(snap.hist2, c["latency_uncorrected.max_us"]),
    }
    for name, (_, top, total) in TIMINGS.items():
        out[name] = buckets(snap.timings[name], c[top], c[total])
    return out


def document(
    snap: Snapshot,
    info: RunInfo,
    audit_final: list[dict[str, Any]] | None = None,
    recording: Recording | None = None,
    owns: list[Snapshot] | None = None,
) -> dict[str, Any]:
    """The result (``owns``: each target's own snapshot, for its latency histogram)."""
    per_target = [dict(t) for t in info.per_target]
    if owns is not None and len(owns) == len(per_target):
        for row, own in zip(per_target, owns, strict=True):
            row["latency"] = buckets(own.hist, own.counters["latency.max_us"])
            row["errors"] = own.errors()
    started = info.started_at
    return {
        "format": FORMAT,
        "target": info.target,
        "embedded_target": info.embedded,
        "concurrency": info.concurrency,
        "pool_size": info.pool_size,
        "workers": info.workers,
        "mode": "open" if info.rate else "closed",
        "rate": info.rate,
        "seed": info.seed,
        "shard": info.shard,
        "started_at": round(started, 3),
        "started_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "recovered": recovered(snap),
        "metrics": metrics(snap, info),
        "histograms": histograms(snap),
        "timeline": {
            "period_s": recording.period if recording else 0.0,
            "rows": recording.as_list() if recording else [],
        },
        "per_worker": info.per_worker,
        "per_target": per_target,
        "events": info.events,
        "audit": audit_final or [],
    }


def as_json(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def load(path: str) -> dict[str, Any]:
    """A result written by ``poolsvc run --json`` (ConfigError, one line, otherwise)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BYTES >> 20} MiB: not a poolsvc result")
        doc = orjson.loads(p.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(f"{path}: not a poolsvc result (format {got!r}, want {FORMAT!r})")
    for key, kind in (("metrics", dict), ("histograms", dict), ("timeline", dict)):
        if not isinstance(doc.get(key), kind):
            raise ConfigError(f"{path}: {key!r} missing or not an object")
    return doc

"""Thresholds: pass/fail objectives on the run's figures, k6's syntax, evaluated exactly.

An expression is ``METRIC[{target=NAME}][:AGG] OP VALUE[UNIT] [abort_on_fail] [for=DURATION]``:

- ``latency:p(99)<25ms``, ``latency_uncorrected:max<1s``, ``failure_time:avg<100ms``,
  ``connect:p(90)<2ms``, ``tls.full:p(99)<50ms`` (time metrics: ``p(N)``, ``avg``,
  ``min``, ``med``, ``max``, ``count``; units ``us``, ``ms`` (the default), ``s``);
- ``requests.failed:rate<0.01`` or ``<1%``, ``errors.read_timeout:count==0``,
  ``responses.5xx:rate<0.001`` (counts: ``count``, or ``rate``, the fraction of
  all requests);
- ``rps>5000`` (requests that reached the target, per second of load);
- k6's spellings where they map cleanly: ``http_req_duration=p(95)<200``,
  ``http_req_failed=rate<0.01``, ``http_reqs=count>1000``.

Every name, target, aggregation and unit is checked before any load: a misspelled
metric is an error (exit 2 naming it), never a silent pass (k6 #1526). A time
metric with no samples fails ("no data"): a latency objective is not met by a
run whose every request failed. Values come from the exact merged histograms of
all workers, never an average of per-worker percentiles.

``abort_on_fail`` stops the run early, but only when the threshold has been
breached in every one-second interval for the whole ``for=`` window (default: one
interval), evaluated each second on the merged per-second figures (k6 #1737).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from poolsvc.config.keys import duration_in  # the same durations as every other flag
from workers.shared import histogram
from workers.shared.errors import ERROR_NAMES, ConfigError
from workers.shared.slotstats import STATUS_CLASSES, Snapshot

TIME_METRICS: Final = {  # name -> (histogram, its max counter, its sum counter)
    "latency": ("hist", "latency.max_us", "latency.sum_us"),
    "latency_uncorrected": ("hist2", "latency_uncorrected.max_us", ""),
    "failure_time": ("failure_time", "failure_time.max_us", "failure_time.sum_us"),
    "connect": ("connect", "connect.max_us", "connect.sum_us"),
    "tls.full": ("tls_full", "tls.full.max_us", "tls.full.sum_us"),
    "tls.resumed": ("tls_resumed", "tls.resumed.max_us", "tls.resumed.sum_us"),
}
_REQUESTS: Final = ("total", "sent", "ok", "failed", "unsent", "lost", "abandoned", "late")
COUNT_METRICS: Final = frozenset(
    {
        *(f"requests.{k}" for k in (*_REQUESTS, "dropped")),
        *(f"responses.{c}" for c in STATUS_CLASSES),
        *(f"errors.{n}" for n in ERROR_NAMES),
    }
)
PER_TARGET: Final = frozenset(
    {"latency", "rps", "requests.total", "requests.ok", "requests.failed", "requests.unsent"}
    | {f"errors.{n}" for n in ERROR_NAMES}
)
K6: Final = {  # k6 name -> (ours, the aggregation it implies when none is given)
    "http_req_duration": ("latency", ""),
    "http_req_failed": ("requests.failed", "rate"),
    "http_reqs": ("requests.total", "count"),
    "http_req_connecting": ("connect", ""),
    "http_req_tls_handshaking": ("tls.full", ""),
}
_TIME_UNITS: Final = {"us": 1, "µs": 1, "ms": 1000, "s": 1_000_000, "": 1000}
_EXPR: Final = re.compile(
    r"^(?P<metric>[A-Za-z_][\w.]*)(?:\{(?P<labels>[^}]*)\})?"
    r"(?:[:=](?P<agg>p\(\d+(?:\.\d+)?\)|avg|min|med|max|count|rate))?"
    r"\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?P<unit>[^\s,]*)$"
)
OPS: Final = {
    "<": float.__lt__,
    "<=": float.__le__,
    ">": float.__gt__,
    ">=": float.__ge__,
    "==": float.__eq__,
    "!=": float.__ne__,
}


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed threshold; ``limit`` in the metric's base unit (us, a fraction, a count)."""

    expr: str
    metric: str
    agg: str  # p(99), avg, min, med, max, count, rate, or "" (rps)
    op: str
    limit: float
    unit: str  # as the user wrote it, for showing the limit back
    target: str | None = None
    abort_on_fail: bool = False
    for_s: float = 0.0

    @property
    def name(self) -> str:
        where = f"{{target={self.target}}}" if self.target else ""
        return f"{self.metric}{where}" + (f":{self.agg}" if self.agg else "")


def parse(text: str, targets: Sequence[str]) -> Threshold:
    """One threshold expression (ConfigError naming what is wrong, otherwise)."""
    words = text.replace(",", " ").split()
    if not words:
        raise ConfigError("thresholds: an empty threshold")
    abort, for_s, parts = False, 0.0, []
    for word in words:
        if word == "abort_on_fail":
            abort = True
        elif word.startswith("for="):
            try:
                for_s = duration_in("s")(word[4:])
            except (ValueError, TypeError):
                raise ConfigError(f"thresholds: {text!r}: bad window {word!r}") from None
        else:
            parts.append(word)  # the expression, spaces around its operator allowed
    expr = " ".join(parts)
    m = _EXPR.match(expr)
    if m is None:
        raise ConfigError(
            f"thresholds: {text!r} is not METRIC[:AGG] OP VALUE (e.g. latency:p(99)<25ms)"
        )
    metric, agg = m["metric"], m["agg"] or ""
    if metric in K6:
        metric, implied = K6[metric]
        agg = agg or implied
    target = _target(text, m["labels"], targets)
    agg = _check_metric(text, metric, agg, target)
    limit = _limit(text, metric, agg, float(m["value"]), m["unit"])
    if for_s and not abort:
        raise ConfigError(f"thresholds: {text!r}: for= needs abort_on_fail")
    return Threshold(expr, metric, agg, m["op"], limit, m["unit"], target, abort, for_s)


def _target(text: str, labels: str | None, targets: Sequence[str]) -> str | None:
    if labels is None:
        return None
    key, _, name = labels.partition("=")
    if key.strip() != "target" or not name.strip():
        raise ConfigError(f"thresholds: {text!r}: the only selector is {{target=NAME}}")
    name = name.strip().strip("\"'")
    if name not in targets:
        raise ConfigError(
            f"thresholds: {text!r}: unknown target {name!r} (targets: {', '.join(targets)})"
        )
    return name


def _check_metric(text: str, metric: str, agg: str, target: str | None) -> str:
    if metric in TIME_METRICS:
        if agg == "rate":
            raise ConfigError(f"thresholds: {text!r}: {metric} is a time: p(N), avg, max ...")
        agg = agg or "avg"
    elif metric in COUNT_METRICS:
        if agg not in ("count", "rate"):
            raise ConfigError(f"thresholds: {text!r}: {metric} is a count: count or rate")
    elif metric == "rps":
        if agg:
            raise ConfigError(f"thresholds: {text!r}: rps takes no aggregation (rps>5000)")
    else:
        names = [*TIME_METRICS, *COUNT_METRICS, "rps", *K6]
        near = difflib.get_close_matches(metric, names, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"thresholds: {text!r}: unknown metric {metric!r} ({hint}{_known()})")
    if target is not None and metric not in PER_TARGET:
        raise ConfigError(f"thresholds: {text!r}: {metric} is not kept per target")
    return agg


def _known() -> str:
    return "latency, latency_uncorrected, failure_time, connect, tls.full, tls.resumed, " + (
        "requests.<outcome>, responses.<class>, errors.<NAME>, rps"
    )


def _limit(text: str, metric: str, agg: str, value: float, unit: str) -> float:
    if metric in TIME_METRICS and agg != "count":
        if unit not in _TIME_UNITS:
            raise ConfigError(f"thresholds: {text!r}: unknown unit {unit!r} (us, ms, s)")
        return value * _TIME_UNITS[unit]
    if agg == "rate" and unit == "%":
        return value / 100
    if unit:
        raise ConfigError(f"thresholds: {text!r}: unknown unit {unit!r} for {metric}")
    return value


def measure(t: Threshold, snap: Snapshot, seconds: float) -> float | None:
    """The value ``t`` compares, from ``snap`` (``seconds``: its span, for rps); None:
    a time metric with no samples."""
    c = snap.counters
    if t.metric == "rps":
        return (c["requests.ok"] + c["requests.failed"]) / seconds if seconds > 0 else 0.0
    if t.metric in COUNT_METRICS:
        n = c[t.metric]
        if t.agg == "count":
            return float(n)
        total = c["requests.total"]
        return n / total if total else 0.0
    attr, top, total_key = TIME_METRICS[t.metric]
    counts = getattr(snap, attr) if attr in ("hist", "hist2") else snap.timings[attr]
    n = sum(counts)
    if t.agg == "count":
        return float(n)
    if n == 0:
        return None
    if t.agg == "avg" and total_key:
        return c[total_key] / n
    if t.agg == "min":
        return float(histogram.bucket_low(next(i for i, k in enumerate(counts) if k)))
    if t.agg == "max":
        return float(c[top] or histogram.percentile(counts, 100))
    pct = 50.0 if t.agg in ("med", "avg") else float(t.agg[2:-1])
    return float(histogram.percentile(counts, pct, c[top] or None))


def passes(t: Threshold, value: float | None) -> bool:
    return value is not None and OPS[t.op](float(value), t.limit)


def shown(t: Threshold, value: float | None) -> str:
    """A value (or the limit) in the unit the user wrote."""
    if value is None:
        return "no data"
    if t.metric in TIME_METRICS and t.agg != "count":
        unit = t.unit or "ms"
        return f"{value / _TIME_UNITS[unit]:.3f}{unit}"
    if t.agg == "rate" and t.unit == "%":
        return f"{value * 100:.3f}%"
    return f"{value:.4f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))

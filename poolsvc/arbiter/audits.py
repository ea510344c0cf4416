"""The supervisor's side of the FD audit: pre-flight, the cheap tier, the full tier.

Three tiers:

- **Pre-flight** (:func:`preflight`), before any load: enough descriptors per
  worker for its pool shard? The soft RLIMIT_NOFILE is raised when the hard
  limit allows; otherwise a clear error, so that EMFILE never turns up later
  disguised as a connect failure. Is the local port range large enough for the
  connections toward one target?
- **Cheap tier** (:class:`FdWatch`), every second: the supervisor counts each
  worker's ``/proc/<pid>/fd`` entries (the worker does nothing) and keeps the
  history. A count that stays above what the worker's registry accounts for
  triggers a full audit.
- **Full tier** (:class:`AuditRun`), on demand, every ``audit_every_s``, or when
  the cheap tier suspects a leak: each worker audits itself
  (:mod:`workers.exchange.fdaudit`), one worker at a time so the load never stops
  everywhere at once. The supervisor then merges the reports, adds the TIME_WAIT
  count toward each target (a namespace-wide view no worker owns), and renders
  text, markdown or JSON.
"""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
import psutil

from workers.shared.errors import ConfigError

HISTORY: Final = 3600  # cheap-tier samples kept per worker (one a second)
AUDIT_TIMEOUT: Final = 3.0  # a worker that does not answer in time is reported as such
FD_OVERHEAD: Final = 32  # stdio, epoll, dead-end sockets, audit listings: per worker


def preflight(per_worker: int, total: int, emit: Callable[[str], None]) -> None:
    """Check descriptors and local ports against the planned connection counts."""
    needed = per_worker + FD_OVERHEAD
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed > soft:
        if hard == resource.RLIM_INFINITY or needed <= hard:
            new = needed * 2 if hard == resource.RLIM_INFINITY else min(hard, needed * 2)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            emit(
                f"[audit] raised the RLIMIT_NOFILE soft limit from {soft} to {new} "
                f"({per_worker} connections per worker)"
            )
        else:
            raise ConfigError(
                f"{per_worker} connections per worker need about {needed} descriptors, but "
                f"RLIMIT_NOFILE is {soft} (hard {hard}): raise it (ulimit -n) or add workers"
            )
    low, high = local_port_range()
    ports = high - low + 1
    if total > ports:
        raise ConfigError(
            f"{total} connections toward one target exceed the local port range "
            f"{low}-{high} ({ports} ports): connects would fail with EADDRNOTAVAIL"
        )


def local_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # the Linux default


def count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class FdWatch:
    """Per worker slot: the history of (t, fds counted, fds the registry expected)."""

    def __init__(self) -> None:
        self.history: dict[int, deque[tuple[float, int, int]]] = {}
        self.over: dict[int, int] = {}  # consecutive samples above expectation + slack

    def sample(self, worker: int, pid: int, expected: int, slack: int, t: float) -> bool:
        """Record one sample; True when a leak is suspected (three samples in a row over)."""
        now = count_fds(pid)
        if now is None:
            return False
        self.history.setdefault(worker, deque(maxlen=HISTORY)).append((t, now, expected))
        if now > expected + slack:
            self.over[worker] = self.over.get(worker, 0) + 1
        else:
            self.over[worker] = 0
        return self.over[worker] == 3


class AuditRun:
    """One full audit: workers audited one after the other; ``done`` when all answered."""

    def __init__(self, workers: list[int], started: float) -> None:
        self.pending = list(workers)
        self.reports: dict[int, dict[str, Any]] = {}
        self.missing: list[int] = []
        self.started = started
        self.current: tuple[int, int, float] | None = None  # (worker, seq, deadline)
        self.callbacks: list[Callable[[dict[str, Any]], None]] = []
        self.result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.result is not None


def time_wait_toward(targets: list[tuple[str, int]]) -> dict[str, int]:
    """TIME_WAIT sockets toward each target in this network namespace: ours (remote =
    the target) plus, when the target is local, its own side (local = the target)."""
    counts = {f"{h}:{p}": 0 for h, p in targets}
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return counts
    for c in conns:
        if c.status != psutil.CONN_TIME_WAIT:
            continue
        for end in (c.raddr, c.laddr):
            if end and (key := f"{end[0]}:{end[1]}") in counts:
                counts[key] += 1
    return counts


def merge(
    run: AuditRun, watch: FdWatch, targets: list[tuple[str, int]], now: float
) -> dict[str, Any]:
    """The full report: per-worker findings, a summary table, fd history, totals."""
    workers = [run.reports[w] for w in sorted(run.reports)]
    summary = [
        {
            "worker": r["worker"],
            "pid": r["pid"],
            "fds_baseline": r["fds_baseline"],
            "fds_now": r["fds_now"],
            "fds_expected": r["fds_expected"],
            "fd_limit": r["fd_limit"],
            "registered": r["registered"],
            "leaked": len(r["leaked"]),
            "close_wait": len(r["close_wait"]),
            "half_open_suspects": len(r["half_open_suspects"]),
            "stuck_connecting": len(r["stuck_connecting"]),
            "cost_ms": r["cost_ms"],
            "incomplete": r.get("incomplete", "") or "-",
        }
        for r in workers
    ]
    totals = {
        k: sum(row[k] for row in summary)
        for k in ("leaked", "close_wait", "half_open_suspects", "stuck_connecting")
    }
    incomplete = {r["worker"]: r["incomplete"] for r in workers if r.get("incomplete")}
    incomplete.update({w: "did not answer in time" for w in run.missing})
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_ms": round((now - run.started) * 1000, 1),
        "verdict": verdict(totals["leaked"], incomplete),
        "incomplete": {str(w): why for w, why in sorted(incomplete.items())},
        "totals": totals,
        "time_wait": time_wait_toward(targets),
        "summary": summary,
        "workers": workers,
        "not_answering": run.missing,
        "history": {str(w): [list(x) for x in h] for w, h in watch.history.items()},
    }


def verdict(leaked: int, incomplete: dict[int, str]) -> str:
    """LEAK when a leak was found; ``incomplete`` when some audit could not run (that is
    never reported clean); else clean."""
    return "LEAK" if leaked else "incomplete" if incomplete else "clean"


def render(report: dict[str, Any], fmt: str) -> str:
    """``report`` as json, text or markdown."""
    if fmt == "json":
        return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"
    md = fmt == "markdown"
    out = ["# FD audit" if md else "FD AUDIT", ""]
    out.append(
        f"verdict: {report['verdict']}  leaked={report['totals']['leaked']} "
        f"close_wait={report['totals']['close_wait']} "
        f"half_open_suspects={report['totals']['half_open_suspects']} "
        f"stuck_connecting={report['totals']['stuck_connecting']}  "
        f"took {report['duration_ms']} ms"
    )
    tw = " ".join(f"{target}={n}" for target, n in report["time_wait"].items()) or "-"
    out.append(f"time_wait toward each target: {tw}")
    for worker, why in report.get("incomplete", {}).items():
        out.append(f"audit incomplete: worker {worker}: {why}")
    out.append("")
    cols = [
        "worker",
        "pid",
        "fds_baseline",
        "fds_now",
        "fds_expected",
        "fd_limit",
        "registered",
        "leaked",
        "close_wait",
        "half_open_suspects",
        "stuck_connecting",
        "cost_ms",
        "incomplete",
    ]
    out += _table(cols, [[row[c] for c in cols] for row in report["summary"]], md)
    for r in report["workers"]:
        for kind in ("leaked", "close_wait", "half_open_suspects", "stuck_connecting"):
            if r[kind]:
                out += [
                    "",
                    f"## worker {r['worker']}: {kind}" if md else f"worker {r['worker']}: {kind}",
                ]
                keys = list(r[kind][0])
                out += _table(keys, [[item[k] for k in keys] for item in r[kind]], md)
    if report["not_answering"]:
        out += ["", f"workers that did not answer in time: {report['not_answering']}"]
    return "\n".join(out) + "\n"


def _table(cols: list[str], rows: list[list[Any]], md: bool) -> list[str]:
    if md:
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*cols)] + [fmt.format(*(str(v) for v in row)) for row in rows]


def final_incomplete(final: list[dict[str, Any]]) -> dict[int, str]:
    """Workers whose final audit could not run, and why."""
    return {r["worker"]: r["incomplete"] for r in final if r.get("incomplete")}


def verdict_line(final: list[dict[str, Any]]) -> str:
    """The one-line verdict printed after a run, from each worker's final audit."""
    missing = final_incomplete(final)
    if missing:
        why = "; ".join(f"worker {w}: {reason}" for w, reason in sorted(missing.items()))
        return f"[audit] incomplete: {why} (no verdict: a leak is not ruled out)"
    base = sum(r["fds_baseline"] for r in final)
    now = sum(r["fds_now"] for r in final)
    leaked = sum(len(r["leaked"]) for r in final)
    close_wait = sum(len(r["close_wait"]) for r in final)
    return f"[audit] fds baseline={base} now={now} leaked={leaked} close_wait={close_wait}"

"""The supervisor's FD audits over time: the cheap count, the full audit, the reports.

Every second the cheap tier counts each live worker's descriptors
(:class:`poolsvc.arbiter.audits.FdWatch`); a count that stays above what the worker's
registry accounts for starts a full audit, as do ``audit_every_s`` and ``poolctl
audit``. A full audit asks one worker at a time (its control row's audit word)
and reads the report the worker wrote into the run's private directory; a worker
that does not answer within ``AUDIT_TIMEOUT`` is reported as such. When every
worker has answered, the reports are merged, kept as the last audit, written to
``audit_report`` if configured, and handed to whoever asked.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import orjson

from poolsvc.arbiter import audits as audit
from poolsvc.metrics import outputs as files
from workers.shared import shm
from workers.shared import slotstats as stats


def report_path(run_dir: str, worker: int, label: str) -> Path:
    """Where worker ``worker`` puts its audit report ``label`` (in the run's private dir)."""
    return Path(run_dir) / f"audit-w{worker}-{label}.json"


class Auditor:
    """Runs the audits of one service (see the module docstring)."""

    def __init__(
        self,
        region: shm.Region,
        hosts: list[tuple[str, int]],
        emit: Callable[[str], None],
        every_s: float,
        report_file: str | None,
        now: float,
    ) -> None:
        self.region = region
        self.hosts = hosts
        self.emit = emit
        self.every_s = every_s
        self.report_file = report_file
        self.run_dir = ""  # a private directory, made when the run starts
        self.watch = audit.FdWatch()
        self.current: audit.AuditRun | None = None
        self.last: dict[str, Any] | None = None
        self.seq = 0
        self.next_at = now + every_s if every_s else 0.0

    def reporter(self, worker: int) -> Callable[[str, dict[str, Any]], None]:
        """How worker ``worker`` hands over an audit report: a file in the run's private
        directory, written through a temporary one (the supervisor never reads half)."""
        run_dir = self.run_dir

        def write(label: str, report: dict[str, Any]) -> None:
            files.write_bytes(report_path(run_dir, worker, label), orjson.dumps(report))

        return write

    def cheap(self, now: float, live: list[tuple[int, int, int]]) -> None:
        """Count each live worker's descriptors (``live``: index, pid, concurrency); a
        persistent excess, or the period, starts a full audit."""
        for index, pid, concurrency in live:
            expected = self.region.slot(index)[stats.GAUGE_INDEX["fds.expected"]]
            if expected and self.watch.sample(index, pid, expected, concurrency + 4, now):
                self.emit(
                    f"[audit] worker {index}: more descriptors than its registry "
                    "accounts for; running a full audit"
                )
                self.start([i for i, _, _ in live], now)
        if self.next_at and now >= self.next_at:
            self.next_at = now + self.every_s
            self.start([i for i, _, _ in live], now)

    def start(
        self,
        workers: list[int],
        now: float,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Audit ``workers``, one at a time (or join the audit under way); ``callback``
        gets the merged report."""
        if self.current is None or self.current.done:
            self.current = audit.AuditRun(workers, now)
        if callback is not None:
            self.current.callbacks.append(callback)

    def step(self, now: float, live: Collection[int]) -> None:
        """Advance the audit under way: collect an answer, ask the next worker, merge."""
        run = self.current
        if run is None or run.done:
            return
        if run.current is not None:
            worker, seq, deadline = run.current
            if self.region.slot(worker)[stats.GAUGE_INDEX["audit.seq"]] == seq:
                path = report_path(self.run_dir, worker, f"seq{seq}")
                run.reports[worker] = orjson.loads(path.read_bytes())
                path.unlink()
                run.current = None
            elif now >= deadline:
                run.missing.append(worker)
                run.current = None
            else:
                return
        if run.pending:
            worker = run.pending.pop(0)
            if worker not in live:
                return
            self.seq += 1
            self.region.wctrl_row(worker)[shm.C_AUDIT] = self.seq
            run.current = (worker, self.seq, now + audit.AUDIT_TIMEOUT)
            return
        run.result = audit.merge(run, self.watch, self.hosts, now)
        self.last = run.result
        if self.report_file:
            fmt = (
                "markdown"
                if self.report_file.endswith(".md")
                else "json"
                if self.report_file.endswith(".json")
                else "text"
            )
            files.write_text(self.report_file, audit.render(run.result, fmt))
        for callback in run.callbacks:
            callback(run.result)

    def finals(self, workers: list[int]) -> list[dict[str, Any]]:
        """The final audits the workers wrote as they exited."""
        out = []
        for worker in workers:
            path = report_path(self.run_dir, worker, "final")
            if path.exists():
                out.append(orjson.loads(path.read_bytes()))
        return out

    def __repr__(self) -> str:
        state = "idle" if self.current is None or self.current.done else "running"
        return f"<Auditor {state} seq={self.seq} last={'yes' if self.last else 'no'}>"

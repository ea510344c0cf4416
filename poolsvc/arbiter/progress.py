"""Live figures during a run: a progress line on a terminal, a timeline file.

The progress line is one line on stderr, redrawn in place every second, and only
when stderr is a terminal. It shows elapsed/total, req/s, p99, errors and the
breaker. A pipe or a file gets none of it, so scripted output stays clean. The
timeline is one record per second for the whole run: NDJSON, or CSV when the file
name ends in ``.csv``.
"""

from __future__ import annotations

import csv
from types import TracebackType
from typing import IO, Any

import orjson

from poolsvc.config.keys import Config
from poolsvc.ctl.service import Service
from poolsvc.metrics import outputs as files
from poolsvc.metrics.intervals import Interval

FIELDS = (
    "t",
    "seconds",
    "rps",
    "sent",
    "ok",
    "failed",
    "unsent",
    "lost",
    "abandoned",
    "p50_ms",
    "p99_ms",
    "max_ms",
)


class Progress:
    """One line on a terminal, refreshed in place (``\\r`` + clear to end of line)."""

    def __init__(self, stream: IO[str], cfg: Config, enabled: bool) -> None:
        self.stream = stream
        self.total = cfg.duration_s if not cfg.requests else 0.0
        self.enabled = enabled
        self.shown = False

    def show(self, interval: Interval, svc: Service) -> None:
        if not self.enabled:
            return
        total = f"/{self.total:g}s" if self.total else "s"
        breaker = ",".join(b["state"] for b in svc.breaker_status())
        c = svc.snapshot().counters
        errors = c["requests.failed"] + c["requests.unsent"]
        self.stream.write(
            f"\r\x1b[K[{interval.t:5.1f}{total}] {interval.rps:,.0f} req/s  "
            f"p99={interval.p99_us / 1000:.2f}ms  errors={errors}  breaker={breaker}"
        )
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


class Timeline:
    """Per-second records to a file (nothing when ``path`` is None); a context manager.

    The rows go to a private temporary file next to ``path`` as they come, and it
    is renamed to ``path`` when the run ends, however it ends (``poolsvc.metrics.outputs``).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.out: files.Replacement | None = None
        self.csv: Any = None

    def __enter__(self) -> Timeline:
        if self.path:
            self.out = files.Replacement(self.path)
            if self.path.endswith(".csv"):
                self.csv = csv.writer(self.out.file)
                self.csv.writerow(FIELDS)
        return self

    def write(self, interval: Interval) -> None:
        if self.out is None:
            return
        row = interval.as_dict()
        if self.csv is not None:
            self.csv.writerow([row[k] for k in FIELDS])
        else:
            self.out.file.write(orjson.dumps(row).decode() + "\n")
        self.out.file.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.out is not None:
            self.out.commit()  # what was recorded is true, even of a run that failed

"""The run's gate: its thresholds watched each second (abort_on_fail) and judged at the end.

:class:`Gate` is fed, once a second, the run's cumulative totals and each
target's (:meth:`Gate.feed`); it keeps the previous ones and judges each
``abort_on_fail`` threshold on that second alone (the exact difference of two
snapshots, histograms included). A threshold breached in every second of its
``for=`` window returns itself, and the caller stops the run. At the end,
:meth:`Gate.verdicts` judges every threshold on the final totals. Exit code 99
when one fails (k6's convention); ``--junit FILE`` writes one test case each.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from poolsvc.metrics import outputs as files
from poolsvc.metrics.thresholds import Threshold, measure, parse, passes, shown
from workers.shared.errors import ConfigError
from workers.shared.slotstats import TIMINGS, Snapshot


@dataclass(frozen=True, slots=True)
class Verdict:
    threshold: Threshold
    value: float | None
    ok: bool
    aborted: bool = False  # this one stopped the run

    def as_dict(self) -> dict[str, Any]:
        t = self.threshold
        return {
            "threshold": t.expr,
            "metric": t.metric,
            "target": t.target,
            "aggregation": t.agg,
            "op": t.op,
            "limit": t.limit,
            "value": self.value,
            "shown": f"{shown(t, self.value)} {t.op} {shown(t, t.limit)}",
            "ok": self.ok,
            "abort_on_fail": t.abort_on_fail,
            "aborted_the_run": self.aborted,
        }

    def line(self) -> str:
        t = self.threshold
        mark = "pass" if self.ok else "FAIL"
        tail = "" if self.ok else f" (limit {t.op} {shown(t, t.limit)})"
        tail += f" (breached for {t.for_s or 1:g}s: it stopped the run)" if self.aborted else ""
        return f"[threshold] {mark} {t.expr}: {shown(t, self.value)}{tail}"


def from_config(entries: Sequence[Any] | None, targets: Sequence[str]) -> list[Threshold]:
    """The ``thresholds`` key / ``--threshold`` flags: strings, or objects
    ``{"threshold": EXPR, "abort_on_fail": bool, "for": "10s"}``."""
    out = []
    for entry in entries or ():
        if isinstance(entry, str):
            out.append(parse(entry, targets))
        elif isinstance(entry, dict) and isinstance(entry.get("threshold"), str):
            unknown = set(entry) - {"threshold", "abort_on_fail", "for"}
            if unknown:
                raise ConfigError(f"thresholds: unknown key {sorted(unknown)[0]!r}")
            words = [entry["threshold"]]
            if entry.get("abort_on_fail") is True:
                words.append("abort_on_fail")
            if "for" in entry:
                words.append(f"for={entry['for']}")
            out.append(parse(" ".join(words), targets))
        else:
            raise ConfigError("thresholds: each is a string or {'threshold': ...}")
    return out


def delta(new: Snapshot, old: Snapshot) -> Snapshot:
    """What happened between two cumulative snapshots (maxima left out: the measure
    then takes the top bucket that moved)."""
    out = Snapshot()
    for name, value in new.counters.items():
        out.counters[name] = 0 if name.endswith(".max_us") else value - old.counters[name]
    out.hist = [a - b for a, b in zip(new.hist, old.hist, strict=True)]
    out.hist2 = [a - b for a, b in zip(new.hist2, old.hist2, strict=True)]
    for name in TIMINGS:
        pairs = zip(new.timings[name], old.timings[name], strict=True)
        out.timings[name] = [a - b for a, b in pairs]
    return out


class Gate:
    """The thresholds of one run (``names``: its targets, in order)."""

    def __init__(self, thresholds: Sequence[Threshold], names: Sequence[str]) -> None:
        self.thresholds = list(thresholds)
        self.names = list(names)
        self.watched = [t for t in self.thresholds if t.abort_on_fail]
        # primed with zeros at the start: the first second is judged too
        self._last: tuple[float, Snapshot, list[Snapshot]] | None = (
            0.0,
            Snapshot(),
            [Snapshot() for _ in self.names],
        )
        self._breached_since: dict[int, float] = {}  # watched index -> start of its breach
        self.aborted_by: Threshold | None = None

    def _pick(self, t: Threshold, whole: Snapshot, owns: Sequence[Snapshot]) -> Snapshot:
        return owns[self.names.index(t.target)] if t.target is not None else whole

    def feed(self, now: float, whole: Snapshot, owns: Sequence[Snapshot]) -> Threshold | None:
        """The totals at ``now`` (seconds since the start); the threshold that must stop
        the run, if one has been breached for its whole window."""
        last, self._last = self._last, (now, whole, list(owns))
        if not self.watched or last is None or self.aborted_by is not None:
            return None
        then, old_whole, old_owns = last
        span = now - then
        if span <= 0:
            return None
        for i, t in enumerate(self.watched):
            second = delta(self._pick(t, whole, owns), self._pick(t, old_whole, old_owns))
            if passes(t, measure(t, second, span)):
                self._breached_since.pop(i, None)
                continue
            since = self._breached_since.setdefault(i, then)
            if now - since >= max(t.for_s, span) - 1e-6:
                self.aborted_by = t
                return t
        return None

    def verdicts(self, whole: Snapshot, owns: Sequence[Snapshot], load_s: float) -> list[Verdict]:
        out = []
        for t in self.thresholds:
            value = measure(t, self._pick(t, whole, owns), load_s)
            stopped = t is self.aborted_by  # failed: breached for its whole window
            out.append(Verdict(t, value, passes(t, value) and not stopped, aborted=stopped))
        return out

    def __repr__(self) -> str:
        return f"<Gate thresholds={len(self.thresholds)} aborted_by={self.aborted_by}>"


def write_junit(path: str, verdicts: Sequence[Verdict], elapsed_s: float) -> None:
    """One JUnit test case per threshold, in one test suite (what CI systems read)."""
    failures = sum(not v.ok for v in verdicts)
    suites = ET.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="poolsvc thresholds",
        tests=str(len(verdicts)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{elapsed_s:.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for v in verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="poolsvc.metrics.thresholds",
            name=v.threshold.expr,
            time="0",
        )
        if not v.ok:
            failure = ET.SubElement(
                case, "failure", type="threshold", message=v.line().removeprefix("[threshold] ")
            )
            failure.text = f"limit: {v.threshold.op} {shown(v.threshold, v.threshold.limit)}"
        out = ET.SubElement(case, "system-out")
        out.text = v.line()
    ET.indent(suites)
    files.write_bytes(path, ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n")

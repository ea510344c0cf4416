"""What every scenario shares: `poolsvc serve` under test, its final report, a rate probe,
the accounting check every scenario ends with (:func:`finish`), and the table.

The timeouts the service runs with (``READ_MS``, ``CONNECT_MS``, ``WAIT_MS``) bound how long
one request may take (``HANG_BOUND_MS``); ``LEDGER`` names the counts of
:mod:`poolsvc.metrics.ledger` that :func:`finish` balances.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolsvc.ctl.ctlclient import ControlClient, ServiceUnavailable
from tools.nginx import Nginx

ROOT = Path(__file__).resolve().parent.parent.parent
PY = sys.executable
READ_MS, CONNECT_MS, WAIT_MS = 500, 300, 1000
# The breaker opens for 100 ms, doubling per trip in a row up to 400 ms: recovery is
# measured for the pool, not for a breaker that a long outage taught to wait.
# A request may wait for the pool, connect, read, and once re-send on a fresh socket.
HANG_BOUND_MS = WAIT_MS + 2 * (CONNECT_MS + READ_MS) + 200


@dataclass
class Result:
    scenario: str
    faults: str
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    recovery_s: float | None = None
    leaked_fds: int = 0
    lost: int = 0
    served: int | None = None  # what the target itself counted (None: not counted)
    passed: bool = False
    note: str = ""

    def row(self) -> str:
        errors = " ".join(f"{k}={v}" for k, v in sorted(self.errors.items())) or "-"
        rec = f"{self.recovery_s:.2f}s" if self.recovery_s is not None else "-"
        verdict = "SKIP" if self.note.startswith("skipped") else "PASS" if self.passed else "FAIL"
        return (
            f"| {self.scenario} | {self.faults} | {self.requests} | "
            f"{'-' if self.served is None else self.served} | {errors} | "
            f"{rec} | {self.leaked_fds} | {self.lost} | {verdict} | {self.note} |"
        )


class Service:
    """`poolsvc serve` with a private control socket; its final report is parsed on exit."""

    def __init__(self, host: str, port: int, *extra: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="poolsvc-chaos-")
        os.chmod(self.dir, 0o700)
        self.path = Path(self.dir) / "c.sock"
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "poolsvc",
                "serve",
                "--host",
                host,
                "--port",
                str(port),
                "--control",
                str(self.path),
                "--read-timeout-ms",
                str(READ_MS),
                "--connect-timeout-ms",
                str(CONNECT_MS),
                "--pool-wait-ms",
                str(WAIT_MS),
                "--backoff-cap-ms",
                "100",
                "--breaker-open-ms",
                "100",
                "--breaker-open-max-ms",
                "400",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(ServiceUnavailable, OSError):
                if self.metrics().get("requests.ok", 0) > 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the service did not start")

    def call(self, cmd: str, **args: Any) -> Any:
        with ControlClient(self.path, timeout=10) as c:
            return c.call(cmd, **args)

    def metrics(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("metrics", format="json")
        return data

    def worker_pids(self) -> list[int]:
        return [w["pid"] for w in self.call("workers") if w["state"] == "RUNNING"]

    def drain(self) -> dict[str, Any]:
        """Drain and wait; the final report as {metrics..., 'audit': {...}}."""
        self.call("drain")
        out, err = self.proc.communicate(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
        return parse_report(out, self.proc.returncode, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_report(out: str, code: int | None, err: str = "") -> dict[str, Any]:
    """A text report as {metric: value, ..., 'audit': {...}, 'exit': code}."""
    report: dict[str, Any] = {"exit": code, "stderr": err[-500:]}
    for line in out.splitlines():
        if "=" in line and " " not in line:
            key, value = line.split("=", 1)
            report[key] = _number(value)
        if line.startswith("[audit] fds"):
            report["audit"] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return report


def _number(text: str) -> Any:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


LEDGER = ("sent", "ok", "failed", "lost", "abandoned", "in_doubt")


def errors_of(report: dict[str, Any]) -> dict[str, int]:
    """Request failures (sent or not) and connection errors, by name."""
    out: dict[str, int] = {}
    for k, v in report.items():
        for prefix in ("errors.", "connect_errors."):
            if k.startswith(prefix) and not k.startswith("errors.phase."):
                name = k[len(prefix) :]
                out[name] = out.get(name, 0) + int(v)
    return out


class RateProbe:
    """Requests answered per second, sampled from the control socket."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> int:
        ok = int(self.svc.metrics()["requests.ok"])
        if self.samples and ok < self.samples[-1][1]:
            raise AssertionError(f"totals went backwards: {self.samples[-1][1]} -> {ok}")
        self.samples.append((time.monotonic(), ok))
        return ok

    def rate(self, window: float = 0.3) -> float:
        self.sample()
        time.sleep(window)
        (t0, a), (t1, b) = self.samples[-1], (time.monotonic(), self.sample())
        return (b - a) / (t1 - t0)

    def recovery(self, baseline: float, since: float, limit: float = 10.0) -> float | None:
        """Seconds from ``since`` until the rate is back to 80 % of ``baseline``."""
        while time.monotonic() - since < limit:
            if self.rate(0.1) >= 0.8 * baseline:
                return time.monotonic() - since
        return None


def finish(
    res: Result, report: dict[str, Any], served: int, may_drop: bool = False, extra_ok: bool = True
) -> Result:
    """Fill in the common columns from the final report and the target's own count.

    Every request is accounted for (:mod:`poolsvc.metrics.ledger`): sent = ok + failed + lost
    + abandoned, and the target counted exactly what was sent (perhaps one less per
    worker killed inside a send: ``in_doubt``). ``may_drop``: the fault can drop a request
    after it was sent (a restart resets what the target had not read yet, a broken
    path loses packets), so the target may count fewer, but each of those failed."""
    c = {k: int(report.get(f"requests.{k}", 0)) for k in LEDGER}
    res.requests = c["sent"]
    res.served = served
    res.errors = errors_of(report)
    audit = report.get("audit", {})
    res.leaked_fds = int(audit.get("leaked", -1))
    res.lost = c["lost"]
    balanced = c["sent"] == c["ok"] + c["failed"] + c["lost"] + c["abandoned"]
    low = c["sent"] - c["in_doubt"] - (c["failed"] if may_drop else 0)
    exact = low <= served <= c["sent"]
    hang_ok = float(report.get("latency.max_ms", 0)) <= HANG_BOUND_MS
    res.passed = (
        report.get("exit") == 0
        and res.leaked_fds == 0
        and balanced
        and exact
        and hang_ok
        and audit.get("now") == audit.get("baseline")
        and extra_ok
    )
    if not hang_ok:
        res.note += f" max latency {report.get('latency.max_ms')} ms > {HANG_BOUND_MS} ms;"
    if not balanced:
        res.note += f" sent {c['sent']} != ok+failed+lost+abandoned;"
    if not exact:
        res.note += f" the target counted {served}, sent {c['sent']};"
    return res


@contextlib.contextmanager
def nginx_server() -> Iterator[Nginx]:
    with tempfile.TemporaryDirectory() as d:
        server = Nginx(Path(d), access_log=True)  # its count survives restarts
        server.start()
        try:
            yield server
        finally:
            server.stop()


def poolsvc_run(ng: Nginx, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "poolsvc", "run", "--host", ng.host, "--port", str(ng.port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def table(results: list[Result]) -> str:
    head = (
        "| scenario | faults injected | sent | target counted | errors by class | recovery "
        "| leaked fds | lost | result | notes |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(r.row() for r in results)])
